"""Benchmark: backend -> hub -> lock -> backend round trip, with an instant lock.

A private Mosquitto (TCP_NODELAY), hubd as its own process, and the simulated home (the real
firmware in MicroPython, the lock's motor travel set to zero). The backend sends signed
unlock/lock commands one after another and times each from publish to the `accepted` answer and
to the final `succeeded`. Prints p50/p90/p99 and writes them as JSON.

    .venv/bin/python benchmarks/roundtrip.py --commands 500 --out benchmarks/results/roundtrip.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms), "max_ms": max(ms)}


async def drive(broker: Mosquitto, key: BackendKey, lock: str, n: int) -> dict[str, list[float]]:
    accepted: list[float] = []
    final: list[float] = []
    async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend:
        for i in range(n):
            action = "unlock" if i % 2 == 0 else "lock"
            claims = CommandClaims.new(hub=HUB_ID, lock=lock, action=action,
                                       actor=Actor(id="bench", role=Role.TECHNICIAN), ttl_s=30)
            token = key.sign(claims)
            t0 = time.perf_counter()
            async for answer in backend.send_command(claims, token, timeout=60):
                t = time.perf_counter() - t0
                if answer.status == "accepted":
                    accepted.append(t)
                elif answer.status != "succeeded":
                    raise RuntimeError(f"command {i} ended {answer.status} ({answer.reason})")
                else:
                    final.append(t)
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
    home = HomeThread(SimulatedHome(work / "home", locks=default_locks(travel_time_s=0.0)))
    home.start()
    config = work / "hubd.toml"
    write_hubd_config(config, broker, home.home.port, key, list(home.home.locks))
    text = config.read_text().replace('log_level = "DEBUG"', 'log_level = "WARNING"')
    config.write_text(text)
    hubd = start_hubd(config, work / "hubd.log")
    try:
        wait_online(broker, HUB_ID, hubd, work / "hubd.log")
        print(f"timing {args.commands} commands through Mosquitto, hubd, the serial link, the "
              f"firmware in MicroPython and the simulated BLE lock (instant motor)", flush=True)
        times = asyncio.run(drive(broker, key, list(home.home.locks)[0], args.commands))
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
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("accepted", "succeeded"):
        s = result[name]
        print(f"{name:>9}: p50 {s['p50_ms']:.1f} ms  p90 {s['p90_ms']:.1f} ms  "
              f"p99 {s['p99_ms']:.1f} ms  max {s['max_ms']:.1f} ms  (n={s['n']})")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
