"""Running under systemd: readiness and watchdog (sd_notify) and structured logs to the journal.

Both speak documented one-datagram protocols on AF_UNIX sockets, so they need no library:

- **sd_notify** (``man 3 sd_notify``): ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``
  as one datagram to ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket). With
  ``WatchdogSec=`` in the unit, systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and kills
  and restarts hubd when no ``WATCHDOG=1`` arrives in time: :func:`watchdog` sends one every half
  interval from the event loop, so a blocked loop stops the pings.
- **the journal's native protocol** (``systemd.journal-fields(7)``, "Native Journal Protocol"):
  ``FIELD=value`` lines in one datagram to ``/run/systemd/journal/socket``; a value holding a
  newline is sent as ``FIELD\\n<u64 LE length><value>\\n``. :class:`JournalHandler` sends each log
  record with its ``extra=`` fields as journal fields (``journalctl -u hubd -o verbose`` shows
  them; ``journalctl -u hubd ALARM=au5a000001-7`` finds them).

Outside systemd (no ``$NOTIFY_SOCKET``, no ``$JOURNAL_STREAM``) every call here does nothing and
hubd logs JSON lines to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import struct

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "hubd"

# Python logging level -> syslog priority (journald's PRIORITY field).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_FIELD_OK = re.compile(r"[^A-Z0-9_]")


def _address(name: str) -> str | bytes:
    """A socket address from $NOTIFY_SOCKET: ``@name`` is Linux's abstract namespace."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd; False outside systemd
    or when the socket refuses (never raises: hubd's work does not depend on it)."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), _address(target))
        return True
    except OSError as exc:
        log.warning("cannot notify systemd on %s: %s", target, exc)
        return False


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of systemd's ``WatchdogSec=``), or None when systemd
    does not watch this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec), 1) / 2e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None


async def watchdog() -> None:
    """Ping systemd's watchdog from the event loop while it runs (returns at once without one)."""
    interval = watchdog_interval()
    if interval is None:
        return
    log.info("systemd watchdog: pinging every %.1f s", interval)
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _field(name: str) -> str:
    """A journal field name: upper case letters, digits and underscores, not starting with _."""
    cleaned = _FIELD_OK.sub("_", name.upper()).lstrip("_")
    return cleaned or "FIELD"


def encode_entry(fields: dict[str, object]) -> bytes:
    """One journal entry in the native protocol."""
    out = bytearray()
    for name, value in fields.items():
        data = str(value).encode("utf-8", errors="replace")
        key = _field(name).encode()
        if b"\n" in data:
            out += key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends log records to journald, each ``extra=`` field as a journal field of its own."""

    def __init__(self, path: str = JOURNAL_SOCKET, standard: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.path = path
        self._standard = standard  # LogRecord attributes that are not extra fields
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, object] = {
                "MESSAGE": record.getMessage(),
                "PRIORITY": _PRIORITY.get(record.levelno, 6),
                "SYSLOG_IDENTIFIER": IDENTIFIER,
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
            }
            for key, value in vars(record).items():
                if key not in self._standard and value is not None:
                    fields[key] = value
            if record.exc_info:
                fields["EXCEPTION"] = logging.Formatter().formatException(record.exc_info)
            self._sock.sendto(encode_entry(fields), self.path)
        except Exception:  # noqa: BLE001 - logging must never take hubd down
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def journal_is_stderr() -> bool:
    """True when systemd connected stderr to the journal (``$JOURNAL_STREAM`` names its device
    and inode), so hubd should log natively instead of as text."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))
