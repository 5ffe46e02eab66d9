"""Host stand-in for the parts of MicroPython's `machine` module the firmware uses.

UART(n) is backed by the file descriptor the simulator passes in SIM_UART<n>_FD (a non-blocking
socket or pty): the firmware reads and writes it as on an ESP32, through asyncio streams.
"""

import io
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
    """The watchdog: on the host a missed feed ends the process, as a reset would."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


def reset():
    sys.exit(3)


def reset_cause():
    return PWRON_RESET


def unique_id():
    return b"\x00sim\x00\x01"


def freq(*args):
    return 240000000
