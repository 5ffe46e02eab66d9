"""The hub under test: a real Mosquitto, hubd as its own process, and a bridge.

The bridge is the simulator by default (`--target=sim`: the real firmware in MicroPython as the
locks' Bluetooth proxy, locks in software, their pairings recorded in hubd's state as hubctl pair
leaves them) or a real ESP32 on a bench (`--target=/dev/ttyUSB0`, hubd's state in
`--bench-state` holding the pairings of the locks named by `--bench-locks`, made by hubctl pair).
A simulated home may have a dormakaba dKey as its front door (``home(locks="dkey")``: paired
before, its association in hubd's state and on the lock, docs/dkey.md "In a simulated home";
``"new_dkey"``: fresh from the box, for ``hubctl pair --activation-code``; ``"dkey_and_entrance"``:
beside a reference entrance door). Every hubd serves its local socket (``hub.socket``), as on a
hub, for hubctl. Either way hubd drives every lock through the bridge's proxy, or, for a scenario marked
``home(direct=True)`` (simulator only), through the hub's own adapter: the simulated air reached
by hubd directly (docs/direct-mode.md), the bridge still serving the alarm unit. A scenario marked ``home(uplink="lte"|"auto"|"broadband")``
(simulator only; hil_tests/test_uplink.py) runs in a home with broadband through a router that
can be cut and an LTE modem (the BG95 model on the realistic LTE-M network model) whose network
reaches the broker whatever the router does; hubd gets ``[uplink]`` with that mode and timings of
seconds (UPLINK_TIMINGS), and ``broadband=False`` starts the router cut. Scenarios talk only MQTT, as the cloud backend does, so the same assertions hold
for both; assertions about what a lock physically did need the simulator and skip loudly
without it.

The simulated air's timing is the suite's (``SIM_BLE_TIMING``, simulator/ble_timing.py: the fast
air unless it says ``realistic``); a scenario marked ``home(air="realistic")`` runs on the
realistic air in every run (what the air changes, kept in the default suite: docs/ble-timing.md
"The suite"), one marked ``home(air="fast")`` on the fast air (its point needs it; the marker
says why).

Each scenario gets a hub of its own, but in a module marked ``shared_home`` (the lock kinds', the
rejections'): there its scenarios share one hub (SharedHub), reset and checked before each, which
saves a hub's start and stop (~1.5 s of a worker) per scenario; a scenario of such a module with
a ``home`` marker of its own still gets its own.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hil_tests.harness import (HUB_ID, HubUnderTest, as_built, first_reads, reset_home, start_hubd, stop_hubd,
                               wait_online, write_hubd_config)
from hubapi import signing
from hubapi.client import BackendClient
from simulator import ble_timing
from simulator.alarm_centre import AlarmCentre
from simulator.alarm_unit import AlarmUnit
from simulator.dkey import DKeyLock
from simulator.home import (HomeThread, SimulatedHome, default_locks, every_kind, new_dkey,
                            paired_dkey, record_pairings)
from simulator.locks import EntranceDoorLock, ReferenceProtocolLock
from simulator.ports import free_port
from tests.sia_receiver import ACCOUNT
from wire import frame, lockkinds
from tests.fixtures import BackendKey
from tests.mosquitto import Mosquitto, MosquittoNotInstalled


# Short alarm timings: the unit's heartbeat, and when the bridge turns to its second path.
ALARM_TIMINGS = {"heartbeat_ms": 500, "hub_down_ms": 2000, "handled_deadline_ms": 4000}
#: Short uplink timings for a home with hubd's LTE uplink (``home(uplink=...)``): auto leaves a
#: broadband that lost its session after 2 s and probes it every second while on LTE, and paho
#: notices a black-holed broadband connection after 1.5 x 5 s (the least hubd takes) (hubd's defaults: 60 s, 120 s, 30 s).
UPLINK_TIMINGS = {"fallback_s": 2, "probe_s": 1}
UPLINK_KEEPALIVE_S = 5
#: The bridge's handled deadline in a home whose hubd reaches the broker over LTE: the alarm's
#: publish and its confirmation each cross the LTE-M model (a lost segment costs a second), so
#: ALARM_TIMINGS' 4 s would send a slow confirmation's alarm over the second path too.
UPLINK_HANDLED_MS = 15000
#: The activation code on the card of a "new_dkey" home's dKey.
DKEY_CODE = "BCDF2345"


def home_locks(which: str, travel_time_s: float = 0.0, **options: Any
               ) -> tuple[list[ReferenceProtocolLock], dict[str, DKeyLock]]:
    """The reference locks and the dKeys (by lock id) of the home ``home(locks=which)`` asks for.
    "default": an inside turner; "every_kind": one reference lock of each kind; "dkey": a dKey
    front door paired before; "new_dkey": a dKey front door fresh from the box (activation code
    DKEY_CODE), nothing paired; "dkey_and_entrance": a paired dKey front door and a reference
    entrance door. ``options`` go to the reference locks' builder."""
    if which == "default":
        return default_locks(travel_time_s, **options), {}
    if which == "every_kind":
        return every_kind(travel_time_s, **options), {}
    if options:
        raise pytest.UsageError(f"home(locks={which!r}) takes travel_time_s only, not {options}")
    if which == "dkey":
        return [], {"front-door": paired_dkey(travel_time_s=travel_time_s)}
    if which == "new_dkey":
        return [], {"front-door": new_dkey(activation_code=DKEY_CODE, travel_time_s=travel_time_s)}
    if which == "dkey_and_entrance":
        entrance = EntranceDoorLock("entrance", "C0:FF:EE:00:00:04", os.urandom(32),
                                    travel_time_s=travel_time_s, release_s=1.0)
        return [entrance], {"front-door": paired_dkey(travel_time_s=travel_time_s)}
    raise pytest.UsageError(f"home(locks={which!r}): no such home")


def bench_locks(text: str) -> dict[str, str]:
    """--bench-locks "front-door:in_cylinder,key-box:key_box" (a bare id is an inside turner)."""
    locks = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        lock_id, _, kind = item.partition(":")
        kind = kind or lockkinds.INSIDE_TURNER
        if kind not in lockkinds.KINDS:
            pytest.fail(f"--bench-locks: {kind!r} is not one of {', '.join(lockkinds.KINDS)}",
                        pytrace=False)
        locks[lock_id] = kind
    return locks


def bench_link_key(text: str | None) -> bytes:
    """--bench-link-key: the bench bridge's link key (its bridge.json's link.key, 64 hex digits)."""
    try:
        key = bytes.fromhex(text or "")
    except ValueError:
        key = b""
    if len(key) != frame.KEY_SIZE:
        pytest.fail("--bench-link-key: give the bench bridge's link key, the 64 hex digits of link.key "
                    "in the bridge.json hubctl provision wrote for it", pytrace=False)
    return key


def bench_state(text: str | None, tmp_path: Path) -> Path:
    """--bench-state: a hubd state directory holding the bench locks' pairings (hubctl pair made
    them against this bench): copied, so the scenario's commands and audit do not pile up in it."""
    if not text or not (Path(text) / "hubd.sqlite3").is_file():
        pytest.fail("--bench-state: give a hubd state directory whose hubd.sqlite3 holds the bench "
                    "locks' pairings (pair them once with hubctl pair against this bench)",
                    pytrace=False)
    state = tmp_path / "hubd-state"
    state.mkdir(mode=0o700)
    shutil.copy2(Path(text) / "hubd.sqlite3", state / "hubd.sqlite3")
    return state


def _home_options(request: pytest.FixtureRequest) -> tuple[dict[str, Any], bool]:
    """The ``home`` marker's options for this test (or module), and whether hubd runs in direct
    mode: the scenario's own choice (direct=True), every scenario's with --bluetooth=adapter, or
    a BOTH_WAYS scenario's "adapter" run."""
    marker = request.node.get_closest_marker("home")
    options = dict(marker.kwargs) if marker else {}
    callspec = getattr(request.node, "callspec", None)
    direct = (options.pop("direct", False) or request.config.getoption("--bluetooth") == "adapter"
              or (callspec is not None and callspec.params.get("bluetooth") == "adapter"))
    return options, direct


@contextlib.contextmanager
def running_hub(config: pytest.Config, options: dict[str, Any], direct: bool, mosquitto: Mosquitto,
                backend_key: BackendKey, tmp_path: Path) -> Iterator[HubUnderTest]:
    """A running hub as ``options`` (the ``home`` marker's) ask: the target bridge, hubd on its
    port, online on ``mosquitto``; stopped on leaving."""
    target = config.getoption("--target")
    options = dict(options)
    hubd_extra = options.pop("hubd", "")  # more hubd.toml, e.g. "[battery]\nreminder_s = 2"
    hubd_top = options.pop("hubd_top", "")  # more top-level keys, e.g. "bridge_wait_s = 60"
    home: HomeThread | None = None
    dc09_port = None
    state_dir = tmp_path / "hubd-state"
    # hubd's uplink (docs/second-path.md): the home's broadband router between hubd and the
    # broker, and an LTE modem whose network reaches the broker whatever the router does.
    uplink = options.pop("uplink", None)  # hubd.toml's [uplink] mode: "broadband", "lte", "auto"
    broadband = options.pop("broadband", True)  # False: the router cut from boot (no broadband)
    # The simulated air's timing (simulator/ble_timing.py): "realistic" or "fast" for this
    # scenario whatever SIM_BLE_TIMING says; unset, the suite's (docs/ble-timing.md, "The suite").
    air = options.pop("air", None)
    broker_address = None
    mqtt_extra = ""
    if options.pop("via", None) == "bridge" and direct:
        pytest.skip("SKIPPED LOUDLY with --bluetooth=adapter: this scenario is about the serial "
                    "link in the lock's path, which only the bridge's proxy has")
    # hubd's local socket (hubctl's way in); a unix socket path must stay under ~100 bytes
    socket_dir = Path(tempfile.mkdtemp(prefix="hubd-", dir="/tmp"))
    try:
        if target == "sim":
            which = options.pop("locks", "default")
            policy = options.pop("policy", None)
            extras = {}
            unit_options = options.pop("unit", {})  # AlarmUnit keywords, e.g. {"time_scale": 3600}
            if options.pop("alarms", False):
                # A safety alarm unit, and an LTE modem whose DC-09 frames reach the alarm centre's
                # receiver on dc09_port (the scenario's centre runs it: see test_alarms.py).
                dc09_port = free_port()
                extras = {"alarm_unit": AlarmUnit(**{"heartbeat_s": 0.5, **unit_options}),
                          "alarm_timings": ALARM_TIMINGS,
                          "lte": {"apn": "internet.m2m", "host": "127.0.0.1",
                                  "port": dc09_port, "account": ACCOUNT, "receiver": "1",
                                  "retry_ms": 1000}}
            if uplink is not None:
                if "lte" not in extras:  # no alarm unit: the modem is there for hubd's uplink only
                    extras["lte"] = {"apn": "internet.m2m", "host": "127.0.0.1", "port": free_port(),
                                     "account": ACCOUNT, "receiver": "1", "retry_ms": 1000}
                else:  # the round trip to the centre crosses LTE-M twice: a loss costs a second
                    extras["alarm_timings"] = {**ALARM_TIMINGS, "handled_deadline_ms": UPLINK_HANDLED_MS}
                extras.update(broker=(mosquitto.host, mosquitto.port), broadband=broadband)
                hubd_extra += (f'\n[uplink]\nmode = "{uplink}"\n'
                               + "".join(f"{k} = {v}\n" for k, v in UPLINK_TIMINGS.items()))
                mqtt_extra = f"keepalive = {UPLINK_KEEPALIVE_S}"
            reference, dkeys = home_locks(which, **options)
            sim_home = SimulatedHome(tmp_path / "home", locks=reference, dkeys=dkeys, policy=policy,
                                     **extras)
            if air is not None:  # the scenario's own air, whatever SIM_BLE_TIMING says (the
                sim_home.radio.timing = ble_timing.by_name(air)  # radio reads it as it runs)
            home = HomeThread(sim_home)
            home.start()
            port = home.home.port
            if uplink is not None:
                broker_address = home.home.broker_address
            link_key = home.home.link_key
            # The locks paired before (a new dKey is paired in the scenario, through hubctl pair).
            locks = {lock_id: kind for lock_id, kind in home.home.kinds.items()
                     if lock_id in home.home.locks or home.home.dkeys[lock_id].associations}
            record_pairings(state_dir, home.home.locks.values(), home.home.dkeys)  # as hubctl pair leaves them
            if direct:  # the simulated air is the hub's own adapter (docs/direct-mode.md)
                presence_s = (policy or {}).get("presence_ms", 60000) / 1000  # the proxy's, if set
                hubd_extra += (f'\n[bluetooth]\nvia = "adapter"\n'
                               f'simulated_radio = "{home.home.radio.socket_path}"\n'
                               f'presence_s = {presence_s}\n')
        else:
            if uplink is not None:
                pytest.skip("SKIPPED LOUDLY on a real bench: hubd's LTE uplink scenarios cut the "
                            "home's broadband and drop the modem's socket, which only the simulated "
                            "home's router and BG95 model can do; a bench needs its own modem and "
                            "router for them: run them with --target=sim")
            if direct:
                pytest.skip("SKIPPED LOUDLY: direct mode on a bench needs the hub's own adapter; run "
                            "hubd with [bluetooth] via = \"adapter\" against the bench locks by hand")
            if not os.path.exists(target):
                pytest.fail(f"--target {target}: no such serial port; plug in the bench bridge "
                            f"or use --target=sim", pytrace=False)
            port = target
            locks = bench_locks(config.getoption("--bench-locks"))
            link_key = bench_link_key(config.getoption("--bench-link-key"))
            state_dir = bench_state(config.getoption("--bench-state"), tmp_path)
        hubd_config = tmp_path / "hubd.toml"
        write_hubd_config(hubd_config, mosquitto, port, backend_key, locks, state_dir=state_dir,
                          extra=hubd_extra, top=hubd_top, link_key=link_key,
                          status_socket=socket_dir / "status.sock",
                          broker_address=broker_address, mqtt=mqtt_extra)
        log = tmp_path / "hubd.log"
        under_test = HubUnderTest(HUB_ID, list(locks), mosquitto, backend_key,
                                  start_hubd(hubd_config, log), log, home, hubd_config, kinds=locks,
                                  dc09_port=dc09_port, socket=socket_dir / "status.sock")
        try:
            wait_online(mosquitto, HUB_ID, under_test.hubd, log)
            yield under_test
        finally:
            stop_hubd(under_test.hubd)
    finally:
        if home is not None:
            home.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> Iterator[HubUnderTest]:
    """A running hub: the target bridge, hubd on its port, online on a private Mosquitto. In a
    module marked ``shared_home`` it is the module's hub, reset for this test (``shared_hub``),
    unless the test asks for a home of its own (its own ``home`` marker)."""
    if _shared(request):
        shared: SharedHub = request.getfixturevalue("shared_hub")
        under_test = shared.fresh()
        yield under_test
        if _failed(request.node):  # what broke it must not break the next test: a new hub
            shared.discard()
        return
    options, direct = _home_options(request)
    with running_hub(request.config, options, direct, request.getfixturevalue("mosquitto"),
                     request.getfixturevalue("backend_key"),
                     request.getfixturevalue("tmp_path")) as under_test:
        yield under_test


class SharedHub:
    """A module's hub, shared by its tests (``pytest.mark.shared_home``): started at the first
    test, reset before each (:func:`hil_tests.harness.reset_home`: every simulated lock idle,
    as built and locked, hubd holding no connection and its retained states saying locked, the
    counters of what the locks did at zero, the audit trail and hubd's log read from here on),
    and started afresh after a test that failed. A test of such a module with a ``home`` marker
    of its own gets a hub of its own. Only for scenarios that neither restart nor damage hubd,
    the bridge or the broker: the reset puts back what the locks' knobs changed, nothing more."""

    def __init__(self, config: pytest.Config, options: dict[str, Any], direct: bool,
                 workdir: Path) -> None:
        self._config, self._options, self._direct, self._workdir = config, options, direct, workdir
        self._stack: contextlib.ExitStack | None = None
        self._hub: HubUnderTest | None = None
        self._built: dict[str, dict[str, Any]] = {}
        self._starts = 0

    def fresh(self) -> HubUnderTest:
        """The hub, reset for the next test (started first if there is none)."""
        if self._hub is None:
            self._start()
        assert self._hub is not None
        if self._hub.home is not None:
            try:
                reset_home(self._hub, self._built)
            except BaseException:
                self.discard()  # the next test starts another
                raise
        return self._hub

    def _start(self) -> None:
        self._starts += 1
        tmp_path = self._workdir / f"hub-{self._starts}"
        tmp_path.mkdir()
        stack = contextlib.ExitStack()
        try:
            broker = Mosquitto(tmp_path / "mosquitto")
        except MosquittoNotInstalled as exc:
            pytest.fail(str(exc), pytrace=False)
        broker.start()
        stack.callback(broker.stop)
        key = BackendKey("backend-test", signing.generate_private_key())
        with stack:
            self._hub = stack.enter_context(running_hub(self._config, self._options, self._direct,
                                                        broker, key, tmp_path))
            if self._hub.home is not None:
                self._built = self._hub.sim.call(lambda: as_built(self._hub.sim.home))
                first_reads(self._hub)
            self._stack = stack.pop_all()

    def discard(self) -> None:
        """Stop the hub; the next test starts another."""
        stack, self._stack, self._hub = self._stack, None, None
        if stack is not None:
            stack.close()


@pytest.fixture(scope="module")
def shared_hub(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedHub]:
    """The hub of a module marked ``shared_home`` (see SharedHub); its ``home`` marker is the
    module's (``pytestmark``), the same for all its tests."""
    options, direct = _home_options(request)
    shared = SharedHub(request.config, options, direct, tmp_path_factory.mktemp("shared-hub"))
    yield shared
    shared.discard()


@pytest.fixture
def mosquitto(request: pytest.FixtureRequest) -> Mosquitto:
    """The test's broker: a fresh one (tests.fixtures), or in a ``shared_home`` module its
    hub's."""
    if _shared(request):
        return request.getfixturevalue("hub").broker
    return request.getfixturevalue("mosquitto_factory")()


def _shared(request: pytest.FixtureRequest) -> bool:
    """The test runs on its module's shared hub: the module is marked ``shared_home`` and the
    test has no ``home`` marker of its own."""
    return (request.node.get_closest_marker("shared_home") is not None
            and not any(mark.name == "home" for mark in request.node.own_markers))


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest_asyncio.fixture
async def centre(hub: HubUnderTest, mosquitto: Mosquitto) -> AsyncIterator[AlarmCentre]:
    """The alarm centre: its MQTT side records every alarm by id and confirms it handled; its DC-09
    receiver (pysiaalarm) takes the bridge's second path and files it under the same id."""
    async with AlarmCentre(mosquitto.host, mosquitto.port, dc09_accounts={ACCOUNT: None},
                           dc09_port=hub.dc09_port) as c:
        yield c


@pytest_asyncio.fixture
async def backend(mosquitto: Mosquitto) -> AsyncIterator[BackendClient]:
    """The cloud backend's MQTT client."""
    async with BackendClient(mosquitto.host, mosquitto.port, client_id="hil-backend") as client:
        yield client




@pytest.fixture
def fault_rng(record_property: pytest.RecordProperty) -> random.Random:
    """The random source of a scenario that injects faults at random moments. Its seed is
    ``FAULT_SEED`` when set (a replay), else a fresh one; it is recorded as the test's ``seed``
    property, so a failure names it (hil_tests/report.py, the JUnit XML, scripts/flake-hunt)."""
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1 << 30))
    record_property("seed", seed)
    return random.Random(seed)


#: How many of the bridge's and hubd's last log lines a failing scenario's report carries.
LAST_WORDS = 80


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failing scenario's report carries the bridge's and hubd's last words: a flake seen once
    under load (scripts/flake-hunt) must be explainable from its log alone."""
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    hub = getattr(item, "funcargs", {}).get("hub")
    if report.failed and isinstance(hub, HubUnderTest):
        lines = hub.log_text().splitlines()[-LAST_WORDS:]
        report.sections.append((f"hubd's last {len(lines)} log lines", "\n".join(lines)))
        if hub.home is not None:
            try:
                bridge = hub.home.call(lambda: list(hub.home.home.bridge.log[-LAST_WORDS:]), timeout=5)
            except Exception as exc:  # the home may be what broke: say so, keep the report
                bridge = [f"(the simulated home did not answer: {exc!r})"]
            report.sections.append((f"the bridge's last {len(bridge)} log lines", "\n".join(bridge)))
            if hub.home.home.modem is not None:  # an LTE scenario: where the modem's bytes stand
                try:
                    modem = hub.home.call(lambda: _modem_state(hub.home.home.modem), timeout=5)
                except Exception as exc:
                    modem = f"(the simulated home did not answer: {exc!r})"
                report.sections.append(("the modem's sockets and last AT commands", modem))
    return report


def _modem_state(modem: Any) -> str:
    """Each open connect id's counters (what arrived, what the bridge read, what waits unread,
    what AT+QISEND took and is unacknowledged) and the modem's last 30 AT commands."""
    lines = [f"connect id {cid}: open {sock.open}, received {sock.received}, read {sock.read}, "
             f"unread {len(sock.rx)}, sent {sock.sent}, unacked {sock.unacked}"
             for cid, sock in sorted(modem.sockets.items())]
    return "\n".join(lines + ["last AT commands:", *modem.commands[-30:]])
