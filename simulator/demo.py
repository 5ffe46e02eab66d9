"""The demo: a whole simulated home on an embedded broker, shown live in the terminal.

It starts an MQTT broker in this process (amqtt, so nothing needs installing), a simulated home
(an inside-turner lock with a motor, a safety alarm unit with its pendant, an LTE modem; the real
bridge firmware in MicroPython as the lock's Bluetooth proxy), hubd as its own process on the
home's serial port, driving the lock through the proxy (its pairing in hubd's state, as
``hubctl pair`` leaves it), a scripted
backend that signs open and lock commands, and the reference alarm centre (MQTT side and SIA
DC-09 receiver). Each round the backend prepares the door for the nurse's visit (hubd connects
and holds the connection, moving nothing), the nurse's app unlocks and locks it, and the
resident presses the alarm button. Every line says who is speaking: the backend, hubd, the bridge firmware, the
lock, the alarm unit, or the alarm centre. Ctrl-C stops everything and leaves no process behind.

With ``--lock dkey`` the front door is a simulated dormakaba dKey instead (docs/dkey.md), which
hubd drives through py-dormakaba-dkey, unmodified, over the same proxy: paired before (its
association in hubd's state and on the lock; it bonds with the bridge at hubd's first
connection, simulator.home), and the lock's side narrates each step of its protocol as it
happens (connection, bonding, the challenge, the encrypted session, the command, the motor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from hubapi import signing, topics
from hubapi.client import BackendClient
from hubapi.models import Actor, CommandClaims, LockState, Role
from simulator.alarm_centre import AlarmCentre
from simulator.alarm_unit import AlarmUnit
from simulator.console import bridge_line, say, watch_alarms, watch_dkeys, watch_locks
from simulator.ports import free_port as free_tcp_port
from simulator.home import SimulatedHome, default_locks, paired_dkey, record_pairings
from wire import alarms

HUB_ID = "demo-hub"
KID = "backend-demo"
DC09_ACCOUNT = "12AB"  # the home's account at the alarm centre's DC-09 receiver


@contextlib.asynccontextmanager
async def embedded_broker(port: int) -> AsyncIterator[None]:
    """An MQTT 3.1.1 broker in this process on loopback only (never amqtt's 0.0.0.0 default)."""
    from amqtt.broker import Broker

    # amqtt's own chatter, and the alarm centre's log lines (the narration shows those).
    for name in ("amqtt", "transitions", "simulator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


def hubd_config(path: Path, port: int, serial_port: str, link_key: bytes, public_key: str,
                locks: dict[str, str]) -> None:
    """hubd.toml for the demo's hub; ``locks``: lock id -> kind (wire.lockkinds)."""
    lock_table = "\n".join(f'"{lk}" = "{kind}"' for lk, kind in locks.items())
    path.write_text(f"""hub_id = "{HUB_ID}"
state_dir = "{path.parent / 'hubd-state'}"
status_socket = "{path.parent / 'status.sock'}"
command_timeout_s = 30

[mqtt]
host = "127.0.0.1"
port = {port}
protocol = "3.1.1"

[serial]
port = "{serial_port}"
link_key = "{link_key.hex()}"

[keys]
"{KID}" = "{public_key}"

[locks]
{lock_table}

[alarms]
resident = "resident-208"
""")


_SHOWN_FIELDS = ("lock", "action", "actor", "status", "reason", "state", "written")


def readable(line: str) -> str:
    """hubd logs JSON lines (for the journal); show people the message and the fields that matter."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "msg" not in entry:
        return line
    fields = " ".join(f"{k}={entry[k]}" for k in _SHOWN_FIELDS if entry.get(k) is not None)
    hops = [f"{k[:-3]} {v:.1f} ms" for k, v in entry.items() if k.endswith("_ms") and isinstance(v, (int, float))]
    if hops:  # where a command's time went, hop by hop ("command timing")
        fields = ", ".join(hops) + (f"  {fields}" if fields else "")
    level = "" if entry.get("level") in ("INFO", "DEBUG") else f"{entry.get('level')}: "
    return f"{level}{entry['msg']}" + (f"  [{fields}]" if fields else "")


async def pump(stream: asyncio.StreamReader, who: str) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if line:
            say(who, readable(line))


async def watch_state(backend: BackendClient) -> None:
    """The retained lock state, as the backend (or any late subscriber) sees it."""
    async with backend.watch(topics.lock_states(HUB_ID)) as queue:
        while True:
            msg = await queue.get()
            state = LockState.model_validate_json(msg.payload)
            battery = f", battery {state.battery}%" if state.battery is not None else ""
            say("backend", f"← state of {state.lock}: {state.state}{battery} "
                           f"(retained, from {state.source})")


async def send(backend: BackendClient, key: signing.Ed25519PrivateKey, action: str,
               lock: str) -> bool:
    claims = CommandClaims.new(hub=HUB_ID, lock=lock, action=action,
                               actor=Actor(id="nurse-0042", role=Role.STAFF),
                               assignment="visit-2026-11-22-0800", ttl_s=30)
    token = signing.sign(claims, key, KID)
    say("backend", f"→ {action} {lock} (command {claims.id[:8]}…, signed by {KID}, "
                   f"valid 30 s, nurse-0042 on visit-2026-11-22-0800)")
    final = None
    async for answer in backend.send_command(claims, token, timeout=60):
        extra = f" ({answer.reason})" if answer.reason else ""
        state = f", lock {answer.state}" if answer.state else ""
        say("backend", f"← {answer.status}{extra}{state}")
        final = answer
    return final is not None and final.status == "succeeded"


async def press_alarm(home: SimulatedHome, timeout: float = 60) -> bool:
    """The resident presses the pendant; wait until the unit says help is on the way."""
    unit = home.alarm_unit
    assert unit is not None
    event_id = unit.press(alarms.BUTTON, "pendant")
    say("unit", f"the resident presses the pendant button (event {event_id}, alarm {unit.alarm_id(event_id)})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "help_on_the_way" in unit.heard.get(event_id, []):
            return True
        await asyncio.sleep(0.1)
    say("demo", f"alarm event {event_id} not confirmed within {timeout:g} s")
    return False


async def run(args: argparse.Namespace) -> int:
    port = free_tcp_port()
    dc09_port = free_tcp_port()
    key = signing.generate_private_key()
    work = Path(tempfile.mkdtemp(prefix="hub-demo-"))
    say("demo", f"embedded MQTT broker on 127.0.0.1:{port}; working files in {work}")
    dkey = args.lock == "dkey"
    home = SimulatedHome(work / "home",
                         locks=[] if dkey else default_locks(travel_time_s=args.travel_time),
                         dkeys={"front-door": paired_dkey(travel_time_s=args.travel_time)}
                         if dkey else None,
                         on_bridge_log=bridge_line, alarm_unit=AlarmUnit(),
                         lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": dc09_port,
                              "account": DC09_ACCOUNT, "receiver": "1"})
    centre = AlarmCentre("127.0.0.1", port, protocol="3.1.1", dc09_accounts={DC09_ACCOUNT: None},
                         dc09_port=dc09_port)
    centre_started = False
    hubd: asyncio.subprocess.Process | None = None
    tasks: list[asyncio.Task[None]] = []
    ok = True
    async with embedded_broker(port):
        try:
            await centre.start()
            centre_started = True
            say("demo", f"alarm centre listening on MQTT and for SIA DC-09 on 127.0.0.1:{dc09_port}")
            await home.start()
            say("demo", f"simulated bridge running the real firmware in MicroPython as the "
                        f"lock's Bluetooth proxy; serial port {home.port}")
            cfg = work / "hubd.toml"
            # hubd_config's state_dir
            record_pairings(work / "hubd-state", home.locks.values(), home.dkeys)
            if dkey:
                say("demo", "front-door is a dormakaba dKey, paired with hubd before (its key "
                            "holder id and association secret in hubd's state and on the lock, "
                            "as hubctl pair --activation-code leaves them); hubd drives it "
                            "through py-dormakaba-dkey and the bridge's Bluetooth proxy; it "
                            "bonds with the bridge at hubd's first connection")
            else:
                say("demo", f"{', '.join(home.locks)} paired with hubd (its secret in hubd's "
                            "state, as hubctl pair leaves it); hubd drives it through the bridge")
            hubd_config(cfg, port, home.port, home.link_key, signing.public_key_text(key),
                        home.kinds)
            hubd = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubd", "--config", str(cfg),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            assert hubd.stdout is not None
            tasks.append(asyncio.create_task(pump(hubd.stdout, "hubd")))
            say("demo", f"hubd's local socket: hubctl status --socket {work / 'status.sock'}")
            tasks.append(asyncio.create_task(watch_locks(home)))
            tasks.append(asyncio.create_task(watch_dkeys(home)))
            tasks.append(asyncio.create_task(watch_alarms(home, centre)))
            async with BackendClient("127.0.0.1", port, client_id="demo-backend",
                                     protocol="3.1.1") as backend:
                await wait_online(backend)
                tasks.append(asyncio.create_task(watch_state(backend)))
                rounds = 0
                while True:
                    # The backend knows the nurse is on the way: it prepares the door (hubd
                    # connects now and holds the connection, moving nothing), so the tap at the
                    # door finds it open (docs/ble-timing.md).
                    say("backend", "the nurse is on the way: the door is prepared before the tap")
                    for action in ("prepare", "unlock", "lock"):
                        ok = await send(backend, key, action, "front-door") and ok
                        await asyncio.sleep(args.pause)
                    ok = await press_alarm(home) and ok
                    await asyncio.sleep(args.pause)
                    rounds += 1
                    if args.once or (args.rounds and rounds >= args.rounds):
                        break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if hubd is not None and hubd.returncode is None:
                hubd.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(hubd.wait(), 10)
                except TimeoutError:
                    hubd.kill()
                    await hubd.wait()
            await home.stop()
            if centre_started:
                await centre.stop()
    say("demo", "all stopped" + ("" if ok else "; some commands did not succeed"))
    return 0 if ok else 1


async def wait_online(backend: BackendClient, timeout: float = 30) -> None:
    async with backend.watch(topics.online(HUB_ID)) as queue:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
            except TimeoutError:
                break
            say("backend", f"hub says: {msg.payload.decode(errors='replace')}")
            if b'"online"' in msg.payload:
                return
    raise RuntimeError("hubd did not come online within 30 s; see its lines above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hub-demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hub-demo --rounds 3 --travel-time 1.5; hub-demo --once --lock dkey")
    parser.add_argument("--once", action="store_true",
                        help="one round (unlock, lock, alarm button), then exit")
    parser.add_argument("--rounds", type=int, default=0,
                        help="stop after this many rounds (default: until Ctrl-C)")
    parser.add_argument("--travel-time", type=float, default=2.0,
                        help="seconds the lock motor takes to turn (default 2.0)")
    parser.add_argument("--lock", choices=("reference", "dkey"), default="reference",
                        help="the front door: the reference inside turner (default), or 'dkey', "
                             "a simulated dormakaba dKey driven through py-dormakaba-dkey, its "
                             "protocol steps narrated")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between commands (default 2.0)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        say("demo", "stopped by Ctrl-C")
        return 0


if __name__ == "__main__":
    sys.exit(main())
