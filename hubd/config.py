"""hubd configuration: a TOML file plus ``HUBD_*`` environment overrides.

The file is named by ``--config`` or ``HUBD_CONFIG``. Environment variables override the file;
nested fields use ``__``, e.g. ``HUBD_MQTT__HOST=broker.example``, ``HUBD_MQTT__PASSWORD=...``,
``HUBD_LOCKS='{"front": "inside_turner"}'``. The secrets come that way, from hubd.env (hubctl
provision writes it): hubd.service's ``EnvironmentFile=`` puts it into hubd's environment, and
``hubd --env-file`` does the same by hand (hubd/envfile.py). Example file::

    hub_id = "hub-17"
    state_dir = "/var/lib/hubd"          # the state database: command journal, audit trail, outbox
    clock_skew_s = 5                     # tolerance for exp/nbf
    command_timeout_s = 30               # per lock operation
    bridge_wait_s = 5                    # a command waits this long for a link coming up
    max_validity_s = 300                 # longest exp - nbf a command may have
    status_socket = "/run/hubd/status.sock"  # hubctl status / doctor read the hub's health here

    [mqtt]
    host = "broker.example"
    port = 8883
    username = "hub-17"
    password = "secret"                  # better: HUBD_MQTT__PASSWORD
    protocol = "5"                       # or "3.1.1" (e.g. the demo's amqtt broker)
    tls = true
    ca_file = "/etc/hubd/ca.pem"         # optional; cert_file + key_file for client certificates

    [uplink]                             # how hubd reaches the broker (optional; docs/second-path.md)
    mode = "broadband"                   # broadband | lte (through the bridge's modem) | auto
    fallback_s = 60                      # auto: broker unreachable over broadband this long -> LTE
    probe_s = 120                        # auto, on LTE: how often broadband is tried again
    lte_keepalive_s = 240                # the MQTT keepalive over LTE (mqtt.keepalive otherwise)

    [serial]
    port = "/dev/ttyUSB0"
    baudrate = 115200
    link_key = "<64 hex digits>"         # better: HUBD_SERIAL__LINK_KEY (hubctl provision writes it
                                         # to hubd.env, and the same key to the bridge's bridge.json)

    [keys]                               # backend public keys by kid: PEM or raw base64url
    "backend-2025" = "uJX0yJ2Z3X1v9b1ZC0kQZ8b0h1s1mLZ2Jw2u7ZqkY3o"

    [locks]                              # each lock id this hub knows (none yet is fine), and its kind:
    front = "inside_turner"              #   inside_turner, in_cylinder, key_box, entrance_door
    keybox = "key_box"                   # (wire.lockkinds); an action the kind lacks is refused
                                         # hubd drives them itself through the bridge's Bluetooth
                                         # proxy (docs/ble-proxy.md), each from its pairing
                                         # (address, secret) in the state database, written by
                                         # hubctl pair, never in this file

    [bluetooth]                          # how hubd reaches the locks (optional; docs/direct-mode.md)
    via = "bridge"                       # "bridge": the bridge's Bluetooth proxy (default);
                                         # "adapter": the hub's own adapter (bleak on BlueZ)
    adapter = "hci0"                     # with via = "adapter" (default: BlueZ's default adapter)
    # simulated_radio = "/tmp/air/radio.sock"  # test benches only: the simulator's radio as the
                                         # hub's adapter (with via = "adapter")
    presence_s = 60                      # with via = "adapter": a lock heard unchanged is news
                                         # this often (absent_s must be longer)
    gatt_cache = true                    # with via = "bridge": a lock's GATT database kept
                                         # across connections (docs/ble-timing.md)

    [lock_timing]                        # hubd's lock driver (all optional; hubd.locks.Timings)
    connect_s = 3                        # connect_s, gatt_s, deadline_s, result_s, settle_s,
                                         # readback_extra_s, idle_s
    [dkey_timing]                        # the dKey's driver (all optional; hubd.locks.DkeyTimings)
    idle_s = 20                          # deadline_s, gatt_s, command_s, result_s, settle_s,
                                         # readback_s, idle_s, held_s (< 30: the lock's own
                                         # idle drop)
    [lock_upkeep]                        # its background work (all optional; hubd.locks.UpkeepTimings)
    poll_s = 1800                        # poll_s, news_gap_s, news_gap_max_s

    [visit]                              # a visit's door held (optional; docs/ble-timing.md)
    route = ["entrance", "front-door"]   # doors of [locks] in the order a visitor passes them
                                         # (default: none; hubctl provision --visit-route)
    hold_s = 120                         # a staff command's door opened (the next one's), or a
                                         # prepare accepted (its lock's, with or without a
                                         # route): the connection is held this long, or until
                                         # a command
    keepalive_s = 20                     # a read that moves nothing, this often (< 30: the
                                         # lock's own idle drop)
    daily_hold_s = 1800                  # a lock is held at most this long a day (UTC), its
                                         # battery's bound; then no hold, a prepare fails
                                         # daily_hold_spent

    [alarms]                             # safety alarms to the alarm centre (all optional)
    resident = "resident-208"            # who the centre should send help to (default: none)
    resend_s = 10                        # publish an unhandled alarm again after this (SCAIP: 5-20 s)
    deadline_s = 60                      # unhandled this long: overdue (logged, in the heartbeat)
    heartbeat_s = 60                     # hub -> centre heartbeat interval
    clock_s = 600                        # how often hubd sends the bridge its time
    keep_handled_days = 30               # handled alarms stay in the state database this long

    [battery]                            # battery warnings (all optional; docs/battery.md)
    hysteresis = 5                       # percentage points above a threshold to leave low/critical
    reminder_s = 86400                   # remind while low or critical (0: never)
    pendant = { low = 30, critical = 15 }    # per kind: low, critical, hysteresis, reminder_s
    base_unit = { low = 40, critical = 20 }  # defaults: locks 25/10, pendant 30/15,
                                             # base_unit 40/20, bridge 30/15

    [devices]                            # device health (all optional)
    refresh_s = 300                      # republish a reporting device's state at least this often
    tick_s = 5                           # how often availability and reminders are re-evaluated
    [devices.absent_s]                   # unavailable when not heard from for this long, per kind,
    inside_turner = 900                  # while the bridge gives no word (present) of its own; 0: never.
    base_unit = 30                       # Defaults: locks 900, base_unit 30 (3 x its 10 s heartbeat),
                                         # pendant 0 (follows its base unit); the bridge: its link

Bad values raise :class:`ConfigError` with one line naming the field and the fix.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, FilePath, PrivateAttr, SecretStr, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hubapi import signing, topics
from hubapi.models import DeviceKind
from hubd.devices import battery
from wire import frame, lockkinds

ENV_PREFIX = "HUBD_"
CONFIG_ENV = "HUBD_CONFIG"
#: Where hubd serves hubctl (status_socket's default); hubd.service's RuntimeDirectory= makes /run/hubd.
DEFAULT_STATUS_SOCKET = Path("/run/hubd/status.sock")
SOCKET_PATH_MAX = 107  # bytes of a unix socket's path: sun_path is 108 with its NUL

SegmentId = Annotated[str, StringConstraints(pattern=topics.SEGMENT_PATTERN)]
Kid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
LockKind = Literal[lockkinds.KINDS]  # type: ignore[valid-type]


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line for a human."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Section):
    """Broker connection."""

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, min_length=1, max_length=64)  # default: hubd-{hub_id}
    keepalive: int = Field(30, ge=5, le=3600)
    protocol: Literal["3.1.1", "5"] = "5"
    tls: bool = False
    ca_file: FilePath | None = None  # None with tls: the system's CAs
    cert_file: FilePath | None = None
    key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file/key_file are only used with tls = true: set tls = true")
        return self


class UplinkConfig(_Section):
    """How hubd reaches its broker: the home's broadband, the bridge's LTE modem, or broadband
    with LTE as the fallback (hubd/uplink.py; docs/second-path.md, "The uplink: hubd's side")."""

    mode: Literal["broadband", "lte", "auto"] = "broadband"
    fallback_s: float = Field(60.0, gt=0, le=86400)
    probe_s: float = Field(120.0, gt=0, le=86400)
    # The MQTT keepalive over LTE: an idle session costs a PINGREQ/PINGRESP (with TLS about 60 B
    # with the TCP/IP overhead each way) per keepalive, and the operators' NAT keeps an idle TCP
    # mapping for minutes, not hours; docs/second-path.md gives the figure's reasons.
    lte_keepalive_s: int = Field(240, ge=5, le=3600)


def _secret_of(secret: SecretStr, size: int, what: str) -> SecretStr:
    """A secret given as hex: ``size`` bytes, or a ValueError that never quotes it."""
    try:
        raw = bytes.fromhex(secret.get_secret_value())
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ValueError(f"must be {2 * size} hex digits, {what}")
    return secret


class SerialConfig(_Section):
    """USB serial link to the bridge."""

    port: str = "/dev/ttyUSB0"
    baudrate: int = Field(115200, gt=0, le=4_000_000)
    # Every frame on the link carries a tag made with it (wire/link.py); the bridge has the same
    # key in bridge.json's link.key.
    link_key: SecretStr

    @field_validator("link_key")
    @classmethod
    def _key_hex(cls, key: SecretStr) -> SecretStr:
        return _secret_of(key, frame.KEY_SIZE, "the key hubctl provision wrote to hubd.env and the bridge's bridge.json")

    @property
    def key(self) -> bytes:
        """The link key's bytes."""
        return bytes.fromhex(self.link_key.get_secret_value())


class AlarmsConfig(_Section):
    """Safety alarms: how hubd talks to the alarm centre (topics are fixed by hubapi.topics)."""

    resident: str | None = Field(None, min_length=1, max_length=128)
    resend_s: float = Field(10.0, ge=1, le=300)
    deadline_s: float = Field(60.0, ge=1, le=3600)
    heartbeat_s: float = Field(60.0, ge=1, le=86400)
    clock_s: float = Field(600.0, ge=10, le=86400)
    keep_handled_days: float = Field(30.0, ge=0, le=3650)


class BatteryKindConfig(_Section):
    """Warning thresholds of one device kind (percent, inclusive) and its reminder interval."""

    low: int = Field(ge=1, le=100)
    critical: int = Field(ge=0, le=99)
    hysteresis: int = Field(ge=0, le=50)
    reminder_s: float = Field(ge=0, le=30 * 86400)  # 0: no reminders

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            self.thresholds()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self

    def thresholds(self) -> battery.Thresholds:
        """As :class:`hubd.devices.battery.Thresholds` (raises ValueError when inconsistent)."""
        return battery.Thresholds(low=self.low, critical=self.critical, hysteresis=self.hysteresis,
                                  reminder_s=self.reminder_s)


def _kind_defaults(kind: DeviceKind) -> dict[str, Any]:
    default = battery.DEFAULT_THRESHOLDS[kind]
    return {"low": default.low, "critical": default.critical}


class BatteryConfig(_Section):
    """Battery warnings: thresholds per device kind; ``hysteresis`` and ``reminder_s`` here apply to
    every kind that does not set its own. A kind's table may give only what it changes."""

    hysteresis: int = Field(5, ge=0, le=50)
    reminder_s: float = Field(24 * 3600.0, ge=0, le=30 * 86400)
    inside_turner: BatteryKindConfig
    in_cylinder: BatteryKindConfig
    key_box: BatteryKindConfig
    entrance_door: BatteryKindConfig
    pendant: BatteryKindConfig
    base_unit: BatteryKindConfig
    bridge: BatteryKindConfig

    @model_validator(mode="before")
    @classmethod
    def _fill_kinds(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        shared = {"hysteresis": data.get("hysteresis", 5), "reminder_s": data.get("reminder_s", 24 * 3600.0)}
        filled = dict(data)
        for kind in DeviceKind:
            given = data.get(kind.value, {})
            if isinstance(given, dict):  # anything else is left for the field's own error
                filled[kind.value] = {**_kind_defaults(kind), **shared, **given}
        return filled

    def for_kind(self, kind: DeviceKind | str) -> battery.Thresholds:
        """The thresholds of ``kind``."""
        section: BatteryKindConfig = getattr(self, DeviceKind(kind).value)
        return section.thresholds()


class AbsentConfig(_Section):
    """Seconds without a report after which a device counts as unavailable, per kind (0: never by
    time). Used only while the bridge gives no word of its own on the device (``present``).

    The bridge has none: it is available exactly while its serial link is up. The pendant's default
    is 0: the unit's heartbeat carries the pendant's last battery and signal but not when the unit
    last heard it, so hubd judges it through its base unit instead.
    """

    inside_turner: float = Field(900.0, ge=0, le=7 * 86400)
    in_cylinder: float = Field(900.0, ge=0, le=7 * 86400)
    key_box: float = Field(900.0, ge=0, le=7 * 86400)
    entrance_door: float = Field(900.0, ge=0, le=7 * 86400)
    pendant: float = Field(0.0, ge=0, le=7 * 86400)
    base_unit: float = Field(30.0, ge=0, le=7 * 86400)  # 3 x the unit's 10 s heartbeat

    @model_validator(mode="before")
    @classmethod
    def _no_bridge(cls, data: Any) -> Any:
        if isinstance(data, dict) and DeviceKind.BRIDGE.value in data:
            raise ValueError("the bridge has no absent_s: it is available exactly while its serial link "
                             "is up; remove it")
        return data


class BluetoothConfig(_Section):
    """How hubd reaches the locks' radio (hubd.ble.radio): the bridge as its Bluetooth proxy, or
    the hub's own adapter ("direct mode", docs/direct-mode.md)."""

    via: Literal["bridge", "adapter"] = "bridge"
    adapter: str | None = Field(None, pattern=r"^hci[0-9]{1,2}$")  # BlueZ's name; None: its default
    # A test bench's simulated radio socket (simulator/radio.py) standing in for the adapter.
    simulated_radio: Path | None = None
    # With the adapter: a watched lock heard unchanged reaches the drivers this often, as the
    # bridge's proxy.presence_ms does through the proxy ([devices.absent_s] must be longer).
    presence_s: float = Field(60.0, ge=1, le=3600)
    # Through the bridge: keep each lock's GATT database across connections, so a reconnect
    # skips discovery (hubd.ble.gatt_cache; docs/ble-timing.md). On the adapter BlueZ caches.
    gatt_cache: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.via == "bridge" and (self.adapter is not None or self.simulated_radio is not None):
            raise ValueError("adapter and simulated_radio are for via = \"adapter\": set via, or "
                             "remove them")
        if self.adapter is not None and self.simulated_radio is not None:
            raise ValueError("give adapter (a real one) or simulated_radio (a test bench), not both")
        return self


class _Times(_Section):
    """A section of times in seconds, each left out (None) keeping its user's default, defined
    there only: :meth:`given` is what to pass on."""

    def given(self) -> dict[str, float]:
        """The times set, by name (a setting that is no time, as a route, is not one)."""
        return {name: value for name, value in self.model_dump().items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}


class LockTimingConfig(_Times):
    """hubd's lock driver's times in seconds (hubd.locks.Timings, docs/lock-protocol.md "Timing");
    one left out keeps the driver's default, defined there only."""

    connect_s: float | None = Field(None, gt=0, le=60)  # one connection attempt
    gatt_s: float | None = Field(None, gt=0, le=60)  # one GATT procedure, and a CHALLENGE's wait
    deadline_s: float | None = Field(None, gt=0, le=120)  # everything before the COMMAND write
    result_s: float | None = Field(None, gt=0, le=120)  # the RESULT after the write
    settle_s: float | None = Field(None, ge=0, le=120)  # a status read after a move may be old
    readback_extra_s: float | None = Field(None, ge=0, le=120)  # the read-back's own time
    idle_s: float | None = Field(None, ge=0, le=600)  # an unused connection is kept this long


class DkeyTimingConfig(_Times):
    """A dKey's driver's times in seconds (hubd.locks.DkeyTimings, docs/dkey.md "Timings"); one
    left out keeps the driver's default, defined there only."""

    deadline_s: float | None = Field(None, gt=0, le=120)  # connect, bond, authenticate, first
    gatt_s: float | None = Field(None, gt=0, le=60)  # one GATT request
    command_s: float | None = Field(None, gt=0, le=60)  # the library's unlock() or lock() call
    result_s: float | None = Field(None, gt=0, le=120)  # the write to the target state
    settle_s: float | None = Field(None, ge=0, le=120)  # a read right after a command may be old
    readback_s: float | None = Field(None, gt=0, le=120)  # an unknown fate's read-back, at least
    # An unused connection is kept this long: a visit's next command skips the handshake and a
    # turn by hand is heard; the lock itself drops a silent link at 30 s, and every second of
    # it costs the lock's battery.
    idle_s: float | None = Field(None, ge=0, le=30)
    # A visit's hold keeps a session this long after its last traffic (hubd.locks.visit): under
    # the lock's own drop at 30 s, by enough for a command begun at its end to be answered.
    held_s: float | None = Field(None, gt=0, lt=30)


class LockUpkeepConfig(_Times):
    """hubd's background work on its locks in seconds (hubd.locks.UpkeepTimings): polls, and reads
    of a lock's kept reports when its advert says there are some; one left out keeps the default."""

    poll_s: float | None = Field(None, ge=1, le=7 * 86400)  # each lock's state and battery
    news_gap_s: float | None = Field(None, ge=0.1, le=86400)  # reads for news, at most this often
    news_gap_max_s: float | None = Field(None, ge=0.1, le=86400)  # after reads that found nothing


class VisitConfig(_Times):
    """A visit's door held (hubd.locks.visit): the doors a visitor passes, in order, and how
    long and how the connection to the next one, or to a ``prepare``'s lock, is held; no route
    (the default): only a ``prepare`` holds one."""

    route: list[SegmentId] = Field(default_factory=list, max_length=8)
    # Left out: hubd.locks.visit.VisitRoute's defaults, defined there only.
    hold_s: float | None = Field(None, gt=0, le=600)
    keepalive_s: float | None = Field(None, gt=0, lt=30)  # under the lock's own 30 s idle drop
    daily_hold_s: float | None = Field(None, gt=0, le=86400)  # a lock held at most this a day

    @field_validator("route")
    @classmethod
    def _a_route(cls, route: list[str]) -> list[str]:
        if len(route) == 1:
            raise ValueError("a route is two doors or more, in the order a visitor passes "
                             "them, e.g. [\"entrance\", \"front-door\"] (or none)")
        if len(set(route)) != len(route):
            raise ValueError("a door is on the route once")
        return route


class AuditConfig(_Section):
    """The audit trail on the hub: the backend keeps the evidence; the hub keeps this much of it
    (entries not yet delivered are never pruned)."""

    keep_days: float = Field(365.0, ge=1, le=3650)


class DevicesConfig(_Section):
    """Device health: availability windows, how often state is republished and re-evaluated."""

    absent_s: AbsentConfig = AbsentConfig()
    refresh_s: float = Field(300.0, ge=1, le=86400)
    tick_s: float = Field(5.0, ge=0.1, le=60)

    def absent_for(self, kind: DeviceKind | str) -> float | None:
        """Seconds of silence after which a device of ``kind`` is unavailable (0: never by time;
        None: the bridge, which follows its link)."""
        kind = DeviceKind(kind)
        return None if kind is DeviceKind.BRIDGE else getattr(self.absent_s, kind.value)


class HubConfig(BaseSettings):
    """Everything hubd needs; see the module docstring for the file format."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    hub_id: SegmentId
    mqtt: MqttConfig = MqttConfig()
    uplink: UplinkConfig = UplinkConfig()
    serial: SerialConfig  # its link_key has no default: a missing one is named as serial.link_key
    alarms: AlarmsConfig = AlarmsConfig()
    battery: BatteryConfig = BatteryConfig()
    devices: DevicesConfig = DevicesConfig()
    audit: AuditConfig = AuditConfig()
    bluetooth: BluetoothConfig = BluetoothConfig()
    lock_timing: LockTimingConfig = LockTimingConfig()
    dkey_timing: DkeyTimingConfig = DkeyTimingConfig()
    lock_upkeep: LockUpkeepConfig = LockUpkeepConfig()
    visit: VisitConfig = VisitConfig()
    state_dir: Path
    keys: dict[Kid, str] = Field(min_length=1)
    # None until `hubctl pair` adds one; a resident may have only a safety alarm.
    locks: dict[SegmentId, LockKind] = Field(default_factory=dict)
    clock_skew_s: float = Field(5.0, ge=0, le=60)
    command_timeout_s: float = Field(30.0, gt=0, le=600)
    # A command that finds the bridge link down (a bridge rebooting, hubd just started) waits this
    # long for it before failing unsent with bridge_unavailable; never past the command's exp.
    bridge_wait_s: float = Field(5.0, ge=0, le=60)
    max_validity_s: int = Field(300, gt=0, le=3600)
    queue_size: int = Field(8, ge=1, le=100)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # hubctl status / doctor read the health snapshot here (hubd/technician/status_socket.py); none: no socket.
    status_socket: Path | None = DEFAULT_STATUS_SOCKET
    _upgrade_notes: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init arguments; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="before")
    @classmethod
    def _no_lock_links(cls, data: Any) -> Any:
        if (isinstance(data, dict) and "lock_links" in data) or ENV_PREFIX + "LOCK_LINKS" in os.environ:
            raise ValueError("lock_links is gone: hubd keeps each lock's address and secret in its "
                             "state database, from hubctl pair; remove [lock_links] (and "
                             "HUBD_LOCK_LINKS) and pair the locks with hubctl pair")
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _lock_driver_gone(cls, data: Any, handler: Any) -> Any:
        # hubd always drives the locks (the firmware has no lock drivers any more). A hubd.toml
        # that chose hubd's drivers keeps working, with a line in the log; one that chose the
        # bridge's cannot: its locks were paired into the bridge, whose secrets hubd never had.
        chosen = os.environ.get(ENV_PREFIX + "LOCK_DRIVER")
        if isinstance(data, dict) and "lock_driver" in data:
            data = dict(data)
            chosen = data.pop("lock_driver") if chosen is None else chosen
        if chosen is not None and chosen != "hubd":
            raise ValueError(f"lock_driver = {chosen!r} is gone: hubd drives every lock itself "
                             "through the bridge's Bluetooth proxy; remove lock_driver (and "
                             "HUBD_LOCK_DRIVER), flash this release (hubctl flash) and pair each "
                             "lock again with hubctl pair (docs/technician-guide.md, Upgrading)")
        config = handler(data)
        if chosen is not None:
            config._upgrade_notes.append("lock_driver is gone (hubd always drives the locks): "
                                         "remove the line from hubd.toml")
        return config

    @model_validator(mode="before")
    @classmethod
    def _serial_section(cls, data: Any) -> Any:
        if isinstance(data, dict) and "serial" not in data:
            data = {**data, "serial": {}}
        return data

    @model_validator(mode="after")
    def _route_of_locks(self) -> Self:
        unknown = [lock for lock in self.visit.route if lock not in self.locks]
        if unknown:
            raise ValueError(f"visit.route names {', '.join(map(repr, unknown))}, which [locks] "
                             "does not: give the route's doors as lock ids of [locks]")
        return self

    @field_validator("keys")
    @classmethod
    def _keys_readable(cls, keys: dict[str, str]) -> dict[str, str]:
        for kid, text in keys.items():
            try:
                signing.load_public_key(text)
            except signing.KeyFormatError as exc:
                raise ValueError(f"key {kid!r}: {exc}; give an Ed25519 public key as PEM or raw base64url") from None
        return keys

    @field_validator("status_socket")
    @classmethod
    def _socket_path_fits(cls, path: Path | None) -> Path | None:
        return None if path is None else _socket_path(path)

    @field_validator("locks", mode="before")
    @classmethod
    def _locks_have_kinds(cls, locks: Any) -> Any:
        if isinstance(locks, list):
            kinds = ", ".join(get_args(LockKind))
            raise ValueError(f"give each lock its kind as a table, e.g. [locks] front = \"inside_turner\" "
                             f"(kinds: {kinds})")
        return locks

    @property
    def upgrade_notes(self) -> list[str]:
        """Settings of an older release this config still has, accepted and to be removed:
        hubd logs each at start."""
        return list(self._upgrade_notes)

    @property
    def client_id(self) -> str:
        """The MQTT client id: configured, or ``hubd-{hub_id}``."""
        return self.mqtt.client_id or f"hubd-{self.hub_id}"

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The backend's public keys by kid."""
        return {kid: signing.load_public_key(text) for kid, text in self.keys.items()}


def _socket_path(path: Path) -> Path:
    """``path`` if a unix socket can be bound there, else ValueError saying why."""
    if not path.is_absolute():
        raise ValueError("give an absolute path, e.g. /run/hubd/status.sock")
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ValueError(f"a unix socket path is at most {SOCKET_PATH_MAX} bytes: choose a shorter one")
    if path.name in ("", ".", ".."):
        raise ValueError("name the socket file itself, e.g. /run/hubd/status.sock")
    return path


def status_socket_in(path: Path) -> Path | None:
    """hubd.toml's ``status_socket``, None when the file leaves it out (hubd then serves on
    :data:`DEFAULT_STATUS_SOCKET`): for hubctl, which finds hubd by it. Only this setting is read,
    so no secret is needed (hubd.env is root's; hubctl status runs as a member of group hubd).
    Raises ConfigError with one line."""
    value = _read_toml(path).get("status_socket")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"status_socket in {path} is not a path (got {value!r}): give one, e.g. "
                          "status_socket = \"/run/hubd/status.sock\"")
    try:
        return _socket_path(Path(value))
    except ValueError as exc:
        raise ConfigError(f"status_socket in {path}: {exc} (got {value!r})") from None


def load_config(path: str | Path | None = None) -> HubConfig:
    """Read the TOML file (``path``, else ``$HUBD_CONFIG``, else none) and apply ``HUBD_*`` overrides.

    Raises ConfigError with a one-line message.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {} if path is None else _read_toml(Path(path))
    source = str(path) if path is not None else "the config file"
    try:
        return HubConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: pass --config PATH or set {CONFIG_ENV}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): is it the right "
                          "file? hubctl provision writes one") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests arrays or tables too deeply to be a hub's config") from None


# Settings hubctl provision writes to hubd.env, never to hubd.toml (hubctl/provision.py).
_IN_ENV_FILE = frozenset({"serial.link_key"})


def _explain(exc: ValidationError, source: str) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc) or "config"
        env = ENV_PREFIX + "__".join(part.upper() for part in loc[:2]) if loc else ENV_PREFIX + "..."
        if error["type"] == "missing" and field in _IN_ENV_FILE:
            parts.append(f"{field} is missing: it is a secret, {env} in hubd.env beside hubd.toml "
                         "(hubctl provision writes it; hubd.service's EnvironmentFile= reads it; "
                         "started by hand: hubd --env-file /etc/hubd/hubd.env)")
        elif error["type"] == "missing":
            parts.append(f"{field} is missing: set it in {source} or {env}")
        elif error["type"] == "extra_forbidden":
            parts.append(f"{field} is not a known setting: remove it from {source} (typo?)")
        else:
            message = error["msg"].removeprefix("Value error, ")
            got = error.get("input")
            secret = (field == "keys" or "password" in field or field.endswith("key")
                      or field.endswith("secret"))
            shown = "" if secret or isinstance(got, dict) else f" (got {got!r})"
            if not loc:  # the whole file's: the message names the fix
                parts.append(message)
            else:
                parts.append(f"{field}: {message}{shown}: fix it in {source} or {env}")
    return "invalid configuration: " + "; ".join(parts)
