"""Minimal leveled log lines for the bridge (MicroPython has no logging module).

Lines go to stdout, which is the USB console on a bridge whose host link uses another UART, and
the simulator's output on the host.
"""

import time

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
_threshold = 20


def set_level(name):
    global _threshold
    _threshold = _LEVELS.get(name, 20)


def _line(level, msg):
    if _LEVELS[level] >= _threshold:
        print("%d %s %s" % (time.ticks_ms(), level, msg))


def debug(msg):
    _line("debug", msg)


def info(msg):
    _line("info", msg)


def warn(msg):
    _line("warn", msg)


def error(msg):
    _line("error", msg)
