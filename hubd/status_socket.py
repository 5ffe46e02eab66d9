"""The local status socket: ``hubctl status`` and ``hubctl doctor`` read the hub's health here.

    server = await serve(config.status_socket, health.snapshot)   # None: not served (logged)
    ...
    await close(server, config.status_socket)

A unix stream socket (mode 0660: root and the hubd group). Each connection gets one line, the
:class:`hubapi.models.HubStatus` as JSON, and is closed; nothing is read from the client. On the
hub the broker's ACL may keep the hub's own account from reading its ``status`` topic, so local
tools ask hubd directly. A stale socket file (a killed hubd) is replaced at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from hubapi.models import HubStatus

log = logging.getLogger(__name__)

MODE = 0o660
WRITE_TIMEOUT_S = 5.0


async def serve(path: Path, snapshot: Callable[[], HubStatus]) -> asyncio.AbstractServer | None:
    """Start serving snapshots on ``path``; a socket that cannot be made is logged, not fatal (the
    hub's safety work goes on without it)."""
    try:
        _remove_stale(path)
        server = await asyncio.start_unix_server(
            lambda r, w: _answer(w, snapshot), path=str(path))
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


async def _answer(writer: asyncio.StreamWriter, snapshot: Callable[[], HubStatus]) -> None:
    try:
        writer.write(snapshot().model_dump_json().encode() + b"\n")
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log.debug("status socket client went away: %s", exc)
    except Exception:  # a bug in the snapshot must not take the server down
        log.exception("status snapshot failed")
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)


async def close(server: asyncio.AbstractServer | None, path: Path) -> None:
    """Stop serving and remove the socket file."""
    if server is None:
        return
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2)
    with contextlib.suppress(OSError):
        path.unlink()
