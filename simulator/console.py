"""Live, readable narration of a simulated home in the terminal (the demo and hub-sim): the
reference locks' motors, the dKeys' protocol steps, the alarm's path."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from simulator.alarm_centre import AlarmCentre
from simulator.dkey import DKeyLock
from simulator.home import SimulatedHome

_COLOURS = {"backend": "36", "hubd": "35", "bridge": "33", "lock": "32", "demo": "1", "sim": "1",
            "unit": "31", "centre": "34"}
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


#: What a dKey's session phase (simulator.dkey) means, for the narration.
_DKEY_PHASES = {
    "identified": "identification exchanged",
    "associate": "asked to associate (a new key holder)",
    "pin-ack": "activation-code challenge sent",
    "pin": "activation-code challenge sent",
    "association": "activation code right: key exchange (ECDH) under the code's session",
    "ecdh": "activation code right: key exchange (ECDH) under the code's session",
    "challenge": "a known key holder: its challenge sent",
    "authenticating": "challenge answered: the session is encrypted with the key holder's secret",
    "ready": "session ready (authenticated)",
}


def _dkey_view(lock: DKeyLock) -> dict[str, Any]:
    session = next(iter(lock.sessions.values()), None)
    return {
        "link": bool(lock.links),
        "connections": lock.connections,
        "encrypted": session is not None and session.link.encrypted,
        "phase": session.phase if session is not None else None,
        "bonds": len(lock.bonds),
        "key holders": len(lock.associations),
        "wrong codes": lock.wrong_codes,
        "commands": lock.move_commands,
        "state": lock.state,
        "battery": lock.battery,
    }


async def watch_dkeys(home: SimulatedHome) -> None:
    """Narrate each dKey's side of the protocol as it happens (the simulator's view, docs/dkey.md):
    connections, bonding, the handshake's steps, association, commands taken, the motor."""
    last: dict[str, dict[str, Any]] = {}
    while True:
        for lock_id, lock in home.dkeys.items():
            now = _dkey_view(lock)
            was = last.get(lock_id)
            last[lock_id] = now
            who = f"{lock_id} (dKey)"
            if was is None:
                say("lock", f"{who}: {now['state']}, battery {now['battery']} (raw), "
                            f"{now['key holders']} key holder(s), activation window "
                            f"{'open' if lock.pairable else 'closed'}")
                continue
            # Counted, not only looked at: a link dropped and made again between two looks.
            new_links = now["connections"] - was["connections"]
            if was["link"] and (new_links or not now["link"]):
                say("lock", f"{who}: disconnected")
            for _ in range(new_links):
                say("lock", f"{who}: a central connected")
            if now["bonds"] != was["bonds"]:
                say("lock", f"{who}: bonded with the central (BLE); activation window "
                            f"{'open' if lock.pairable else 'closed'}")
            if now["encrypted"] and not was["encrypted"]:
                say("lock", f"{who}: link encrypted")
            if now["phase"] != was["phase"] and now["phase"] in _DKEY_PHASES:
                say("lock", f"{who}: {_DKEY_PHASES[now['phase']]}")
            if now["wrong codes"] != was["wrong codes"]:
                say("lock", f"{who}: wrong activation code, refused (WRONG_PIN)")
            if now["key holders"] != was["key holders"]:
                say("lock", f"{who}: associated; {now['key holders']} key holder(s)")
            if now["commands"] != was["commands"]:
                say("lock", f"{who}: command taken")
            if now["state"] != was["state"]:
                say("lock", f"{who}: {'motor turning' if now['state'] == 'moving' else now['state']}")
        await asyncio.sleep(0.05)


_HEARD = {"ack": "the bridge has it", "alarm_received": "plays \"alarm received\"",
          "help_on_the_way": "plays \"help is on the way\""}


async def watch_alarms(home: SimulatedHome, centre: AlarmCentre) -> None:
    """Narrate an alarm's path as the resident and the alarm centre see it: what the unit hears
    from the bridge, and every copy the centre receives (by path) and confirms."""
    unit = home.alarm_unit
    assert unit is not None
    heard: dict[int, int] = {}
    copies: dict[str, int] = {}
    handled: set[str] = set()
    presence = 0

    def narrate() -> None:
        nonlocal presence
        for _, hub, what in centre.hub_events[presence:]:
            say("centre", f"hub {hub} is {what}")
        presence = len(centre.hub_events)
        for event_id, said in list(unit.heard.items()):
            for word in said[heard.get(event_id, 0):]:
                say("unit", f"event {event_id}: {_HEARD.get(word, word)}")
            heard[event_id] = len(said)
        for alarm_id, record in list(centre.alarms.items()):
            total = sum(record.copies.values())
            if total > copies.get(alarm_id, 0):
                what = record.first.event if record.first else "alarm"
                path = "MQTT" if record.first_path == "mqtt" else "LTE, SIA DC-09"
                note = f"first copy, over {path}" if total == 1 else f"duplicate #{total - 1}, known by its id"
                say("centre", f"← {alarm_id}: {what} ({note})")
                copies[alarm_id] = total
            if record.handled_at is not None and alarm_id not in handled:
                handled.add(alarm_id)
                say("centre", f"→ {alarm_id} handled by {centre.operator}")

    # The centre's side as it happens (before hubd can log the confirmation it sends); the
    # unit's side by looking every 50 ms.
    centre.on_change(narrate)
    while True:
        narrate()
        await asyncio.sleep(0.05)
