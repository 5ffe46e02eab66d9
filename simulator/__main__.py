"""hub-sim: a simulated home for your own hubd (or any program that speaks the serial link).

Starts the locks, the simulated radio and the bridge running the real firmware in MicroPython as
the locks' Bluetooth proxy, prints the serial port and the link key to point hubd at, and
narrates until Ctrl-C. hubd drives the locks itself: with ``--state-dir`` (hubd.toml's
state_dir) the locks' pairings are recorded there, as ``hubctl pair`` leaves them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from simulator.console import bridge_line, say, watch_locks
from simulator.home import SimulatedHome, default_locks, record_pairings


async def run(args: argparse.Namespace) -> int:
    home = SimulatedHome(args.workdir, locks=default_locks(travel_time_s=args.travel_time),
                         on_bridge_log=bridge_line)
    if args.state_dir is not None:
        record_pairings(args.state_dir, home.locks.values())
    await home.start()
    say("sim", f"bridge serial port: {home.port}")
    kinds = ", ".join(f"{lock_id} = \"{lk.kind}\"" for lock_id, lk in home.locks.items())
    paired = (f"paired with the hubd whose state_dir is {args.state_dir}" if args.state_dir
              else "not paired with any hubd (give --state-dir, hubd.toml's state_dir)")
    say("sim", f"locks ([locks] {kinds}): {paired}; point hubd at the port: "
               f"HUBD_SERIAL__PORT={home.port} HUBD_SERIAL__LINK_KEY={home.link_key.hex()} "
               "hubd --config hubd.toml")
    try:
        await watch_locks(home)
    finally:
        await home.stop()
        say("sim", "stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hub-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hub-sim --travel-time 1.5 --workdir /tmp/home")
    parser.add_argument("--travel-time", type=float, default=2.0,
                        help="seconds the lock motor takes to turn (default 2.0)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the bridge's flash (bridge.json) lives (default: a temp dir)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="hubd's state directory (hubd.toml's state_dir): the locks' pairings "
                             "are recorded there, as hubctl pair leaves them")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
