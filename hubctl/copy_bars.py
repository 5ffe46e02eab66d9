"""`hubctl flash`'s progress as rich bars: the whole copy in bytes and the file being written,
and the ROMFS image's bytes (hubctl.deploy reports its progress to a
:class:`hubctl.deploy.CopyProgress`; this is the terminal's)."""

from __future__ import annotations

from rich.progress import Progress, TaskID

from hubctl import deploy


class Bars(deploy.CopyProgress):
    """Rich bars: the whole copy in bytes and the file being written; the ROMFS image's bytes."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._total: TaskID | None = None
        self._file: TaskID | None = None
        self._image: TaskID | None = None
        self._done = 0  # bytes of the files finished
        self._size = 0  # of the file being written

    def begin(self, files: int, total_bytes: int) -> None:
        self._total = self._p.add_task(f"copy {files} files", total=total_bytes)

    def file_begin(self, path: str, size: int) -> None:
        self._size = size
        self._file = self._p.add_task(f"  {path}", total=size or 1)

    def file_advance(self, path: str, done: int, size: int) -> None:
        assert self._total is not None and self._file is not None
        self._p.update(self._file, completed=done)
        self._p.update(self._total, completed=self._done + done)

    def file_end(self, path: str, copied: bool) -> None:
        assert self._total is not None and self._file is not None
        self._done += self._size
        self._p.update(self._total, completed=self._done)
        self._p.remove_task(self._file)
        self._p.console.print(f"  {path}: {'copied, verified' if copied else 'already there'}")

    def image_begin(self, size: int) -> None:
        self._image = self._p.add_task("ROMFS image", total=size)

    def image_advance(self, done: int, size: int) -> None:
        assert self._image is not None
        self._p.update(self._image, completed=done)

    def image_end(self, written: bool) -> None:
        assert self._image is not None
        if written:
            self._p.update(self._image, completed=self._p.tasks[self._image].total)
        else:
            self._p.remove_task(self._image)
        done = "written, verified" if written else "already there"
        self._p.console.print(f"  ROMFS image: {done}")

    def removed(self, paths: list[str]) -> None:
        self._p.console.print(f"  {len(paths)} .mpy files of an older flash removed (the "
                              "filesystem's would be imported before /rom's)")
