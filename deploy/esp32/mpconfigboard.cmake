# The bridge's MicroPython: ESP32_GENERIC's configuration (MicroPython v1.28,
# ports/esp32/boards/ESP32_GENERIC/mpconfigboard.cmake) with this directory's partition table.
# The sdkconfig files named relatively are the port's own (ports/esp32/boards/).

# ESP-IDF takes the partition table's path from an sdkconfig option, which cannot name this
# directory relative to the port; an absolute path, written at configure time, can.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.bridge_partitions
    "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions-bridge.csv\"\n")

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
    ${CMAKE_BINARY_DIR}/sdkconfig.bridge_partitions
)
