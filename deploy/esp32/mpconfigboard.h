// The bridge's MicroPython: ESP32_GENERIC (MicroPython v1.28) with ROMFS on, so the firmware's
// ROMFS image on the "romfs" partition (partitions-bridge.csv) is mounted at /rom at every boot
// and its modules run in place from flash instead of being copied into the heap.
// MicroPython's py/mpconfig.h defaults MICROPY_VFS_ROM to 0 and no esp32 board sets it.

#define MICROPY_HW_BOARD_NAME "Homecare bridge (ESP32, ROMFS)"
#define MICROPY_HW_MCU_NAME "ESP32"

// vfs.VfsRom, and (through MICROPY_VFS_ROM_IOCTL, which follows it) vfs.rom_ioctl: the esp32
// port then finds the "romfs" data partition (esp32_partition.c) and mp_init mounts it.
#define MICROPY_VFS_ROM (1)
