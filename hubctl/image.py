"""The MicroPython image on the bridge's flash, written with esptool's Python API behind a seam.

`flash_image` is the whole step: connect to the chip's ROM bootloader, check it is the chip a
bridge has, erase the flash, write the image where MicroPython's image for that chip starts,
read it back to verify, hard-reset. The `Flasher` protocol is the seam: `EsptoolFlasher` calls
esptool; tests pass a recorder and check the exact calls.

The bridge's MicroPython is not micropython.org's ESP32_GENERIC but a build of it with ROMFS on
and a ``romfs`` partition (deploy/esp32/, docs/technician-guide.md); `partition_table` reads that
build's partition table, the one definition of the partition's size (the test bench's shim takes
it from here too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Where MicroPython's image starts on each chip a bridge can have (micropython.org's
# ESP32_GENERIC download page: `esptool --chip esp32 write_flash -z 0x1000 <image>.bin`). On
# the classic ESP32 the second-stage bootloader sits at 0x1000; the image file begins with it.
IMAGE_OFFSET = {"ESP32": 0x1000}
# The first byte of every ESP32 image (bootloader and app headers).
IMAGE_MAGIC = 0xE9
# Baud rate while writing: the ROM bootloader talks at 115200, esptool's stub switches up.
DEFAULT_BAUD = 460800

# The board definition of the bridge's MicroPython, and its partition table.
BOARD_DIR = Path(__file__).resolve().parents[1] / "deploy" / "esp32"
PARTITIONS = BOARD_DIR / "partitions-bridge.csv"
# The label MicroPython's esp32 port looks for (esp32_partition.c, mp_vfs_rom_ioctl).
ROMFS_LABEL = "romfs"


class ImageError(Exception):
    """The image cannot be written; the message says what to fix."""


class Flasher(Protocol):
    """The calls `flash_image` makes, in this order."""

    def connect(self, port: str, baud: int) -> str:
        """Reset the chip on `port` into its ROM bootloader; return the chip's name ("ESP32")."""

    def erase(self) -> None:
        """Erase the whole flash (the old image, its filesystem, the bridge's journals)."""

    def write(self, offset: int, image: bytes) -> None:
        """Write `image` at `offset`."""

    def verify(self, offset: int, image: bytes) -> None:
        """Read the flash back at `offset` and compare it with `image`; raise if it differs."""

    def hard_reset(self) -> None:
        """Reset the chip so it boots the new image."""

    def close(self) -> None:
        """Let go of the port."""


@dataclass(frozen=True)
class Partition:
    """One row of an ESP-IDF partition table (name, type, subtype, offset, size; flags left
    out)."""

    name: str
    type: str
    subtype: str
    offset: int
    size: int


def partition_table(path: Path = PARTITIONS) -> list[Partition]:
    """The rows of an ESP-IDF partition table CSV (offsets and sizes in hex or decimal, K/M
    suffixes as ESP-IDF's gen_esp32part.py takes them); ValueError on a row it cannot read."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 5:
            raise ValueError(f"{path}:{n}: a partition needs name, type, subtype, offset, size")
        rows.append(Partition(cells[0], cells[1], cells[2], _number(cells[3]), _number(cells[4])))
    return rows


def _number(text: str) -> int:
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text, 0) * scale


def romfs_partition_size(path: Path = PARTITIONS) -> int:
    """The size of the bridge build's ``romfs`` partition, in bytes."""
    (romfs,) = [p for p in partition_table(path) if p.name == ROMFS_LABEL]
    return romfs.size


def read_image(path: Path) -> bytes:
    """The image file's bytes, refused unless it looks like an ESP32 image."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read the image {path}: {e.strerror}: pass the MicroPython "
                         "ESP32_GENERIC .bin you downloaded") from None
    if len(data) < 4096 or data[0] != IMAGE_MAGIC:
        raise ImageError(f"{path} is not an ESP32 firmware image (it must start with byte "
                         f"0x{IMAGE_MAGIC:02X} and be the whole .bin): download ESP32_GENERIC "
                         "from micropython.org")
    return data


def flash_image(flasher: Flasher, port: str, image: bytes, baud: int = DEFAULT_BAUD) -> str:
    """Erase the bridge's flash and write the MicroPython image; return the chip's name."""
    chip = flasher.connect(port, baud)
    try:
        offset = IMAGE_OFFSET.get(chip)
        if offset is None:
            raise ImageError(f"the chip on {port} is an {chip}, a bridge is an ESP32: wrong board "
                             "or wrong port")
        flasher.erase()
        flasher.write(offset, image)
        flasher.verify(offset, image)
        flasher.hard_reset()
    finally:
        flasher.close()
    return chip


class EsptoolFlasher:
    """The real `Flasher`: esptool 5's public API (esptool.cmds), its flasher stub, its own
    progress output."""

    def __init__(self) -> None:
        self._esp = None

    def connect(self, port: str, baud: int) -> str:
        from esptool import FatalError
        from esptool.cmds import attach_flash, detect_chip, run_stub

        try:
            esp = detect_chip(port)
            esp = run_stub(esp)
            self._esp = esp
            if baud > esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
        except (FatalError, OSError) as e:
            raise ImageError(f"no ESP32 bootloader answers on {port} ({e}): check the port and "
                             "the cable; hold BOOT while plugging in if the board needs it")\
                from None
        return esp.CHIP_NAME

    def _run(self, doing: str, call, *args) -> None:
        from esptool import FatalError

        try:
            call(self._esp, *args)
        except (FatalError, OSError) as e:
            raise ImageError(f"esptool failed {doing} ({e}): check the cable and run the same "
                             "command again (it starts over from the erase)") from None

    def erase(self) -> None:
        from esptool.cmds import erase_flash

        self._run("erasing the flash", erase_flash)

    def write(self, offset: int, image: bytes) -> None:
        from esptool.cmds import write_flash

        self._run("writing the image", write_flash, [(offset, image)])

    def verify(self, offset: int, image: bytes) -> None:
        from esptool.cmds import verify_flash

        self._run("verifying the image", verify_flash, [(offset, image)])

    def hard_reset(self) -> None:
        from esptool.cmds import reset_chip

        self._run("resetting the chip", reset_chip, "hard-reset")

    def close(self) -> None:
        if self._esp is not None:
            self._esp._port.close()
            self._esp = None
