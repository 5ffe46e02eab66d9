"""Reaching hubd from hubctl: where its local socket is, and one request on it.

hubd serves hubctl on a unix socket (hubd/technician/status_socket.py), ``status_socket`` in
hubd.toml. Every command that talks to hubd (status, test-alarm, pair, decommission) finds it the
same way (:func:`find`): ``--socket`` when given, else hubd.toml's ``status_socket``, else
hubd's own default, also when hubd.toml cannot be read. Only that setting is read, so no secret
is needed (hubd.env is root's; ``hubctl status`` runs as a member of group hubd). Where the path
came from travels with it (:class:`Hubd`) and is named when nothing answers there: a hubd.toml of
another place, or a typed path, looks exactly like a stopped hubd.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from hubapi.models import HubStatus
from hubctl.hubfiles import DEFAULT_ETC
from hubctl.service import for_etc
from hubd.config import DEFAULT_STATUS_SOCKET, ConfigError, status_socket_in
from hubd.technician import control

STATUS_TIMEOUT_S = 5.0


class ReachError(Exception):
    """hubd could not be asked, or refused; ``str()`` is one line naming the fix."""


class Hubd(NamedTuple):
    """hubd's socket, and why hubctl looks there."""

    socket: Path
    origin: str
    etc: Path = DEFAULT_ETC  # the directory of the hubd.toml it runs on (how to start it there)


def find(given: Path | None, config: Path, config_flag: str = "--config") -> Hubd:
    """hubd's socket: ``given`` (``--socket``), else ``status_socket`` in ``config`` (hubd.toml,
    which the command's ``config_flag`` names), else hubd's default, the origin then saying why."""
    if given is not None:
        return Hubd(given, "as given with --socket", config.parent)
    default = DEFAULT_STATUS_SOCKET
    if not config.exists():
        return Hubd(default, f"hubd's default: {config} does not exist (pass {config_flag} or --socket)",
                    config.parent)
    try:
        path = status_socket_in(config)
    except ConfigError as e:
        return Hubd(default, f"hubd's default, since {e}", config.parent)
    if path is None:
        return Hubd(default, f"hubd's default: {config} sets no status_socket", config.parent)
    return Hubd(path, f"status_socket in {config}", config.parent)


def ask(hubd: Hubd, request: BaseModel, timeout: float,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """One request to hubd, each progress line handed to ``progress``; ``timeout`` bounds each
    wait for a line. Raises ReachError."""
    try:
        return control.ask(hubd.socket, request, progress, timeout=timeout, origin=hubd.origin)
    except control.ControlError as e:
        raise ReachError(for_etc(str(e), hubd.etc)) from None


def status(hubd: Hubd) -> HubStatus:
    """hubd's health snapshot. Raises ReachError."""
    done = ask(hubd, control.StatusRequest(), STATUS_TIMEOUT_S)
    try:
        return HubStatus.model_validate_json(json.dumps(done))  # strict models: JSON's rules
    except ValidationError:
        raise ReachError(f"{hubd.socket} did not answer with a hub status (is hubctl the same "
                         "version as hubd? reinstall the same homecare-hub release)") from None
