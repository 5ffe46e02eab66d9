"""hub-sim: a simulated home for your own hubd (or any program that speaks the serial link).

Starts the locks, the simulated radio and the bridge running the real firmware in MicroPython as
the locks' Bluetooth proxy, prints the serial port and the link key to point hubd at, and
narrates until Ctrl-C. hubd drives the locks itself: with ``--state-dir`` (hubd.toml's
state_dir) the locks' pairings are recorded there, as ``hubctl pair`` leaves them.

``--lock dkey``: the front door is a simulated dormakaba dKey (docs/dkey.md); with
``--state-dir`` it is paired (its association there and on the lock), without it fresh from the
box, for ``hubctl pair --activation-code`` with the code printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from simulator.console import bridge_line, say, watch_dkeys, watch_locks
from simulator.home import SimulatedHome, address, default_locks, new_dkey, paired_dkey, record_pairings


async def run(args: argparse.Namespace) -> int:
    if args.lock == "dkey":
        make = paired_dkey if args.state_dir is not None else new_dkey
        home = SimulatedHome(args.workdir, locks=[], on_bridge_log=bridge_line,
                             dkeys={"front-door": make(travel_time_s=args.travel_time)})
    else:
        home = SimulatedHome(args.workdir, locks=default_locks(travel_time_s=args.travel_time),
                             on_bridge_log=bridge_line)
    if args.state_dir is not None:
        record_pairings(args.state_dir, home.locks.values(), home.dkeys)
    await home.start()
    say("sim", f"bridge serial port: {home.port}")
    for lock_id, dkey in home.dkeys.items():
        addr = address(dkey)
        say("sim", f"{lock_id} is a dKey at {addr}" + (
            "" if dkey.associations else
            f", fresh from the box: hubctl pair --addr {addr} --name {lock_id} "
            f"--activation-code {dkey.activation_code}"))
    kinds = ", ".join(f"{lock_id} = \"{kind}\"" for lock_id, kind in home.kinds.items())
    paired = (f"paired with the hubd whose state_dir is {args.state_dir}" if args.state_dir
              else "not paired with any hubd (give --state-dir, hubd.toml's state_dir)")
    say("sim", f"locks ([locks] {kinds}): {paired}; point hubd at the port: "
               f"HUBD_SERIAL__PORT={home.port} HUBD_SERIAL__LINK_KEY={home.link_key.hex()} "
               "hubd --config hubd.toml")
    try:
        await asyncio.gather(watch_locks(home), watch_dkeys(home))
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
    parser.add_argument("--lock", choices=("reference", "dkey"), default="reference",
                        help="the front door: the reference inside turner (default), or 'dkey', "
                             "a simulated dormakaba dKey (paired with --state-dir, else new)")
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
