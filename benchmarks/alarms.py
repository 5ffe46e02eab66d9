"""Benchmark: a safety alarm from the resident's press to the alarm centre, over both paths, and
hubd's durable alarm outbox.

The real parts but the hardware: the bridge firmware in MicroPython (simulator/home.py) with a
simulated alarm unit on its UART 2 and a simulated BG95 modem (no delays) on UART 3, hubd as its
own process, a private Mosquitto, the reference alarm centre (simulator/alarm_centre.py, confirming
at once) and pysiaalarm as the centre's SIA DC-09 receiver on loopback. One press at a time: the
next once the resident has heard "help is on the way" for the last. Times are this machine's wall
clock, read where each part notes them (the press on the unit model's CPython side, sub-second).

1. primary path (MQTT), per hop:

    unit_ack  press -> the unit hears ACK: unit UART, frame check, the alarm on the bridge's flash
              journal (os.sync), ACK back
    to_hubd   -> hubd has the `alarm` link message (its received_at; the serial link)
    store     -> hubd's first publish (SQLite commit with fsync, alarm_stored, the outbox wakes)
    mqtt      -> the centre has it (QoS 1 through Mosquitto)
    centre    -> the centre stamps its handled-confirmation (handling delay 0)
    back      -> the unit hears HELP_ON_THE_WAY (confirmation to hubd over MQTT, commit,
              alarm_handled on the link, confirm line on the bridge's flash, frame to the unit)

   and the totals press -> centre, press -> handled, press -> help on the way.

2. second path (SIA DC-09 over LTE), in two situations: the broker stopped (hubd stores the alarm
   but nobody can confirm it: the bridge sends it handled_deadline_ms after taking it) and hubd
   stopped (the host link down longer than hub_down_ms: at once). Per hop:

    unit_ack  as above
    wait      -> the modem's first AT command for the alarm: the deadline (configuration, not speed)
              and the bridge's half-second check of what the second path must carry (each press
              waits a random part of that half second first, so it lands at a random phase);
              on the open socket the frame is built just before that command
    lte       -> pysiaalarm has it (AT+QISEND, TCP, DC-09 parse and ACK; for the first alarm the
              attach and the socket open too): the part after the bridge decided,
              `after_decision`
    back      -> the unit hears HELP_ON_THE_WAY (the DC-09 ACK back through the modem, confirm
              line on flash)

   With the broker stopped, hubd keeps every alarm it stored: when the broker is back its outbox
   delivers them over MQTT too, and the benchmark waits for each such copy (the centre knows it for
   a duplicate by its id).

3. hubd's outbox: hubd.alarms.delivery.Alarms in this process, on a real SQLite store (WAL,
   synchronous=FULL) and Mosquitto, fed `alarm` messages back to back as the bridge link hands
   them over: alarms/s stored durably (receipt -> alarm_stored to the bridge; the serial link is
   not in it, it is 1's to_hubd), then alarms/s drained to the confirming centre (published with
   PUBACK, confirmed, marked handled, alarm_handled to the bridge).

Counted while measuring: sent, received, duplicates (copies beyond the first), lost, and how the
bridge firmware fared (boots, resets, error lines in its log). An alarm that never reached the
centre, one that hubd held and never delivered, or a firmware that crashed or reset is reported
loudly and the benchmark exits 1 (a firmware that stops for good ends the presses there). Prints a
table and writes the figures, the machine, versions and settings as JSON.

    .venv/bin/python benchmarks/alarms.py --presses 200 --lte-presses 50 --outbox 2000
    .venv/bin/python benchmarks/alarms.py --presses 20 --second-path hubd-down --outbox 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pysiaalarm import SIAAccount  # noqa: E402
from pysiaalarm.aio import SIAClient  # noqa: E402

from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi import signing  # noqa: E402
from hubd.alarms.delivery import Alarms  # noqa: E402
from hubd.inputs import Inputs  # noqa: E402
from hubd.mqtt import HubMqtt  # noqa: E402
from hubd.config import AlarmsConfig, MqttConfig  # noqa: E402
from hubd.store.database import DB_NAME, Store  # noqa: E402
from simulator.alarm_centre import PRIMARY, AlarmCentre  # noqa: E402
from simulator.alarm_unit import AlarmUnit  # noqa: E402
from simulator.bridge_device import micropython_binary  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, default_locks, record_pairings  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from simulator.ports import free_port  # noqa: E402
from tests.mosquitto import Mosquitto, find_mosquitto  # noqa: E402
from wire import alarms, messages  # noqa: E402
from benchmarks.figures import percentile, row, summary  # noqa: E402

T = TypeVar("T")

HELP = "help_on_the_way"
BROKER_DOWN = "broker-down"
HUBD_DOWN = "hubd-down"
OUTBOX_HUB = "bench-outbox"
ACCOUNT = "12AB"  # the DC-09 account the bridge sends as and the receiver accepts
#: The bridge checks every half second what its second path must carry (firmware/second_path.py
#: carry); presses at a random phase of that check, as a resident's would be.
CHECK_S = 0.5
#: A part stops pressing after this many presses in a row got no answer: the path is down, and
#: waiting out every remaining press would only take hours to say so.
GIVE_UP = 3
#: How long a press may take beyond the configured deadlines before it counts as unanswered.
ANSWER_S = 20.0
PRIMARY_HOPS = ("unit_ack", "to_hubd", "store", "mqtt", "centre", "back")
PRIMARY_TOTALS = ("press_to_centre", "press_to_handled", "press_to_help")
SECOND_HOPS = ("unit_ack", "wait", "lte", "back")
SECOND_TOTALS = ("press_to_receiver", "after_decision", "press_to_help")


# --- figures ---------------------------------------------------------------------------------------

def trend(values_s: list[float]) -> dict[str, float]:
    """The median of the first and of the last tenth of a run, in order: a bridge or hubd that
    slows down as it goes (a heap filling, a table growing) shows here."""
    k = max(1, len(values_s) // 10)
    return {"first_tenth_p50_ms": percentile(values_s[:k], 50) * 1000,
            "last_tenth_p50_ms": percentile(values_s[-k:], 50) * 1000}


def summaries(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: summary(values) for name, values in samples.items() if values}


# --- the instrumented parts ------------------------------------------------------------------------

class TimedUnit(AlarmUnit):
    """The simulated alarm unit, noting (wall clock, its own CPython side) when it pressed and
    when it first heard each answer from the bridge."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pressed_at: dict[int, float] = {}
        self.heard_at: dict[tuple[int, str], float] = {}
        self._open: set[int] = set()  # pressed, help on the way not heard yet

    def press(self, event: str = alarms.BUTTON, device: str = "pendant") -> int:
        at = time.time()
        eid = super().press(event, device)
        self.pressed_at[eid] = at
        self._open.add(eid)
        return eid

    def _readable(self) -> None:
        super()._readable()
        now = time.time()
        for eid in list(self._open):
            for name in self.heard.get(eid, ()):
                self.heard_at.setdefault((eid, name), now)
            if (eid, HELP) in self.heard_at:
                self._open.discard(eid)


class TimedList(list):  # type: ignore[type-arg]
    """A list that notes when each item was appended: the modem model's record of AT commands."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.time())
        super().append(item)


class TimedReceiver:
    """pysiaalarm on loopback as the alarm centre's DC-09 receiver: when each alarm id arrived and
    how often; hands every arrival to the centre's records so both paths land in one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrived_at: dict[str, float] = {}
        self.copies: dict[str, int] = {}
        self.centre: AlarmCentre | None = None
        self.client = SIAClient("127.0.0.1", port, [SIAAccount(ACCOUNT, None)], self._on_event)

    async def _on_event(self, event: Any) -> None:
        now = time.time()
        x_data = event.x_data or ""
        if not x_data.startswith("I"):
            return  # a supervision message carries no alarm
        alarm_id = x_data[1:]
        self.arrived_at.setdefault(alarm_id, now)
        self.copies[alarm_id] = self.copies.get(alarm_id, 0) + 1
        if self.centre is not None:
            self.centre.received_over_dc09(alarm_id, now)


class BridgeStandIn:
    """The bridge link as hubd.alarms.delivery.Alarms sees it (hubd.alarms.delivery.AlarmBridge): notes when each
    answer would go out on the link (perf_counter)."""

    is_up = True

    def __init__(self) -> None:
        self.stored: dict[str, float] = {}
        self.handled: dict[str, float] = {}
        self.stored_told = 0  # answers, a repeat included

    def send_alarm_stored(self, alarm_id: str) -> bool:
        self.stored.setdefault(alarm_id, time.perf_counter())
        self.stored_told += 1
        return True

    def send_alarm_handled(self, alarm_id: str) -> bool:
        self.handled.setdefault(alarm_id, time.perf_counter())
        return True

    def send_clock(self, unix: int | None = None) -> bool:
        return True


# --- helpers ---------------------------------------------------------------------------------------

async def on_home(home: HomeThread, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the home's event loop (the unit lives there) without blocking this one."""

    async def call() -> T:
        return fn()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), home.loop))


async def until(condition: Callable[[], Any], timeout: float, step: float = 0.01) -> bool:
    """Wait until ``condition()`` holds; False if it did not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def progress(label: str, i: int, n: int, last_ms: float | None) -> None:
    if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
        last = "no answer" if last_ms is None else f"{last_ms:.1f} ms"
        print(f"  {label}: {i + 1}/{n}, last {last}", flush=True)


@dataclass
class Rig:
    """The running parts, shared by the scenarios."""

    broker: Mosquitto
    home: HomeThread
    unit: TimedUnit
    hubd: subprocess.Popen[bytes]
    bridge_lines: list[tuple[float, str]]  # (when, line) of the bridge's latest log lines
    settings: dict[str, Any]
    dead: bool = False  # the firmware stopped and did not boot again: no more presses
    unanswered: int = 0  # presses in a row without an answer

    @property
    def modem_commands(self) -> TimedList:
        modem = self.home.home.modem
        assert modem is not None and isinstance(modem.commands, TimedList)
        return modem.commands

    def bridge_said(self, text: str, since: float) -> bool:
        return any(at >= since and text in line for at, line in list(self.bridge_lines))

    def bridge_running(self) -> bool:
        return self.home.home.bridge.running

    async def answered(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait for ``done()``; a firmware that stopped gets 10 s to boot again (a reset) before
        it counts as dead, instead of every later press waiting out its whole timeout."""
        deadline = time.monotonic() + timeout
        while await until(lambda: done() or not self.bridge_running(),
                          max(0.0, deadline - time.monotonic())):
            if done():
                self.unanswered = 0
                return True
            if not await until(self.bridge_running, 10):
                self.dead = True
                print("  THE BRIDGE FIRMWARE STOPPED and did not boot again: no more presses",
                      flush=True)
                return False
        self.unanswered += 1
        return False

    def stop_pressing(self) -> bool:
        """Whether this part must stop: the firmware is dead, or the path has stopped answering."""
        if self.unanswered >= GIVE_UP and not self.dead:
            print(f"  NO ANSWER to the last {self.unanswered} presses: this part stops here",
                  flush=True)
        return self.dead or self.unanswered >= GIVE_UP


# --- 1. the primary path ---------------------------------------------------------------------------

async def primary(rig: Rig, centre: AlarmCentre, receiver: TimedReceiver, n: int) -> dict[str, Any]:
    unit = rig.unit
    pressed: list[tuple[int, str]] = []
    print(f"primary path: {n} presses, unit -> bridge -> hubd -> Mosquitto -> alarm centre and "
          f"back", flush=True)
    rig.unanswered = 0
    for i in range(n):
        eid = await on_home(rig.home, unit.press)
        alarm_id = unit.alarm_id(eid)
        pressed.append((eid, alarm_id))
        await rig.answered(lambda: (eid, HELP) in unit.heard_at, timeout=ANSWER_S)
        arrived = centre.alarms.get(alarm_id)
        last = None if arrived is None else (arrived.arrived_at - unit.pressed_at[eid]) * 1000
        progress("primary", i, n, last)
        if rig.stop_pressing():
            break
    ids = [alarm_id for _, alarm_id in pressed]
    await until(lambda: all(i in centre.alarms for i in ids), timeout=10)

    samples: dict[str, list[float]] = {name: [] for name in PRIMARY_TOTALS + PRIMARY_HOPS}
    over_lte = 0
    for eid, alarm_id in pressed:
        record = centre.alarms.get(alarm_id)
        if record is None:
            continue
        if receiver.copies.get(alarm_id) or record.first_path != PRIMARY or record.first is None:
            over_lte += 1  # slower than the handled deadline: not a primary-path figure
            continue
        first = record.first
        at = {"press": unit.pressed_at[eid], "ack": unit.heard_at.get((eid, "ack")),
              "hubd": first.received_at, "published": first.published_at,
              "centre": record.arrived_at, "handled": record.handled_at,
              "help": unit.heard_at.get((eid, HELP))}
        spans = {"press_to_centre": ("press", "centre"), "press_to_handled": ("press", "handled"),
                 "press_to_help": ("press", "help"), "unit_ack": ("press", "ack"),
                 "to_hubd": ("ack", "hubd"), "store": ("hubd", "published"),
                 "mqtt": ("published", "centre"), "centre": ("centre", "handled"),
                 "back": ("handled", "help")}
        for name, (start, end) in spans.items():
            if at[start] is not None and at[end] is not None:
                samples[name].append(at[end] - at[start])
    received = [i for i in ids if i in centre.alarms]
    counts = {
        "sent": len(ids), "not_pressed": n - len(ids), "received": len(received),
        "duplicates": sum(centre.alarms[i].duplicates for i in received),
        "lost": len(ids) - len(received),
        "over_lte": over_lte,
        "resident_told_help": sum(1 for eid, _ in pressed if (eid, HELP) in unit.heard_at),
    }
    return {"counts": counts, "lost_ids": [i for i in ids if i not in centre.alarms],
            "totals": summaries({k: samples[k] for k in PRIMARY_TOTALS}),
            "hops": summaries({k: samples[k] for k in PRIMARY_HOPS}),
            "trend": {k: trend(samples[k]) for k in ("press_to_centre", "press_to_help")
                      if samples[k]}}


# --- 2. the second path ----------------------------------------------------------------------------

async def second_path(rig: Rig, centre: AlarmCentre, receiver: TimedReceiver, n: int,
                      situation: str) -> dict[str, Any]:
    unit = rig.unit
    timings = rig.settings["alarm_timings"]
    if situation == BROKER_DOWN:
        print(f"second path, broker stopped: {n} presses; hubd stores each, nobody confirms, the "
              f"bridge sends it over LTE {timings['handled_deadline_ms']} ms after taking it",
              flush=True)
        await asyncio.to_thread(rig.broker.stop)
    else:
        print(f"second path, hubd stopped: {n} presses; the host link is down, the bridge sends "
              f"each over LTE at once", flush=True)
        stopped = time.time()
        await asyncio.to_thread(stop_hubd, rig.hubd)
        if not await until(lambda: rig.bridge_said("host link down", stopped), timeout=15):
            raise RuntimeError("the bridge never noticed that hubd had stopped")
        await asyncio.sleep(timings["hub_down_ms"] / 1000 + 0.2)
    pressed: list[tuple[int, str]] = []
    timeout = timings["handled_deadline_ms"] / 1000 + ANSWER_S
    rig.unanswered = 0
    phase = random.Random(n)
    for i in range(n):
        await asyncio.sleep(phase.uniform(0, CHECK_S))
        eid = await on_home(rig.home, unit.press)
        alarm_id = unit.alarm_id(eid)
        pressed.append((eid, alarm_id))
        await rig.answered(lambda: alarm_id in receiver.arrived_at and (eid, HELP) in unit.heard_at,
                           timeout=timeout)
        at = receiver.arrived_at.get(alarm_id)
        progress(situation, i, n, None if at is None else (at - unit.pressed_at[eid]) * 1000)
        if rig.stop_pressing():
            break
    ids = [alarm_id for _, alarm_id in pressed]

    samples: dict[str, list[float]] = {name: [] for name in SECOND_TOTALS + SECOND_HOPS}
    commands = rig.modem_commands
    unattributed = 0
    for eid, alarm_id in pressed:
        press, ack = unit.pressed_at[eid], unit.heard_at.get((eid, "ack"))
        arrived, told = receiver.arrived_at.get(alarm_id), unit.heard_at.get((eid, HELP))
        # Presses wait for the last one's answer, so the first AT command after a press belongs to
        # that alarm's exchange (the bridge raised no alarm of its own in between: checked below).
        decided = next((t for t in list(commands.times) if t >= press), None)
        if decided is not None and arrived is not None and decided > arrived:
            decided = None
        if decided is None:
            unattributed += 1
        for name, start, end in (("press_to_receiver", press, arrived), ("after_decision", decided, arrived),
                                 ("press_to_help", press, told), ("unit_ack", press, ack),
                                 ("wait", ack, decided), ("lte", decided, arrived),
                                 ("back", arrived, told)):
            if start is not None and end is not None:
                samples[name].append(end - start)

    mqtt_copies_missing: list[str] = []
    if situation == BROKER_DOWN:
        print("  broker back: waiting for hubd's outbox to deliver what it held", flush=True)
        back = time.monotonic()
        await asyncio.to_thread(rig.broker.start)
        delivered = await until(lambda: all(centre.alarms[i].copies.get(PRIMARY, 0) >= 1
                                            for i in ids if i in centre.alarms), timeout=90)
        mqtt_copies_missing = [i for i in ids if i in centre.alarms
                               and not centre.alarms[i].copies.get(PRIMARY, 0)]
        if delivered:
            print(f"  hubd delivered all {len(ids)} over MQTT "
                  f"{time.monotonic() - back:.1f} s after the broker came back", flush=True)
    received = [i for i in ids if i in receiver.arrived_at]
    at_centre = [i for i in ids if i in centre.alarms]
    other_bridge_alarms = [i for i in receiver.arrived_at if not i.startswith(unit.unit_name)]
    counts = {
        "sent": len(ids), "not_pressed": n - len(ids), "received_dc09": len(received),
        "duplicates_dc09": sum(receiver.copies[i] - 1 for i in received),
        "lost": len(ids) - len(at_centre),
        "resident_told_help": sum(1 for eid, _ in pressed if (eid, HELP) in unit.heard_at),
        "unattributed_decisions": unattributed,
        "bridge_own_alarms_over_lte": len(other_bridge_alarms),
    }
    if situation == BROKER_DOWN:
        counts["mqtt_copies_after_broker_back"] = len(at_centre) - len(mqtt_copies_missing)
        counts["mqtt_copies_missing"] = len(mqtt_copies_missing)
        counts["duplicates_at_centre"] = sum(centre.alarms[i].duplicates for i in at_centre)
    return {"counts": counts, "lost_ids": [i for i in ids if i not in centre.alarms],
            "held_by_hubd_never_delivered": mqtt_copies_missing,
            "totals": summaries({k: samples[k] for k in SECOND_TOTALS}),
            "hops": summaries({k: samples[k] for k in SECOND_HOPS})}


# --- 3. hubd's alarm outbox ------------------------------------------------------------------------

async def outbox(broker: Mosquitto, state_dir: Path, n: int) -> dict[str, Any]:
    print(f"hubd's alarm outbox: {n} alarms taken back to back, then drained to the centre",
          flush=True)
    store = Store.open(state_dir)
    bridge = BridgeStandIn()
    mqtt = HubMqtt(MqttConfig(host=broker.host, port=broker.port), hub_id=OUTBOX_HUB,
                   client_id=f"hubd-{OUTBOX_HUB}")
    config = AlarmsConfig(heartbeat_s=86400)
    box = Alarms(store, OUTBOX_HUB, config, bridge, mqtt)
    mqtt.route(box.route())  # hubd/__main__.py's route of the centre's confirmations

    ids = [alarms.alarm_id("bench", i) for i in range(1, n + 1)]
    refused = 0
    async with AlarmCentre(broker.host, broker.port) as centre:
        await mqtt.start()
        await mqtt.wait_connected(10)
        tasks = [asyncio.create_task(mqtt.dispatch(Inputs())), asyncio.create_task(box.deliver())]
        try:
            intake: list[float] = []
            now = int(time.time())
            start = time.perf_counter()
            wall_start = time.time()
            for alarm_id in ids:
                message = messages.decode(messages.make(messages.ALARM, alarm_id, alarms.BUTTON,
                                                        "pendant", now, now))
                t = time.perf_counter()
                if box.received(message) is not None:
                    refused += 1
                    continue
                intake.append(bridge.stored[alarm_id] - t)
            intake_s = time.perf_counter() - start
            print(f"  {n} stored in {intake_s:.2f} s; draining", flush=True)
            await until(lambda: len(bridge.handled) >= n, timeout=max(60.0, n * 0.2), step=0.05)
            done = max(bridge.handled.values(), default=start)
            arrivals = [centre.alarms[i].arrived_at for i in ids if i in centre.alarms]
            await asyncio.sleep(0.5)  # late resends, if any, still count as duplicates
        finally:
            box.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await mqtt.stop()
            store.close()
        at_centre = [i for i in ids if i in centre.alarms]
        duplicates = sum(centre.alarms[i].duplicates for i in at_centre)
    conn = sqlite3.connect(state_dir / DB_NAME)
    try:
        rows, handled = conn.execute("SELECT count(*), count(handled_at) FROM alarms").fetchone()
    finally:
        conn.close()
    drain_s = done - start - intake_s
    publish_s = (max(arrivals) - wall_start - intake_s) if arrivals else 0.0
    counts = {"sent": n, "refused": refused, "stored": rows, "alarm_stored_told": bridge.stored_told,
              "received": len(at_centre), "duplicates": duplicates, "handled": handled,
              "alarm_handled_told": len(bridge.handled), "lost": n - len(at_centre)}
    return {
        "counts": counts, "lost_ids": [i for i in ids if i not in centre.alarms],
        "intake": {"alarms_per_s": len(intake) / intake_s if intake_s else 0.0, "seconds": intake_s,
                   "receipt_to_alarm_stored": summary(intake) if intake else {}},
        "drain": {"alarms_per_s": len(bridge.handled) / drain_s if drain_s > 0 else 0.0,
                  "seconds": drain_s,
                  "published_per_s": len(arrivals) / publish_s if publish_s > 0 else 0.0},
        "settings": {"resend_s": config.resend_s, "puback_each": True},
    }


# --- running it ------------------------------------------------------------------------------------

def bridge_health(bridge: Any, log: Path) -> dict[str, Any]:
    """How the firmware fared: boots, resets, and the log lines that speak of an error."""
    errors = []
    for line in log.read_text(errors="replace").splitlines():
        words = line.split(maxsplit=2)
        if (len(words) > 1 and words[1] == "error") or "Traceback" in line or "Error" in line \
                or "firmware exited" in line or "reset itself" in line:
            errors.append(line)
    return {"boots": bridge.boots, "resets": getattr(bridge, "resets", 0),
            "error_lines": len(errors), "errors": errors[:20]}


def versions(state_dir: Path) -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    mounts = Path("/proc/mounts").read_text().splitlines() if Path("/proc/mounts").exists() else []
    state = str(state_dir.resolve())
    fs = max((m.split() for m in mounts if state.startswith(m.split()[1])),
             key=lambda m: len(m[1]), default=["?", "?", "?"])
    return {
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "micropython": run(micropython_binary(), "-c", "import sys; print(sys.version)"),
        "mosquitto": run(find_mosquitto(), "-h"), "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": dist("paho-mqtt"), "pysiaalarm": dist("pysiaalarm"),
        "state_filesystem": f"{fs[2]} on {fs[1]}",
        "git": run("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
    }


async def drive(rig: Rig, receiver: TimedReceiver, presses: int, lte_presses: int,
                situations: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    await receiver.client.async_start()
    try:
        async with AlarmCentre(rig.broker.host, rig.broker.port) as centre:
            receiver.centre = centre
            if presses:
                results["primary"] = await primary(rig, centre, receiver, presses)
            results["second_path"] = {}
            for situation in situations:
                if rig.dead:
                    break
                results["second_path"][situation] = await second_path(rig, centre, receiver,
                                                                      lte_presses, situation)
    finally:
        # Closed from the modem's side first: pysiaalarm's handler then ends with the connection
        # instead of being cancelled mid-read by the server's stop.
        modem = rig.home.home.modem
        if modem is not None:
            await on_home(rig.home, modem.drop_socket)
            await asyncio.sleep(0.2)
        await receiver.client.async_stop()
    return results


def table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"{title:<22}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, s in rows:
        print(row(name, s, 22))


def report(result: dict[str, Any]) -> list[str]:
    """Print the tables and counts; return what went wrong (lost or undelivered alarms)."""
    problems: list[str] = []
    health = result.get("bridge")
    if health:
        print(f"\nbridge firmware: {health['boots']} boot(s), {health['resets']} reset(s), "
              f"{health['error_lines']} error line(s) in its log")
        if health["boots"] != 1 or health["resets"] or health["error_lines"]:
            problems.append(f"the bridge firmware booted {health['boots']} time(s), reset "
                            f"{health['resets']} time(s) and logged: {health['errors'][:6]}")
    part = result.get("primary")
    if part:
        print()
        table("primary (MQTT)", [(k, v) for k, v in part["totals"].items()]
              + [(f"  {k}", v) for k, v in part["hops"].items()])
        print("  counts: " + ", ".join(f"{k} {v}" for k, v in part["counts"].items()))
        for name, t in part["trend"].items():
            print(f"  {name} p50, first tenth of the run {t['first_tenth_p50_ms']:.1f} ms, last "
                  f"tenth {t['last_tenth_p50_ms']:.1f} ms")
        if part["counts"]["lost"]:
            problems.append(f"primary path: {part['counts']['lost']} alarm(s) never reached the "
                            f"centre: {part['lost_ids']}")
        if part["counts"].get("not_pressed"):
            problems.append(f"primary path: stopped with {part['counts']['not_pressed']} presses "
                            f"to go (the firmware died or the path stopped answering)")
    for situation, part in result.get("second_path", {}).items():
        print()
        table(f"second path, {situation}", [(k, v) for k, v in part["totals"].items()]
              + [(f"  {k}", v) for k, v in part["hops"].items()])
        print("  counts: " + ", ".join(f"{k} {v}" for k, v in part["counts"].items()))
        if part["counts"]["lost"]:
            problems.append(f"second path ({situation}): {part['counts']['lost']} alarm(s) never "
                            f"reached the centre: {part['lost_ids']}")
        if part["counts"].get("not_pressed"):
            problems.append(f"second path ({situation}): stopped with "
                            f"{part['counts']['not_pressed']} presses to go (the firmware died or "
                            f"the path stopped answering)")
        if part["held_by_hubd_never_delivered"]:
            problems.append(f"second path ({situation}): hubd held "
                            f"{len(part['held_by_hubd_never_delivered'])} alarm(s) and never "
                            f"delivered them over MQTT: {part['held_by_hubd_never_delivered']}")
    part = result.get("outbox")
    if part:
        print()
        intake, drain = part["intake"], part["drain"]
        print(f"hubd outbox: {intake['alarms_per_s']:.0f} alarms/s stored durably "
              f"({intake['seconds']:.2f} s for {part['counts']['sent']}), "
              f"{drain['alarms_per_s']:.0f} alarms/s drained to handled "
              f"({drain['seconds']:.2f} s; published {drain['published_per_s']:.0f}/s)")
        if intake["receipt_to_alarm_stored"]:
            table("", [("receipt->alarm_stored", intake["receipt_to_alarm_stored"])])
        print("  counts: " + ", ".join(f"{k} {v}" for k, v in part["counts"].items()))
        if part["counts"]["lost"] or part["counts"]["handled"] < part["counts"]["sent"]:
            problems.append(f"outbox: {part['counts']['lost']} alarm(s) never reached the centre, "
                            f"{part['counts']['sent'] - part['counts']['handled']} not handled: "
                            f"{part['lost_ids'][:20]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=200,
                        help="presses over the primary path (default 200; 0 skips it)")
    parser.add_argument("--lte-presses", type=int, default=50,
                        help="presses over the second path, in each situation (default 50)")
    parser.add_argument("--second-path", choices=(BROKER_DOWN, HUBD_DOWN, "both", "none"),
                        default="both", help="the situations that send alarms over LTE "
                        "(default both: the broker stopped, then hubd stopped)")
    parser.add_argument("--outbox", type=int, default=2000,
                        help="alarms through hubd's outbox in-process (default 2000; 0 skips it)")
    parser.add_argument("--handled-deadline-ms", type=int, default=2000,
                        help="the bridge's handled_deadline_ms: no alarm_handled this long, then "
                        "LTE (default 2000; the firmware's is 30000)")
    parser.add_argument("--hub-down-ms", type=int, default=1000,
                        help="the bridge's hub_down_ms: the host link down this long, then LTE "
                        "(default 1000; the firmware's is 10000)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/alarms.json",
                        help="where to write the JSON figures")
    args = parser.parse_args(argv)
    # Terminated (a test's timeout, Ctrl-C's sibling): still stop hubd, the bridge and the broker.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s")
    situations = {"both": [BROKER_DOWN, HUBD_DOWN], "none": []}.get(args.second_path,
                                                                    [args.second_path])
    if not args.lte_presses:
        situations = []

    work = Path(tempfile.mkdtemp(prefix="bench-alarms-"))
    timings = {"handled_deadline_ms": args.handled_deadline_ms, "hub_down_ms": args.hub_down_ms}
    result: dict[str, Any] = {
        "benchmark": "safety alarm: press -> alarm centre over MQTT and over LTE (SIA DC-09), "
                     "and hubd's durable alarm outbox",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": versions(work),
    }
    key = BackendKey("bench", signing.generate_private_key())
    receiver = TimedReceiver(free_port())
    lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port, "account": ACCOUNT,
           "receiver": "1", "retry_ms": 1000}
    bridge_lines: list[tuple[float, str]] = []
    bridge_log = (work / "bridge.log").open("a", buffering=1)

    def on_bridge_log(line: str) -> None:
        bridge_lines.append((time.time(), line))
        del bridge_lines[:-500]
        bridge_log.write(line + "\n")

    unit = TimedUnit()
    sim = SimulatedHome(work / "home", locks=default_locks(), alarm_unit=unit,
                        alarm_timings=timings, lte=lte, on_bridge_log=on_bridge_log)
    assert sim.modem is not None
    sim.modem.delay = 0.0
    sim.modem.attach_delay = 0.0
    sim.modem.commands = TimedList()
    result["settings"] = {
        "presses": args.presses, "lte_presses": args.lte_presses, "second_path": situations,
        "outbox": args.outbox, "alarm_timings": timings,
        "bridge_json": {k: v for k, v in sim.bridge_config().items() if k in ("alarm_unit", "lte")},
        "unit": {"heartbeat_s": unit.heartbeat_s, "retransmit_s": unit.retransmit_s},
        "modem": {"delay_s": 0.0, "attach_delay_s": 0.0},
        "centre": {"handling_delay_s": 0.0},
        "hubd": "defaults ([alarms] resend_s 10), log level INFO",
    }
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    home = HomeThread(sim)
    hubd: subprocess.Popen[bytes] | None = None
    try:
        home.start()
        config = work / "hubd.toml"
        # The home's lock is paired with hubd, which drives it through the bridge's proxy.
        record_pairings(work / "hubd-state", sim.locks.values())  # write_hubd_config's state_dir
        write_hubd_config(config, broker, sim.port, key, list(sim.locks), link_key=sim.link_key)
        config.write_text(config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"'))
        hubd = start_hubd(config, work / "hubd.log")
        wait_online(broker, HUB_ID, hubd, work / "hubd.log")
        booted = time.monotonic()
        while not (any("host link up" in line for _, line in list(bridge_lines))
                   and any("alarm unit on UART" in line for _, line in list(bridge_lines))):
            if time.monotonic() - booted > 30:
                raise RuntimeError("the bridge never came up with its alarm unit")
            time.sleep(0.05)
        rig = Rig(broker, home, unit, hubd, bridge_lines, result["settings"])
        result.update(asyncio.run(drive(rig, receiver, args.presses, args.lte_presses, situations)))
        stop_hubd(hubd)
        if args.outbox:
            if not broker.running:
                broker.start()
            result["outbox"] = asyncio.run(outbox(broker, work / "outbox-state", args.outbox))
    except Exception:
        print(f"failed; hubd's log, the bridge's and the broker's are in {work}", file=sys.stderr)
        raise
    finally:
        if hubd is not None:
            stop_hubd(hubd)
        home.stop()
        broker.stop()
        bridge_log.close()

    result["bridge"] = bridge_health(sim.bridge, work / "bridge.log")
    problems = report(result)
    lost = sum(part["counts"]["lost"] for part in
               [result.get("primary"), result.get("outbox"), *result.get("second_path", {}).values()]
               if part)
    result["lost"] = lost
    result["problems"] = problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if problems:
        print("\n" + "!" * 78, file=sys.stderr)
        print(f"{lost} ALARM(S) LOST" if lost else "NO ALARM LOST, BUT:", file=sys.stderr)
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        print(f"logs in {work}", file=sys.stderr)
        print("!" * 78, file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
