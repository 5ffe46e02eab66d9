"""The command journal: tags of the commands the bridge has written to a lock, kept on flash.

A command is recorded just before its write reaches the lock, so a command id that arrives again,
even after the bridge rebooted, is recognised and never moves a lock twice. The file is
append-only, one tag (16 hex digits) a line; it keeps the last ``keep`` tags and is compacted
(written anew, then renamed over the old one) when it has grown to twice that. A line cut short
by a power cut is skipped when the file is read.
"""

import binascii
import os

PATH = "commands.journal"
KEEP = 256
_TAG_HEX = 16


def _sync():
    # The ESP32 port has os.sync on some builds only; flush() alone already reaches LittleFS.
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


def _valid(line):
    if len(line) != _TAG_HEX:
        return False
    try:
        binascii.unhexlify(line)
    except ValueError:
        return False
    return True


class Journal:
    """The tags recorded so far (the newest ``keep``), loaded from ``path`` at start."""

    def __init__(self, path=PATH, keep=KEEP):
        self.path = path
        self.keep = keep
        self._tags = []  # hex strings, oldest first
        self._lines = 0  # lines in the file, valid or not
        self._newline_first = False  # the file ends in a cut-short line
        self._load()

    def _load(self):
        try:
            os.remove(self.path + ".tmp")  # a compaction that did not finish
        except OSError:
            pass
        try:
            f = open(self.path)
        except OSError:
            return
        with f:
            for line in f:  # line by line: the whole file would be a big string on the heap
                self._lines += 1
                whole = line.endswith("\n")
                self._newline_first = not whole
                line = line[:-1] if whole else line
                if _valid(line):
                    self._tags.append(line)
                    del self._tags[:-self.keep]

    def __len__(self):
        return len(self._tags)

    def seen(self, tag):
        """Whether a command with this 8-byte tag was recorded."""
        return binascii.hexlify(tag).decode() in self._tags

    def record(self, tag):
        """Append a tag durably; raises OSError if the flash cannot take it."""
        line = binascii.hexlify(tag).decode()
        with open(self.path, "a") as f:
            f.write(("\n" if self._newline_first else "") + line + "\n")
            f.flush()
        _sync()
        self._newline_first = False
        self._lines += 1
        self._tags.append(line)
        del self._tags[:-self.keep]
        if self._lines >= 2 * self.keep:
            self._compact()

    def _compact(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for line in self._tags:
                f.write(line + "\n")
            f.flush()
        # Renaming over the old file is atomic on LittleFS and POSIX: a power cut leaves one
        # of the two whole files, never neither.
        os.rename(tmp, self.path)
        _sync()
        self._lines = len(self._tags)
