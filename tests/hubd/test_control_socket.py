"""hubd's local socket (hubd/technician/status_socket.py) speaking the control protocol (hubd/technician/control.py):
one request line, progress lines, one final line; bad input gets an error line and the server
goes on serving."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.technician import control, status_socket


@pytest.fixture
def sock_path() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    yield d / "s.sock"
    shutil.rmtree(d, ignore_errors=True)


def raw_exchange(path: Path, line: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(line)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(x) for x in data.splitlines()]


async def test_requests_progress_errors_and_a_crashing_handler(sock_path: Path) -> None:
    async def scan(request: control.ScanRequest, progress) -> control.ScanResult:
        progress(f"listening {request.seconds} s")
        progress("still listening")
        return control.ScanResult(locks=[])

    async def pair(request: control.PairRequest, progress) -> control.PairResult:
        raise control.Refused("the lock is not in pairing mode: hold its button")

    async def decommission(request, progress):
        raise RuntimeError("a bug")

    server = await status_socket.serve(sock_path, {
        control.ScanRequest: scan, control.PairRequest: pair,
        control.DecommissionRequest: decommission})
    assert server is not None
    try:
        def ask(request) -> tuple[list[str], dict | str]:
            lines: list[str] = []
            try:
                return lines, control.ask(sock_path, request, lines.append)
            except control.ControlError as e:
                return lines, str(e)

        lines, done = await asyncio.to_thread(ask, control.ScanRequest(seconds=3))
        assert lines == ["listening 3 s", "still listening"] and done == {"locks": [], "listened_s": 0.0}

        pair_request = control.PairRequest(lock="front-door", kind="in_cylinder", addr="C0:FF:EE:00:00:07",
                                           setup_key="cd" * 32)
        assert "cd" * 32 not in repr(pair_request)  # secrets stay out of logs and reprs
        _, error = await asyncio.to_thread(ask, pair_request)
        assert error == "the lock is not in pairing mode: hold its button"

        _, error = await asyncio.to_thread(ask, control.DecommissionRequest())
        assert "decommission failed inside hubd" in error

        _, error = await asyncio.to_thread(ask, control.StatusRequest())  # no handler here
        assert "does not serve status" in error

        for line, words in ((b"not json\n", "bad request"), (b'{"request": "open_door"}\n', "bad request"),
                            (b'{"request": "scan", "seconds": 999}\n', "seconds")):
            answer = await asyncio.to_thread(raw_exchange, sock_path, line)
            assert len(answer) == 1 and words in answer[0]["error"], answer

        lines, done = await asyncio.to_thread(ask, control.ScanRequest())  # still serving
        assert done == {"locks": [], "listened_s": 0.0}
    finally:
        await status_socket.close(server, sock_path)
    assert not sock_path.exists()


def test_ask_names_the_fix_when_nothing_listens(sock_path: Path) -> None:
    with pytest.raises(control.ControlError, match="hubd is not running"):
        control.ask(sock_path, control.StatusRequest())
