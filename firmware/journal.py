"""The command journal: tags of the commands the bridge has written to a lock, kept on flash.

A command is recorded just before its write reaches the lock, so a command id that arrives again,
even after the bridge rebooted, is recognised and never moves a lock twice. The file is
append-only, one tag (16 hex digits) a line; it keeps the last ``keep`` tags and is compacted
(written anew, then renamed over the old one) when it has grown to twice that. A line cut short
by a power cut is skipped when the file is read.
"""

import binascii

from flashlog import FlashLog

PATH = "commands.journal"
KEEP = 256
TAG_LEN = 8
_TAG_HEX = 2 * TAG_LEN


def _tag_of(line):
    """The 8-byte tag of a journal line, or None for a damaged line."""
    if len(line) != _TAG_HEX:
        return None
    try:
        return binascii.unhexlify(line)
    except ValueError:
        return None


class Journal:
    """The tags recorded so far (the newest ``keep``), loaded from ``path`` at start.

    In RAM the tags live in one ring buffer allocated at start (``keep`` * 8 bytes): recording a
    command allocates nothing that stays, so the heap does not drain or fragment however many
    commands a bridge runs between reboots.
    """

    def __init__(self, path=PATH, keep=KEEP):
        self.path = path
        self.keep = keep
        self._ring = bytearray(keep * TAG_LEN)
        self._count = 0  # valid tags in the ring
        self._next = 0  # the slot the next tag goes to (the oldest once the ring is full)
        self._file = FlashLog(path, _TAG_HEX + 1)
        for line in self._file.read():
            tag = _tag_of(line)
            if tag is not None:
                self._remember(tag)

    def __len__(self):
        return self._count

    def _remember(self, tag):
        base = self._next * TAG_LEN
        self._ring[base:base + TAG_LEN] = tag
        self._next = (self._next + 1) % self.keep
        if self._count < self.keep:
            self._count += 1

    def seen(self, tag):
        """Whether a command with this 8-byte tag was recorded."""
        ring = self._ring
        first = tag[0]
        for slot in range(self._count):
            base = slot * TAG_LEN
            # Compare the first byte in place; slice only for the rare candidate.
            if ring[base] == first and ring[base:base + TAG_LEN] == tag:
                return True
        return False

    def record(self, tag):
        """Append a tag durably; raises OSError if the flash cannot take it."""
        self._file.append(binascii.hexlify(tag).decode())
        self._remember(tag)
        if self._file.lines >= 2 * self.keep:
            self._file.rewrite(self._oldest_first())

    def _oldest_first(self):
        ring = self._ring
        first = (self._next - self._count) % self.keep
        for i in range(self._count):
            base = ((first + i) % self.keep) * TAG_LEN
            yield binascii.hexlify(ring[base:base + TAG_LEN]).decode()
