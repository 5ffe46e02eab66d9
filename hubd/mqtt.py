"""The hub's MQTT connection: paho-mqtt 2.x in its own thread, handed over to asyncio.

- Connects in the background and reconnects by itself (backoff 1..8 s); on every connect it
  subscribes to each topic of its routes (QoS 1) and publishes ``online`` (retained).
- **Routes**: the one table of what hubd takes from the broker: topic -> input surface -> handler
  (:class:`Route`, registered with :meth:`HubMqtt.route` before :meth:`HubMqtt.start`). The same
  table subscribes and dispatches (:meth:`HubMqtt.dispatch`): each message goes to its topic's
  handler inside the surface's guard (hubd/inputs.py), and a message on any other topic is
  counted and logged, never handed to a handler.
- :meth:`HubMqtt.publish` hands a message to paho (QoS 1, queued while disconnected);
  :meth:`HubMqtt.publish_acked` waits for the broker's PUBACK (the durable outbox needs that).
- Its last will publishes ``offline`` (retained) when the connection dies; :meth:`HubMqtt.stop`
  publishes it explicitly, since a clean disconnect suppresses the will.
- TCP_NODELAY is set in ``on_socket_open``, so every reconnect's TCP socket gets it too (the
  LTE channel's socketpair has no Nagle to turn off).
- MQTT 5 or 3.1.1 (``mqtt.protocol``). With 5 the session outlives short drops, so commands sent
  during a blip still arrive (and are then checked for expiry like any other); each process starts
  with a clean session. With 3.1.1 every connect is a clean session.

- **Uplink** (hubd/uplink.py): at each connect paho asks the policy for the path; over LTE its
  socket is the channel's (hubd/link/uplink.py), handed over at paho's
  ``Client._create_socket_connection`` (:class:`_Client`), so paho's own TLS wraps it (the
  broker's certificate is checked against ``mqtt.host``) and MQTT and TLS run end to end through
  the bridge's modem; the keepalive is then ``uplink.lte_keepalive_s``. The retained ``online``
  says the path.

paho's callbacks run in paho's thread and only call ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from hubapi import topics
from hubapi.client import set_nodelay
from hubapi.models import Online
from hubd import inputs
from hubd.config import MqttConfig
from hubd.store.outbox import PublishFailed
from hubd.uplink import BROADBAND, LTE, Uplink

log = logging.getLogger(__name__)

#: Largest message hubd takes; anything larger is refused unread (commands are far smaller).
MAX_PACKET_BYTES = 16 * 1024
#: How long a v5 session survives a dropped connection.
SESSION_EXPIRY_S = 300
#: Outgoing QoS 1 messages held while disconnected; beyond that paho refuses new ones.
MAX_QUEUED = 1000
RECONNECT_MAX_S = 8  # the longest wait between reconnect attempts
#: The refusal reason of a message the full inbox could not take (a flood outran hubd).
DROPPED = "dropped"


class _Client(paho.Client):
    """paho's client whose connection may be given to it: ``socket_for()`` returns a connected
    socket (the LTE channel's) or None for paho's own TCP connection. paho 2.x makes its TCP
    connection in ``_create_socket_connection`` and wraps what it returns in its TLS
    (tests/hubd/test_mqtt_paths.py fails if a paho release moves that seam)."""

    socket_for: Callable[[], socket.socket | None] | None = None

    def _create_socket_connection(self) -> socket.socket:
        given = self.socket_for() if self.socket_for is not None else None
        return given if given is not None else super()._create_socket_connection()


def new_client(config: MqttConfig, client_id: str, socket_for: Callable[[], socket.socket | None]) -> _Client:
    """A client as hubd's is made (protocol, credentials, TLS) whose connection is
    ``socket_for()``'s: hubd's own (:class:`HubMqtt`) and a one-off login's
    (hubd.uplink.Uplink.probe_lte)."""
    v5 = config.protocol == "5"
    client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                     protocol=paho.MQTTv5 if v5 else paho.MQTTv311, clean_session=None if v5 else True)
    if config.username is not None:
        client.username_pw_set(
            config.username, config.password.get_secret_value() if config.password is not None else None
        )
    if config.tls:
        client.tls_set(
            ca_certs=str(config.ca_file) if config.ca_file else None,
            certfile=str(config.cert_file) if config.cert_file else None,
            keyfile=str(config.key_file) if config.key_file else None,
        )
    client.socket_for = socket_for
    return client


@dataclass(frozen=True)
class Inbound:
    """A message received from the broker."""

    topic: str
    payload: bytes
    retain: bool
    at: float = 0.0  # Unix time it arrived from the broker (for the per-hop benchmark)


@dataclass(frozen=True)
class Route:
    """What hubd does with messages on ``topic``: ``handler(message)`` returns None when it took
    the message, else why it refused it (counted under ``surface``, a hubd.inputs surface)."""

    topic: str
    surface: str
    handler: Callable[[Inbound], str | None]


class HubMqtt:
    """One hub's connection to the broker.

    ``publish`` is safe to call at any time (QoS 1, queued by paho while disconnected); received
    messages wait for :meth:`dispatch`, at most ``inbox_size`` of them (more are dropped and
    logged, and their senders time out).
    """

    def __init__(self, config: MqttConfig, *, hub_id: str, client_id: str, inbox_size: int = 256,
                 uplink: Uplink | None = None) -> None:
        self._config = config
        self._uplink = uplink
        self._path = BROADBAND  # the path of the connection paho made last (paho's thread)
        self._hub_id = hub_id
        self._v5 = config.protocol == "5"
        self._routes: dict[str, Route] = {}
        self._online_topic = topics.online(hub_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue(inbox_size)
        self._guard = inputs.Inputs()  # dispatch()'s, once it runs: counts what the inbox drops
        self._connected = asyncio.Event()
        self._on_connected: list[Callable[[], None]] = []
        # PUBACK bookkeeping: mid -> future (awaited) or None (nobody waits). An ack can arrive
        # before publish() returns the mid; it then waits in _early until the mid is registered.
        # paho calls on_publish holding its own lock, so ours is never held across paho calls.
        self._ack_lock = threading.Lock()
        self._acks: dict[int, asyncio.Future[Any] | None] = {}
        self._early: dict[int, Any] = {}

        client = new_client(config, client_id, self._socket_for)
        client.will_set(self._online_topic, _presence(hub_id, "offline"), qos=1, retain=True)
        # Capped low: alarms held through a broker outage go out within seconds of its return (the
        # alarm benchmark saw 25 s with a 30 s cap); a few thousand hubs retrying every 8 s is
        # little load for a broker.
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_socket_open = _nodelay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the event loop each time a broker session is up (the first and
        every reconnect): what must be retained is published again then, because a message
        published before the first CONNACK can be lost (seen: a device's "available" published
        3 ms before the connection was up never became the retained state)."""
        self._on_connected.append(callback)

    def route(self, *routes: Route) -> None:
        """Take messages on each route's topic (call before :meth:`start`)."""
        for r in routes:
            self._routes[r.topic] = r

    @property
    def connected(self) -> bool:
        """Whether the broker session is up right now."""
        return self._client.is_connected()

    @property
    def path(self) -> str:
        """The path (hubd.uplink.BROADBAND or LTE) of the connection made last."""
        return self._path

    def _socket_for(self) -> socket.socket | None:
        # paho's thread, at each connect: the policy's path; over LTE the channel's socket and the
        # LTE keepalive (paho sends self._keepalive in the CONNECT it writes next).
        path = self._uplink.connect_path() if self._uplink is not None else BROADBAND
        self._path = path
        if path != LTE:
            self._client._keepalive = self._config.keepalive
            return None
        assert self._uplink is not None
        self._client._keepalive = self._uplink.config.lte_keepalive_s
        return self._uplink.lte_socket(self._config.host, self._config.port)

    async def start(self) -> None:
        """Start connecting in the background (returns at once; see :meth:`wait_connected`)."""
        self._loop = asyncio.get_running_loop()
        if self._uplink is not None:
            self._uplink.bind(self)
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            # No MaximumPacketSize: Mosquitto 2.0.11 keeps a message larger than a client's maximum
            # in that client's in-flight window, unsent and never acknowledged, and after 20 of them
            # sends the client nothing more (measured: twenty 20 kB publishes on a hub's command
            # topic cut hubd off). hubd takes every size and refuses what exceeds
            # MAX_PACKET_BYTES itself; the broker's message_size_limit bounds it before that.
        self._client.connect_async(
            self._config.host,
            self._config.port,
            self._config.keepalive,
            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the broker accepted the connection (raises TimeoutError)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when a cancel
        # arrives just as its awaitable completes, and the cancelled task would run on.
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def dispatch(self, guard: inputs.Inputs) -> None:
        """Hand each received message to its route's handler, in arrival order, forever; one
        message at a time, inside ``guard`` (nothing a message does ends this loop)."""
        self._guard = guard
        while True:
            message = await self._inbox.get()
            r = self._routes.get(message.topic)
            if r is None:
                guard.seen[inputs.UNKNOWN_TOPICS] += 1
                guard.refuse(inputs.UNKNOWN_TOPICS, "unrouted", f"{message.topic[:80]}: {message.payload[:40]!r}")
            elif len(message.payload) > MAX_PACKET_BYTES:  # a 3.1.1 broker does not enforce ours
                guard.seen[r.surface] += 1
                guard.refuse(r.surface, "too_large", message.payload)
            else:
                guard.guard(r.surface, r.handler, message, shown_input=message.payload)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1; paho delivers it once connected."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.error("publish to %s dropped: %s", topic, paho.error_string(info.rc))
            return
        self._register_ack(info.mid, None)

    async def publish_acked(self, topic: str, payload: bytes, timeout: float, *, retain: bool = False) -> None:
        """Publish at QoS 1 (retained with ``retain``) and return once the broker acknowledged it.

        Raises :class:`hubd.store.outbox.PublishFailed` when paho cannot take it, the broker refuses it
        (MQTT 5 reason code) or no PUBACK arrives within ``timeout`` seconds.
        """
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise PublishFailed(paho.error_string(info.rc))
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._register_ack(info.mid, future)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see wait_connected
                reason_code = await future
        except TimeoutError:
            with self._ack_lock:
                if self._acks.get(info.mid) is future:
                    self._acks[info.mid] = None  # a late PUBACK is dropped quietly
            raise PublishFailed(f"no PUBACK within {timeout:.0f} s") from None
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            raise PublishFailed(f"broker refused it: {reason_code}")

    def _register_ack(self, mid: int, future: asyncio.Future[Any] | None) -> None:
        with self._ack_lock:
            if mid in self._early:
                result = self._early.pop(mid)
                if future is not None:
                    future.set_result(result)
            else:
                self._acks[mid] = future

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained), disconnect and stop paho's thread."""
        if self._client.is_connected():
            info = self._client.publish(self._online_topic, _presence(self._hub_id, "offline"), qos=1, retain=True)
            self._register_ack(info.mid, None)
            try:
                await asyncio.to_thread(info.wait_for_publish, timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline state not confirmed by the broker: %s", exc)
        self._client.disconnect()
        if self._uplink is not None and self._uplink.channel is not None:
            self._uplink.channel.stop_opening()  # paho's thread may wait in an open over LTE
        await asyncio.to_thread(self._client.loop_stop)
        if self._uplink is not None and self._uplink.channel is not None:
            self._uplink.channel.close()  # paho has stopped: its stream goes too
        self._connected.clear()

    # paho callbacks (paho's thread)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        assert self._loop is not None
        path = self._path
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            if self._uplink is not None:
                self._loop.call_soon_threadsafe(self._uplink.login_refused)
            return
        log.info("connected to %s:%s (MQTT %s) over %s", self._config.host, self._config.port,
                 self._config.protocol, path, extra={"uplink": path})
        for topic in self._routes:
            if self._v5:
                # Keep the retain flag as published, so a retained command is seen as one even live.
                client.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
            else:
                # 3.1.1 brokers clear the flag on live delivery; a retained command is still refused
                # whenever it is replayed on (re)subscription, and its id cannot run twice.
                client.subscribe(topic, qos=1)
        self._drop_stale_presence(client)
        info = client.publish(self._online_topic, _presence(self._hub_id, "online", time.time(), path),
                              qos=1, retain=True)
        self._register_ack(info.mid, None)
        if self._uplink is not None:
            self._loop.call_soon_threadsafe(self._uplink.logged_in, path)
        self._loop.call_soon_threadsafe(self._now_connected)

    def _drop_stale_presence(self, client: paho.Client) -> None:
        """Forget an ``online`` an earlier connection published and never had acknowledged.

        paho sends every such QoS 1 publish again once ``on_connect`` returns, after what
        on_connect published: a stale ``online`` would reach the broker after this connection's
        and stay retained, saying the old path (seen: after auto's move back to broadband the
        retained online said ``lte``, its PUBACK lost with the LTE stream). This connection's
        ``online`` is the truth. paho's queue (``_out_messages`` under ``_out_message_mutex``,
        paho 2.x) is private: tests/hubd/test_mqtt_presence.py fails if a release moves it."""
        with client._out_message_mutex:
            stale = [mid for mid, m in client._out_messages.items() if m.topic == self._online_topic]
            for mid in stale:
                del client._out_messages[mid]
        with self._ack_lock:
            for mid in stale:
                self._acks.pop(mid, None)

    def _now_connected(self) -> None:  # in the event loop
        self._connected.set()
        for callback in list(self._on_connected):
            try:
                callback()
            except Exception:  # one listener's bug must not keep the others from the news
                log.exception("a connected listener raised")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("cannot reach broker %s:%s; retrying", self._config.host, self._config.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        log.warning("disconnected from broker: %s", reason_code)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._ack_lock:
            if mid not in self._acks:
                if len(self._early) > MAX_QUEUED:  # stray acks (e.g. after a timeout): keep it bounded
                    self._early.clear()
                self._early[mid] = reason_code if self._v5 else None
                return
            future = self._acks.pop(mid)
        if future is not None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, future, reason_code if self._v5 else None)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, Inbound(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def _deliver(self, message: Inbound) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            # Counted under its surface's "dropped" (hubd.inputs logs a line per 10 s, not each).
            r = self._routes.get(message.topic)
            surface = r.surface if r is not None else inputs.UNKNOWN_TOPICS
            self._guard.seen[surface] += 1
            self._guard.refuse(surface, DROPPED, f"inbox full: {message.topic[:80]}")


def _nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    # TCP_NODELAY on a TCP socket (broadband); the LTE channel's socketpair end has no Nagle
    # (the bridge's link frames what it is given at once).
    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        set_nodelay(client, userdata, sock)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _presence(hub_id: str, status: str, at: float | None = None, uplink: str | None = None) -> bytes:
    return Online(hub=hub_id, status=status, at=at, uplink=uplink).model_dump_json().encode()  # type: ignore[arg-type]

