"""Benchmark: backend -> hub -> lock -> backend round trip, with an instant lock, per hop.

A private Mosquitto (TCP_NODELAY), hubd as its own process, and the simulated home (the real
firmware in MicroPython as the Bluetooth proxy, the lock's motor travel set to zero; the lock's
pairing in hubd's state, as ``hubctl pair`` leaves it). The backend sends signed
unlock/lock commands one after another and times each from publish to the `accepted` answer and
to the final `succeeded`. hubd logs where each command's time went ("command timing",
hubd/access/timing.py) and the hops are:

    mqtt_in    backend publish -> hubd has the message (broker, TCP, paho)
    verify     JWS signature and claims
    record     journal + audit entry, durable (SQLite WAL, fsync) before `accepted`
    queue      waiting for the lock's worker
    transport  in hubd's lock transport outside the driver (the lock's turn)
    ble        in hubd's lock driver: connect, challenge, command, result through the proxy
      ble_requests  of ble: waiting for the answers to the driver's BLE requests (the two
                    writes, and connect, discovery and subscribe when there is no connection):
                    each a round trip hubd -> serial link -> bridge -> radio -> lock and back
      ble_notify    of ble, the rest: the lock's CHALLENGE and RESULT notifications still to
                    come when the write was answered, and hubd's own work in the driver
    finish     result -> final answer published (journal, audit entry, fsync)
    mqtt_out   hubd publishes the answer -> the backend has it

hubd's lock driver runs the reference protocol on bleak through the bridge as a Bluetooth proxy
(docs/ble-proxy.md; the firmware has no lock driver of its own): every GATT procedure crosses
the serial link, so there is no separate link or bridge hop. (Figures from before, when the
firmware drove the locks, had ``link`` and ``bridge`` hops instead: the results' history.)

and, per proxy write rather than per command, its bridge side ("proxy_write_on_bridge"): its
request frame to its `ble_done` frame on the simulated serial line (the line's transcript, timed
in the home's thread as a logic analyser on the cable would): of a request's round trip, what is
not hubd or the link.

``--lock dkey`` times a simulated dormakaba dKey instead (docs/dkey.md), which hubd drives
through py-dormakaba-dkey, unmodified, over the same proxy; its pairing (association data) in
hubd's state, its bond made at hubd's first connection (simulator.home.paired_dkey). Its
connection set-up is much longer than a reference lock's: after connecting and re-encrypting
with the bond, the library exchanges identifications, answers the lock's challenge and enables
notifications, several round trips through the proxy each, before the command; the 20-byte
frames of the protocol are each one write with response. The ``ble_requests`` and
``ble_notify`` parts are the driver's own figures: printed when it reports them.

Each command is also counted by the proxy connects (``ble_connect`` frames on the line) made
while it ran, and its round trip filed under "on a held connection" or "with a connection
set-up"; ``--cold`` waits before each command until the lock's connection is gone, so every
command pays the set-up: hubd drops a reference lock's after its ``[lock_timing] idle_s``, set
to 0.5 s for the run; it keeps a dKey's 20 s (hubd.locks.dkey.DkeyTimings, not in hubd.toml),
so there the simulated dKey ends a link silent for 0.5 s itself (its idle timeout, 30 s on a
real one: a DISCONNECT_REQ, then the drop), which hubd's driver hears.

``--uplink lte`` puts hubd's broker connection through the bridge's LTE modem instead of the
home's network (issue 16, docs/second-path.md "The uplink"): a home without broadband (its
router cut from the start), hubd's ``[uplink] mode = "lte"``, the BG95 model on the bridge's UART
3 (115200 baud) on the realistic LTE-M network model (simulator/lte_network.py: 75-125 ms one
way, 16 kB/s each way, 1 % of segments a second late), so every command and answer crosses the
serial link as the uplink's bulk payloads, the firmware's AT+QISEND / AT+QIRD and the network
model; ``mqtt_in`` and ``mqtt_out`` hold that path. The hub-bridge line is paced at its baud rate
(``--line-baud``, 115200 by default with ``--uplink lte``, as the real cable; unpaced otherwise,
as the earlier figures were taken), since the uplink's bytes and the lock's requests share it.

Prints p50/p90/p99 for the total and each hop and writes them as JSON. The clocks compared
across processes are the same machine's wall clock.

    .venv/bin/python benchmarks/roundtrip.py --commands 500 --out benchmarks/results/roundtrip.json
    .venv/bin/python benchmarks/roundtrip.py --lock dkey --commands 200 \
        --out benchmarks/results/roundtrip.dkey.json
    .venv/bin/python benchmarks/roundtrip.py --uplink lte --commands 200 \
        --out benchmarks/results/roundtrip.lte.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import Actor, CommandClaims, Role  # noqa: E402
from simulator.home import (HomeThread, SimulatedHome, default_locks, paired_dkey,  # noqa: E402
                            record_pairings)
from tests.fixtures import BackendKey  # noqa: E402
from simulator.serial_line import TO_BRIDGE, TO_HUB, Crossing  # noqa: E402
from simulator.lte_network import realistic  # noqa: E402
from simulator.ports import free_port  # noqa: E402
from wire import frame, messages  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from hubapi import signing  # noqa: E402
from benchmarks.figures import measured_here, summary  # noqa: E402


#: The hops in the order a command passes them; "ble_requests" and "ble_notify" are parts of
#: "ble", the others add up to the round trip.
HOPS = ("mqtt_in", "verify", "record", "queue", "transport", "ble", "ble_requests", "ble_notify",
        "finish", "mqtt_out")
PARTS_OF_BLE = ("ble_requests", "ble_notify")


def hops_of(sent: dict[str, tuple[float, float]], log: Path, requests_required: bool = True
            ) -> tuple[dict[str, list[float]], Counter[int]]:
    """Per-hop seconds of every timed command, from hubd's "command timing" log lines, and how
    many commands made how many BLE requests. A figure the driver should report and did not is a
    KeyError: the benchmark must not print a hop it cannot measure. ``requests_required``: the
    BLE requests' figures are the driver's to give (the reference lock's driver counts its own
    requests; a vendor library's requests only if the driver reports them): without, a command
    that carries none has no ``ble_requests`` and ``ble_notify`` parts."""
    out: dict[str, list[float]] = {h: [] for h in HOPS}
    requests: Counter[int] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") != "command timing" or entry.get("command_id") not in sent:
            continue
        published, answered = sent[entry["command_id"]]
        ble = entry["ble_ms"]
        values = {
            "mqtt_in": (entry["mqtt_at"] - published) * 1000,
            "verify": entry["verify_ms"], "record": entry["record_ms"],
            "queue": entry["queue_ms"], "ble": ble, "finish": entry["finish_ms"],
            "mqtt_out": (answered - entry["answered_at"]) * 1000,
        }
        values["transport"] = entry["operate_ms"] - ble
        if requests_required or entry.get("ble_requests_ms") is not None:
            values |= {"ble_requests": entry["ble_requests_ms"],
                       "ble_notify": ble - entry["ble_requests_ms"]}
            requests[entry["ble_requests"]] += 1
        for hop, ms in values.items():
            out[hop].append(ms / 1000)
    return out, requests


class TimedTranscript(deque):
    """The simulated serial line's transcript with the time each frame crossed (appended by the
    home's thread; read once the home stopped)."""

    def __init__(self, maxlen: int | None) -> None:
        super().__init__(maxlen=maxlen)
        self.times: list[tuple[float, Crossing]] = []

    def append(self, crossing: Crossing) -> None:
        self.times.append((time.perf_counter(), crossing))
        super().append(crossing)


def line_message(crossing: Crossing) -> dict | None:
    """The link message a data frame on the line carried (a JSON object), else None."""
    if crossing.ftype != frame.T_DATA or not crossing.body:
        return None
    try:
        msg = json.loads(crossing.body)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def proxy_writes_on_bridge(crossings: list[tuple[float, Crossing]]) -> list[float]:
    """Seconds from each `ble_write` request frame to its `ble_done` frame on the line (a
    retransmitted frame counts where it first crossed)."""
    asked: dict[int, float] = {}
    out: list[float] = []
    for at, crossing in crossings:
        msg = line_message(crossing)
        if msg is None:
            continue
        if crossing.direction == TO_BRIDGE and msg.get("m") == messages.BLE_WRITE:
            asked.setdefault(msg["rid"], at)
        elif crossing.direction == TO_HUB and msg.get("m") == messages.BLE_DONE \
                and msg.get("rid") in asked:
            out.append(at - asked.pop(msg["rid"]))
    return out


def connects_per_command(crossings: list[tuple[float, Crossing]],
                         windows: list[tuple[float, float]]) -> list[int]:
    """How many proxy connects (``ble_connect`` request frames to the bridge) crossed the line
    while each command ran (``windows``: publish to final answer, perf_counter seconds)."""
    connects = []
    for at, crossing in crossings:
        msg = line_message(crossing) if crossing.direction == TO_BRIDGE else None
        if msg is not None and msg.get("m") == messages.BLE_CONNECT:
            connects.append(at)
    return [sum(1 for at in connects if start <= at <= end) for start, end in windows]


#: How long a link stays silent before it is dropped in a ``--cold`` run (see the docstring).
COLD_IDLE_S = 0.5


def all_ended(crossings: Iterable[Crossing]) -> bool:
    """Whether every proxy connection made has ended as hubd knows it: its own
    ``ble_disconnect``, or the bridge's ``ble_lost``, on the line. A lock that ends a link itself
    is free at once, but hubd hears of it a few milliseconds later; a command sent in between
    would find its connection gone under it (``incomplete``, nothing moved), not the set-up
    this run times. Connections are followed by their ``conn`` (a ``ble_connect``'s
    ``ble_done`` opens one; a retransmitted frame is the same message again)."""
    connecting: set[int] = set()
    open_: set[int] = set()
    for crossing in crossings:
        msg = line_message(crossing)
        if msg is None:
            continue
        m = msg.get("m")
        if crossing.direction == TO_BRIDGE and m == messages.BLE_CONNECT:
            connecting.add(msg.get("rid"))
        elif crossing.direction == TO_HUB and m == messages.BLE_DONE and \
                msg.get("rid") in connecting:
            connecting.discard(msg.get("rid"))
            if msg.get("status") == "ok":
                open_.add(msg.get("conn"))
        elif (crossing.direction == TO_BRIDGE and m == messages.BLE_DISCONNECT) or \
                (crossing.direction == TO_HUB and m == messages.BLE_LOST):
            open_.discard(msg.get("conn"))
    return not connecting and not open_


#: The hub-bridge cable's baud rate (bridge.json's link baudrate), the line's pace with --uplink lte.
LINK_BAUD = 115200


def start_home(work: Path, bridge_log, lock: str, cold: bool,  # noqa: ANN001
               broker: Mosquitto | None = None, line_baud: int | None = None) -> HomeThread:
    """The simulated home, instant lock (the reference inside turner, or a dKey: with ``cold``
    one that ends a silent link after COLD_IDLE_S), the line's frames timed. ``broker``: the
    home has no broadband and an LTE modem whose (realistic LTE-M) network reaches this broker,
    for hubd's uplink; ``line_baud``: the hub-bridge line's pace (None: unpaced)."""
    dkey = lock == "dkey"
    idle = {"idle_timeout_s": COLD_IDLE_S} if cold else {}
    uplink = {} if broker is None else {
        "broker": (broker.host, broker.port), "broadband": False,
        # The modem's DC-09 settings: no alarm unit, so no second path ever uses them.
        "lte": {"apn": "internet.m2m", "host": "127.0.0.1", "port": free_port(),
                "account": "12AB", "receiver": "1"}}
    home = HomeThread(SimulatedHome(work / "home",
                                    locks=[] if dkey else default_locks(travel_time_s=0.0),
                                    dkeys={"front-door": paired_dkey(travel_time_s=0.0, **idle)}
                                    if dkey else None,
                                    on_bridge_log=lambda line: bridge_log.write(line + "\n"),
                                    line_baud=line_baud, **uplink))
    line = home.home.line
    line.transcript = TimedTranscript(line.transcript.maxlen)
    home.start()
    return home


@contextlib.contextmanager
def serving(config: Path, log: Path, broker: Mosquitto, home: HomeThread, work: Path,
            *closing: Callable[[], object]) -> Iterator[None]:
    """hubd started on ``config`` (its log in ``log``) and online on ``broker`` for the timed
    run; after it, whatever happened, hubd, ``home``, the broker and each of ``closing`` (a
    bridge log's file) stopped; a failure says where the logs are kept (``work``)."""
    hubd = start_hubd(config, log)
    try:
        wait_online(broker, HUB_ID, hubd, log)
        yield
    except Exception:
        print(f"failed; hubd's log and the bridge's are in {work}", file=sys.stderr)
        raise
    finally:
        stop_hubd(hubd)
        home.stop()
        broker.stop()
        for close in closing:
            close()


async def timed_command(backend: BackendClient, key: BackendKey, claims: CommandClaims,
                        accepted: list[float], final: list[float],
                        sent: dict[str, tuple[float, float]],
                        windows: list[tuple[float, float]]) -> None:
    """Publish one command signed with ``key`` and wait for its final answer, which must be
    ``succeeded``: the seconds to ``accepted`` and to the final answer appended to ``accepted``
    and ``final``; ``sent`` gets its publish and answer (wall clock) by command id, ``windows``
    its publish and final answer (perf_counter)."""
    published, t0 = time.time(), time.perf_counter()
    async for answer in backend.send_command(claims, key.sign(claims), timeout=60):
        t = time.perf_counter() - t0
        if answer.status == "accepted":
            accepted.append(t)
        elif answer.status != "succeeded":
            raise RuntimeError(f"command {claims.id} ended {answer.status} ({answer.reason})")
        else:
            final.append(t)
            sent[claims.id] = (published, time.time())
            windows.append((t0, t0 + t))


async def drive(broker: Mosquitto, key: BackendKey, lock: str, n: int,
                sent: dict[str, tuple[float, float]], windows: list[tuple[float, float]],
                idle: Callable[[], bool] | None = None) -> dict[str, list[float]]:
    """Send ``n`` commands one after another (``idle``: before each, wait until it holds: the
    lock has no connection), each timed to its accepted and final answers; ``windows`` gets
    each command's publish and final answer (perf_counter)."""
    accepted: list[float] = []
    final: list[float] = []
    async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend:
        for i in range(n):
            action = "unlock" if i % 2 == 0 else "lock"
            if idle is not None:
                async with asyncio.timeout(60):
                    while not await asyncio.to_thread(idle):
                        await asyncio.sleep(0.05)
            claims = CommandClaims.new(hub=HUB_ID, lock=lock, action=action,
                                       actor=Actor(id="bench", role=Role.TECHNICIAN), ttl_s=30)
            await timed_command(backend, key, claims, accepted, final, sent, windows)
            if (i + 1) % 50 == 0 or i + 1 == n:
                print(f"  {i + 1}/{n} commands, last round trip {final[-1] * 1000:.1f} ms",
                      flush=True)
    return {"accepted": accepted, "final": final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=500, help="commands to time (default 500)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON figures (default: "
                             "benchmarks/results/roundtrip.json, with --lock dkey "
                             "roundtrip.dkey.json)")
    parser.add_argument("--lock", choices=("reference", "dkey"), default="reference",
                        help="the lock timed: the reference inside turner (default), or 'dkey', "
                             "a simulated dormakaba dKey driven through py-dormakaba-dkey")
    parser.add_argument("--cold", action="store_true",
                        help="every command on a new connection: wait until the last one is "
                             "gone (dropped after 0.5 s of silence: by hubd for a reference lock, "
                             "by the lock itself for a dKey)")
    parser.add_argument("--uplink", choices=("broadband", "lte"), default="broadband",
                        help="hubd's path to the broker: the home's network (default), or 'lte', "
                             "the bridge's modem on the LTE-M model in a home without broadband")
    parser.add_argument("--line-baud", type=int, default=None,
                        help=f"the hub-bridge line's pace in baud (0: unpaced; default "
                             f"{LINK_BAUD} with --uplink lte, unpaced otherwise)")
    args = parser.parse_args(argv)
    if args.line_baud is None:
        args.line_baud = LINK_BAUD if args.uplink == "lte" else 0
    lte = args.uplink == "lte"
    if args.out is None:
        name = "roundtrip.dkey" if args.lock == "dkey" else "roundtrip"
        args.out = ROOT / "benchmarks/results" / (name + (".lte" if lte else "") + ".json")

    work = Path(tempfile.mkdtemp(prefix="bench-roundtrip-"))
    key = BackendKey("bench", signing.generate_private_key())
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    bridge_log = (work / "bridge.log").open("a", buffering=1)
    home = start_home(work, bridge_log, args.lock, args.cold, broker if lte else None,
                      args.line_baud or None)
    config = work / "hubd.toml"
    # as hubctl pair leaves them
    record_pairings(work / "hubd-state", home.home.locks.values(), home.home.dkeys)
    extra = f"[lock_timing]\nidle_s = {COLD_IDLE_S}\n" if args.cold else ""
    if lte:
        extra += '\n[uplink]\nmode = "lte"\n'
    write_hubd_config(config, broker, home.home.port, key, home.home.kinds,
                      state_dir=work / "hubd-state", link_key=home.home.link_key, extra=extra,
                      broker_address=home.home.broker_address if lte else None)
    text = config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"')
    config.write_text(text)
    sent: dict[str, tuple[float, float]] = {}
    windows: list[tuple[float, float]] = []
    lock_id = next(iter(home.home.kinds))
    model = {**home.home.locks, **home.home.dkeys}[lock_id]
    timed = home.home.line.transcript.times
    idle = (lambda: home.call(lambda: not model.links and all_ended(c for _, c in timed))
            ) if args.cold else None
    with serving(config, work / "hubd.log", broker, home, work):
        route = "hubd's lock driver, the serial link, the firmware as Bluetooth proxy in MicroPython"
        if lte:
            route = ("the bridge's LTE modem (the uplink, on the LTE-M model), " + route)
        if args.line_baud:
            route += f" (the line paced at {args.line_baud} baud)"
        what = ("the simulated dKey through py-dormakaba-dkey" if args.lock == "dkey"
                else "the simulated BLE lock")
        print(f"timing {args.commands} commands through Mosquitto, hubd, {route} and {what} "
              f"(instant motor){', each on a new connection' if args.cold else ''}", flush=True)
        times = asyncio.run(drive(broker, key, lock_id, args.commands, sent, windows, idle))
    hops, requests = hops_of(sent, work / "hubd.log", requests_required=args.lock == "reference")
    crossings = home.home.line.transcript.times
    connects = connects_per_command(crossings, windows)
    held = [t for t, c in zip(times["final"], connects) if c == 0]
    set_up = [t for t, c in zip(times["final"], connects) if c > 0]
    result = {
        "benchmark": "command round trip, backend publish -> final answer, instant lock",
        "lock_driver": "hubd",  # the only one since the firmware's went; older results say "bridge"
        "lock": args.lock,  # "reference" (the inside turner) or "dkey" (py-dormakaba-dkey)
        "cold": args.cold,
        # hubd's path to the broker; with "lte", the network model's figures (simulator/lte_network.py)
        "uplink": args.uplink,
        "lte_network": dataclasses.asdict(realistic()) if lte else None,
        "line_baud": args.line_baud or None,  # the hub-bridge line's pace (null: unpaced)
        **measured_here(),
        "commands": args.commands,
        "accepted": summary(times["accepted"]),
        "succeeded": summary(times["final"]),
        "hops": {hop: summary(values) for hop, values in hops.items() if values},
        "parts_of_ble": list(PARTS_OF_BLE),
        # How many commands waited on how many BLE requests (2: the connection was kept).
        "ble_requests_per_command": {str(n): k for n, k in sorted(requests.items())},
        "proxy_write_on_bridge": summary(proxy_writes_on_bridge(crossings)),
        # How many commands made how many proxy connects, and the round trip of each sort.
        "connects_per_command": {str(n): k for n, k in sorted(Counter(connects).items())},
        "succeeded_on_held_connection": summary(held) if held else None,
        "succeeded_with_connection_setup": summary(set_up) if set_up else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [("accepted", result["accepted"]), ("succeeded", result["succeeded"])]
    rows += [(f"    {hop}" if hop in PARTS_OF_BLE else f"  {hop}", s)
             for hop, s in result["hops"].items()]
    print(f"{'':>16}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, s in rows:
        print(f"{name:<16}  {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f} "
              f"{s['max_ms']:8.2f}  n={s['n']}")
    for name, key_ in (("on a held connection", "succeeded_on_held_connection"),
                       ("with a connection set-up", "succeeded_with_connection_setup")):
        s = result[key_]
        if s is not None:
            print(f"succeeded {name}: p50 {s['p50_ms']:.2f}, p90 {s['p90_ms']:.2f}, "
                  f"p99 {s['p99_ms']:.2f} ms, n={s['n']}")
    if result["ble_requests_per_command"]:
        print("BLE requests per command: " + ", ".join(
            f"{n} in {k}" for n, k in result["ble_requests_per_command"].items()))
    else:
        print("BLE requests per command: the driver does not count them (the library makes them)")
    s = result["proxy_write_on_bridge"]
    print(f"a proxy write on the bridge, its request frame to its answer's on the line: "
          f"p50 {s['p50_ms']:.2f}, p90 {s['p90_ms']:.2f}, p99 {s['p99_ms']:.2f} ms, n={s['n']}")
    print(f"written to {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
