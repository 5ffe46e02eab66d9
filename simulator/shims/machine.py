"""Host stand-in for the parts of MicroPython's `machine` module the firmware uses.

Everything around the chip is the simulator's (simulator/bridge_device.py), handed over in the
environment:
- UART(n) is backed by the file descriptor in SIM_UART<n>_FD (a non-blocking socket or pty): the
  firmware reads and writes it as on an ESP32, through asyncio streams.
- reset_cause() is SIM_RESET_CAUSE (a number below; power-on when unset): the simulator boots
  the firmware again after reset() (soft), after its watchdog fired (wdt), after reboot() (hard).
- WDT is the simulator's: each feed is one byte on SIM_WDT_FD, the first says the timeout
  ("W<ms>\n"); the simulator ends the process when a feed is late, as the chip's watchdog
  resets it whatever the CPU is doing (a hung loop included). Without SIM_WDT_FD nobody watches.
- ADC and Pin read SIM_BOARD, a JSON file the simulator rewrites when a test changes the
  board's levels: {"<pin>": level}, microvolts at an ADC pin, 0 or 1 at an input.
"""

import io
import json
import os
import sys

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_MP_STREAM_POLL = 3
_MP_STREAM_GET_FILENO = 10


class UART(io.IOBase):
    """A UART on the simulator's line for port `id` (ENODEV when the simulator wired none)."""

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rxbuf=256, timeout=0, **kw):
        fd = os.getenv("SIM_UART%d_FD" % id)
        if fd is None:
            raise OSError(19)  # ENODEV, like a UART the board does not have
        self.id = id
        self.baudrate = baudrate
        self._fd = int(fd)
        self._f = open(self._fd, "r+b")

    def init(self, *args, **kw):
        pass

    def deinit(self):
        self._f.close()

    def read(self, n=-1):
        return self._f.read(n) if n != 0 else b""

    def readinto(self, buf, nbytes=None):
        return self._f.readinto(buf)

    def write(self, buf):
        return self._f.write(buf)

    def any(self):
        import select

        p = select.poll()
        p.register(self._fd, select.POLLIN)
        return 1 if p.poll(0) else 0

    def flush(self):
        pass

    def txdone(self):
        return True

    def ioctl(self, req, arg):
        # The unix port's select.poll asks a Python stream for its file descriptor.
        if req == _MP_STREAM_GET_FILENO:
            return self._fd
        return 0


class WDT:
    """The chip's watchdog: once started it cannot be stopped; feed() within ``timeout`` ms."""

    def __init__(self, id=0, timeout=5000):
        fd = os.getenv("SIM_WDT_FD")
        self._f = None if fd is None else open(int(fd), "wb")
        self.feed(b"W%d\n" % timeout)

    def feed(self, _say=b"."):
        if self._f is not None:
            try:
                self._f.write(_say)
            except OSError:
                pass  # the simulator is not reading (stopping us): nothing to tell


def _level(pin):
    try:
        with open(os.getenv("SIM_BOARD") or "") as f:
            return int(json.load(f).get(str(pin), 0))
    except (OSError, ValueError):
        return 0  # no board file (or being replaced): a floating pin


class Pin:
    """A GPIO input: reads its level from the board file."""

    IN = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id

    def value(self):
        return _level(self.id)


class ADC:
    """An ADC channel on a Pin: read_uv() is the board file's level for that pin."""

    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self._pin = pin.id

    def read_uv(self):
        return _level(self._pin)


def reset():
    sys.exit(3)


def reset_cause():
    return int(os.getenv("SIM_RESET_CAUSE") or PWRON_RESET)


def unique_id():
    return b"\x00sim\x00\x01"


def freq(*args):
    return 240000000
