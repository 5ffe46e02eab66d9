"""An append-only text file on the bridge's flash: what the alarm journal keeps.

- ``read()`` yields the whole lines of the file, oldest first, one at a time (the whole file
  would be one big string on the heap). A line cut short by a power cut has no newline: it is
  skipped, and the next append starts on a line of its own. A compaction a power cut interrupted
  (a ``.tmp`` file) is discarded: the old file is still whole.
- ``append(line)`` is durable when it returns: written, flushed, and synced where the port can.
- ``rewrite(lines)`` replaces the file with ``lines``: written to ``.tmp``, then renamed over the
  old file, which is atomic on LittleFS and POSIX, so a power cut leaves one of the two whole.
- ``lines`` counts the lines in the file, so an owner knows when to rewrite it.
"""

import os


def _sync():
    # The ESP32 port has os.sync on some builds only; flush() alone already reaches LittleFS.
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


class FlashLog:
    """One journal file at ``path``; lines longer than ``max_line`` are skipped when read."""

    def __init__(self, path, max_line=128):
        self.path = path
        self.max_line = max_line
        self.lines = 0
        self._newline_first = False  # the file ends in a cut-short line

    def read(self):
        """Yield each whole line (without its newline); counts every line, whole or not."""
        try:
            os.remove(self.path + ".tmp")
        except OSError:
            pass
        try:
            f = open(self.path)
        except OSError:
            return
        with f:
            for line in f:
                self.lines += 1
                whole = line.endswith("\n")
                self._newline_first = not whole
                if whole and len(line) <= self.max_line:
                    yield line[:-1]

    def append(self, line):
        """Add one line durably; raises OSError if the flash cannot take it."""
        with open(self.path, "a") as f:
            f.write(("\n" if self._newline_first else "") + line + "\n")
            f.flush()
        _sync()
        self._newline_first = False
        self.lines += 1

    def rewrite(self, lines):
        """Replace the file with ``lines`` (an iterable of strings), atomically."""
        tmp = self.path + ".tmp"
        count = 0
        with open(tmp, "w") as f:
            for line in lines:
                f.write(line + "\n")
                count += 1
            f.flush()
        os.rename(tmp, self.path)
        _sync()
        self.lines = count
        self._newline_first = False
