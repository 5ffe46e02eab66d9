"""Soak: a four-lock home driven by hubd through the bridge's Bluetooth proxy, with the alarm unit
and LTE on the bridge, thousands of lock operations and alarms mixed, the serial link cut now and
then; nothing may be lost, and the bridge's heap is watched all along (issue 13 item 5, issue 15).

The real parts but the hardware, as benchmarks/roundtrip.py and benchmarks/alarms.py use them: a
private Mosquitto, hubd as its own process (its own lock driver on bleak, through the bridge as
Bluetooth proxy: bridge.json names no lock, simulator/home.py; the locks' pairings in hubd's state database before it starts, as ``hubctl pair`` leaves them),
the real firmware in MicroPython on the simulated bridge (its calibrated heap, booted from the
ROMFS image: docs/architecture.md, "Heap"), four locks (inside turner, in-cylinder, key box,
entrance door), a simulated alarm unit on the bridge's UART 2, a simulated BG95 modem on UART 3
whose SIA DC-09 reaches the reference alarm centre's receiver (pysiaalarm), and the reference
alarm centre confirming every alarm over MQTT. The bridge has ``proxy.slots = 4`` (the default
is 3): one connection per lock, so four locks driven side by side never wait for a slot. hubd's
GATT cache is off (``[bluetooth] gatt_cache = false``): every connection discovers, as after
hubd's start, the bridge's heaviest proxy traffic.

What runs, with ``--ops N`` operations in all (about one in twenty an alarm):
- a worker per lock sends signed commands over MQTT, as the backend does, one after another
  (locks side by side), each an action of its kind chosen at random (``status`` now and then);
- alarms are pressed on the alarm unit (a button, a fall, a pull cord) at their share of the pace,
  at most a few waiting for "help on the way" at once;
- the serial line is cut about 25 times a run (at most every 60 commands;
  simulator/serial_line.py) for 0.5 to 3 s, and every third cut for 6 s with an alarm pressed at
  its start: longer than the bridge's ``hub_down_ms`` and ``handled_deadline_ms``, so that alarm
  takes the LTE second path.

What it checks (any failure: listed, exit status 1):
- every command got exactly one final answer (all answers on the answers topic are counted, not
  only the first final the client takes); copies of that one answer (the same status, reason,
  state and time: MQTT QoS 1 delivers at least once, and hubd publishes again what the broker had
  not acknowledged before a link cut, docs/mqtt-api.md) are counted, never two different finals;
- every alarm reached the centre (over MQTT or DC-09) and the unit heard "help on the way";
- each lock moved at most once per command: its motor count lies between the commands that
  succeeded in moving it and those plus the ones answered ``incomplete`` (a link cut after the
  write: the move may or may not have happened, never twice);
- the LTE second path carried at least one alarm, and at least one cut happened;
- the bridge never met a full heap (no MemoryError in its log, ``heap_drops`` 0) and at its lowest
  (``heap_min``) at least 40 % of the firmware's heap was free (``MIN_FREE``; the heap is the
  simulated chip's, docs/architecture.md "Heap").

What it prints and writes (JSON, --out): operations by outcome (status and reason), alarms (pressed,
at the centre, over each path, handled), link cuts, bridge boots and why, MemoryErrors in the
bridge's log and ``heap_drops`` (health's link counter, summed over boots), and from the bridge's
own health reports (seen on the line, every 5 s here) the lowest free heap after a collection
(``heap_min``) and the lowest largest free block (``heap_blk``) over the run, and the median free
heap by the number of BLE connections up at the report (what the proxy's connections cost).

    .venv/bin/python benchmarks/soak.py                        # 10,000 operations
    .venv/bin/python benchmarks/soak.py --quick                # a few hundred, a minute or two
    .venv/bin/python benchmarks/soak.py --ops 2000 --seed 7 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.figures import measured_here  # noqa: E402
from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi import signing, topics  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import Actor, Answer, CommandClaims, Role, Status  # noqa: E402
from hubd.locks import PairedLock  # noqa: E402
from hubd.store.pairings import record_pairing  # noqa: E402
from simulator.alarm_centre import PRIMARY, SECOND_PATH, AlarmCentre  # noqa: E402
from simulator.alarm_unit import AlarmUnit  # noqa: E402
from simulator.locks import (EntranceDoorLock, InCylinderLock, InsideTurnerLock, KeyBoxLock,  # noqa: E402
                             ReferenceProtocolLock)
from simulator.ports import free_port  # noqa: E402
from simulator.serial_line import TO_HUB, Crossing  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, address  # noqa: E402
from simulator import bridge_device  # noqa: E402
from simulator.bridge_device import DEFAULT_HEAP  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from tests.sia_receiver import ACCOUNT  # noqa: E402
from wire import alarms, frame, lockkinds, messages  # noqa: E402

#: The bridge's alarm timings: when it turns to its second path (as hil_tests use them).
ALARM_TIMINGS = {"heartbeat_ms": 500, "hub_down_ms": 2000, "handled_deadline_ms": 4000}
HEALTH_MS = 5000  # a health report every 5 s: the heap is watched closely
# The least share of the firmware's heap that must stay free at the run's lowest (issue 15): room
# for what the soak cannot provoke (a flood beside it, a bigger frame, a fragmenting heap).
MIN_FREE = 0.40
HEAP_SHORT = "the bridge's heap was"  # how the violation of MIN_FREE begins
ALARM_SHARE = 20  # one operation in this many is an alarm
MAX_OPEN_ALARMS = 4  # alarms pressed and not yet answered "help on the way"
LONG_CUT_S = 6.0  # beyond hub_down_ms and handled_deadline_ms (and the link's 3.5 s dead time)
ANSWER_S = 90.0  # a command's final answer must come within this (hubd's command_timeout_s is 40)
HELP = "help_on_the_way"
MOVING = ("unlock", "lock", "unlatch")


def four_locks() -> list[ReferenceProtocolLock]:
    """One lock of each kind, each with its own secret; quick motors and latches, and no battery
    drain (thousands of moves would empty a cell and every lock would refuse on low battery)."""
    quick = {"travel_time_s": 0.02, "battery_per_move": 0.0}
    return [
        InsideTurnerLock("back-door", "C0:FF:EE:00:00:02", os.urandom(32), **quick),
        InCylinderLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32), latch_hold_s=0.2,
                       relock_delay_s=0.2, **quick),
        KeyBoxLock("key-box", "C0:FF:EE:00:00:03", os.urandom(32), **quick),
        EntranceDoorLock("entrance", "C0:FF:EE:00:00:04", os.urandom(32), release_s=0.2, **quick),
    ]


class HealthTap(deque):  # type: ignore[type-arg]
    """The serial line's transcript, which also keeps every `health` the bridge sent (with when):
    read as a logic analyser on the cable would, whatever hubd made of it."""

    def __init__(self, maxlen: int | None) -> None:
        super().__init__(maxlen=maxlen)
        self.health: list[tuple[float, dict[str, Any]]] = []

    def append(self, crossing: Crossing) -> None:
        super().append(crossing)
        if crossing.direction != TO_HUB or crossing.ftype != frame.T_DATA or not crossing.body \
                or b'"health"' not in crossing.body:
            return
        try:
            msg = messages.decode(crossing.body)
        except messages.MessageError:
            return
        if msg["m"] == messages.HEALTH:
            self.health.append((time.time(), msg))


class BridgeLog:
    """The bridge's log lines, to a file, counting those that tell of an exhausted heap."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1)
        self.memory_errors = 0  # lines naming a MemoryError (a task or an input that met it)
        self.heap_resets = 0  # "heap exhausted ... resetting" (firmware/heap.py)

    def __call__(self, line: str) -> None:
        self._file.write(line + "\n")
        if "MemoryError" in line:
            self.memory_errors += 1
        if "heap exhausted" in line:
            self.heap_resets += 1

    def close(self) -> None:
        self._file.close()


class Soak:
    """One run: its parts, its counts and the checks at the end."""

    def __init__(self, ops: int, seed: int, work: Path, romfs: bool = True,
                 heap: int = DEFAULT_HEAP, broker: Mosquitto | None = None) -> None:
        self.rng = random.Random(seed)
        self.work = work
        self.alarms_target = max(1, ops // ALARM_SHARE)
        self.commands_target = ops - self.alarms_target
        self.dc09_port = free_port()
        self.bridge_log = BridgeLog(work / "bridge.log")
        # With a broker: hubd reaches it only through the bridge's LTE modem (issue 16: a home
        # without broadband, hubd's [uplink] mode = "lte"), its bytes on the same serial line.
        self.lte_uplink = broker is not None
        uplink = {} if broker is None else {"broker": (broker.host, broker.port),
                                            "broadband": False}
        self.home = HomeThread(SimulatedHome(
            work / "home", locks=four_locks(), seed=seed, on_bridge_log=self.bridge_log,
            proxy={"slots": 4},
            alarm_unit=AlarmUnit(heartbeat_s=0.5), alarm_timings=ALARM_TIMINGS,
            lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": self.dc09_port,
                 "account": ACCOUNT, "receiver": "1", "retry_ms": 1000},
            health={"health_ms": HEALTH_MS}, romfs=romfs, bridge_heap=heap, **uplink))
        line = self.home.home.line
        self.tap = HealthTap(line.transcript.maxlen)
        line.transcript = self.tap
        self.locks = dict(self.home.home.locks)
        # What the backend saw and did
        self.issued = 0  # commands handed out to the workers
        self.sent: dict[str, tuple[str, str]] = {}  # command id -> (lock, action)
        self.finals: dict[str, list[Answer]] = {}  # command id -> every final answer on the topic
        self.outcome: dict[str, Answer] = {}  # command id -> the final answer the client took
        self.errors: list[str] = []  # commands that raised (no final answer in time)
        self.pressed: list[tuple[int, str]] = []  # (event id, alarm id)
        self.cuts: list[float] = []  # each cut's length, s
        self.done = False
        self.started = time.monotonic()

    # --- the parts that run -------------------------------------------------------------------------

    async def worker(self, backend: BackendClient, key: BackendKey, lock_id: str) -> None:
        """One lock's commands, one after another, until the run has sent its share."""
        kind = self.locks[lock_id].kind
        actions = lockkinds.ACTIONS[kind]
        moving = [a for a in actions if a in MOVING]
        while self.issued < self.commands_target:
            self.issued += 1
            action = "status" if self.rng.random() < 0.05 else self.rng.choice(moving)
            claims = CommandClaims.new(hub=HUB_ID, lock=lock_id, action=action,
                                       actor=Actor(id="soak-nurse", role=Role.STAFF),
                                       assignment="soak", ttl_s=60)
            self.sent[claims.id] = (lock_id, action)
            final: Answer | None = None
            try:
                async for answer in backend.send_command(claims, key.sign(claims), timeout=ANSWER_S):
                    if answer.is_final:
                        final = answer
            except TimeoutError as exc:
                self.errors.append(f"{claims.id} ({lock_id} {action}): {exc or 'no final answer'}")
                continue
            assert final is not None
            self.outcome[claims.id] = final
            if final.reason == "bridge_unavailable":
                await asyncio.sleep(0.5)  # the link is cut: do not spin through the run

    async def count_answers(self, backend: BackendClient) -> None:
        """Every final answer published for any command, however many there are."""
        async with backend.watch(topics.answers(HUB_ID)) as queue:
            while True:
                message = await queue.get()
                try:
                    answer = Answer.model_validate_json(message.payload)
                except ValueError:
                    continue
                if answer.is_final and answer.id is not None and answer.verified:
                    self.finals.setdefault(answer.id, []).append(answer)

    def press(self) -> None:
        unit = self.home.home.alarm_unit
        assert unit is not None
        event = self.rng.choice((alarms.BUTTON, alarms.FALL, alarms.PULL_CORD))
        eid = self.home.call(lambda: unit.press(event))
        self.pressed.append((eid, unit.alarm_id(eid)))

    def answered(self) -> set[int]:
        """Event ids the unit heard "help on the way" for."""
        unit = self.home.home.alarm_unit
        assert unit is not None
        return self.home.call(lambda: {e for e, heard in unit.heard.items() if HELP in heard})

    async def presser(self) -> None:
        """Alarms at their share of the pace, at most MAX_OPEN_ALARMS unanswered at once."""
        every = self.commands_target / self.alarms_target
        while len(self.pressed) < self.alarms_target and not self.done:
            if self.issued < min(len(self.pressed) * every, self.commands_target):
                await asyncio.sleep(0.05)
                continue
            answered = await asyncio.to_thread(self.answered)
            if sum(1 for eid, _ in self.pressed if eid not in answered) >= MAX_OPEN_ALARMS:
                await asyncio.sleep(0.2)
                continue
            await asyncio.to_thread(self.press)
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))

    async def cutter(self, every_ops: int) -> None:
        """Cut the serial line now and then; every third cut a long one with an alarm pressed."""
        line = self.home.home.line
        n = 0
        next_at = every_ops
        while not self.done:
            if self.issued < next_at:
                await asyncio.sleep(0.1)
                continue
            n += 1
            long = n % 3 == 1  # the first cut is a long one: the LTE path is used early
            length = LONG_CUT_S if long else self.rng.uniform(0.5, 3.0)
            await asyncio.to_thread(self.home.call, lambda: setattr(line, "cut", True))
            if long and len(self.pressed) < self.alarms_target:
                await asyncio.sleep(0.2)
                await asyncio.to_thread(self.press)
                length -= 0.2
            await asyncio.sleep(length)
            await asyncio.to_thread(self.home.call, lambda: setattr(line, "cut", False))
            self.cuts.append(LONG_CUT_S if long else length)
            next_at = self.issued + every_ops

    async def progress(self, centre: AlarmCentre) -> None:
        last = 0
        while not self.done:
            await asyncio.sleep(1.0)
            done = len(self.outcome) + len(self.errors)
            if done // 500 > last // 500:
                last = done
                print(self.progress_line(centre), flush=True)

    def progress_line(self, centre: AlarmCentre) -> str:
        done = len(self.outcome) + len(self.errors)
        elapsed = time.monotonic() - self.started
        ok = sum(1 for a in self.outcome.values() if a.status is Status.SUCCEEDED)
        heap = ""
        if self.tap.health:
            h = self.tap.health[-1][1]
            heap = (f", heap free {h['heap_free']} B (least {min(x['heap_min'] for _, x in self.tap.health)} B,"
                    f" largest block least {min(x['heap_blk'] for _, x in self.tap.health)} B)")
        return (f"  {done}/{self.commands_target} commands ({ok} succeeded), "
                f"{len(self.pressed)}/{self.alarms_target} alarms pressed, "
                f"{sum(1 for _, i in self.pressed if i in centre.alarms)} at the centre, "
                f"{len(self.cuts)} link cuts, {elapsed:.0f} s{heap}")

    # --- the end ------------------------------------------------------------------------------------

    async def settle(self, centre: AlarmCentre, timeout: float = 180.0) -> None:
        """Wait for every alarm to be answered and reach the centre, then for late answers and one
        more health report."""
        ids = [alarm_id for _, alarm_id in self.pressed]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            answered = await asyncio.to_thread(self.answered)
            if all(i in centre.alarms for i in ids) and all(e in answered for e, _ in self.pressed):
                break
            await asyncio.sleep(0.5)
        reports = len(self.tap.health)
        end = time.monotonic() + 3 * HEALTH_MS / 1000
        while len(self.tap.health) == reports and time.monotonic() < end:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # a second final answer, if one were coming, would be here

    def figures(self, centre: AlarmCentre, elapsed: float) -> dict[str, Any]:
        bridge = self.home.home.bridge
        boots = self.home.call(lambda: {"boots": bridge.boots, "causes": list(bridge.causes),
                                        "resets": bridge.resets, "wdt_resets": bridge.wdt_resets,
                                        "exits": list(bridge.exits)})
        moves = self.home.call(lambda: {k: (lk.motor_moves, list(lk.moves))
                                        for k, lk in self.locks.items()})
        answered = self.answered()
        by_outcome = Counter(f"{a.status.value}" + (f" ({a.reason})" if a.reason else "")
                             for a in self.outcome.values())
        per_lock: dict[str, dict[str, Any]] = {}
        for cid, (lock_id, action) in self.sent.items():
            entry = per_lock.setdefault(lock_id, {"commands": 0, "moving": 0, "succeeded_moving": 0,
                                                  "incomplete_moving": 0, "motor_moves": 0})
            entry["commands"] += 1
            final = self.outcome.get(cid)
            outcome = "no answer" if final is None else final.status.value + (
                f" ({final.reason})" if final.reason else "")
            entry.setdefault("by_outcome", Counter())[outcome] += 1
            if action not in MOVING:
                continue
            entry["moving"] += 1
            if final is not None and final.status is Status.SUCCEEDED:
                entry["succeeded_moving"] += 1
            elif final is None or final.status is Status.INCOMPLETE:
                entry["incomplete_moving"] += 1  # (no answer at all counts as unknown too)
        for lock_id, (count, _) in moves.items():
            per_lock.setdefault(lock_id, {"commands": 0, "moving": 0, "succeeded_moving": 0,
                                          "incomplete_moving": 0, "motor_moves": 0})
            per_lock[lock_id]["motor_moves"] = count
        ids = [alarm_id for _, alarm_id in self.pressed]
        records = [centre.alarms[i] for i in ids if i in centre.alarms]
        reports = [h for _, h in self.tap.health]
        # heap_drops is a counter since boot: sum each boot's last value (a boot's up_s restarts)
        heap_drops = 0
        last_drops = 0
        last_up = -1
        for h in reports:
            if h["up_s"] < last_up:
                heap_drops += last_drops
            last_up, last_drops = h["up_s"], h["link"]["heap_drops"]
        heap_drops += last_drops
        violations: list[str] = []
        copies = 0
        for cid in self.sent:
            finals = self.finals.get(cid, [])
            distinct = {a.model_dump_json() for a in finals}  # a redelivered copy is the same answer
            copies += len(finals) - len(distinct)
            if len(distinct) != 1:
                said = ", ".join(sorted(f"{a.status.value} ({a.reason})" for a in finals))
                violations.append(f"command {cid} ({' '.join(self.sent[cid])}): {len(distinct)} "
                                  f"different final answers: {said}")
        violations += [f"no final answer: {e}" for e in self.errors]
        for lock_id, e in per_lock.items():
            if not e["succeeded_moving"] <= e["motor_moves"] <= e["succeeded_moving"] + e["incomplete_moving"]:
                violations.append(f"lock {lock_id} moved {e['motor_moves']} times for "
                                  f"{e['succeeded_moving']} succeeded and {e['incomplete_moving']} "
                                  f"incomplete moving commands")
        lost = [i for i in ids if i not in centre.alarms]
        unanswered = [i for e, i in self.pressed if e not in answered]
        violations += [f"alarm {i} never reached the centre" for i in lost]
        violations += [f"alarm {i}: the unit never heard help on the way" for i in unanswered]
        dc09 = sum(r.copies[SECOND_PATH] for r in records)
        if dc09 == 0:
            violations.append("no alarm took the LTE second path: the run did not test it")
        if not self.cuts:
            violations.append("the link was never cut: the run did not test it")
        if not reports:
            violations.append("the bridge sent no health report")
        if self.bridge_log.memory_errors or heap_drops:
            violations.append(f"the bridge met a full heap: {self.bridge_log.memory_errors} "
                              f"MemoryError lines logged, {heap_drops} inputs dropped")
        firmware_heap = self.home.home.bridge.heap
        lowest = min((h["heap_min"] for h in reports), default=None)
        if lowest is not None and lowest < MIN_FREE * firmware_heap:
            violations.append(f"{HEAP_SHORT} {lowest / firmware_heap:.1%} free at its "
                              f"lowest ({lowest} of {firmware_heap} B), less than {MIN_FREE:.0%}")
        return {
            "benchmark": "soak: four locks through hubd's driver and the proxy, alarm unit, LTE, "
                         "link cuts",
            **measured_here(),
            "seconds": round(elapsed, 1),
            "operations": len(self.sent) + len(self.pressed),
            "commands": {"sent": len(self.sent), "by_outcome": dict(by_outcome.most_common()),
                         "no_final_answer": len(self.errors), "final_copies": copies,
                         "per_second": round(len(self.sent) / elapsed, 1) if elapsed else None},
            "locks": per_lock,
            "alarms": {"pressed": len(ids), "at_centre": len(records),
                       "help_on_the_way": len(ids) - len(unanswered),
                       "copies": {PRIMARY: sum(r.copies[PRIMARY] for r in records), SECOND_PATH: dc09},
                       "over_lte": sum(1 for r in records if r.copies[SECOND_PATH]),
                       "duplicates": sum(r.duplicates for r in records)},
            "link_cuts": {"count": len(self.cuts), "seconds": round(sum(self.cuts), 1)},
            "bridge": {**boots, "reboots": boots["boots"] - 1,
                       "memory_errors_logged": self.bridge_log.memory_errors,
                       "heap_exhausted_resets": self.bridge_log.heap_resets,
                       "heap_drops": heap_drops},
            "heap": {"reports": len(reports),
                     "firmware_heap": firmware_heap,  # the simulated chip's, calibrated
                     "heap_min_lowest_share": round(lowest / firmware_heap, 3) if lowest else None,
                     "heap_min_lowest": min((h["heap_min"] for h in reports), default=None),
                     "heap_blk_lowest": min((h["heap_blk"] for h in reports), default=None),
                     "heap_free_lowest": min((h["heap_free"] for h in reports), default=None),
                     "heap_free_highest": max((h["heap_free"] for h in reports), default=None),
                     # What the proxy's connections cost: free heap by BLE links up at the report
                     "heap_free_median_by_connections": {
                         str(n): statistics.median(h["heap_free"] for h in reports
                                                   if h["ble"]["connected"] == n)
                         for n in sorted({h["ble"]["connected"] for h in reports})},
                     "first": reports[0] if reports else None,
                     "last": reports[-1] if reports else None},
            "violations": violations,
            "ok": not violations,
        }


async def run(soak: Soak, broker: Mosquitto, key: BackendKey, cut_every: int) -> dict[str, Any]:
    async with AlarmCentre(broker.host, broker.port, dc09_accounts={ACCOUNT: None},
                           dc09_port=soak.dc09_port) as centre, \
            BackendClient(broker.host, broker.port, client_id="soak-backend") as backend:
        counter = asyncio.create_task(soak.count_answers(backend))
        await asyncio.sleep(0.5)  # subscribed before the first command
        soak.started = time.monotonic()
        helpers = [asyncio.create_task(soak.cutter(cut_every)),
                   asyncio.create_task(soak.progress(centre))]
        presser = asyncio.create_task(soak.presser())
        workers = [asyncio.create_task(soak.worker(backend, key, lock_id)) for lock_id in soak.locks]
        try:
            await asyncio.gather(*workers)
            await presser
        finally:
            soak.done = True
            for task in (*helpers, presser):
                task.cancel()
            await asyncio.gather(*helpers, presser, return_exceptions=True)
            line = soak.home.home.line
            await asyncio.to_thread(soak.home.call, lambda: setattr(line, "cut", False))
        await soak.settle(centre)
        elapsed = time.monotonic() - soak.started
        print(soak.progress_line(centre), flush=True)
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        return await asyncio.to_thread(soak.figures, centre, elapsed)


def report(result: dict[str, Any]) -> None:
    c, a, b, h = result["commands"], result["alarms"], result["bridge"], result["heap"]
    print(f"{result['operations']} operations in {result['seconds']:.0f} s: {c['sent']} commands "
          f"({c['per_second']}/s), {a['pressed']} alarms")
    print("commands by outcome:")
    for outcome, n in c["by_outcome"].items():
        print(f"  {n:>6}  {outcome}")
    if c["no_final_answer"]:
        print(f"  {c['no_final_answer']:>6}  no final answer")
    for lock_id, e in result["locks"].items():
        print(f"  {lock_id:<11} {e['commands']} commands, {e['motor_moves']} motor moves for "
              f"{e['succeeded_moving']} succeeded and {e['incomplete_moving']} incomplete moves; "
              + ", ".join(f"{n} {o}" for o, n in sorted(e.get("by_outcome", {}).items())))
    print(f"alarms: {a['pressed']} pressed, {a['at_centre']} at the centre, {a['help_on_the_way']} "
          f"answered 'help on the way'; {a['copies']['mqtt']} copies over MQTT, "
          f"{a['copies']['dc09']} over DC-09 (LTE; {a['over_lte']} alarms), {a['duplicates']} "
          f"duplicates recognised by id")
    print(f"link cuts: {result['link_cuts']['count']} ({result['link_cuts']['seconds']} s cut)")
    print(f"bridge: {b['boots']} boot(s), causes {b['causes']}, {b['resets']} machine.reset, "
          f"{b['wdt_resets']} watchdog; {b['memory_errors_logged']} MemoryError lines logged, "
          f"{b['heap_exhausted_resets']} heap-exhausted resets, heap_drops {b['heap_drops']}")
    print(f"heap ({h['reports']} health reports, the firmware's {h['firmware_heap']} B): lowest "
          f"free after a collection {h['heap_min_lowest']} B ({h['heap_min_lowest_share']:.1%}), "
          f"lowest largest free block {h['heap_blk_lowest']} B, "
          f"free {h['heap_free_lowest']}..{h['heap_free_highest']} B at the reports; median free "
          f"by BLE connections up: " + ", ".join(
              f"{n}: {v:.0f} B" for n, v in h["heap_free_median_by_connections"].items()))
    if result["violations"]:
        print(f"VIOLATIONS ({len(result['violations'])}):", file=sys.stderr)
        for v in result["violations"][:50]:
            print(f"  {v}", file=sys.stderr)
    else:
        print("nothing lost: every command one final answer, every alarm handled, no lock moved "
              "twice for one command")


@contextlib.contextmanager
def running(soak: Soak, broker: Mosquitto, key: BackendKey, work: Path) -> Iterator[None]:
    """The soak's home up, its locks paired with hubd before hubd starts (as ``hubctl pair``
    leaves them) and hubd online on ``broker`` (started by the caller), all in ``work``; after,
    hubd, the home and the broker stopped and the bridge's log closed, whatever happened."""
    hubd = None
    home_up = False
    try:
        soak.home.start()
        home_up = True
        for lock_id, lock in soak.locks.items():
            assert lock.secret is not None
            record_pairing(work / "hubd-state", lock_id,
                           PairedLock(lock.kind, address(lock), lock.secret, lock.addr_type))
        config = work / "hubd.toml"
        write_hubd_config(config, broker, soak.home.home.port, key,
                          {lock_id: lock.kind for lock_id, lock in soak.locks.items()},
                          top='lock_driver = "hubd"', link_key=soak.home.home.link_key,
                          # Every connection discovers, as after hubd's start (its GATT cache is
                          # in memory): the bridge's heap under its heaviest proxy traffic.
                          extra='\n[bluetooth]\ngatt_cache = false\n'
                          + ('\n[uplink]\nmode = "lte"\n' if soak.lte_uplink else ""),
                          broker_address=soak.home.home.broker_address if soak.lte_uplink else None)
        config.write_text(config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"'))
        hubd = start_hubd(config, work / "hubd.log")
        wait_online(broker, HUB_ID, hubd, work / "hubd.log")
        yield
    finally:
        if hubd is not None:
            stop_hubd(hubd)
        if home_up:
            soak.home.stop()
        broker.stop()
        soak.bridge_log.close()


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(f"terminated (signal {signum})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=10000,
                        help="lock operations and alarms in all (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="actions, cuts and alarms (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 300 operations (a link cut every 60 commands)")
    parser.add_argument("--mpy-files", action="store_true",
                        help="the bridge runs its modules from .mpy files on its filesystem (as "
                             "hubctl flash --mpy-files leaves it), not from the ROMFS image: what "
                             "the image saves")
    parser.add_argument("--heap-kb", type=int, default=None,
                        help="the firmware's heap in KB (default: the calibrated chip's); 110 with "
                             "HUB_SIM_MICROPYTHON naming a 32-bit MicroPython build is the chip "
                             "itself (docs/architecture.md, \"Heap\")")
    parser.add_argument("--uplink", choices=("broadband", "lte"), default="broadband",
                        help="hubd's path to the broker: the home's network (default), or 'lte': "
                             "through the bridge's modem in a home without broadband (issue 16), "
                             "the uplink's bytes on the serial line beside the proxy's")
    parser.add_argument("--keep", action="store_true",
                        help="keep hubd's and the bridge's logs even when nothing was lost")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON (default benchmarks/results/soak.json, "
                             "soak.quick.json with --quick)")
    args = parser.parse_args(argv)
    ops = 300 if args.quick and args.ops == 10000 else args.ops
    if ops < 2 * ALARM_SHARE:
        parser.error(f"--ops: at least {2 * ALARM_SHARE}")
    out = args.out or ROOT / "benchmarks/results" / ("soak.quick.json" if args.quick else "soak.json")
    cut_every = max(60, ops // 25)  # 25 cuts in a run, never closer than 60 commands

    # SIGTERM (a test's timeout) unwinds as an exception: hubd, the bridge and the broker stop.
    signal.signal(signal.SIGTERM, _terminated)
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    key = BackendKey("soak", signing.generate_private_key())
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    soak = Soak(ops, args.seed, work, romfs=not args.mpy_files,
                heap=args.heap_kb * 1024 if args.heap_kb else DEFAULT_HEAP,
                broker=broker if args.uplink == "lte" else None)
    try:
        with running(soak, broker, key, work):
            print(f"soak: {ops} operations ({soak.commands_target} commands to 4 locks through "
                  f"hubd's driver and the bridge as Bluetooth proxy, {soak.alarms_target} alarms), "
                  f"a link cut every ~{cut_every} commands, seed {args.seed}; the bridge's modules "
                  f"from {'.mpy files' if args.mpy_files else 'its ROMFS image'} in a "
                  f"{soak.home.home.bridge.heap // 1024} KB heap"
                  + ("; hubd's broker through the bridge's LTE modem" if soak.lte_uplink else ""),
                  flush=True)
            result = asyncio.run(run(soak, broker, key, cut_every))
    except BaseException:
        print(f"failed; hubd's log and the bridge's are in {work}", file=sys.stderr)
        raise
    result["args"] = {"ops": ops, "seed": args.seed, "quick": args.quick,
                      "boot": "mpy-files" if args.mpy_files else "romfs", "uplink": args.uplink,
                      "micropython": bridge_device.micropython_binary()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"written to {out}")
    if result["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"hubd's log and the bridge's are kept in {work}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
