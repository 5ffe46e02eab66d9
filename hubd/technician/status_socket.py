"""The local socket: hubctl's status, doctor, test-alarm, pair and decommission talk to hubd here.

    server = await serve(config.status_socket, handlers)   # None: not served (logged)
    ...
    await close(server, config.status_socket)

``handlers`` maps each request class of hubd/technician/control.py (the protocol, one definition for both
ends) to ``async handler(request, progress) -> result model``; ``progress(text)`` sends a progress
line, and a :class:`hubd.technician.control.Refused` becomes the ``error`` line. A unix stream socket (mode
0660: root and the hubd group), one request per connection. On the hub the broker's ACL may keep
the hub's own account from reading its ``status`` topic, so local tools ask hubd directly. A stale
socket file (a killed hubd) is replaced at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hubd.technician import control

log = logging.getLogger(__name__)

MODE = 0o660
WRITE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0
MAX_REQUEST = 4096

Handler = Callable[[Any, Callable[[str], None]], Awaitable[BaseModel]]


async def serve(path: Path, handlers: dict[type, Handler]) -> asyncio.AbstractServer | None:
    """Start serving snapshots on ``path``; a socket that cannot be made is logged, not fatal (the
    hub's safety work goes on without it)."""
    try:
        _remove_stale(path)
        server = await asyncio.start_unix_server(
            lambda r, w: _serve_one(r, w, handlers), path=str(path), limit=MAX_REQUEST)
        os.chmod(path, MODE)
    except OSError as exc:
        log.error("cannot serve the status socket %s: %s (hubctl status and doctor will not reach "
                  "hubd; the systemd unit's RuntimeDirectory=hubd makes /run/hubd)", path, exc,
                  extra={"status_socket": str(path)})
        return None
    log.info("status socket ready", extra={"status_socket": str(path)})
    return server


def _remove_stale(path: Path) -> None:
    """Remove a socket file no process is listening on; refuse to replace anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket: remove it or choose another status_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: a killed hubd's leftover
        return
    finally:
        probe.close()
    raise OSError(f"another process (another hubd?) serves {path}")


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handlers: dict[type, Handler]) -> None:
    def send(obj: BaseModel) -> None:
        writer.write(obj.model_dump_json().encode() + b"\n")

    try:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            request = control.parse_request(line)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            log.warning("bad request on the local socket: %s", exc)
            send(control.Error(error=f"bad request: {exc} (is hubctl the same version as hubd?)"))
        else:
            handler = handlers.get(type(request))
            if handler is None:
                send(control.Error(error=f"this hubd does not serve {request.request}"))
            else:
                await _handle(handler, request, send)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log.debug("local socket client went away: %s", exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)


async def _handle(handler: Handler, request: Any, send: Callable[[BaseModel], None]) -> None:
    def progress(text: str) -> None:
        send(control.Progress(progress=text))

    try:
        result = await handler(request, progress)
    except control.Refused as exc:
        log.warning("%s refused: %s", request.request, exc)
        send(control.Error(error=str(exc)))
    except Exception:  # a bug in one handler must not take the server down
        log.exception("%s failed", request.request)
        send(control.Error(error=f"{request.request} failed inside hubd: journalctl -u hubd has "
                                 "the details"))
    else:
        send(control.Done(done=result.model_dump(mode="json")))


async def close(server: asyncio.AbstractServer | None, path: Path) -> None:
    """Stop serving and remove the socket file."""
    if server is None:
        return
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2)
    with contextlib.suppress(OSError):
        path.unlink()
