"""The uplink's policy: which path hubd's broker connection takes, the home's broadband or the
bridge's LTE modem (hubd/link/uplink.py), and when it changes.

    uplink = Uplink(config.uplink, config.mqtt, channel, hub_id=config.hub_id)
    mqtt = HubMqtt(config.mqtt, hub_id=..., client_id=..., uplink=uplink)  # asks uplink each connect
    supervisor.start("uplink", uplink.run)      # auto: fallback and probes
    uplink.status()                             # hubapi.models.UplinkStatus (health, hubctl status)
    await uplink.probe_lte()                    # hubapi.models.UplinkProbe (hubctl doctor)

hubd.toml's ``[uplink] mode``:

- ``broadband``: always the home's network (hubd before the uplink);
- ``lte``: always the bridge's modem (a home without broadband);
- ``auto``: broadband; when the broker has been unreachable over it for ``fallback_s``, LTE;
  while on LTE, broadband is tried every ``probe_s`` (a TCP connection to the broker, and its
  TLS handshake when ``mqtt.tls``) and the connection moves back when it answers.

A move ends the current connection and paho connects again over the other path (paho asks
:meth:`Uplink.connect_path` at each connect). Nothing is lost in a move: hubd's MQTT 5 session
outlives it (hubd/mqtt.py: SESSION_EXPIRY_S), so commands published meanwhile are delivered on
reconnect and paho sends again every QoS 1 publish not acknowledged; the audit entries and
alarms wait in their durable outboxes until the broker acknowledged them. The retained
``online`` says which path the session took (hubapi.models.Online.uplink).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from typing import Any, Protocol

from hubapi.models import LteBytes as LteBytesModel, UplinkProbe, UplinkStatus
from hubd.config import MqttConfig, UplinkConfig
from hubd.link.uplink import Channel, UplinkError

log = logging.getLogger(__name__)

BROADBAND = "broadband"
LTE = "lte"
#: How long an open through the bridge may take: attaching to the network and a TCP connect over
#: LTE-M can take tens of seconds (the BG95's own QIOPEN timeout is 150 s; the firmware's shorter).
OPEN_TIMEOUT_S = 60.0
#: A broadband probe's TCP connect and TLS handshake, each.
PROBE_TIMEOUT_S = 5.0
#: The LTE probe's whole login (open, TLS, CONNECT, CONNACK).
LOGIN_TIMEOUT_S = 60.0


class _Mqtt(Protocol):
    @property
    def connected(self) -> bool: ...


class Uplink:
    """The path policy and its state (see the module docstring)."""

    def __init__(self, config: UplinkConfig, mqtt: MqttConfig, channel: Channel | None, *,
                 hub_id: str) -> None:
        self.config = config
        self._mqtt_config = mqtt
        self.channel = channel
        self._hub = hub_id
        self.path = LTE if config.mode == LTE else BROADBAND
        self.since = time.time()
        self.last_lte_login: float | None = None
        self._broker_refused = False
        self._refused_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mqtt: _Mqtt | None = None
        self._probes = 0  # doctor's LTE probes under way (each holds the channel)

    def bind(self, mqtt: _Mqtt) -> None:
        """The connection whose path this decides (HubMqtt.start calls it, in the event loop)."""
        self._mqtt = mqtt
        self._loop = asyncio.get_running_loop()

    # --- paho's thread ---------------------------------------------------------------------------

    def connect_path(self) -> str:
        """The path for the connect paho is making now."""
        return self.path

    def lte_socket(self, host: str, port: int) -> socket.socket:
        """paho's socket for a connect over LTE (called in paho's thread): the channel's end of a
        stream opened to the broker through the bridge. Raises UplinkError (an OSError: paho
        counts a failed connect and tries again)."""
        if self.channel is None or self._loop is None:
            raise UplinkError("no_modem", "hubd has no bridge to reach the broker through")
        future = asyncio.run_coroutine_threadsafe(self.channel.open(host, port, OPEN_TIMEOUT_S), self._loop)
        try:
            return future.result(OPEN_TIMEOUT_S + 5)
        except TimeoutError:
            future.cancel()
            raise UplinkError("timeout", "the event loop did not answer") from None
        except OSError:
            raise
        except Exception as exc:  # a bug must not end paho's thread (it would never reconnect)
            log.exception("opening the LTE uplink failed")
            raise UplinkError("error", type(exc).__name__) from exc

    # --- the event loop --------------------------------------------------------------------------

    def logged_in(self, path: str) -> None:
        """The broker accepted a connect over ``path``."""
        self._broker_refused = False
        if path == LTE:
            self.last_lte_login = time.time()

    def login_refused(self) -> None:
        """The broker refused a connect (its CONNACK): the last error until a login succeeds."""
        self._broker_refused = True
        self._refused_at = time.time()

    def status(self) -> UplinkStatus:
        last_error = "broker" if self._broker_refused else (
            self.channel.last_error if self.channel is not None else None)
        last_error_at = self._refused_at if self._broker_refused else (
            self.channel.last_error_at if self.channel is not None else None)
        day, up, down = self.channel.counter.today() if self.channel is not None else (
            time.strftime("%Y-%m-%d", time.gmtime()), 0, 0)
        return UplinkStatus(mode=self.config.mode, path=self.path, since=self.since,  # type: ignore[arg-type]
                            lte_today=LteBytesModel(day=day, up=up, down=down),
                            last_lte_login=self.last_lte_login, last_error=last_error,
                            last_error_at=last_error_at)

    def switch(self, path: str) -> None:
        """Take ``path`` from now on; a connection over LTE ends (paho connects again over the
        new path). A connection over broadband is not ended here: it is failing (auto moves to
        LTE only after the broker was unreachable over it)."""
        if path == self.path:
            return
        log.warning("uplink: moving the broker connection from %s to %s", self.path, path,
                    extra={"uplink": path})
        self.path = path
        self.since = time.time()
        if path == BROADBAND and self.channel is not None:
            self.channel.close()

    async def run(self) -> None:
        """mode auto: move to LTE after fallback_s unreachable over broadband, back when a probe
        of broadband succeeds (every probe_s on LTE). In the other modes it only waits (the path
        never changes), so the supervisor has nothing to restart."""
        if self.config.mode != "auto":
            await asyncio.Event().wait()
        assert self._mqtt is not None, "bind() first (HubMqtt.start)"
        tick = min(1.0, self.config.fallback_s / 4, self.config.probe_s / 4)
        last_ok = time.monotonic()
        last_probe = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.path == BROADBAND:
                if self._mqtt.connected:
                    last_ok = now
                elif now - last_ok >= self.config.fallback_s and not self._probes:
                    # Not while doctor's probe holds the channel: its close would end the
                    # session just opened; the move waits for the probe (seconds).
                    self.switch(LTE)
                    last_probe = now
            elif now - last_probe >= self.config.probe_s:
                if await self.broadband_works():
                    self.switch(BROADBAND)
                    last_ok = time.monotonic()
                last_probe = time.monotonic()

    async def broadband_works(self) -> bool:
        """Whether the broker answers over the home's network: a TCP connection, and its TLS
        handshake (the broker's certificate checked against its name) when mqtt.tls."""
        c = self._mqtt_config
        tls = _tls_context(c) if c.tls else None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
                _, writer = await asyncio.open_connection(
                    c.host, c.port, ssl=tls, server_hostname=c.host if tls else None,
                    ssl_handshake_timeout=PROBE_TIMEOUT_S if tls else None)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("uplink: broadband probe of %s:%d failed: %s", c.host, c.port, str(exc) or type(exc).__name__)
            return False
        writer.close()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        return True

    async def probe_lte(self, timeout: float = LOGIN_TIMEOUT_S) -> UplinkProbe:
        """A broker login over LTE, for hubctl doctor: on LTE with a live session, that session is
        the proof; otherwise an MQTT CONNECT/CONNACK (client id ``<hub>-probe``, the hub's own
        credentials and TLS) through a channel opened for it and then closed. On LTE without a
        session no probe is made (the channel carries one stream: paho is trying it)."""
        started = time.monotonic()

        def took() -> float:
            return round(time.monotonic() - started, 3)

        if self.path == LTE:
            live = self._mqtt is not None and self._mqtt.connected
            error = None if live else f"no broker session over LTE now (last error: {self.status().last_error})"
            return UplinkProbe(ok=live, how="live", error=error, took_s=took())
        if self.channel is None:
            return UplinkProbe(ok=False, how="probe", error="no bridge", took_s=took())
        self._loop = asyncio.get_running_loop()
        self._probes += 1
        try:
            error = await asyncio.to_thread(self._login, timeout)
        finally:
            self.channel.close()
            self._probes -= 1
        if error is None:
            self.last_lte_login = time.time()
        return UplinkProbe(ok=error is None, how="probe", error=error, took_s=took())

    def _login(self, timeout: float) -> str | None:
        # In a worker thread: a paho client of its own whose socket is the channel's.
        from hubd.mqtt import new_client  # hubd.mqtt imports this module

        connacked = threading.Event()
        result: dict[str, Any] = {}

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            result["rc"] = reason_code
            connacked.set()

        c = self._mqtt_config
        client = new_client(c, f"{self._hub}-probe", lambda: self.lte_socket(c.host, c.port))
        client.on_connect = on_connect
        deadline = time.monotonic() + timeout
        try:
            client.connect(c.host, c.port, keepalive=self.config.lte_keepalive_s)
            while not connacked.is_set() and time.monotonic() < deadline:
                client.loop(timeout=0.2)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:128]
        finally:
            if connacked.is_set():
                client.disconnect()
                client.loop(timeout=0.2)
        if not connacked.is_set():
            return f"no CONNACK within {timeout:g} s"
        rc = result["rc"]
        if getattr(rc, "is_failure", False):
            return f"the broker refused the login: {rc}"[:128]
        return None


def _tls_context(c: MqttConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
    if c.cert_file and c.key_file:
        context.load_cert_chain(str(c.cert_file), str(c.key_file))
    return context
