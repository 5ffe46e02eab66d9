"""hub-sim: a simulated home for your own hubd (or any program that speaks the serial link).

Starts the locks, the simulated radio and the bridge running the real firmware in MicroPython as
the locks' Bluetooth proxy, prints the serial port and the link key to point hubd at, and
narrates until Ctrl-C. hubd drives the locks itself: with ``--state-dir`` (hubd.toml's
state_dir) the locks' pairings are recorded there, as ``hubctl pair`` leaves them.

``--lock dkey``: the front door is a simulated dormakaba dKey (docs/dkey.md); with
``--state-dir`` it is paired (its association there and on the lock), without it fresh from the
box, for ``hubctl pair --activation-code`` with the code printed.

``--bridge-config /etc/hubd/bridge.json``: a technician's bench (simulator/bench.py,
docs/technician-guide.md "Bench with hub-sim"): the bridge boots with the bridge.json ``hubctl
provision`` wrote; unpaired locks of each kind wait, with the alarm unit of the provisioned
serial, the LTE modem and the reference alarm centre (DC-09 at bridge.json's receiver, MQTT on
hubd.toml's broker, ``--hubd-config``, by default the hubd.toml beside bridge.json). Type
``press`` (or send SIGUSR1) to press the alarm unit's pendant, ``hold LOCK`` to hold a lock's
pairing button.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from simulator import bench as benches
from simulator.console import bridge_line, say, watch_alarms, watch_dkeys, watch_locks
from simulator.home import SimulatedHome, address, default_locks, new_dkey, paired_dkey, record_pairings


async def run(args: argparse.Namespace) -> int:
    if args.bridge_config is not None:
        return await run_bench(args)
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


def _hubd_toml(args: argparse.Namespace) -> Path | None:
    if args.hubd_config is not None:
        return args.hubd_config
    beside = args.bridge_config.parent / "hubd.toml"
    return beside if beside.exists() else None


async def run_bench(args: argparse.Namespace) -> int:
    """The bench: the provisioned bridge.json's hub, narrated, until Ctrl-C."""
    hubd_toml = _hubd_toml(args)
    login = None
    if args.centre_username is not None:
        hub = benches.read_hubd_config(hubd_toml) if hubd_toml is not None else None
        password = args.centre_password_file.read_text().strip() \
            if args.centre_password_file is not None else None
        if hub is None:
            raise benches.BenchError("--centre-username needs hubd.toml (--hubd-config): the "
                                     "broker is the one it names")
        login = benches.Login(hub.mqtt.host, hub.mqtt.port, args.centre_username, password,
                              hub.mqtt.protocol, None, f"user {args.centre_username}")
    kinds = tuple(dict.fromkeys(args.locks.split(","))) if args.locks else ()
    bench = benches.Bench.from_files(
        args.bridge_config, hubd_toml, kinds=kinds, alarm_unit=not args.no_alarm_unit,
        lte=not args.no_lte, centre=not args.no_centre, centre_login=login,
        travel_time_s=args.travel_time, workdir=args.workdir, on_bridge_log=bridge_line)
    await bench.start()
    hub = bench.hub
    linked = None
    try:  # a link that cannot be made still stops the bench
        linked = benches.link_port(bench.home, hub.serial.port) if hub is not None else None
        narrate_bench(bench, args.bridge_config, hubd_toml, linked)
        tasks = [watch_locks(bench.home), watch_dkeys(bench.home), watch_pairings(bench.home),
                 console(bench)]
        if bench.unit is not None and bench.alarm_centre is not None:
            tasks.append(watch_alarms(bench.home, bench.alarm_centre))
        loop = asyncio.get_running_loop()
        if bench.unit is not None:
            loop.add_signal_handler(signal.SIGUSR1, lambda: _press(bench, "SIGUSR1"))
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)  # kill PID: as Ctrl-C
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            pass
    finally:
        await bench.stop()
        benches.unlink_port(linked)
        say("sim", "stopped")
    return 0


def narrate_bench(bench: benches.Bench, bridge_path: Path, hubd_toml: Path | None,
                  linked: str | None) -> None:
    """What waits on the bench, where (``linked``: hubd.toml's port made a link to the bridge's
    pty), and the technician's next commands."""
    b, home, hub = bench.bridge_json, bench.home, bench.hub
    link = b["link"]
    say("sim", f"bench from {bridge_path}: the bridge boots with it (link key from it, link on "
               f"UART {link.get('uart', 1)} at {link.get('baudrate', 115200)} baud)")
    port = f"{home.port}, linked at {linked} (hubd.toml's [serial] port)" if linked else home.port
    say("sim", f"bridge serial port: {port}")
    unit = b.get("alarm_unit")
    if unit is not None:
        if bench.unit is not None:
            pinned = "its label's serial, as bridge.json pins it" if unit.get("serial") else \
                "bridge.json pins no serial"
            say("sim", f"alarm unit {bench.unit.serial:08X} ({pinned}) on UART "
                       f"{unit.get('uart', 2)}: type 'press' here (or kill -USR1 {os.getpid()}) "
                       "to press its pendant")
        else:
            say("sim", f"alarm unit: none on UART {unit.get('uart', 2)} (--no-alarm-unit: "
                       "unplugged, although bridge.json has one)")
    lte = b.get("lte")
    if lte is not None:
        if home.modem is None:
            say("sim", "LTE modem: none (--no-lte: unplugged, although bridge.json has one)")
        else:
            routes = "; ".join(f"{h}:{p} -> {t[0]}:{t[1]}"
                               for (h, p), t in bench.routes.items())
            say("sim", f"LTE modem on UART {lte.get('uart', 3)} (APN {lte.get('apn')}); its "
                       f"network routes {routes or 'nothing'}")
    centre = bench.alarm_centre
    if centre is not None and bench.centre_login is not None:
        login = bench.centre_login
        dc09 = (f"DC-09 receiver on 127.0.0.1:{bench.dc09_port} for account {lte['account']}"
                f"{' (AES key from bridge.json)' if lte.get('key') else ''}, reached as "
                f"{lte['host']}:{lte['port']}; " if centre.dc09 is not None and lte else "")
        say("sim", f"alarm centre: {dc09}MQTT on {login.host}:{login.port} as {login.who}")
    elif centre is None:
        why = "--no-centre" if not bench.centre else "no hubd.toml: the broker it names is unknown"
        say("sim", f"alarm centre: none ({why}); alarms and the second path reach nobody")
    if not home.locks and not home.dkeys:
        say("sim", "no locks (--locks)")
    etc = f" --etc-dir {hubd_toml.parent}" if hubd_toml is not None else ""
    for kind, lock in home.locks.items():
        addr = address(lock)
        say("sim", f"lock waiting: {kind} at {addr}, unpaired, in pairing mode for "
                   f"{benches.PAIRING_WINDOW_S / 60:g} min ('hold {kind}' here holds its button "
                   f"again); its label's setup key {lock.setup_key.hex()}")
    for kind, dkey in home.dkeys.items():
        say("sim", f"lock waiting: {kind} (a dKey) at {address(dkey)}, fresh from the box, "
                   f"activation window open for 5 min ('hold {kind}' opens it again); its card's "
                   f"activation code {benches.dashed(dkey.activation_code)}")
    if home.locks or home.dkeys:
        say("sim", f"pair one: hubctl pair{etc} --addr ADDRESS --name NAME --setup-key KEY "
                   "(a dKey: --activation-code CODE)")
    if hub is None:
        say("sim", f"no hubd.toml beside {bridge_path} (--hubd-config): point hubd at the port "
                   f"with HUBD_SERIAL__PORT={home.port}")
        return
    assert hubd_toml is not None
    env_file = hubd_toml.parent / "hubd.env"
    override = "" if linked else f"HUBD_SERIAL__PORT={home.port} "
    sock = hub.status_socket
    socket_flag = ""
    if sock is not None and not os.access(sock.parent, os.W_OK):
        # /run/hubd is systemd's (RuntimeDirectory=); by hand, the socket goes beside hubd.toml
        # (where hubctl provision puts it for any --etc-dir but /etc/hubd).
        sock = hubd_toml.parent / "status.sock"
        override += f"HUBD_STATUS_SOCKET={shlex.quote(str(sock))} "
        socket_flag = f" --socket {shlex.quote(str(sock))}"
    say("sim", "next, in another terminal: " + override +
        f"hubd --config {shlex.quote(str(hubd_toml))} --env-file {shlex.quote(str(env_file))}")
    config = shlex.quote(str(hubd_toml))
    say("sim", f"then: hubctl status --config {config}{socket_flag}; hubctl doctor --config "
               f"{config}{socket_flag}")


async def watch_pairings(home: SimulatedHome) -> None:
    """Narrate a reference lock taking a secret (paired) and forgetting it (decommissioned)."""
    held = {lock_id: lk.secret is not None for lock_id, lk in home.locks.items()}
    while True:
        for lock_id, lk in home.locks.items():
            now = lk.secret is not None
            if now != held[lock_id]:
                held[lock_id] = now
                say("lock", f"{lock_id}: " + ("paired: holds a new secret" if now else
                                              "forgot its secret: works by hand, can be paired again"))
        await asyncio.sleep(0.05)


def _press(bench: benches.Bench, why: str) -> None:
    event_id = bench.press()
    assert bench.unit is not None
    say("unit", f"the pendant's button pressed ({why}): event {event_id}, "
                f"alarm {bench.unit.alarm_id(event_id)}")


async def console(bench: benches.Bench) -> None:
    """The bench's own commands on standard input: press, hold LOCK, help."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:  # a thread: any standard input (a terminal, a pipe, /dev/null) reads
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="bench-console", daemon=True).start()
    while (line := await lines.get()) is not None:
        words = line.split()
        if not words:
            continue
        if words[0] == "press" and bench.unit is not None:
            _press(bench, "typed")
        elif words[0] == "hold" and len(words) == 2:
            say("sim", bench.hold(words[1]))
        else:
            say("sim", "commands: press (the alarm unit's pendant), hold LOCK (its pairing "
                       f"button: {', '.join(bench.kinds) or 'no locks'})")
    await asyncio.Event().wait()  # standard input closed: the bench runs on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hub-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hub-sim --travel-time 1.5 --workdir /tmp/home; "
               "hub-sim --bridge-config /etc/hubd/bridge.json")
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
    bench = parser.add_argument_group(
        "a technician's bench (docs/technician-guide.md, \"Bench with hub-sim\")")
    bench.add_argument("--bridge-config", type=Path, default=None,
                       help="the bridge.json hubctl provision wrote: the bridge boots with it, "
                            "with unpaired locks, the alarm unit, the LTE modem and the alarm "
                            "centre")
    bench.add_argument("--hubd-config", type=Path, default=None,
                       help="hubd.toml (its hubd.env beside it): the broker the alarm centre "
                            "uses (default: the hubd.toml beside bridge.json)")
    bench.add_argument("--locks", default=",".join(benches.LOCK_CHOICES),
                       help="the unpaired locks waiting, by kind, comma-separated (default: "
                            f"{','.join(benches.LOCK_CHOICES)}; '' for none)")
    bench.add_argument("--no-alarm-unit", action="store_true",
                       help="no alarm unit on its UART (unplugged)")
    bench.add_argument("--no-lte", action="store_true", help="no LTE modem on its UART (unplugged)")
    bench.add_argument("--no-centre", action="store_true",
                       help="no alarm centre (neither its MQTT side nor its DC-09 receiver)")
    bench.add_argument("--centre-username", default=None,
                       help="the alarm centre's own broker account (default: hubd's login, "
                            "for a bench broker without the real ACL)")
    bench.add_argument("--centre-password-file", type=Path, default=None,
                       help="its password, alone on one line")
    args = parser.parse_args(argv)
    if args.bridge_config is not None:
        unknown = sorted(set(filter(None, args.locks.split(","))) - set(benches.LOCK_CHOICES))
        if unknown:
            parser.error(f"--locks: no such kind {', '.join(unknown)}: "
                         f"{', '.join(benches.LOCK_CHOICES)}")
        args.locks = ",".join(filter(None, args.locks.split(",")))
        if args.state_dir is not None or args.lock != "reference":
            parser.error("--lock and --state-dir are for a home without --bridge-config "
                         "(the bench's locks wait unpaired: --locks)")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except benches.BenchError as e:
        print(f"hub-sim: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
