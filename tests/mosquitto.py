"""A private Mosquitto broker for tests: free loopback port, generated config, temp directory.

Plain module (no pytest import) so scripts, benchmarks and hil_tests can use it too; the pytest
fixtures around it live in ``tests/fixtures.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from simulator.ports import free_port

INSTALL_HINT = "Mosquitto is required: install it with `apt-get install mosquitto` (Debian/Ubuntu)"


class MosquittoNotInstalled(RuntimeError):
    """The ``mosquitto`` binary is not on PATH (nor in /usr/sbin)."""


def find_mosquitto() -> str:
    """Path of the broker binary, or MosquittoNotInstalled naming how to install it."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoNotInstalled(INSTALL_HINT)
    return found


@dataclass(frozen=True)
class TlsListener:
    """A second, TLS listener (``Mosquitto.tls_port``): PEM paths and client-certificate policy.

    With ``require_certificate`` a client must present a certificate signed by ``cafile``; with
    ``use_identity_as_username`` its CN becomes the username the ACL sees (no password asked);
    with ``use_username_as_clientid`` that username is also the client id, so no client can take
    over (disconnect) another's session by reusing its client id.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True
    use_username_as_clientid: bool = False


class Mosquitto:
    """One broker process; ``start``/``stop``/``kill``/``restart`` keep the same port and persistence.

    ``passwords`` (user -> password) turns on authentication (anonymous clients are then refused);
    ``acl`` is the text of an ACL file (e.g. ``"pattern readwrite hubs/%u/#"``). ``tls`` adds a TLS
    listener on ``tls_port`` next to the plain one on ``port``. ``extra_config`` lines are appended
    verbatim (limits, ...). Change any of them and ``restart()``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
        extra_config: list[str] | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.binary = find_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.passwords = passwords
        self.acl = acl
        self.extra_config = list(extra_config or [])
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def write_config(self) -> None:
        """Generate mosquitto.conf (and the password and ACL files) from the current settings."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            "set_tcp_nodelay true",
            # As docs/broker-setup.md: no publish larger than this reaches anyone.
            "message_size_limit 262144",
            # A SIGKILL with the default autosave lost acknowledged QoS 1 messages (field notes).
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_on_changes true",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto drops to user "mosquitto", which cannot write our temp dir.
            lines.append("user root")
        if self.passwords is None:
            lines.append("allow_anonymous true")
        else:
            password_file = self.workdir / "passwords"
            password_file.write_text("")
            for user, password in self.passwords.items():
                subprocess.run(
                    [_passwd_tool(), "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl.rstrip() + "\n")
            lines.append(f"acl_file {acl_file}")
        if self.tls is not None:
            # Listener options follow their listener line; the auth settings above stay global.
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
                f"use_identity_as_username {str(self.tls.use_identity_as_username).lower()}",
                f"use_username_as_clientid {str(self.tls.use_username_as_clientid).lower()}",
            ]
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        self.write_config()
        stderr = (self.workdir / "stderr.log").open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=stderr,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        stderr.close()
        deadline = time.monotonic() + timeout
        for port in (self.port, self.tls_port):
            if port is not None:
                self._wait_listening(port, deadline, timeout)

    def _wait_listening(self, port: int, deadline: float, timeout: float) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {port} within {timeout} s:\n{self.logs()}")
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM): the broker saves its persistence file."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as in a crash or power loss."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        """Stop and start again on the same port with the current settings."""
        self.stop()
        self.start()

    def logs(self) -> str:
        """The broker's log and stderr so far (for assertion messages)."""
        text = ""
        for path in (self.workdir / "stderr.log", self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _passwd_tool() -> str:
    found = shutil.which("mosquitto_passwd")
    if found is None:
        raise MosquittoNotInstalled("mosquitto_passwd is missing: " + INSTALL_HINT)
    return found
