"""Benchmark: a nurse's visit through a shared entrance door, the apartment door's wait with the
visit's hold on and off (hubd.locks.visit, docs/ble-timing.md, "A visit's next door held").

A visit is two signed staff commands naming one assignment: the entrance door's unlatch, then,
after the walk up the stairs, the apartment door's unlock (or lock, every other visit, so the
motor always runs). With ``[visit] route = ["entrance", "front-door"]`` hubd connects to the
apartment door once the entrance opened and holds that connection until its command comes;
without, the apartment door's command pays a cold connection. This benchmark times the second
door's command as benchmarks/doorstep.py times a command (its AirMarks and TapWhenIdle, imported),
per visit:

    to_motor    publish -> the apartment door's motor starts (the nurse's wait)
    succeeded   publish -> the backend has `succeeded`
    to_link     publish -> the lock has its connection: only where the command made one

on a home with an entrance door (the simulated electric strike, mains powered, advertising every
0.2 s) and an inside turner (a battery lock advertising every 1 s, its motor 1.5 s), hubd as its
own process, the bridge's real firmware as the proxy, a private Mosquitto, the realistic air
(simulator/ble_timing.py).

The visit's minute is scaled down by ``--scale`` (default 0.15) with every time that meets it,
so the ratios stay a real visit's: the walk between the doors (20-60 s: 3-9 s), the hold
(``hold_s`` 120 s: 18 s), its keep-alive (``keepalive_s`` 20 s: 3 s) and the lock's own idle
drop (30 s: 4.5 s; the keep-alive must beat it). hubd's own ``idle_s`` (3 s) stays: the walk is
longer than it at any scale used, so without the hold the second door is cold. Before each
visit the benchmark waits until the apartment door has no connection and the hold (if any)
ended, then a random 0-2 s more (doorstep.py's TapWhenIdle).

    .venv/bin/python benchmarks/visit.py --visits 20 --out benchmarks/results/visit.json
    .venv/bin/python benchmarks/visit.py --visits 5 --policy on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.doorstep import TAP_SPREAD_S, AirMarks, TapWhenIdle  # noqa: E402
from benchmarks.roundtrip import serving  # noqa: E402
from benchmarks.figures import measured_here, row, summary  # noqa: E402
from hil_tests.harness import HUB_ID, write_hubd_config  # noqa: E402
from hubapi import signing  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import Actor, CommandClaims, Role  # noqa: E402
from simulator import ble_timing  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, record_pairings  # noqa: E402
from simulator.locks import EntranceDoorLock, InsideTurnerLock  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

POLICIES = ("off", "on")
ENTRANCE, DOOR = "entrance", "front-door"
TRAVEL_S = 1.5  # the inside turner's motor (doorstep.py's reference lock)
#: A real visit's times (seconds), scaled by --scale.
WALK_S = (20.0, 60.0)  # from the entrance to the apartment door
HOLD_S = 120.0  # [visit] hold_s
KEEPALIVE_S = 20.0  # [visit] keepalive_s
LOCK_IDLE_S = 30.0  # the lock's own idle drop


def home_of(work: Path, scale: float, bridge_log) -> HomeThread:  # noqa: ANN001
    """The home: the building's entrance door and the apartment's inside turner."""
    door = InsideTurnerLock(DOOR, "C0:FF:EE:00:00:01", os.urandom(32), travel_time_s=TRAVEL_S,
                            idle_timeout_s=LOCK_IDLE_S * scale)
    entrance = EntranceDoorLock(ENTRANCE, "C0:FF:EE:00:00:02", os.urandom(32))
    return HomeThread(SimulatedHome(work / "home", locks=[entrance, door],
                                    on_bridge_log=lambda line: bridge_log.write(line + "\n")))


async def visits(broker: Mosquitto, key: BackendKey, n: int, walk_s: tuple[float, float],
                 tap: TapWhenIdle, rng: random.Random, sent: dict[str, tuple[float, float]],
                 first: int = 0) -> dict[str, list[float]]:
    """``n`` visits, each the entrance's unlatch then, ``walk_s`` later, the door's command;
    ``sent`` gets each door command's publish and final answer (wall clock)."""
    final: list[float] = []
    async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend:
        for i in range(first, first + n):
            async with asyncio.timeout(120):
                while not await asyncio.to_thread(tap):
                    await asyncio.sleep(0.05)
            assignment = f"visit-{i}"
            nurse = Actor(id="nurse-7", role=Role.STAFF)
            for lock, action in ((ENTRANCE, "unlatch"),
                                 (DOOR, "unlock" if i % 2 == 0 else "lock")):
                if lock == DOOR:
                    await asyncio.sleep(rng.uniform(*walk_s))
                claims = CommandClaims.new(hub=HUB_ID, lock=lock, action=action, actor=nurse,
                                           assignment=assignment, ttl_s=60)
                published, t0 = time.time(), time.perf_counter()
                async for answer in backend.send_command(claims, key.sign(claims), timeout=60):
                    if answer.status not in ("accepted", "succeeded"):
                        raise RuntimeError(f"visit {i}: {lock} {action} ended {answer.status} "
                                           f"({answer.reason})")
                    if answer.status == "succeeded" and lock == DOOR:
                        final.append(time.perf_counter() - t0)
                        sent[claims.id] = (published, time.time())
            print(f"  visit {i + 1 - first}/{n}: the door's command {final[-1] * 1000:.0f} ms",
                  flush=True)
    return {"final": final}


def run(policy: str, n: int, scale: float, work: Path, seed: int | None, warmup: int = 2) -> dict:
    """``warmup`` visits, then ``n`` timed, with the visit's hold ``policy`` on or off."""
    os.environ[ble_timing.ENV] = "realistic"  # the home's radio reads it when it is made
    key = BackendKey("bench", signing.generate_private_key())
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    bridge_log = (work / "bridge.log").open("a", buffering=1)
    home = home_of(work, scale, bridge_log)
    if seed is not None:
        home.home.radio.rng.seed(seed)
    home.start()
    record_pairings(work / "hubd-state", home.home.locks.values())
    hold = (f'\n[visit]\nroute = ["{ENTRANCE}", "{DOOR}"]\nhold_s = {HOLD_S * scale}\n'
            f'keepalive_s = {KEEPALIVE_S * scale}\n') if policy == "on" else ""
    config = work / "hubd.toml"
    write_hubd_config(config, broker, home.home.port, key, home.home.kinds,
                      state_dir=work / "hubd-state", link_key=home.home.link_key, extra=hold)
    config.write_text(config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"'))
    door = home.home.locks[DOOR]
    marks = AirMarks(door)
    rng = random.Random(seed)
    log = work / "hubd.log"

    def idle() -> bool:  # the door has no connection, and no hold is under way
        text = log.read_text(errors="replace")
        return home.call(lambda: not door.links) and \
            text.count("visit: holding") == text.count("visit: let go")

    tap = TapWhenIdle(idle, TAP_SPREAD_S, rng)
    walk_s = (WALK_S[0] * scale, WALK_S[1] * scale)
    sent: dict[str, tuple[float, float]] = {}
    with serving(config, log, broker, home, work, bridge_log.close):
        print(f"visit's hold {policy}: {n} visits on the realistic air, walks of "
              f"{walk_s[0]:.1f}-{walk_s[1]:.1f} s", flush=True)
        if warmup:  # untimed: hubd's start-up polls end; the door ends locked
            asyncio.run(visits(broker, key, warmup, walk_s, tap, rng, {}, first=-warmup))
        times = asyncio.run(visits(broker, key, n, walk_s, tap, rng, sent))
    air = marks.hops(sent)
    text = log.read_text(errors="replace")
    return {
        "policy": policy, "visits": n, "scale": scale,
        "to_motor": summary(air["to_motor"]),
        "succeeded": summary(times["final"]),
        "to_link": summary(air["to_link"]) if air["to_link"] else None,
        "door_commands_on_a_new_connection": len(air["to_link"]),
        "holds": text.count("visit: holding"),
        "holds_used": text.count("(used)"),
        "door_connections": door.connections,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=20, help="timed visits per policy")
    parser.add_argument("--policy", choices=(*POLICIES, "all"), default="all")
    parser.add_argument("--scale", type=float, default=0.15,
                        help="a visit's times scaled by this (default 0.15: walks of 3-9 s)")
    parser.add_argument("--seed", type=int, default=None, help="the air's randomness")
    parser.add_argument("--warmup", type=int, default=2, help="untimed visits first")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/visit.json")
    args = parser.parse_args(argv)
    policies = POLICIES if args.policy == "all" else (args.policy,)
    runs = []
    for policy in policies:
        work = Path(tempfile.mkdtemp(prefix=f"bench-visit-{policy}-"))
        runs.append(run(policy, args.visits, args.scale, work, args.seed, args.warmup))
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "a visit: entrance unlatch, then the apartment door's command: "
                     "publish -> motor start and -> succeeded, the visit's hold on and off",
        "timing": dict(vars(ble_timing.realistic())),
        "scaled": {"walk_s": [w * args.scale for w in WALK_S], "hold_s": HOLD_S * args.scale,
                   "keepalive_s": KEEPALIVE_S * args.scale,
                   "lock_idle_s": LOCK_IDLE_S * args.scale},
        **measured_here(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':<26}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for r in runs:
        print(f"the door, hold {r['policy']} ({r['door_commands_on_a_new_connection']} of "
              f"{r['visits']} on a new connection; {r['holds']} holds, {r['holds_used']} used):")
        rows = [("to_motor", r["to_motor"]), ("succeeded", r["succeeded"])]
        if r["to_link"]:
            rows.append(("  to_link", r["to_link"]))
        for name, s in rows:
            print("  " + row(name, s))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
