"""Benchmark: a safety alarm's path while hubd's LTE uplink is idle and while it is saturated.

Issue 16's "priority on the serial link": alarm and lock-operation messages always go before the
uplink's bytes (wire/link.py: bulk payloads go after every message). This measures what that
leaves of an alarm's latency when hubd's broker connection runs through the bridge's modem at full
rate. The real parts but the hardware: a home without broadband (simulator/home.py, its router
cut from the start), the bridge firmware in MicroPython with a simulated alarm unit on UART 2 and
the BG95 model on UART 3 on the realistic LTE-M network model (simulator/lte_network.py: 75-125 ms
one way, 16 kB/s each way, 1 % of segments a second late), the hub-bridge line paced at its
115200 baud as the cable is, hubd as its own process with ``[uplink] mode = "lte"``, a private
Mosquitto and the reference alarm centre (simulator/alarm_centre.py, confirming at once). One
press at a time, the next once the resident heard "help is on the way", as benchmarks/alarms.py's
primary path (whose hops these are: unit_ack, to_hubd, store, mqtt, centre, back).

Four phases, ``--presses`` each:

    idle      nothing else on the uplink but hubd's own traffic
    download  the backend streams publishes to a topic hubd takes (status requests that are not
              JSON: hubd refuses each, counted and quiet), 4 KB each, keeping ``--backlog`` bytes
              ahead of what the modem gave the bridge: the modem always holds bytes for the
              bridge, the serial link toward hubd carries the uplink's bulk at full rate
    upload    the backend keeps ``--requests`` status requests outstanding: each answer (hubd's
              health snapshot, ~2 KB) goes up through the bridge at full rate
    both      both at once

What crosses the serial link: ``to_hubd`` (the `alarm` message, bridge -> hubd, beside the
download's bulk) and ``back`` (alarm_handled, hubd -> bridge, beside the upload's bulk) show the
link's priority. ``mqtt`` (hubd's publish -> the centre) and the confirmation inside ``back`` go
through the uplink's one TCP stream, behind whatever that stream already carries: that is MQTT's
head-of-line blocking on one connection, not the serial link's, and it is bounded by the backlog a
saturating sender keeps, not by hubd. Each phase also reports how saturated the uplink was: bytes
a second each way through the modem's socket, and the share of 50 ms samples in which the modem
held bytes the bridge had not read yet (``modem_holding``).

Prints p50/p90/p99 per phase and writes JSON. An alarm that did not reach the centre is a
problem: reported loudly, exit 1.

    .venv/bin/python benchmarks/uplink.py --presses 30 --out benchmarks/results/uplink.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.alarms import (PRIMARY_HOPS, PRIMARY_TOTALS, Rig, TimedReceiver, TimedUnit,  # noqa: E402
                               bridge_health, on_home, primary, versions)
from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi import signing, topics  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import StatusRequest  # noqa: E402
from simulator.alarm_centre import AlarmCentre  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, default_locks, record_pairings  # noqa: E402
from simulator.lte_network import realistic  # noqa: E402
from simulator.ports import free_port  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

PHASES = ("idle", "download", "upload", "both")
UPLINK_ID = 1  # the uplink's connect id on the modem
LINK_BAUD = 115200  # the hub-bridge cable's (bridge.json's link baudrate)
CHUNK = 4000  # bytes of each publish the download stream sends
SAMPLE_S = 0.05


@dataclasses.dataclass
class Flow:
    """What a saturating stream did."""

    published: int = 0  # download: payload bytes published to hubd
    requests: int = 0  # upload: status requests sent
    answers: int = 0  # upload: their answers received
    answer_bytes: int = 0


def _socket_counts(home: SimulatedHome) -> tuple[int, int, int]:
    """The uplink socket's (bytes the bridge read, bytes the modem took to send, bytes unread)."""
    assert home.modem is not None
    sock = home.modem.sockets.get(UPLINK_ID)
    return (sock.read, sock.sent, len(sock.rx)) if sock is not None else (0, 0, 0)


async def download(backend: BackendClient, home: HomeThread, backlog: int, flow: Flow,
                   stop: asyncio.Event) -> None:
    """Keep ``backlog`` bytes published to hubd beyond what the modem handed the bridge."""
    topic = topics.status_request(HUB_ID)
    payload = b"~" * CHUNK  # not JSON: hubd refuses it (quietly: one log line in a while)
    start = (await on_home(home, lambda: _socket_counts(home.home)))[0]
    while not stop.is_set():
        read = (await on_home(home, lambda: _socket_counts(home.home)))[0] - start
        if flow.published - read < backlog:
            await backend.publish(topic, payload)
            flow.published += len(payload)
        else:
            await asyncio.sleep(0.02)


async def upload(backend: BackendClient, requests: int, flow: Flow, stop: asyncio.Event) -> None:
    """Keep ``requests`` status requests outstanding: hubd's answers go up at full rate."""
    reply_to = topics.status_replies(HUB_ID) + "/bench-upload"
    outstanding = 0
    async with backend.watch(reply_to) as replies:
        while not stop.is_set():
            while outstanding < requests:
                req = StatusRequest(id=uuid.uuid4().hex, reply_to=reply_to)
                await backend.publish(topics.status_request(HUB_ID), req.model_dump_json())
                flow.requests += 1
                outstanding += 1
            try:
                answer = await asyncio.wait_for(replies.get(), 10)
            except TimeoutError:
                outstanding = 0  # an answer lost with a reconnect: ask again
                continue
            outstanding -= 1
            flow.answers += 1
            flow.answer_bytes += len(answer.payload)


async def sample(home: HomeThread, samples: list[tuple[float, int, int, int]],
                 stop: asyncio.Event) -> None:
    while not stop.is_set():
        read, sent, unread = await on_home(home, lambda: _socket_counts(home.home))
        samples.append((time.monotonic(), read, sent, unread))
        await asyncio.sleep(SAMPLE_S)


def saturation(samples: list[tuple[float, int, int, int]]) -> dict[str, Any]:
    """Bytes a second each way through the modem's uplink socket, and how often it held bytes."""
    if len(samples) < 2:
        return {"seconds": 0.0, "down_bytes_s": 0.0, "up_bytes_s": 0.0, "modem_holding": 0.0}
    (t0, r0, s0, _), (t1, r1, s1, _) = samples[0], samples[-1]
    seconds = max(t1 - t0, 1e-9)
    return {"seconds": round(seconds, 2), "down_bytes_s": round((r1 - r0) / seconds),
            "up_bytes_s": round((s1 - s0) / seconds),
            "modem_holding": round(sum(1 for *_, unread in samples if unread) / len(samples), 3)}


async def phase(rig: Rig, centre: AlarmCentre, receiver: TimedReceiver, name: str, presses: int,
                backlog: int, requests: int, settle_s: float) -> dict[str, Any]:
    stop = asyncio.Event()
    flow = Flow()
    samples: list[tuple[float, int, int, int]] = []
    async with contextlib.AsyncExitStack() as stack:
        backend = await stack.enter_async_context(
            BackendClient(rig.broker.host, rig.broker.port, client_id=f"bench-{name}"))
        tasks = []
        if name in ("download", "both"):
            tasks.append(asyncio.create_task(download(backend, rig.home, backlog, flow, stop)))
        if name in ("upload", "both"):
            tasks.append(asyncio.create_task(upload(backend, requests, flow, stop)))
        if tasks:
            await asyncio.sleep(settle_s)  # the stream up to its full rate before the first press
        tasks.append(asyncio.create_task(sample(rig.home, samples, stop)))
        try:
            print(f"{name}: {presses} presses", flush=True)
            result = await primary(rig, centre, receiver, presses)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    result["uplink"] = saturation(samples)
    result["stream"] = dataclasses.asdict(flow)
    return result


async def drive(rig: Rig, receiver: TimedReceiver, phases: list[str], presses: int, backlog: int,
                requests: int, settle_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AlarmCentre(rig.broker.host, rig.broker.port) as centre:
        receiver.centre = centre
        for name in phases:
            if rig.dead:
                break
            out[name] = await phase(rig, centre, receiver, name, presses, backlog, requests,
                                    settle_s)
            # What the stream left in the pipe drains before the next phase starts.
            await asyncio.sleep(settle_s)
    return out


def report(result: dict[str, Any]) -> list[str]:
    problems = []
    print(f"\n{'':<22}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, part in result["phases"].items():
        up = part["uplink"]
        print(f"{name}: uplink down {up['down_bytes_s'] / 1000:.1f} kB/s, up "
              f"{up['up_bytes_s'] / 1000:.1f} kB/s, the modem holding bytes for the bridge in "
              f"{up['modem_holding'] * 100:.0f} % of samples")
        for key, s in [*part["totals"].items(), *((f"  {k}", v) for k, v in part["hops"].items())]:
            print(f"  {key:<20}  {s['p50_ms']:8.1f} {s['p90_ms']:8.1f} {s['p99_ms']:8.1f} "
                  f"{s['max_ms']:8.1f}  n={s['n']}")
        counts = part["counts"]
        if counts["lost"] or counts["not_pressed"]:
            problems.append(f"{name}: {counts['lost']} alarm(s) never reached the centre, "
                            f"{counts['not_pressed']} not pressed: {part['lost_ids']}")
        if counts["over_lte"]:
            problems.append(f"{name}: {counts['over_lte']} alarm(s) went over the second path "
                            f"(the handled deadline passed)")
    health = result["bridge"]
    if health["boots"] != 1 or health["resets"] or health["error_lines"]:
        problems.append(f"the bridge firmware booted {health['boots']} time(s), reset "
                        f"{health['resets']} time(s) and logged: {health['errors'][:6]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=30, help="presses in each phase (default 30)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"which phases, in order (default {','.join(PHASES)})")
    parser.add_argument("--backlog", type=int, default=16_000,
                        help="download: bytes kept published beyond what the bridge read (default "
                             "16000: the modem's 8 KB receive buffer and the network's pipe kept full)")
    parser.add_argument("--requests", type=int, default=4,
                        help="upload: status requests kept outstanding (default 4)")
    parser.add_argument("--settle-s", type=float, default=3.0,
                        help="seconds a stream runs before the first press, and the pipe drains "
                             "after a phase (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/uplink.json")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"--phases: no such phase {unknown}; choose from {', '.join(PHASES)}")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    work = Path(tempfile.mkdtemp(prefix="bench-uplink-"))
    result: dict[str, Any] = {
        "benchmark": "safety alarm press -> alarm centre over MQTT through hubd's LTE uplink, the "
                     "uplink idle and saturated",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": versions(work),
    }
    key = BackendKey("bench", signing.generate_private_key())
    receiver = TimedReceiver(free_port())  # nobody listens: an alarm that went DC-09 is counted
    # The second path only if hubd never confirms (the firmware's 30 s handled deadline).
    timings = {"handled_deadline_ms": 30000, "hub_down_ms": 10000}
    lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port, "account": "12AB",
           "receiver": "1", "retry_ms": 1000}
    bridge_lines: list[tuple[float, str]] = []
    bridge_log = (work / "bridge.log").open("a", buffering=1)

    def on_bridge_log(line: str) -> None:
        bridge_lines.append((time.time(), line))
        del bridge_lines[:-500]
        bridge_log.write(line + "\n")

    broker = Mosquitto(work / "mosquitto")
    broker.start()
    unit = TimedUnit()
    sim = SimulatedHome(work / "home", locks=default_locks(), alarm_unit=unit, alarm_timings=timings,
                        lte=lte, on_bridge_log=on_bridge_log, broker=(broker.host, broker.port),
                        broadband=False, line_baud=LINK_BAUD)
    result["settings"] = {
        "presses": args.presses, "phases": phases, "backlog_bytes": args.backlog,
        "requests_outstanding": args.requests, "download_chunk_bytes": CHUNK,
        "settle_s": args.settle_s, "alarm_timings": timings, "line_baud": LINK_BAUD,
        "modem_baud": sim.modem.baud if sim.modem is not None else None,
        "lte_network": dataclasses.asdict(realistic()),
        "hubd": '[uplink] mode = "lte", log level INFO', "centre": {"handling_delay_s": 0.0},
    }
    home = HomeThread(sim)
    hubd = None
    try:
        home.start()
        config = work / "hubd.toml"
        record_pairings(work / "hubd-state", sim.locks.values())
        write_hubd_config(config, broker, sim.port, key, list(sim.locks), link_key=sim.link_key,
                          extra='[uplink]\nmode = "lte"\n', broker_address=sim.broker_address)
        config.write_text(config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"'))
        hubd = start_hubd(config, work / "hubd.log")
        wait_online(broker, HUB_ID, hubd, work / "hubd.log", timeout=60)
        booted = time.monotonic()
        while not any("alarm unit on UART" in line for _, line in list(bridge_lines)):
            if time.monotonic() - booted > 30:
                raise RuntimeError("the bridge never came up with its alarm unit")
            time.sleep(0.05)
        rig = Rig(broker, home, unit, hubd, bridge_lines, result["settings"])
        result["phases"] = asyncio.run(drive(rig, receiver, phases, args.presses, args.backlog,
                                             args.requests, args.settle_s))
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
    result["problems"] = problems
    result["hops"] = list(PRIMARY_HOPS)
    result["totals"] = list(PRIMARY_TOTALS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if problems:
        print("\n" + "!" * 78, file=sys.stderr)
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        print(f"logs in {work}\n" + "!" * 78, file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
