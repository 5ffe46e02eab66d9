"""Live, readable narration of a simulated home in the terminal (the demo and hub-sim)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from simulator.home import SimulatedHome

_COLOURS = {"backend": "36", "hubd": "35", "bridge": "33", "lock": "32", "demo": "1", "sim": "1"}
_t0 = time.monotonic()


def say(who: str, text: str) -> None:
    """One timestamped line, coloured by speaker when the terminal shows colour."""
    stamp = f"{time.monotonic() - _t0:7.2f}s"
    tag = f"{who:>7} │"
    if sys.stdout.isatty() and os.environ.get("NO_COLOR") is None:
        tag = f"\x1b[{_COLOURS.get(who, '0')}m{tag}\x1b[0m"
    print(f"{stamp} {tag} {text}", flush=True)


def bridge_line(line: str) -> None:
    """Firmware log lines start with the bridge's millisecond tick; the narration has its own clock."""
    tick, _, rest = line.partition(" ")
    say("bridge", rest if tick.isdigit() else line)


async def watch_locks(home: SimulatedHome) -> None:
    """Narrate what each lock's motor really does (the simulator's view, not the bridge's)."""
    last: dict[str, str] = {}
    while True:
        for lock_id, lk in home.locks.items():
            now = f"{'motor turning' if lk.state == 'moving' else lk.state}, battery {lk.battery}%"
            if last.get(lock_id) != now:
                last[lock_id] = now
                say("lock", f"{lock_id}: {now}")
        await asyncio.sleep(0.05)
