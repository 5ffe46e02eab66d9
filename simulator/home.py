"""A resident's home in software: the locks, the air between them, the bridge and its cable.

    home = SimulatedHome(workdir)           # one inside-turner lock, "front-door"
    home = SimulatedHome(workdir, locks=every_kind())
    await home.start()
    home.port                               # the pty hubd opens, like /dev/ttyUSB0
    record_pairings(state_dir, home.locks.values())   # their pairings into hubd's state
    home.locks["front-door"].motor_moves    # what the lock really did
    await home.stop()

The bridge is the locks' Bluetooth proxy (the real firmware): its bridge.json names no lock, and
hubd drives them. The locks come paired, each with its own secret, as ``hubctl pair`` leaves
them: a test gives hubd their pairings (:func:`record_pairings`, or :func:`paired` for a driver
made by hand). :func:`unpaired_lock` is one fresh from the box, to pair through hubd.

    home = SimulatedHome(workdir, alarm_unit=AlarmUnit(heartbeat_s=0.5),
                         alarm_timings={"heartbeat_ms": 500})
    home.alarm_unit.press()                 # a safety alarm unit on the bridge's UART 2

    home = SimulatedHome(workdir, health={"health_ms": 1000}, policy={"scan_every_ms": 1000})
    home.bridge.set_supply(3600, False)     # the bridge's backup cell, its external supply gone

A home can hold simulated dormakaba dKeys (simulator.dkey.DKeyLock, docs/dkey.md) beside the
reference-protocol locks, each under a lock id, on the same radio:

    home = SimulatedHome(workdir, locks=[], dkeys={"front-door": paired_dkey(DKEY_ADDRESS)})
    record_pairings(state_dir, home.locks.values(), home.dkeys)   # the dKey's association too
    home.dkeys["front-door"].motor_moves

:func:`paired_dkey` is a dKey associated with the hub before (its key holder id and secret on
the lock, :func:`dkey_paired` what hubd keeps of it); :func:`new_dkey` one fresh from the box,
its activation window open, to pair through hubd with its activation code (``hubctl pair
--activation-code``). A dKey bonds only in its activation window, and a real one associated
with the hub bonded with it during that association. A simulated home cannot give the bond to
both ends beforehand (the central's half lives in the bridge's flash, or in hubd's adapter), so
a paired dKey keeps its window open until the first central bonds with it (the hub's first
connection), then closes it: from then on it is what ``hubctl pair`` leaves, and a central
without that bond is refused. (The window a new lock opens lasts 300 s, and association closes
it.)

A home with broadband and an LTE modem, for hubd's uplink (docs/second-path.md):

    home = SimulatedHome(workdir, broker=(mosquitto.host, mosquitto.port), lte={...})
    home.broker_address                     # hubd.toml's broker host and port: the home's router
    home.router.cut("blackhole")            # or "reset"; home.router.restore()
    home.modem.network.conditions = lte_network.fast()   # realistic LTE-M unless told

A home booted from a provisioned bridge.json (``hubctl provision``'s, as hub-sim's bench runs it,
simulator/bench.py): the bridge boots with exactly that file, its link key, link speed and
UARTs; the alarm unit and the modem are wired to the UARTs it names, and a section whose part is
not given has a UART with nothing on its pins (a unit or modem unplugged):

    home = SimulatedHome(workdir, locks=[...], bridge_json=json.loads(path.read_text()),
                         alarm_unit=AlarmUnit(serial=0x5A0000AB), lte_network=network)

`HomeThread` runs a home on its own event loop in a background thread, for synchronous callers
(the demo, tests that drive hubd as a separate process).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from simulator.alarm_unit import AlarmUnit
from simulator.lte_network import Network
from simulator.modem import Modem
from simulator.modem import pair as modem_pair
from simulator.bridge_device import BOARD_SUPPLY, DEFAULT_HEAP, BridgeDevice
from simulator.dkey import DKeyLock
from simulator.locks import (
    EntranceDoorLock,
    InCylinderLock,
    InsideTurnerLock,
    KeyBoxLock,
    ReferenceProtocolLock,
)
from simulator.radio import Radio
from simulator.router import RESET, Router
from simulator.serial_line import SerialLine
from wire import frame, lockkinds

if TYPE_CHECKING:
    from hubd.locks import PairedLock

T = TypeVar("T")
#: What a test may set of the proxy's scan windows (firmware/config.py PROXY_SCANS).
SCAN_KEYS = frozenset({"scan_every_ms", "scan_ms", "presence_ms"})
BRIDGE_UART = 1
ALARM_UNIT_UART = 2
LTE_UART = 3


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _addr_text(addr: bytes) -> str:
    return ":".join(f"{b:02X}" for b in addr)


def default_locks(travel_time_s: float = 0.0) -> list[ReferenceProtocolLock]:
    """The default home: one inside turner on the front door, with its own pairing secret."""
    return [InsideTurnerLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32),
                             travel_time_s=travel_time_s)]


def address(lock: ReferenceProtocolLock | DKeyLock) -> str:
    """The lock's address as hubd writes it ("C0:FF:EE:00:00:01")."""
    return _addr_text(lock.address)


def paired(lock: ReferenceProtocolLock, secret: bytes | None = None) -> PairedLock:
    """What pairing gave hubd for ``lock`` (``secret``: another one, a wrong pairing)."""
    from hubd.locks import PairedLock  # bleak: only for the callers that drive locks in hubd

    assert lock.secret is not None, f"{lock.lock_id} is not paired"
    return PairedLock(lock.kind, address(lock), secret or lock.secret, lock.addr_type)


def record_pairings(state_dir: Path, locks: Iterable[ReferenceProtocolLock],
                    dkeys: Mapping[str, DKeyLock] | None = None) -> None:
    """Record each (paired) lock under its lock id in hubd's state database in ``state_dir``,
    with its kind, address, address type and secret, as ``hubctl pair`` leaves it
    (hubd/store/pairings.py): how a simulated home's locks come paired to hubd. ``dkeys``: the
    home's dKeys by lock id; those associated (:func:`paired_dkey`) are recorded too, with
    their association data as the secret and protocol "dkey"; a new one is left out."""
    from hubd.store.pairings import record_pairing  # bleak: only for the callers that run hubd

    for lock in locks:
        record_pairing(state_dir, lock.lock_id, paired(lock))
    for lock_id, dkey in (dkeys or {}).items():
        if dkey.associations:
            record_pairing(state_dir, lock_id, dkey_paired(dkey))


#: The address of a simulated home's first dKey (the demo's, the hil scenarios').
DKEY_ADDRESS = "F0:94:0A:00:00:01"


def paired_dkey(address: str = DKEY_ADDRESS, name: str = "Front door",
                travel_time_s: float = 0.0, **kwargs: Any) -> DKeyLock:
    """A dKey associated with the hub before: one key holder (a random id, a random 32-byte
    secret), its activation window open until the first central bonds with it (the module
    docstring says why). ``kwargs``: DKeyLock's (activation_code, idle_timeout_s, battery, rssi)."""
    lock = DKeyLock(address, name=name, travel_time_s=travel_time_s, **kwargs)
    lock.associate(lock.new_key_holder_id(), os.urandom(32))
    lock.open_activation_window(until_bonded=True)
    return lock


def new_dkey(address: str = DKEY_ADDRESS, name: str = "Front door",
             travel_time_s: float = 0.0, **kwargs: Any) -> DKeyLock:
    """A dKey fresh from the box: no key holder, its activation window open (300 s), its
    activation code ``lock.activation_code`` (random unless given, as printed on its card)."""
    return DKeyLock(address, name=name, travel_time_s=travel_time_s, **kwargs)


def dkey_paired(lock: DKeyLock, secret: bytes | None = None) -> PairedLock:
    """What hubd keeps of an associated dKey (hubd.locks.PairedLock, protocol "dkey"): an
    in-cylinder lock whose secret is its association data, the key holder id (4 bytes) then the
    association secret (32). The lock must hold exactly one key holder (:func:`paired_dkey`);
    ``secret``: another association secret, a wrong pairing."""
    from hubd.locks import PairedLock  # bleak: only for the callers that drive locks in hubd

    assert len(lock.associations) == 1, "a paired dKey holds the hub's key holder only"
    ((key_holder, own),) = lock.associations.items()
    return PairedLock(lockkinds.IN_CYLINDER, _addr_text(lock.address), key_holder + (secret or own),
                      lock.addr_type, protocol=lockkinds.DKEY)


def unpaired_lock(lock_id: str, kind: type[ReferenceProtocolLock], addr: str,
                  pairing_window_s: float = 600.0, **kwargs: Any) -> ReferenceProtocolLock:
    """A lock fresh from the box (no secret), its pairing button just held: it takes a PAIR
    sealed with its ``setup_key`` for ``pairing_window_s``."""
    lock = kind(lock_id, addr, None, **kwargs)
    lock.press_pairing_button(pairing_window_s)
    return lock


def every_kind(travel_time_s: float = 0.0) -> list[ReferenceProtocolLock]:
    """A home with one lock of each kind, each with its own pairing secret.

    "front-door" (in-cylinder), "back-door" (inside turner), "key-box", "entrance" (the building's
    shared entrance door). Latch and release times are short, for tests and demos.
    """
    return [
        InCylinderLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32),
                       travel_time_s=travel_time_s, latch_hold_s=1.0, relock_delay_s=0.5),
        InsideTurnerLock("back-door", "C0:FF:EE:00:00:02", os.urandom(32),
                         travel_time_s=travel_time_s),
        KeyBoxLock("key-box", "C0:FF:EE:00:00:03", os.urandom(32), travel_time_s=travel_time_s),
        EntranceDoorLock("entrance", "C0:FF:EE:00:00:04", os.urandom(32),
                         travel_time_s=travel_time_s, release_s=1.0),
    ]


class SimulatedHome:
    """Locks on a simulated radio, the real firmware on a simulated bridge as their Bluetooth
    proxy, a serial line."""

    def __init__(self, workdir: Path | None = None,
                 locks: list[ReferenceProtocolLock] | None = None,
                 on_bridge_log: Callable[[str], None] | None = None, seed: int = 0,
                 policy: dict[str, int] | None = None, alarm_unit: AlarmUnit | None = None,
                 alarm_timings: dict[str, int] | None = None,
                 lte: dict[str, Any] | None = None,
                 health: dict[str, int] | None = None, link_key: bytes | None = None,
                 proxy: dict[str, int] | None = None,
                 dkeys: Mapping[str, DKeyLock] | None = None, romfs: bool = True,
                 bridge_heap: int = DEFAULT_HEAP, broker: tuple[str, int] | None = None,
                 broadband: bool = True, lte_network: Network | None = None,
                 line_baud: int | None = None,
                 bridge_json: Mapping[str, Any] | None = None, lte_modem: bool = True) -> None:
        """``policy``: the proxy's passive scan windows for the addresses hubd watches
        (firmware/config.py PROXY_SCANS, ms), e.g. ``{"scan_every_ms": 1000, "scan_ms": 500}``
        for a fast test; they go into bridge.json's ``proxy`` section. The bridge has no
        connection policy of its own any more (hubd's drivers keep it: hubd.locks.Timings and
        UpkeepTimings), so any other key is refused.
        ``alarm_unit``: a safety alarm unit wired to the bridge's UART 2; ``alarm_timings``:
        overrides of the bridge's alarm timings (firmware/config.py ALARM_TIMINGS).
        ``lte``: the second path's settings for bridge.json (firmware/config.py: apn, host,
        port, account, key, ...); with it the home has an LTE modem (``self.modem``, a
        simulator.modem.Modem) on the bridge's UART 3 that connects to that host and port.
        ``health``: overrides of the bridge's health report and watchdog timings
        (firmware/config.py HEALTH, ms), e.g. ``{"health_ms": 1000, "wdt_ms": 3000}``.
        ``link_key``: the serial link's key in bridge.json (default: new random bytes, as
        ``hubctl provision`` makes); hubd needs the same (``self.link_key``).
        ``proxy``: the Bluetooth proxy's section of bridge.json (firmware/config.py), e.g.
        ``{"slots": 2}``; left out, the bridge's defaults.
        ``dkeys``: simulated dKeys by lock id (:func:`paired_dkey`, :func:`new_dkey`), on the
        same radio as ``locks``; a lock id is either a reference lock's or a dKey's.
        ``romfs`` False: the bridge runs its modules from .mpy files on its filesystem, not from
        the ROMFS image (simulator.bridge_device.BridgeDevice; to measure what the image saves).
        ``bridge_heap``: the firmware's heap in bytes (default: the calibrated chip's; 110 KB with
        ``HUB_SIM_MICROPYTHON`` naming a 32-bit build is the chip itself, docs/architecture.md).
        ``broker``: the broker's (host, port); with it the home has broadband, a router
        (``self.router``, simulator.router.Router) that hubd reaches the broker through: hubd's
        broker address is ``self.broker_address``, the router's, and ``router.cut()`` /
        ``router.restore()`` fail and bring back the broadband. ``broadband`` False: the router
        starts cut (connections refused, a home without broadband). With an LTE modem too, the
        modem's network maps ``broker_address`` to the broker itself: LTE reaches it whatever
        the broadband does. ``lte_network``: the modem's network (simulator.lte_network.Network;
        default: realistic LTE-M). ``line_baud``: the hub-bridge cable's pace
        (simulator.serial_line.SerialLine's ``baud``; default: its default, or bridge.json's
        link baudrate with ``bridge_json``).
        ``bridge_json``: bridge.json as provisioning wrote it; the bridge boots with it as it is
        (``link_key``, ``lte``, ``policy``, ``health``, ``proxy`` and ``alarm_timings`` are then
        refused: the file says them). ``alarm_unit`` is wired to its ``alarm_unit`` UART, the
        modem (made when the file has ``lte``, unless ``lte_modem`` is False) to its ``lte``
        UART; the modem connects where ``lte_network``'s address map says (no ``connect_to``:
        the file's DC-09 receiver is a name the network must map). A section whose part is
        missing gets a UART with nothing on its pins."""
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sim-home-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.provisioned = json.loads(json.dumps(bridge_json)) if bridge_json is not None else None
        if self.provisioned is not None:
            given = [name for name, value in (("link_key", link_key), ("lte", lte),
                                              ("policy", policy), ("health", health),
                                              ("proxy", proxy), ("alarm_timings", alarm_timings))
                     if value]
            if given:
                raise ValueError(f"{given}: bridge_json says them (the bridge boots with the file)")
            link_key = bytes.fromhex(self.provisioned["link"]["key"])
            lte = self.provisioned.get("lte") if lte_modem else None
            if line_baud is None:
                line_baud = self.provisioned["link"].get("baudrate", 115200)
        self.locks = {lk.lock_id: lk for lk in (locks if locks is not None else default_locks())}
        self.dkeys = dict(dkeys or {})
        both = sorted(set(self.locks) & set(self.dkeys))
        if both:
            raise ValueError(f"lock ids {both} name a reference lock and a dKey")
        self.link_key = link_key if link_key is not None else os.urandom(frame.KEY_SIZE)
        self.policy = dict(policy or {})
        stale = sorted(set(self.policy) - SCAN_KEYS)
        if stale:
            raise ValueError(f"policy {stale}: the bridge drives no lock any more; hubd's lock "
                             "drivers have these timings (hubd.locks.Timings, UpkeepTimings)")
        self.health = dict(health or {})
        self.proxy = dict(proxy) if proxy is not None else None
        # A unix socket path must stay under ~100 bytes, so the radio lives in a short temp dir.
        self._radio_dir = tempfile.mkdtemp(prefix="air-")
        self.radio = Radio(os.path.join(self._radio_dir, "radio.sock"))
        self.line = SerialLine(seed=seed) if line_baud is None else \
            SerialLine(seed=seed, baud=line_baud)
        self.router = Router(broker, host=broker[0] if _is_ip(broker[0]) else "127.0.0.1") \
            if broker is not None else None
        self.broadband = broadband
        self.alarm_unit = alarm_unit
        self.alarm_timings = dict(alarm_timings or {})
        extra = {}
        unit_uart, lte_uart = ALARM_UNIT_UART, LTE_UART
        # UARTs bridge.json names with nothing on their pins (socket ends nobody reads).
        self._open_pins: list[tuple[socket.socket, socket.socket]] = []
        if self.provisioned is not None:
            unit_uart = self.provisioned.get("alarm_unit", {}).get("uart", ALARM_UNIT_UART)
            lte_uart = self.provisioned.get("lte", {}).get("uart", LTE_UART)
            for section, uart, part in (("alarm_unit", unit_uart, alarm_unit),
                                        ("lte", lte_uart, lte)):
                if section in self.provisioned and part is None:
                    pins = socket.socketpair()
                    for s in pins:
                        s.setblocking(False)
                    self._open_pins.append(pins)
                    extra[uart] = pins[1].fileno()
        self._unit_wire: tuple[socket.socket, socket.socket] | None = None
        if alarm_unit is not None:
            self._unit_wire = socket.socketpair()
            self._unit_wire[1].setblocking(False)
            extra[unit_uart] = self._unit_wire[1].fileno()
        self.lte = dict(lte) if lte is not None else None
        self.modem: Modem | None = None
        self._modem_task: asyncio.Task[None] | None = None
        self._modem_wire: tuple[socket.socket, socket.socket] | None = None
        if self.lte is not None:
            self._modem_wire = modem_pair()
            self.modem = Modem(self._modem_wire[0],
                               connect_to=None if self.provisioned is not None else
                               (str(self.lte["host"]), int(self.lte["port"])),
                               network=lte_network)
            if self.router is not None and broker is not None:
                self.modem.network.addresses[self.broker_address] = broker
            extra[lte_uart] = self._modem_wire[1].fileno()
        self.bridge = BridgeDevice(self.bridge_config(), self.line.firmware_end.fileno(),
                                   self.radio.socket_path, self.workdir / "bridge-flash",
                                   on_log=on_bridge_log, extra_uarts=extra, romfs=romfs,
                                   heap=bridge_heap)

    @property
    def port(self) -> str:
        """The serial device hubd opens."""
        return self.line.path

    @property
    def broker_address(self) -> tuple[str, int]:
        """The broker's address as hubd should use it (hubd.toml's broker host and port): the
        home router's, so that cutting the broadband cuts hubd off it. The host is the broker's
        own (a TLS certificate's name still matches)."""
        assert self.router is not None, "a home without a broker has no broker address"
        return self.router.broker[0], self.router.address[1]

    @property
    def kinds(self) -> dict[str, str]:
        """Every lock's kind by lock id (wire.lockkinds), reference locks' and dKeys' (in
        cylinder), as hubd.toml's [locks] names them."""
        return {**{lock_id: lk.kind for lock_id, lk in self.locks.items()},
                **dict.fromkeys(self.dkeys, lockkinds.IN_CYLINDER)}

    def bridge_config(self) -> dict[str, Any]:
        """bridge.json as provisioning writes it: the link UART and key, the proxy's section
        (``proxy`` and the scan windows of ``policy``), the health timings, how the board senses its supply, and the alarm unit's UART
        and serial when the home has one. No lock: hubd drives them through the proxy and keeps
        their pairings (the secrets never reach the bridge). With ``bridge_json``: that file, as
        it is."""
        if self.provisioned is not None:
            return json.loads(json.dumps(self.provisioned))
        cfg: dict[str, Any] = {
            "link": {"uart": BRIDGE_UART, "baudrate": 115200, "key": self.link_key.hex()},
            "log": "info",
            "health": self.health,
            "supply": dict(BOARD_SUPPLY),
        }
        if self.alarm_unit is not None:
            # Pinned to the unit's serial, as commissioning does (hubctl provision --alarm-unit-serial).
            cfg["alarm_unit"] = {"uart": ALARM_UNIT_UART, "baudrate": 9600,
                                 "serial": "%08X" % self.alarm_unit.serial, **self.alarm_timings}
        if self.lte is not None:
            cfg["lte"] = {"uart": LTE_UART, **self.lte}
        if self.proxy is not None or self.policy:
            cfg["proxy"] = {**(self.proxy or {}), **self.policy}
        return cfg

    async def start(self) -> None:
        await self.radio.start()
        for peripheral in (*self.locks.values(), *self.dkeys.values()):
            self.radio.add(peripheral)
        await self.line.start()
        if self.router is not None:
            await self.router.start()
            if not self.broadband:
                self.router.cut(RESET)
        if self.alarm_unit is not None and self._unit_wire is not None:
            await self.alarm_unit.start(self._unit_wire[0])
        if self.modem is not None:
            self._modem_task = asyncio.create_task(self.modem.run())
        loop = asyncio.get_running_loop()
        for far, _ in self._open_pins:  # what the firmware sends there goes nowhere
            loop.add_reader(far.fileno(), self._drop, far)
        await self.bridge.start()

    @staticmethod
    def _drop(sock: socket.socket) -> None:
        try:
            sock.recv(4096)
        except (BlockingIOError, OSError):
            pass

    async def stop(self) -> None:
        await self.bridge.stop()
        if self._modem_task is not None:
            self._modem_task.cancel()
            await asyncio.gather(self._modem_task, return_exceptions=True)
            assert self._modem_wire is not None
            for s in self._modem_wire:
                s.close()
        if self.alarm_unit is not None and self._unit_wire is not None:
            await self.alarm_unit.stop()
            for s in self._unit_wire:
                s.close()
        for pins in self._open_pins:
            asyncio.get_running_loop().remove_reader(pins[0].fileno())
            for s in pins:
                s.close()
        self._open_pins = []
        if self.router is not None:
            await self.router.stop()
        await self.line.stop()
        await self.radio.stop()
        try:
            os.rmdir(self._radio_dir)
        except OSError:
            pass
        if self._tmp is not None:
            self._tmp.cleanup()


class HomeThread:
    """Runs a SimulatedHome on its own event loop in a daemon thread."""

    def __init__(self, home: SimulatedHome) -> None:
        self.home = home
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-home",
                                        daemon=True)

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        self.run(self.home.start(), timeout)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the home's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run a plain function on the home's loop (to poke a lock safely) and return its value."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped(), timeout)

    def stop(self, timeout: float = 30) -> None:
        try:
            self.run(self.home.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self.loop.close()
