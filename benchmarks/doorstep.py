"""Benchmark: the nurse's wait at the door, from the backend's publish to the lock's motor
starting and to `succeeded`, on the realistic Bluetooth air (simulator/ble_timing.py).

What a nurse lives through is a command on a lock nobody talked to for a while: hubd has no
connection to it, so the command pays the lock's next advert, the connection's set-up and every
GATT exchange at the connection's pace. This benchmark times that, per lock kind and per route:

    lock     reference  the reference protocol's inside turner (Danalock-like), hubd's own driver
             dkey       the simulated dormakaba dKey, through py-dormakaba-dkey (unmodified)
    via      bridge     hubd -> the serial link -> the bridge's firmware as Bluetooth proxy
             adapter    hubd's own adapter (direct mode, docs/direct-mode.md) on the same air

A private Mosquitto, hubd as its own process, the simulated home on the realistic air (adverts
every ~1 s, 50 ms connection events, encryption and losses as docs/ble-timing.md gives them),
the lock's motor its kind's own travel time. Before each command the benchmark waits until the
lock has no connection (hubd drops a reference lock's after ``[lock_timing] idle_s``, 0.5 s
here; a dKey ends a link silent for DKEY_IDLE_S itself: 5 s here, 30 s on a real one; hubd keeps
a dKey's 20 s), unless ``--held``: then commands follow one another and find the connection
hubd kept (what a policy that holds it for a visit would give). A nurse taps when she is at the
door, not in step with the lock's adverts: each command waits a random 0-2 s more first (else
the runs' even pace would meet the advert schedule at the same phase every time), and two
commands before the timed ones let hubd's start-up poll of the lock end. The dKey's idle
cannot be the reference lock's 0.5 s on the realistic air: the lock counts it from the
connection, and its first frame comes after the GATT set-up, encryption and subscriptions, well
over 0.5 s later.

Per command: ``to_motor`` (publish -> the lock's motor starts, the nurse's wait) and
``succeeded`` (publish -> the final answer), and the air's hops as the lock sees them:

    to_link          publish -> the lock has its connection (hubd's path, the advert waited
                     for, the connect request); absent on a held connection
    link_to_motor    the connection up -> the motor starts (discovery, encryption, the
                     driver's handshake and the command, each at the connection's pace)
    motor_to_final   the motor starts -> the backend has `succeeded` (the travel, the result
                     back over the air, hubd, the broker)

and hubd's own hops (benchmarks/roundtrip.py's ``hops_of``: mqtt_in ... mqtt_out) from its
"command timing" log lines. Through the bridge, also where the BLE time goes: each proxy request
(``ble_connect``, ``ble_discover``, ``ble_subscribe``, ``ble_write``, ``ble_pair``, ...) from its
frame to its ``ble_done`` on the serial line, summed per command by kind (``bridge_requests``).
p50/p90/p99 of each, as JSON.

    .venv/bin/python benchmarks/doorstep.py --commands 30 --out benchmarks/results/doorstep.json
    .venv/bin/python benchmarks/doorstep.py --lock dkey --via adapter --commands 5
    .venv/bin/python benchmarks/doorstep.py --via bridge --no-gatt-cache   # every connect discovers
    .venv/bin/python benchmarks/doorstep.py --prepared --out benchmarks/results/doorstep.prepared.json

``--prepared``: the visit's first door made ready before the tap (docs/ble-timing.md, "A visit's
first door prepared"). Before each timed command, once the lock has no connection, the backend
publishes a signed ``prepare`` for the lock (hubd connects and holds the connection:
hubd.locks.visit, no ``[visit] route``), waits for its answer, then a random 2-20 s
(``PREPARE_LEAD_S``, ``--prepare-lead MIN MAX``; within the hold's 120 s) before the tap: the nurse walking to the door.
Per command also ``prepare`` (publish -> the prepare's final answer) and how many taps still
found no connection (``taps_on_a_new_connection``). A dKey's prepare connects and
authenticates; hubd keeps that session without keep-alives (none would keep it), ``held_s``
(25 s) after its traffic, under the lock's own idle drop: here the real lock's 30 s, not
DKEY_IDLE_S, and hubd's ``[dkey_timing] idle_s`` 0.5 s so that each prepare starts with no
connection soon after the tap before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.figures import measured_here, row, summary  # noqa: E402
from benchmarks.roundtrip import (COLD_IDLE_S, PARTS_OF_BLE, TimedTranscript,  # noqa: E402
                                  all_ended, drive, hops_of, line_message, serving,
                                  timed_command)
from simulator.serial_line import TO_BRIDGE, TO_HUB, Crossing  # noqa: E402
from wire import messages  # noqa: E402
from hil_tests.harness import HUB_ID, write_hubd_config  # noqa: E402
from hubapi import signing  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import Actor, CommandClaims, Role  # noqa: E402
from simulator import ble_timing  # noqa: E402
from simulator.home import (HomeThread, SimulatedHome, default_locks, paired_dkey,  # noqa: E402
                            record_pairings)
from tests.fixtures import BackendKey  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

LOCKS = ("reference", "dkey")
ROUTES = ("bridge", "adapter")
#: The lock's own motor travel, as the simulated kinds have it (InsideTurnerLock, DKeyLock).
TRAVEL_S = {"reference": 1.5, "dkey": 1.0}
AIR_HOPS = ("to_link", "link_to_motor", "motor_to_final")
#: How long the simulated dKey keeps a silent link in a run where each command needs a new one.
DKEY_IDLE_S = 5.0
#: --prepared: the tap comes this long (seconds, uniform) after the prepare's answer, unless
#: --prepare-lead says otherwise.
PREPARE_LEAD_S = (2.0, 20.0)


class AirMarks:
    """When the lock's connections came up and its motor started (wall clock, appended in the
    home's thread): the air's side of each command, as a logic analyser at the lock would see."""

    def __init__(self, lock) -> None:  # noqa: ANN001 - a ReferenceProtocolLock or a DKeyLock
        self.links: list[float] = []
        self.motors: list[float] = []
        connected = lock.on_connect

        def on_connect(link) -> None:  # noqa: ANN001
            self.links.append(time.time())
            connected(link)

        lock.on_connect = on_connect
        if hasattr(lock, "_run_motor"):  # the reference protocol's locks
            run = lock._run_motor

            def run_motor(*args):  # noqa: ANN002, ANN202
                self.motors.append(time.time())
                return run(*args)

            lock._run_motor = run_motor
        else:  # a dKey: drive() starts the motor when it sets ``moving``
            drive_ = lock.drive

            def drive_motor(locked: bool) -> int:
                was = lock.moving
                code = drive_(locked)
                if lock.moving and not was:
                    self.motors.append(time.time())
                return code

            lock.drive = drive_motor

    def hops(self, sent: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
        """Each command's air hops (seconds), by its publish and final answer (commands run one
        at a time, so a mark inside a command's window is that command's)."""
        out: dict[str, list[float]] = {h: [] for h in ("to_motor", *AIR_HOPS)}
        for published, answered in sent.values():
            motor = next((t for t in self.motors if published <= t <= answered), None)
            if motor is None:
                raise RuntimeError("a command succeeded without its motor starting")
            link = next((t for t in self.links if published <= t <= motor), None)
            out["to_motor"].append(motor - published)
            out["motor_to_final"].append(answered - motor)
            if link is not None:
                out["to_link"].append(link - published)
                out["link_to_motor"].append(motor - link)
        return out


class TapWhenIdle:
    """``drive``'s wait before each command: the lock idle (``idle``) and then a random 0 to
    ``spread_s`` more, so taps fall anywhere in the lock's advertising schedule."""

    def __init__(self, idle: Callable[[], bool], spread_s: float, rng: random.Random) -> None:
        self.idle, self.spread_s, self.rng = idle, spread_s, rng
        self.at: float | None = None

    def __call__(self) -> bool:
        if self.at is None:
            if not self.idle():
                return False
            self.at = time.monotonic() + self.rng.uniform(0.0, self.spread_s)
        if time.monotonic() < self.at:
            return False
        self.at = None
        return True


#: The proxy requests timed on the line (each answered by one ble_done with its rid).
REQUESTS = (messages.BLE_CONNECT, messages.BLE_DISCOVER, messages.BLE_SUBSCRIBE,
            messages.BLE_READ, messages.BLE_WRITE, messages.BLE_PAIR, messages.BLE_DISCONNECT)


def bridge_requests(crossings: list[tuple[float, Crossing]],
                    windows: list[tuple[float, float]]) -> dict[str, dict]:
    """Per request kind: its seconds summed over each command's window (request frame to its
    ``ble_done`` on the line), and how many a command made (mean)."""
    asked: dict[object, tuple[str, float]] = {}
    spans: list[tuple[str, float, float]] = []
    for at, crossing in crossings:
        msg = line_message(crossing)
        if msg is None:
            continue
        if crossing.direction == TO_BRIDGE and msg.get("m") in REQUESTS:
            asked.setdefault(msg.get("rid"), (msg["m"], at))
        elif crossing.direction == TO_HUB and msg.get("m") == messages.BLE_DONE \
                and msg.get("rid") in asked:
            kind, start = asked.pop(msg.get("rid"))
            spans.append((kind, start, at))
    out: dict[str, dict] = {}
    for kind in REQUESTS:
        per_command = [[end - start for k, start, end in spans
                        if k == kind and w0 <= start <= w1] for w0, w1 in windows]
        if any(per_command):
            out[kind] = {"seconds_per_command": summary([sum(x) for x in per_command]),
                         "per_command": statistics.fmean(len(x) for x in per_command)}
    return out


#: How much later than the lock's idle a command may come (TapWhenIdle).
TAP_SPREAD_S = 2.0


async def drive_prepared(broker: Mosquitto, key: BackendKey, lock: str, n: int,
                         sent: dict[str, tuple[float, float]],
                         windows: list[tuple[float, float]], idle: Callable[[], bool],
                         rng: random.Random,
                         lead: tuple[float, float] = PREPARE_LEAD_S) -> dict[str, list]:
    """``n`` commands as ``drive`` sends them, each after a prepare of the lock: once ``idle``
    holds, a signed prepare, its final answer, then ``lead`` (uniform) before the command. The
    prepare's times (publish -> its final answer) and final answers are returned too."""
    accepted: list[float] = []
    final: list[float] = []
    prepared: list[float] = []
    prepare_answers: list[str] = []
    actor = Actor(id="nurse-7", role=Role.STAFF)
    async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend:
        for i in range(n):
            async with asyncio.timeout(60):
                while not await asyncio.to_thread(idle):
                    await asyncio.sleep(0.05)
            visit = f"visit-{i}"
            claims = CommandClaims.new(hub=HUB_ID, lock=lock, action="prepare", actor=actor,
                                       assignment=visit, ttl_s=30)
            t0 = time.perf_counter()
            async for answer in backend.send_command(claims, key.sign(claims), timeout=60):
                if answer.is_final:
                    prepared.append(time.perf_counter() - t0)
                    prepare_answers.append(answer.status.value if answer.reason is None
                                           else f"{answer.status.value} {answer.reason}")
            await asyncio.sleep(rng.uniform(*lead))
            claims = CommandClaims.new(hub=HUB_ID, lock=lock,
                                       action="unlock" if i % 2 == 0 else "lock", actor=actor,
                                       assignment=visit, ttl_s=30)
            await timed_command(backend, key, claims, accepted, final, sent, windows)
            print(f"  {i + 1}/{n}: prepare {prepare_answers[-1]} in {prepared[-1] * 1000:.0f} ms, "
                  f"the tap's round trip {final[-1] * 1000:.0f} ms", flush=True)
    return {"accepted": accepted, "final": final, "prepared": prepared,
            "prepare_answers": prepare_answers}


def run(lock: str, via: str, commands: int, held: bool, work: Path, seed: int | None,
        warmup: int = 2, gatt_cache: bool = True, prepared: bool = False,
        lead: tuple[float, float] = PREPARE_LEAD_S) -> dict:
    """One lock kind on one route: ``warmup`` commands, then ``commands`` timed; its figures.
    ``gatt_cache`` False: hubd keeps no lock's GATT database through the bridge (every
    connection discovers; ``[bluetooth] gatt_cache``). ``prepared``: each timed command after a
    prepare (drive_prepared)."""
    os.environ[ble_timing.ENV] = "realistic"  # the home's radio reads it when it is made
    key = BackendKey("bench", signing.generate_private_key())
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    bridge_log = (work / "bridge.log").open("a", buffering=1)
    dkey = lock == "dkey"
    # Prepared, a dKey drops a silent link at the real lock's 30 s: the hold lasts what it allows.
    idle = {} if held or prepared else {"idle_timeout_s": DKEY_IDLE_S}
    home = HomeThread(SimulatedHome(
        work / "home", locks=[] if dkey else default_locks(travel_time_s=TRAVEL_S[lock]),
        dkeys={"front-door": paired_dkey(travel_time_s=TRAVEL_S[lock], **idle)} if dkey
        else None, on_bridge_log=lambda line: bridge_log.write(line + "\n")))
    if seed is not None:
        home.home.radio.rng.seed(seed)
    line = home.home.line
    line.transcript = TimedTranscript(line.transcript.maxlen)
    home.start()
    record_pairings(work / "hubd-state", home.home.locks.values(), home.home.dkeys)
    extra = "" if held else f"[lock_timing]\nidle_s = {COLD_IDLE_S}\n"
    if prepared and dkey:
        extra += f"\n[dkey_timing]\nidle_s = {COLD_IDLE_S}\n"
    if via == "adapter":
        extra += (f'\n[bluetooth]\nvia = "adapter"\n'
                  f'simulated_radio = "{home.home.radio.socket_path}"\n')
    elif not gatt_cache:
        extra += "\n[bluetooth]\ngatt_cache = false\n"
    config = work / "hubd.toml"
    write_hubd_config(config, broker, home.home.port, key, home.home.kinds,
                      state_dir=work / "hubd-state", link_key=home.home.link_key, extra=extra)
    config.write_text(config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"'))
    lock_id = next(iter(home.home.kinds))
    model = {**home.home.locks, **home.home.dkeys}[lock_id]
    marks = AirMarks(model)
    timed = line.transcript.times
    rng = random.Random(seed)
    if held:
        idle_wait = TapWhenIdle(lambda: True, TAP_SPREAD_S, rng)
    else:
        idle_wait = TapWhenIdle(lambda: home.call(
            lambda: not model.links and (via == "adapter" or all_ended(c for _, c in timed))),
            TAP_SPREAD_S, rng)
    sent: dict[str, tuple[float, float]] = {}
    windows: list[tuple[float, float]] = []
    with serving(config, work / "hubd.log", broker, home, work, bridge_log.close):
        print(f"{lock} via {via}: {commands} commands on the realistic air"
              f"{', the connection held' if held else ', each on a new connection'}", flush=True)
        # The warm-up, untimed: unlock and lock, so the timed ones start from locked (a dKey
        # told to unlock when it is unlocked does not move).
        if warmup:
            asyncio.run(drive(broker, key, lock_id, warmup, {}, [], idle_wait))
        if prepared:
            times = asyncio.run(drive_prepared(broker, key, lock_id, commands, sent, windows,
                                               idle_wait, rng, lead))
        else:
            times = asyncio.run(drive(broker, key, lock_id, commands, sent, windows, idle_wait))
    hubd_hops, _ = hops_of(sent, work / "hubd.log", requests_required=False)
    air = marks.hops(sent)
    extra_figures = {} if not prepared else {
        "prepare_lead_s": list(lead),
        "prepare": summary(times["prepared"]),
        "prepare_answers": {a: times["prepare_answers"].count(a)
                            for a in sorted(set(times["prepare_answers"]))},
        "taps_on_a_new_connection": len(air["to_link"]),
    }
    return {
        "lock": lock, "via": via, "held": held, "prepared": prepared, "commands": commands,
        **extra_figures,
        "gatt_cache": gatt_cache if via == "bridge" else None,
        "to_motor": summary(air["to_motor"]),
        "succeeded": summary(times["final"]),
        "accepted": summary(times["accepted"]),
        "air_hops": {h: summary(air[h]) for h in AIR_HOPS if air[h]},
        "hubd_hops": {h: summary(v) for h, v in hubd_hops.items() if v},
        "bridge_requests": bridge_requests(timed, windows) if via == "bridge" else None,
        "parts_of_ble": list(PARTS_OF_BLE),
        "travel_s": TRAVEL_S[lock],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=30,
                        help="commands per lock kind and route (default 30)")
    parser.add_argument("--lock", choices=(*LOCKS, "all"), default="all")
    parser.add_argument("--via", choices=(*ROUTES, "all"), default="all")
    parser.add_argument("--held", action="store_true",
                        help="commands one after another on the connection hubd keeps")
    parser.add_argument("--seed", type=int, default=None, help="the air's randomness")
    parser.add_argument("--warmup", type=int, default=2, choices=(0, 2),
                        help="untimed commands first (default 2: hubd's start-up poll ends)")
    parser.add_argument("--prepared", action="store_true",
                        help="each command after a signed prepare of its lock, 2-20 s before "
                             "the tap (the visit's first door made ready)")
    parser.add_argument("--prepare-lead", type=float, nargs=2, metavar=("MIN", "MAX"),
                        default=PREPARE_LEAD_S,
                        help="with --prepared: the tap comes MIN-MAX s (uniform) after the "
                             "prepare's answer (default 2 20)")
    parser.add_argument("--no-gatt-cache", dest="gatt_cache", action="store_false",
                        help="through the bridge, hubd discovers the lock's GATT database at "
                             "every connection (the policy off: [bluetooth] gatt_cache = false)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/doorstep.json")
    args = parser.parse_args(argv)
    locks = LOCKS if args.lock == "all" else (args.lock,)
    routes = ROUTES if args.via == "all" else (args.via,)
    timing = ble_timing.realistic()
    runs = []
    for lock in locks:
        for via in routes:
            work = Path(tempfile.mkdtemp(prefix=f"bench-doorstep-{lock}-{via}-"))
            runs.append(run(lock, via, args.commands, args.held, work, args.seed, args.warmup,
                            args.gatt_cache, args.prepared, tuple(args.prepare_lead)))
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "the nurse's wait: backend publish -> motor start and -> succeeded",
        "timing": {k: v for k, v in vars(timing).items()},
        "adv_interval_s": {"reference": default_locks()[0].adv_interval_s,
                           "dkey": paired_dkey().adv_interval_s},
        **measured_here(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':<26}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for r in runs:
        cache = {True: ", GATT cache on", False: ", GATT cache off", None: ""}[r["gatt_cache"]]
        how = " (held)" if r["held"] else " (prepared)" if r["prepared"] else ""
        print(f"{r['lock']} via {r['via']}{how}{cache}:")
        rows = [("to_motor", r["to_motor"]), ("succeeded", r["succeeded"])]
        if r["prepared"]:
            print(f"  prepare answers {r['prepare_answers']}; "
                  f"{r['taps_on_a_new_connection']} taps on a new connection")
            rows.append(("prepare", r["prepare"]))
        rows += [(f"  {h}", s) for h, s in r["air_hops"].items()]
        rows += [(f"  hubd {h}", s) for h, s in r["hubd_hops"].items()]
        rows += [(f"  proxy {k} ({v['per_command']:.1f}/cmd)", v["seconds_per_command"])
                 for k, v in (r["bridge_requests"] or {}).items()]
        for name, s in rows:
            print("  " + row(name, s))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
