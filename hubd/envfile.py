"""hubd.env: hubd's secrets as systemd's ``EnvironmentFile=`` reads them, one definition for the
writer (hubctl provision, :func:`env_line`) and every reader (systemd itself; ``hubd --env-file``
started by hand, hubctl doctor and provision, hub-sim's bench: :func:`read_env_file`).

The rules are systemd's (src/basic/env-file.c, ``parse_env_file_internal``), not a shell's and
not python-dotenv's: ``#`` and ``;`` start a comment line; ``NAME=value`` with blanks around the
name and before the value dropped; ``'...'`` is literal; inside ``"..."`` a backslash makes the
next ``"``, ``\\``, `` ` `` or ``$`` literal and keeps any other pair as it is; a bare value loses
its trailing blanks, and a backslash in it takes the next character literally (a backslash-newline
continues the line). No ``$VAR`` is expanded. python-dotenv (installed with pydantic-settings)
reads the same text differently: it expands ``${VAR}`` and does not undo the ``\\$`` and
``\\```` that :func:`env_line` writes, so a password holding them would reach hubd changed by
hand and unchanged under systemd.

:func:`read_env_file` is what every reader of hubd.env uses: the same rules, and one typed error
(:class:`EnvFileError`, one line naming the file and the fix) for a file that is not there or
cannot be read, and for a name systemd would skip ("Ignoring invalid environment assignment"), so
hubd started by hand never runs on a different environment than systemd would give it without
saying so, and hubctl doctor, hubctl provision and hub-sim never check hubd.toml against one.
:func:`applied` puts a file's variables into this process's environment for a ``with`` block:
``hubd --env-file`` for hubd's whole run, hubctl doctor and hub-sim's bench while they load
hubd.toml with them (:func:`environment` does it for values not read from a file: provision's
planned ones).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

_ESCAPED_IN_DOUBLE_QUOTES = '"\\`$'
# A name systemd takes into a service's environment (env_name_is_valid): shell-like, no '='.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(Exception):
    """The environment file cannot be used; ``str()`` is one line naming the file and the fix."""


def env_line(name: str, value: str) -> str:
    """``NAME="value"`` as systemd's EnvironmentFile reads it back exactly: inside double quotes
    a backslash makes ``"``, ``\\``, `` ` `` and ``$`` literal (systemd src/basic/env-file.c)."""
    escaped = re.sub(r'(["\\`$])', r"\\\1", value)
    return f'{name}="{escaped}"'


def parse_env_file(text: str) -> dict[str, str]:
    """Variables of an EnvironmentFile, by systemd's rules (the module docstring); a later line
    sets a name again, as systemd does."""
    out: dict[str, str] = {}
    state, key, value, trail = "pre_key", "", "", None
    for c in text + "\n":
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif not c.isspace():
                state, key = "key", c
        elif state == "key":
            if c in "\r\n":
                state = "pre_key"
            elif c == "=":
                state, value, trail = "pre_value", "", None
            else:
                key += c
        elif state == "comment":
            if c in "\r\n":
                state = "pre_key"
        elif state in ("pre_value", "value"):
            if c in "\r\n":
                out[key.strip()] = value[:trail] if state == "value" and trail is not None else value
                state = "pre_key"
            elif c == "'" and state == "pre_value":
                state = "single"
            elif c == '"' and state == "pre_value":
                state = "double"
            elif c == "\\":
                state, trail = "escape", None
            elif state == "pre_value" and c.isspace():
                pass
            else:
                if not c.isspace():
                    trail = None
                elif trail is None:
                    trail = len(value)
                state, value = "value", value + c
        elif state == "escape":
            state = "value"
            if c not in "\r\n":
                value += c
        elif state == "single":
            state, value = ("pre_value", value) if c == "'" else ("single", value + c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value += c
        elif state == "double_escape":
            state = "double"
            if c in _ESCAPED_IN_DOUBLE_QUOTES:
                value += c
            elif c != "\n":
                value += "\\" + c
    return out


def read_env_file(path: Path, missing_ok: bool = False) -> dict[str, str]:
    """The variables of the environment file at ``path`` as systemd would give them to hubd, or
    :class:`EnvFileError` naming the fix. ``missing_ok``: a file that is not there sets nothing,
    as hubd.service's ``EnvironmentFile=-/etc/hubd/hubd.env`` (its ``-``) reads it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise EnvFileError(f"environment file {path} does not exist: hubctl provision writes it "
                           "(hubd.env beside hubd.toml)") from None
    except PermissionError:
        raise EnvFileError(f"environment file {path} cannot be read: permission denied (it is "
                           "root's, mode 0600, as systemd reads it): run this as root "
                           "(sudo)") from None
    except IsADirectoryError:
        raise EnvFileError(f"environment file {path} is a directory: name the file, e.g. "
                           "/etc/hubd/hubd.env") from None
    except OSError as exc:
        raise EnvFileError(f"environment file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"environment file {path} is not UTF-8 text (byte {exc.start}): is it "
                           "the right file? hubctl provision writes one") from None
    values = parse_env_file(text)
    for name in values:
        if not _NAME.fullmatch(name):
            raise EnvFileError(f"environment file {path}: {name[:40]!r} is not a variable name "
                               "(systemd would skip the line): fix the line, e.g. "
                               'HUBD_MQTT__PASSWORD="..."')
    return values


@contextlib.contextmanager
def environment(values: dict[str, str], aside: str = "") -> Iterator[list[str]]:
    """``values`` in this process's environment for the ``with`` block, winning over the
    caller's of the same name (systemd's EnvironmentFile= wins over Environment= and the
    manager's, systemd.exec(5)); it yields the names whose value there was replaced, and puts the
    environment back as it was afterwards. ``aside``: a prefix (hubd.config's ``ENV_PREFIX``):
    the caller's variables named with it are set aside meanwhile, as hubd.service never gets its
    caller's (hubd.toml checked as systemd gives it to hubd, not as the technician's shell
    would)."""
    moved = {k: v for k, v in os.environ.items() if k.upper().startswith(aside)} if aside else {}
    saved = {name: os.environ.get(name) for name in values}
    replaced = sorted(name for name, value in values.items()
                      if saved[name] is not None and saved[name] != value and name not in moved)
    for name in moved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield replaced
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.environ.update(moved)


@contextlib.contextmanager
def applied(path: Path, missing_ok: bool = False, aside: str = "") -> Iterator[list[str]]:
    """The environment file at ``path`` (:func:`read_env_file`: systemd's rules and refusals,
    EnvFileError before anything changes) in this process's environment for the ``with`` block
    (:func:`environment`, ``aside`` as there); yields the names whose value it replaced."""
    with environment(read_env_file(path, missing_ok), aside) as replaced:
        yield replaced
