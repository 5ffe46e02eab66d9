"""Benchmark: backend -> hub -> lock -> backend round trip, with an instant lock, per hop.

A private Mosquitto (TCP_NODELAY), hubd as its own process, and the simulated home (the real
firmware in MicroPython, the lock's motor travel set to zero). The backend sends signed
unlock/lock commands one after another and times each from publish to the `accepted` answer and
to the final `succeeded`. hubd logs where each command's time went ("command timing"), the
bridge reports its own share in every result, and the hops are:

    mqtt_in    backend publish -> hubd has the message (broker, TCP, paho)
    verify     JWS signature and claims
    record     journal + audit entry, durable (SQLite WAL, fsync) before `accepted`
    queue      waiting for the lock's worker
    link       hubd -> bridge -> hubd on the serial link, both ways (bridge round trip - bridge)
    bridge     on the bridge outside the lock driver (decode, journal on flash, encode)
    ble        in the lock driver: connect, challenge, command, result over the simulated radio
    finish     result -> final answer published (journal, audit entry, fsync)
    mqtt_out   hubd publishes the answer -> the backend has it

Prints p50/p90/p99 for the total and each hop and writes them as JSON. The clocks compared
across processes are the same machine's wall clock.

    .venv/bin/python benchmarks/roundtrip.py --commands 500 --out benchmarks/results/roundtrip.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import Actor, CommandClaims, Role  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, default_locks  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from hubapi import signing  # noqa: E402
from benchmarks.figures import summary  # noqa: E402


HOPS = ("mqtt_in", "verify", "record", "queue", "link", "bridge", "ble", "finish", "mqtt_out")


def hops_of(sent: dict[str, tuple[float, float]], log: Path) -> dict[str, list[float]]:
    """Per-hop milliseconds of every timed command, from hubd's "command timing" log lines."""
    out: dict[str, list[float]] = {h: [] for h in HOPS}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") != "command timing" or entry.get("command_id") not in sent:
            continue
        published, answered = sent[entry["command_id"]]
        bridge = entry.get("bridge_ms", 0.0)
        ble = entry.get("ble_ms", 0.0)
        values = {
            "mqtt_in": (entry["mqtt_at"] - published) * 1000,
            "verify": entry["verify_ms"], "record": entry["record_ms"],
            "queue": entry["queue_ms"], "link": entry["bridge_rtt_ms"] - bridge,
            "bridge": bridge - ble, "ble": ble, "finish": entry["finish_ms"],
            "mqtt_out": (answered - entry["answered_at"]) * 1000,
        }
        for hop, ms in values.items():
            out[hop].append(ms / 1000)
    return out


async def drive(broker: Mosquitto, key: BackendKey, lock: str, n: int,
                sent: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    accepted: list[float] = []
    final: list[float] = []
    async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend:
        for i in range(n):
            action = "unlock" if i % 2 == 0 else "lock"
            claims = CommandClaims.new(hub=HUB_ID, lock=lock, action=action,
                                       actor=Actor(id="bench", role=Role.TECHNICIAN), ttl_s=30)
            token = key.sign(claims)
            published = time.time()
            t0 = time.perf_counter()
            async for answer in backend.send_command(claims, token, timeout=60):
                t = time.perf_counter() - t0
                if answer.status == "accepted":
                    accepted.append(t)
                elif answer.status != "succeeded":
                    raise RuntimeError(f"command {i} ended {answer.status} ({answer.reason})")
                else:
                    final.append(t)
                    sent[claims.id] = (published, time.time())
            if (i + 1) % 50 == 0 or i + 1 == n:
                print(f"  {i + 1}/{n} commands, last round trip {final[-1] * 1000:.1f} ms",
                      flush=True)
    return {"accepted": accepted, "final": final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=500, help="commands to time (default 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/roundtrip.json",
                        help="where to write the JSON figures")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-roundtrip-"))
    key = BackendKey("bench", signing.generate_private_key())
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    bridge_log = (work / "bridge.log").open("a", buffering=1)
    home = HomeThread(SimulatedHome(work / "home", locks=default_locks(travel_time_s=0.0),
                                    on_bridge_log=lambda line: bridge_log.write(line + "\n")))
    home.start()
    config = work / "hubd.toml"
    write_hubd_config(config, broker, home.home.port, key, list(home.home.locks), link_key=home.home.link_key)
    text = config.read_text().replace('log_level = "DEBUG"', 'log_level = "INFO"')
    config.write_text(text)
    sent: dict[str, tuple[float, float]] = {}
    hubd = start_hubd(config, work / "hubd.log")
    try:
        wait_online(broker, HUB_ID, hubd, work / "hubd.log")
        print(f"timing {args.commands} commands through Mosquitto, hubd, the serial link, the "
              f"firmware in MicroPython and the simulated BLE lock (instant motor)", flush=True)
        times = asyncio.run(drive(broker, key, list(home.home.locks)[0], args.commands, sent))
    except Exception:
        print(f"failed; hubd's log and the bridge's are in {work}", file=sys.stderr)
        raise
    finally:
        stop_hubd(hubd)
        home.stop()
        broker.stop()
    result = {
        "benchmark": "command round trip, backend publish -> final answer, instant lock",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "accepted": summary(times["accepted"]),
        "succeeded": summary(times["final"]),
        "hops": {hop: summary(values) for hop, values in hops_of(sent, work / "hubd.log").items()
                 if values},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [("accepted", result["accepted"]), ("succeeded", result["succeeded"])]
    rows += [(f"  {hop}", s) for hop, s in result["hops"].items()]
    print(f"{'':>11}  {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, s in rows:
        print(f"{name:<11}  {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f} "
              f"{s['max_ms']:8.2f}  n={s['n']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
