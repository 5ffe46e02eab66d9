"""The bridge's ``romfs`` flash partition and ``vfs.rom_ioctl``, on MicroPython's unix port.

What the bridge's own MicroPython build (deploy/esp32/: ESP32_GENERIC with MICROPY_VFS_ROM on
and a ``romfs`` data partition) has and a stock build lacks, for a bench bridge
(tests/hubctl/test_hubctl_flash.py) that `hubctl flash` writes the firmware's ROMFS image to.
Each part answers as MicroPython's ports/esp32 does (esp32_partition.c, extmod/vfs.c):

- ``rom_ioctl(1)``: the number of ROMFS segments, 1; ``rom_ioctl(2, n)``: the partition object
  (the esp32 port ignores n); 3, 4, 5 and 6: -EINVAL (the esp32 port writes through the
  partition object, not through rom_ioctl).
- The partition object: ``ioctl(4, 0)`` its block count, ``ioctl(5, 0)`` its block size (4096,
  the flash's erase unit), ``ioctl(6, n)`` erases block n, ``ioctl(1/2/3, 0)`` 0, others None;
  ``readblocks(block, buf[, offset])``; ``writeblocks(block, buf)`` erases the blocks it covers
  first (as esp_partition_erase_range then esp_partition_write), ``writeblocks(block, buf,
  offset)`` writes without erasing. Beyond the partition: OSError, as ESP-IDF refuses it.
- It is NOR flash, never kinder: erased bytes read 0xFF and a write can only clear bits (the
  new byte is the old AND the written one), so a write to unerased flash corrupts, as on the chip.
- `boot` does what mp_init does with MICROPY_VFS_ROM: mount a VfsRom over the partition at /rom
  (an invalid image is not mounted, and nothing is said) and then put "/rom" and "/rom/lib" after
  "" and ".frozen" on sys.path, before the shims (C modules on a chip). The unix port cannot
  map flash, so the image is read into a buffer at boot.

The partition is a file (created erased), its size the bridge build's (deploy/esp32's
partitions-bridge.csv, which the bench reads and passes to `boot`). `boot` makes this module
``vfs`` (sys.modules), forwarding the unix port's own mount, umount and filesystem types.
"""

import sys

import vfs as _vfs

BLOCK = 4096  # the ESP32 flash's erase unit, and the partition's block size
_EINVAL = 22

VfsRom = _vfs.VfsRom
VfsPosix = _vfs.VfsPosix
mount = _vfs.mount
umount = _vfs.umount

_partition = None


class Partition:
    """The ``romfs`` partition, backed by the file `path` of `size` bytes."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        try:
            open(path, "rb").close()
        except OSError:
            blank = b"\xff" * BLOCK
            with open(path, "wb") as f:
                for _ in range(size // BLOCK):
                    f.write(blank)

    def _span(self, offset, n):
        if offset < 0 or n < 0 or offset + n > self.size:
            raise OSError(_EINVAL)

    def _erase(self, offset, n):
        if offset % BLOCK or n % BLOCK:
            raise OSError(_EINVAL)  # ESP_ERR_INVALID_SIZE: only whole sectors erase
        self._span(offset, n)
        blank = b"\xff" * BLOCK
        with open(self.path, "r+b") as f:
            f.seek(offset)
            for _ in range(n // BLOCK):
                f.write(blank)

    def _program(self, offset, data):
        self._span(offset, len(data))
        with open(self.path, "r+b") as f:
            f.seek(offset)
            old = f.read(len(data))
            f.seek(offset)
            f.write(bytes(a & b for a, b in zip(old, data)))

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # init, deinit, sync
            return 0
        if op == 4:
            return self.size // BLOCK
        if op == 5:
            return BLOCK
        if op == 6:
            self._erase(arg * BLOCK, BLOCK)
            return 0
        return None

    def readblocks(self, block, buf, offset=0):
        start = block * BLOCK + offset
        self._span(start, len(buf))
        with open(self.path, "rb") as f:
            f.seek(start)
            f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        start = block * BLOCK
        if offset is None:
            self._erase(start, len(buf))
        else:
            start += offset
        self._program(start, bytes(buf))


def rom_ioctl(op, *args):
    if op == 1:
        return 1
    if op == 2:
        return _partition
    return -_EINVAL


def boot(path, size, mount_point, paths):
    """Start as the bridge build starts: the partition at `path`, its image mounted at
    `mount_point` with `paths` after "" and ".frozen" on sys.path (hubctl.bundle's ROM_MOUNT and
    ROM_PATHS: "/rom", and "/rom", "/rom/lib")."""
    global _partition
    _partition = Partition(path, size)
    sys.modules["vfs"] = sys.modules[__name__]
    image = bytearray(size)
    _partition.readblocks(0, image)
    try:
        mount(VfsRom(image), mount_point)
    except OSError:
        return  # mp_vfs_mount_romfs_protected: no image, no /rom, no paths
    rest = [p for p in sys.path if p not in ("", ".frozen")]
    sys.path[:] = ["", ".frozen"] + list(paths) + rest
