"""hub-sim as a technician's bench: a provisioned hub's other end, from the files ``hubctl
provision`` wrote, so that every step of docs/technician-guide.md can be walked on a laptop.

    bench = Bench.from_files(Path("~/bench/etc/bridge.json"), hubd_toml=Path(".../hubd.toml"))
    await bench.start()
    bench.home.port                  # the bridge's serial port (hubd.toml's [serial] port links to it)
    bench.press()                    # the resident presses the alarm unit's pendant
    await bench.stop()

What the bench has, each part a flag away (hub-sim's ``--no-alarm-unit``, ``--no-lte``,
``--no-centre``, ``--locks``):

- **the bridge**, the real firmware booted with the provisioned bridge.json as it is: its link
  key, link UART and speed, its alarm unit's UART and serial, its ``lte`` section;
- **unpaired locks of each kind** (:data:`BENCH_LOCKS`): the reference protocol's four kinds in
  pairing mode, each with the setup key its label shows (:func:`setup_key`: fixed per address,
  as a factory prints it), and a dKey fresh from the box, its activation window open, its code
  :data:`BENCH_ACTIVATION_CODE`;
- **the safety alarm unit**, carrying the serial bridge.json pins (the label's, ``hubctl provision
  --alarm-unit-serial``), so the bridge takes its frames;
- **the LTE modem** on the bridge's LTE UART; its network (simulator/lte_network.py) routes
  bridge.json's DC-09 receiver (``lte.host:port``, a name no simulated DNS knows) to the bench's
  receiver on loopback, and hubd.toml's broker to the broker, as an operator's network reaches
  both;
- **the reference alarm centre** (simulator/alarm_centre.py): its DC-09 receiver knows the
  provisioned account and AES key, its MQTT side logs in to the broker hubd.toml names, with
  hubd's own login (hubd.toml and hubd.env, read as ``hubd --env-file`` reads them,
  :func:`read_hubd_config`) unless given its own.

A part left out of bridge.json is left out of the bench; a part turned off while bridge.json
has its section is unplugged (its UART has nothing on its pins): the doctor must see it missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubctl.bundle import firmware_config
from simulator.alarm_centre import AlarmCentre
from simulator.alarm_unit import AlarmUnit
from simulator.dkey import DKeyLock
from simulator.home import DKEY_ADDRESS, SimulatedHome, new_dkey, unpaired_lock
from simulator.locks import (
    EntranceDoorLock,
    InCylinderLock,
    InsideTurnerLock,
    KeyBoxLock,
    ReferenceProtocolLock,
)
from simulator.lte_network import Network
from simulator.ports import free_port
from wire import alarms, lockkinds

if TYPE_CHECKING:
    from hubd.config import HubConfig

DKEY = lockkinds.DKEY
#: The bench's locks by kind: (the lock's class, its address). The simulator calls each by its
#: kind; hubd calls it what ``hubctl pair --name`` says.
BENCH_LOCKS: dict[str, tuple[type[ReferenceProtocolLock], str]] = {
    lockkinds.IN_CYLINDER: (InCylinderLock, "C0:FF:EE:00:00:11"),
    lockkinds.INSIDE_TURNER: (InsideTurnerLock, "C0:FF:EE:00:00:12"),
    lockkinds.KEY_BOX: (KeyBoxLock, "C0:FF:EE:00:00:13"),
    lockkinds.ENTRANCE_DOOR: (EntranceDoorLock, "C0:FF:EE:00:00:14"),
}
LOCK_CHOICES = (*BENCH_LOCKS, DKEY)
#: The bench dKey's activation code, as its card prints it (BCDF-2345).
BENCH_ACTIVATION_CODE = "BCDF2345"
#: How long a bench lock stays in pairing mode at start and after ``hold`` (a real reference
#: lock's two minutes would close before a technician reading the guide gets there).
PAIRING_WINDOW_S = 600.0
#: The alarm unit a bridge.json without a pinned serial gets (simulator.alarm_unit's default).
DEFAULT_UNIT_SERIAL = 0x5A000001


class BenchError(Exception):
    """The bench cannot start from these files: one line naming the file and the fix."""


def setup_key(addr: str) -> bytes:
    """The setup key a bench lock's label shows: fixed for its address, so the guide's commands
    can be typed as printed. (A real lock's is random, printed at the factory.)"""
    return hashlib.sha256(b"hub-sim bench setup key " + addr.encode()).digest()


def dashed(code: str) -> str:
    """An activation code as its card prints it: XXXX-XXXX."""
    return f"{code[:4]}-{code[4:]}"


def read_bridge_json(path: Path) -> dict[str, Any]:
    """bridge.json as provisioned, checked by the firmware's own parser (a file the bridge would
    not boot with is refused here, in its words)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist: hubctl provision writes it "
                         "(--etc-dir DIR: DIR/bridge.json)") from None
    except PermissionError:
        raise BenchError(f"cannot read {path} (mode 0600): run hub-sim as the user who "
                         "provisioned it") from None
    except (OSError, ValueError) as e:
        raise BenchError(f"{path} is not a bridge.json: {e}") from None
    fw = firmware_config()
    try:
        fw.parse(json.loads(json.dumps(raw)))
    except fw.ConfigError as e:
        raise BenchError(f"the bridge would not start with {path}: {e}") from None
    return raw


def read_hubd_config(path: Path, env_file: Path | None = None) -> HubConfig:
    """hubd.toml with its hubd.env (default: beside it), read as hubd reads them (``hubd
    --config ... --env-file ...``: hubd.envfile's rules and refusals, hubd.config's model). The
    file's values are this process's environment only while the configuration is read: hub-sim's
    children (the bridge's MicroPython) never see hubd's secrets."""
    from hubd.config import ConfigError, load_config
    from hubd.envfile import EnvFileError, applied

    env_file = env_file if env_file is not None else path.parent / "hubd.env"
    if not path.exists():
        raise BenchError(f"{path} does not exist: hubctl provision writes it (--hubd-config "
                         "names another)")
    try:
        with applied(env_file):
            return load_config(path)
    except EnvFileError as e:
        raise BenchError(str(e)) from None
    except ConfigError as e:
        raise BenchError(f"{e} (hubctl provision writes it)") from None


@dataclass
class Login:
    """How the alarm centre logs in to the broker."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    protocol: str = "5"
    tls: ssl.SSLContext | None = None
    who: str = "anonymous"

    @classmethod
    def of_hub(cls, hub: HubConfig) -> Login:
        """hubd's own login (a bench broker: one account; the real broker's ACL gives the
        centre an account of its own, docs/broker-setup.md)."""
        m = hub.mqtt
        tls = None
        if m.tls:
            tls = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
            if m.cert_file is not None and m.key_file is not None:
                tls.load_cert_chain(str(m.cert_file), str(m.key_file))
        return cls(m.host, m.port, m.username,
                   m.password.get_secret_value() if m.password is not None else None,
                   m.protocol, tls, f"hubd's login ({m.username or 'its certificate'})")


def bench_locks(kinds: Iterable[str], travel_time_s: float) -> tuple[
        list[ReferenceProtocolLock], dict[str, DKeyLock]]:
    """The bench's unpaired locks of ``kinds`` (LOCK_CHOICES), each called by its kind."""
    locks: list[ReferenceProtocolLock] = []
    dkeys: dict[str, DKeyLock] = {}
    for kind in kinds:
        if kind == DKEY:
            dkeys[DKEY] = new_dkey(DKEY_ADDRESS, name="Bench dKey", travel_time_s=travel_time_s,
                                   activation_code=BENCH_ACTIVATION_CODE)
            continue
        cls, addr = BENCH_LOCKS[kind]
        extra: dict[str, float] = {}
        if cls is InCylinderLock:
            extra = {"latch_hold_s": 1.0, "relock_delay_s": 0.5}
        elif cls is EntranceDoorLock:
            extra = {"release_s": 1.0}
        locks.append(unpaired_lock(kind, cls, addr, PAIRING_WINDOW_S, setup_key=setup_key(addr),
                                   travel_time_s=travel_time_s, **extra))
    return locks, dkeys


@dataclass
class Bench:
    """The parts of a provisioned hub's other end; ``start`` and ``stop`` them."""

    bridge_json: dict[str, Any]
    bridge_path: Path
    hub: HubConfig | None = None
    kinds: tuple[str, ...] = LOCK_CHOICES
    alarm_unit: bool = True
    lte: bool = True
    centre: bool = True
    centre_login: Login | None = None
    travel_time_s: float = 1.0
    workdir: Path | None = None
    on_bridge_log: Callable[[str], None] | None = None
    home: SimulatedHome = field(init=False)
    unit: AlarmUnit | None = field(init=False, default=None)
    alarm_centre: AlarmCentre | None = field(init=False, default=None)
    dc09_port: int | None = field(init=False, default=None)
    routes: dict[tuple[str, int], tuple[str, int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        b = self.bridge_json
        if self.hub is not None and self.hub.serial.key.hex() != b["link"]["key"]:
            raise BenchError(f"{self.bridge_path}'s link key is not hubd.env's "
                             "HUBD_SERIAL__LINK_KEY: hubctl provision again (it makes them the "
                             "same), and start hub-sim with the bridge.json it wrote")
        if self.hub is not None and self.hub.serial.baudrate != b["link"].get("baudrate", 115200):
            raise BenchError(f"hubd's serial baudrate ({self.hub.serial.baudrate}) and "
                             f"{self.bridge_path}'s link baudrate differ: hubctl provision again")
        unit_section = b.get("alarm_unit")
        if self.alarm_unit and unit_section is not None:
            serial = unit_section.get("serial")
            self.unit = AlarmUnit(serial=int(serial, 16) if serial else DEFAULT_UNIT_SERIAL)
        lte = b.get("lte")
        network = Network()
        if lte is not None and self.centre:
            self.dc09_port = free_port()
            self.routes[(str(lte["host"]), int(lte["port"]))] = ("127.0.0.1", self.dc09_port)
        if self.hub is not None:
            # The broker as the operator's network reaches it (hubd's LTE uplink, the doctor).
            self.routes[(self.hub.mqtt.host, self.hub.mqtt.port)] = \
                ("127.0.0.1" if self.hub.mqtt.host == "localhost" else self.hub.mqtt.host,
                 self.hub.mqtt.port)
        network.addresses.update(self.routes)
        if self.centre and (lte is not None or self.hub is not None):
            login = self.centre_login or (Login.of_hub(self.hub) if self.hub is not None else None)
            accounts = {str(lte["account"]): lte.get("key")} if lte is not None and \
                "account" in lte else None
            if login is not None:
                self.centre_login = login
                self.alarm_centre = AlarmCentre(
                    login.host, login.port, username=login.username, password=login.password,
                    protocol="5" if login.protocol == "5" else "3.1.1", tls=login.tls,
                    dc09_accounts=accounts, dc09_port=self.dc09_port)
        locks, dkeys = bench_locks(self.kinds, self.travel_time_s)
        self.home = SimulatedHome(self.workdir, locks=locks, dkeys=dkeys,
                                  on_bridge_log=self.on_bridge_log, bridge_json=b,
                                  alarm_unit=self.unit, lte_modem=self.lte, lte_network=network)

    @classmethod
    def from_files(cls, bridge_path: Path, hubd_toml: Path | None = None,
                   **kwargs: Any) -> Bench:
        """The bench for bridge.json at ``bridge_path`` (and hubd.toml, with its hubd.env)."""
        hub = read_hubd_config(hubd_toml) if hubd_toml is not None else None
        return cls(read_bridge_json(bridge_path), bridge_path, hub, **kwargs)

    async def start(self) -> None:
        if self.alarm_centre is not None:
            try:
                await self.alarm_centre.start()
            except Exception as e:
                login = self.centre_login
                assert login is not None
                raise BenchError(f"the alarm centre cannot log in to the broker "
                                 f"{login.host}:{login.port} as {login.who}: {e or type(e).__name__} (is the broker "
                                 "running? --no-centre starts the bench without it)") from None
        await self.home.start()

    async def stop(self) -> None:
        await self.home.stop()
        if self.alarm_centre is not None:
            await self.alarm_centre.stop()

    def press(self) -> int:
        """The resident presses the pendant's button: the event's id."""
        assert self.unit is not None, "this bench has no alarm unit"
        return self.unit.press(alarms.BUTTON, "pendant")

    def hold(self, name: str) -> str:
        """The lock's pairing button held (a dKey: its owner's button): what happened."""
        if name in self.home.dkeys:
            self.home.dkeys[name].open_activation_window()
            return f"{name}: activation window open for 5 min"
        lock = self.home.locks.get(name)
        if lock is None:
            return f"no lock {name!r} on this bench: {', '.join(self.kinds)}"
        lock.press_pairing_button(PAIRING_WINDOW_S)
        return f"{name}: pairing mode for {PAIRING_WINDOW_S / 60:g} min"


def link_port(home: SimulatedHome, where: str) -> str | None:
    """Make ``where`` (hubd.toml's [serial] port) a symlink to the bridge's pty, so hubd needs
    no override: the path, or None where it cannot be (a real device there, a link to anything
    but a pty, e.g. a udev by-id link, or a directory that is not ours to write). The caller
    removes it when the bench stops (:func:`unlink_port`)."""
    path = Path(where)
    if path.is_symlink():
        if not os.readlink(path).startswith("/dev/pts/"):
            return None  # not a bench's link: never ours to replace
    elif path.exists():
        return None
    if not os.access(path.parent, os.W_OK):
        return None
    if path.is_symlink():
        path.unlink()
    path.symlink_to(home.port)
    return str(path)


def unlink_port(linked: str | None) -> None:
    """Remove the link :func:`link_port` made (it would point at a pty that is gone)."""
    if linked is not None and Path(linked).is_symlink():
        Path(linked).unlink()
