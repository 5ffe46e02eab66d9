"""Benchmark: hostile input on every surface of a live home, while the nurse's door and the
resident's alarm keep working.

The real parts but the hardware: a private Mosquitto, hubd as its own process, the bridge firmware
in MicroPython with a simulated alarm unit and LTE modem, the reference alarm centre. Hostile
inputs, drawn from a seeded generator (``--seed``; printed, so a run replays):

    commands             signed tokens mutated byte by byte and field by field, forged
                         signatures naming real ids, hand-built JWS shapes, hostile JSON, raw bytes
    audit_requests       valid requests mutated, hostile JSON (deep nesting, huge numbers, NaN,
    alarm_confirmations  duplicate keys, lone surrogates, non-UTF-8), raw bytes
    status_requests
    serial_to_hubd       raw bytes, damaged and forged link frames (CRC-valid, tagged with a key
                         that is not the link's), frames recorded on the line played back
    serial_to_bridge     the same towards the bridge
    alarm_unit           raw bytes and forged frames on the alarm unit's UART
    modem                raw bytes, bogus URCs and answers from the LTE modem

Every few seconds a valid unlock or lock goes through (signed, answered, the lock moves once)
and the resident presses the pendant (the centre must get the alarm and the unit must say "help
is on the way"). At the end: a table per surface (inputs, rejected, dropped, accepted, crashed
handlers) and of the home (hubd restarts, bridge resets, moves no valid command asked for, valid
commands and alarms that succeeded, the database's growth). Exits 1 on any crash, reset, hostile
move or failed valid operation. Writes the figures as JSON.

    .venv/bin/python benchmarks/fuzz.py                      # 10,000 inputs per surface
    .venv/bin/python benchmarks/fuzz.py --inputs 500 --seed 7
    .venv/bin/python benchmarks/fuzz.py --minutes 10         # a 10-minute flood: database growth
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config  # noqa: E402
from hubapi import signing, topics  # noqa: E402
from hubapi.client import BackendClient  # noqa: E402
from hubapi.models import (Actor, AlarmHandled, AuditRequest, CommandClaims, HubStatus, Role,  # noqa: E402
                           StatusRequest)
from hubd.store.database import DB_NAME  # noqa: E402
from simulator.alarm_centre import AlarmCentre  # noqa: E402
from simulator.alarm_unit import AlarmUnit  # noqa: E402
from simulator.ports import free_port  # noqa: E402
from simulator.home import HomeThread, SimulatedHome, default_locks  # noqa: E402
from simulator.serial_line import TO_BRIDGE, TO_HUB  # noqa: E402
from tests.fixtures import BackendKey  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from tests.sia_receiver import ACCOUNT  # noqa: E402
from wire import alarms, cobs, frame, link  # noqa: E402
from wire.hmac_sha256 import Key  # noqa: E402
from wire.crc import crc16  # noqa: E402

MQTT_SURFACES = ("commands", "audit_requests", "alarm_confirmations", "status_requests")
BRIDGE_SURFACES = ("serial_to_hubd", "serial_to_bridge", "alarm_unit", "modem")
LOCK = "front-door"
#: A valid operation (a command, an alarm) every this many seconds, alternating.
VALID_EVERY_S = 3.0


# --- the hostile inputs ----------------------------------------------------------------------------

def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Hostile:
    """Seeded hostile inputs for each surface."""

    def __init__(self, rng: random.Random, key: BackendKey) -> None:
        self.rng = rng
        self.key = key
        self.link_key = Key(os.urandom(frame.KEY_SIZE))  # not the link's: the attacker has none

    def json_value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice([0, -1, 2 ** 63, -(10 ** 30), 10 ** 300, r.randrange(-10 ** 9, 10 ** 9)])
        if kind == 3:
            return r.uniform(-1e300, 1e300)
        if kind == 4:
            return "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(0, 40)))
        if kind == 5:
            return "x" * r.choice([0, 1, 64, 65, 129, 4000])
        if kind == 6:
            return [self.json_value(depth + 1) for _ in range(r.randrange(0, 4))]
        return {str(r.randrange(100)): self.json_value(depth + 1)
                for _ in range(r.randrange(0, 4))}

    def hostile_json(self, valid: dict[str, Any] | None = None) -> bytes:
        r = self.rng
        kind = r.randrange(10)
        if kind == 0 and valid:  # a valid message with one field replaced
            obj = dict(valid)
            obj[r.choice(sorted(obj))] = self.json_value()
            return json.dumps(obj).encode()
        if kind == 1 and valid:  # ... or one field removed, or one added
            obj = dict(valid)
            obj.pop(r.choice(sorted(obj)))
            obj[str(r.randrange(5))] = self.json_value()
            return json.dumps(obj).encode()
        if kind == 2:
            n = r.randrange(50, 3000)
            return (b"[" * n) if r.random() < 0.5 else (b'{"a":' * n + b"1" + b"}" * n)
        if kind == 3:
            return b'{"id": ' + r.choice([b"1e999999", b"NaN", b"-Infinity", b"9" * 4000]) + b"}"
        if kind == 4:
            return b'{"id": "a", "id": "b", "hub": "' + HUB_ID.encode() + b'", "hub": "x"}'
        if kind == 5:
            return b'{"id": "\\ud800", "reply_to": "\\udfff", "from_seq": 1, "to_seq": 1}'
        if kind == 6:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 400)))
        if kind == 7:
            return json.dumps(self.json_value()).encode()
        if kind == 8 and valid:  # truncated
            text = json.dumps(valid).encode()
            return text[: r.randrange(len(text))]
        return b"\xff\xfe" + json.dumps(valid or {}).encode()

    def command(self) -> bytes:
        r = self.rng
        claims = CommandClaims.new(hub=HUB_ID, lock=LOCK, action=r.choice(["unlock", "lock", "unlatch"]),
                                   actor=Actor(id="attacker", role=Role.STAFF), assignment="visit-x", ttl_s=30)
        token = self.key.sign(claims).encode()  # what a captured token looks like; never sent as is
        header, payload, signature = token.split(b".")
        kind = r.randrange(8)
        if kind == 0:
            i = r.randrange(len(token))
            return token[:i] + bytes([token[i] ^ (1 << r.randrange(8))]) + token[i + 1:]
        if kind == 1:
            return token[: r.randrange(len(token))]
        if kind == 2:  # a forgery: a real structure, a signature it cannot make
            return header + b"." + payload + b"." + _b64(os.urandom(64))
        if kind == 3:
            obj = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
            obj[r.choice(["alg", "kid", "typ", "crit", "jwk"])] = self.json_value()
            return _b64(json.dumps(obj).encode()) + b"." + payload + b"." + signature
        if kind == 4:
            obj = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
            obj[r.choice(sorted(obj))] = self.json_value()
            return header + b"." + _b64(json.dumps(obj).encode()) + b"." + signature
        if kind == 5:
            return b".".join(_b64(self.hostile_json()) for _ in range(r.choice([1, 2, 3, 3, 4])))
        if kind == 6:
            return token + b"." + _b64(os.urandom(r.randrange(1, 40)))
        return self.hostile_json()

    def audit_request(self) -> bytes:
        valid = AuditRequest(from_seq=1, to_seq=10, reply_to=topics.audit_replies(HUB_ID) + "/f").model_dump()
        return self.hostile_json(valid)

    def confirmation(self) -> bytes:
        valid = AlarmHandled(id="au5a000001-1", hub=HUB_ID, handled_at=time.time()).model_dump()
        return self.hostile_json(valid)

    def status_request(self) -> bytes:
        valid = StatusRequest(id="f", reply_to=topics.status_replies(HUB_ID) + "/f").model_dump()
        return self.hostile_json(valid)

    def link_bytes(self, recorded: Callable[[], bytes | None]) -> bytes:
        """Hostile bytes for the serial line; ``recorded()`` is a frame that crossed it earlier."""
        r = self.rng
        kind = r.randrange(6)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
        if kind == 1:  # a frame with a valid CRC and any type, seq, counter, tag and body
            raw = bytes([r.randrange(256), r.randrange(256)]) + os.urandom(r.randrange(12, 272))
            return b"\x00" + cobs.encode(raw + crc16(raw).to_bytes(2, "big")) + b"\x00"
        ctx = frame.context(r.choice((frame.ROLE_HUB, frame.ROLE_BRIDGE)), r.randrange(1, 2**32),
                            r.randrange(2**32))
        counter = r.randrange(1, 2**32)
        if kind == 2:  # a DATA frame whose payload is hostile JSON, tagged with a wrong key
            return b"\x00" + frame.encode(frame.T_DATA, r.randrange(256), self.hostile_json()[:200],
                                          counter, self.link_key, ctx) + b"\x00"
        if kind == 3:  # a HELLO from a stranger, a real HELLO's shape or any bytes
            body = os.urandom(r.randrange(0, 40)) if r.random() < 0.5 else frame.encode_hello(
                link.PROTOCOL_MAJOR, 0, r.randrange(1, 2**32), r.randrange(2**32), frame.MAX_PAYLOAD, 4,
                r.choice((frame.ROLE_HUB, frame.ROLE_BRIDGE)), r.randrange(2), "forged")
            return b"\x00" + frame.encode(frame.T_HELLO, 0, body, counter, self.link_key, ctx) + b"\x00"
        if kind == 4:  # a real frame, recorded on the line, played back (either way)
            block = recorded()
            if block is not None:
                return b"\x00" + block + b"\x00"
        return b"\x01" * r.randrange(300, 3000) + b"\x00"  # an overlong run

    def unit_bytes(self) -> bytes:
        r = self.rng
        kind = r.randrange(3)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 100)))
        if kind == 1:
            raw = bytes([r.choice([1, 2, 3, 0x81, 0x82, r.randrange(256)])]) + os.urandom(r.randrange(0, 24))
            return cobs.encode(raw + crc16(raw).to_bytes(2, "big")) + b"\x00"
        return b"\x05" * r.randrange(30, 500) + b"\x00"

    def modem_bytes(self) -> bytes:
        r = self.rng
        lines = [b"+QIURC: \"recv\",0\r\n", b"+QIURC: \"closed\",99\r\n", b"+CSQ: 999,999\r\n",
                 b"+CREG: 0," + str(r.randrange(-5, 99)).encode() + b"\r\n", b"ERROR\r\n", b"OK\r\n",
                 b"+QIRD: " + str(r.randrange(-5, 99999)).encode() + b"\r\n", b"SEND OK\r\n",
                 b"> ", b"+CME ERROR: " + os.urandom(8) + b"\r\n"]
        if r.random() < 0.4:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 200)))
        if r.random() < 0.1:
            return b"A" * r.randrange(500, 5000) + b"\r\n"
        return r.choice(lines)


# --- the run -----------------------------------------------------------------------------------------

def _db_bytes(state: Path) -> int:
    """The database file itself (its WAL is bounded by checkpoints, and reported apart)."""
    path = state / DB_NAME
    return path.stat().st_size if path.exists() else 0


def _wal_bytes(state: Path) -> int:
    path = state / (DB_NAME + "-wal")
    return path.stat().st_size if path.exists() else 0


async def _status(backend: BackendClient) -> HubStatus:
    request = StatusRequest(id=os.urandom(8).hex(), reply_to=topics.status_replies(HUB_ID) + "/bench")
    async with backend.watch(request.reply_to) as replies:
        await backend.publish(topics.status_request(HUB_ID), request.model_dump_json())
        async with asyncio.timeout(60):
            while True:
                status = HubStatus.model_validate_json((await replies.get()).payload)
                if status.request_id == request.id:
                    return status


class Valid:
    """The nurse's commands and the resident's alarms during the flood."""

    def __init__(self, key: BackendKey, backend: BackendClient, home: HomeThread, centre: AlarmCentre) -> None:
        self.key, self.backend, self.home, self.centre = key, backend, home, centre
        self.commands_ok = self.commands_failed = 0
        self.alarms_ok = self.alarms_failed = 0
        self.moves_asked = 0
        self.failures: list[str] = []
        self._action = "unlock"

    async def run(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            if turn % 2 == 0:
                await self._command()
            else:
                await self._alarm()
            turn += 1
            try:
                await asyncio.wait_for(stop.wait(), VALID_EVERY_S)
            except TimeoutError:
                pass

    async def _command(self) -> None:
        claims = CommandClaims.new(hub=HUB_ID, lock=LOCK, action=self._action,
                                   actor=Actor(id="nurse-0042", role=Role.STAFF), assignment="visit-0800",
                                   ttl_s=60)
        try:
            answers = await self.backend.command(claims, self.key.sign(claims), timeout=60)
            ok = [a.status for a in answers] == ["accepted", "succeeded"]
        except TimeoutError as exc:
            ok, answers = False, [str(exc)]
        self.moves_asked += 1
        if ok:
            self.commands_ok += 1
            self._action = "lock" if self._action == "unlock" else "unlock"
        else:
            self.commands_failed += 1
            self.failures.append(f"{self._action}: {answers}")

    async def _alarm(self) -> None:
        unit = self.home.home.alarm_unit
        assert unit is not None
        event_id = self.home.call(lambda: unit.press(alarms.BUTTON, "pendant"))
        alarm_id = unit.alarm_id(event_id)
        try:
            await self.centre.wait_for(lambda c: alarm_id in c.alarms, timeout=60)
            for _ in range(600):
                if "help_on_the_way" in self.home.call(lambda: list(unit.heard.get(event_id, []))):
                    break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError("the unit never heard help is on the way")
            self.alarms_ok += 1
        except TimeoutError as exc:
            self.alarms_failed += 1
            self.failures.append(f"alarm {alarm_id}: {exc}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    key = BackendKey("bench-fuzz", signing.generate_private_key())
    hostile = Hostile(rng, key)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    broker = Mosquitto(work / "broker")
    broker.start()
    dc09_port = free_port()
    home = HomeThread(SimulatedHome(work / "home", locks=default_locks(travel_time_s=0.3),
                                    alarm_unit=AlarmUnit(heartbeat_s=1.0),
                                    alarm_timings={"heartbeat_ms": 1000, "hub_down_ms": 5000,
                                                   "handled_deadline_ms": 20000},
                                    lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": dc09_port,
                                         "account": ACCOUNT, "receiver": "1", "retry_ms": 1000}))
    home.start()
    config = work / "hubd.toml"
    state = work / "hubd-state"
    write_hubd_config(config, broker, home.home.port, key, {LOCK: "inside_turner"}, state_dir=state,
                      link_key=home.home.link_key)
    log = work / "hubd.log"
    hubd = start_hubd(config, log)
    results: dict[str, Any] = {}
    try:
        wait_online(broker, HUB_ID, hubd, log)
        async with BackendClient(broker.host, broker.port, client_id="bench-backend") as backend, \
                BackendClient(broker.host, broker.port, client_id="bench-attacker") as attacker, \
                AlarmCentre(broker.host, broker.port, dc09_accounts={ACCOUNT: None}, dc09_port=dc09_port) as centre:
            db_before = _db_bytes(state)
            boots_before = home.call(lambda: home.home.bridge.boots)
            before = await _status(backend)
            valid = Valid(key, backend, home, centre)
            stop = asyncio.Event()
            valid_task = asyncio.create_task(valid.run(stop))
            sent = dict.fromkeys(MQTT_SURFACES + BRIDGE_SURFACES, 0)
            makers: dict[str, Callable[[], bytes]] = {
                "commands": hostile.command, "audit_requests": hostile.audit_request,
                "alarm_confirmations": hostile.confirmation, "status_requests": hostile.status_request}
            mqtt_topics = {"commands": topics.commands(HUB_ID), "audit_requests": topics.audit_request(HUB_ID),
                           "alarm_confirmations": topics.alarms_confirmed(HUB_ID),
                           "status_requests": topics.status_request(HUB_ID)}
            line = home.home.line
            injectors: dict[str, Callable[[bytes], None]] = {
                "serial_to_hubd": lambda d: line.inject(TO_HUB, d),
                "serial_to_bridge": lambda d: line.inject(TO_BRIDGE, d),
                "alarm_unit": lambda d: home.home.alarm_unit.inject(d),  # type: ignore[union-attr]
                "modem": lambda d: home.home.modem.inject(d)}  # type: ignore[union-attr]

            def recorded() -> bytes | None:
                crossings = line.transcript
                return crossings[hostile.rng.randrange(len(crossings))].block if crossings else None

            bridge_makers = {"serial_to_hubd": lambda: hostile.link_bytes(recorded),
                             "serial_to_bridge": lambda: hostile.link_bytes(recorded),
                             "alarm_unit": hostile.unit_bytes, "modem": hostile.modem_bytes}
            started = time.monotonic()
            deadline = started + args.minutes * 60 if args.minutes else None
            n = 0
            print(f"fuzzing a live home: seed {args.seed}, "
                  + (f"{args.minutes:g} minutes" if deadline else f"{args.inputs} inputs per surface"),
                  flush=True)
            chosen = set(args.surfaces)
            while (n < args.inputs) if deadline is None else (time.monotonic() < deadline):
                for surface in MQTT_SURFACES:
                    if surface in chosen:
                        await attacker.publish(mqtt_topics[surface], makers[surface]())
                        sent[surface] += 1
                if n % args.bridge_every == 0:  # the serial lines are slower than MQTT: paced
                    for surface in BRIDGE_SURFACES:
                        if surface not in chosen:
                            continue
                        data = bridge_makers[surface]()
                        home.call(lambda s=surface, d=data: injectors[s](d))
                        sent[surface] += 1
                    await asyncio.sleep(0.005)
                n += 1
                if n % 1000 == 0:
                    print(f"  {n} rounds, {time.monotonic() - started:.0f} s; valid so far: "
                          f"{valid.commands_ok} commands, {valid.alarms_ok} alarms", flush=True)
            stop.set()
            await valid_task
            await asyncio.sleep(2)  # let hubd take the last of them
            after = await _status(backend)
            boots = home.call(lambda: home.home.bridge.boots) - boots_before
            moves = home.call(lambda: home.home.locks[LOCK].motor_moves)
            hubd_restarted = hubd.poll() is not None
            results = _figures(args, sent, before, after, boots, moves, valid, hubd_restarted,
                               _db_bytes(state) - db_before, time.monotonic() - started, home)
            results["wal_bytes"] = _wal_bytes(state)
            # The whole logs beside the figures: a reset's traceback is read there, not guessed.
            logs = args.out.with_suffix("")
            logs.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{logs}.bridge.log").write_text("\n".join(home.call(lambda: list(home.home.bridge.log))) + "\n")
            Path(f"{logs}.hubd.log").write_text(log.read_text(errors="replace"))
            results["logs"] = [f"{logs}.bridge.log", f"{logs}.hubd.log"]
    finally:
        stop_hubd(hubd)
        home.stop()
        broker.stop()
    return results


def _figures(args: argparse.Namespace, sent: dict[str, int], before: HubStatus, after: HubStatus, boots: int,
             moves: int, valid: Valid, hubd_restarted: bool, db_growth: int, seconds: float,
             home: HomeThread) -> dict[str, Any]:
    surfaces: dict[str, dict[str, Any]] = {}
    names = {"commands": "commands", "audit_requests": "audit_requests",
             "alarm_confirmations": "alarm_confirmations", "status_requests": "status_requests"}
    for surface in MQTT_SURFACES:
        now, then = after.inputs.get(names[surface], {}), before.inputs.get(names[surface], {})
        def delta(reason: str) -> int:
            return now.get(reason, 0) - then.get(reason, 0)

        seen, crashed, dropped = delta("seen"), delta("crashed"), delta("dropped")
        refused = sum(delta(r) for r in now if r not in ("seen", "crashed", "dropped"))
        surfaces[surface] = {"inputs": sent[surface], "rejected": refused, "dropped": dropped,
                             "accepted": seen - refused - crashed - dropped, "crashed": crashed}
    link_now = after.bridge.link
    link_then = before.bridge.link
    link_rejects = sum(link_now.get(k, 0) - link_then.get(k, 0)
                       for k in ("crc_errors", "framing_errors", "auth_errors", "replays", "foreign_hellos",
                                 "out_of_order", "duplicates"))
    bridge_inputs = after.inputs.get("bridge", {})
    for surface in BRIDGE_SURFACES:
        surfaces[surface] = {"inputs": sent[surface], "rejected": None, "dropped": None, "accepted": None,
                             "crashed": None}
    surfaces["serial_to_hubd"].update(rejected=link_rejects, crashed=bridge_inputs.get("crashed", 0))
    moves_hostile = moves - valid.moves_asked  # each valid command may have moved it once
    return {
        "seed": args.seed, "seconds": round(seconds, 1), "surfaces": surfaces,
        "hubd_restarted": hubd_restarted, "task_restarts": after.task_restarts, "bridge_resets": boots,
        "lock_moves": moves, "hostile_moves": moves_hostile,
        "valid_commands": {"succeeded": valid.commands_ok, "failed": valid.commands_failed},
        "valid_alarms": {"succeeded": valid.alarms_ok, "failed": valid.alarms_failed},
        "failures": valid.failures[:20], "db_growth_bytes": db_growth,
        "bridge_log_errors": [ln for ln in home.call(lambda: list(home.home.bridge.log))
                              if " error " in ln or "Traceback" in ln][-10:],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node()},
    }


def _print(r: dict[str, Any]) -> None:
    print(f"\n{'surface':<20} {'inputs':>8} {'rejected':>9} {'dropped':>8} {'accepted':>9} {'crashed':>8}"
          "   (accepted: the valid traffic, and hostile input that was valid)")
    for name, s in r["surfaces"].items():
        cells = [s["inputs"]] + [("-" if s[k] is None else s[k]) for k in ("rejected", "dropped", "accepted", "crashed")]
        print(f"{name:<20} {cells[0]:>8} {cells[1]:>9} {cells[2]:>8} {cells[3]:>9} {cells[4]:>8}")
    print(f"\nin {r['seconds']} s (seed {r['seed']}): hubd restarted: {r['hubd_restarted']}, task restarts: "
          f"{r['task_restarts'] or 'none'}, bridge resets: {r['bridge_resets']}, lock moves: {r['lock_moves']} "
          f"(hostile: {r['hostile_moves']}), valid commands {r['valid_commands']}, valid alarms "
          f"{r['valid_alarms']}, database growth {r['db_growth_bytes'] / 1024:.0f} KB "
          f"(its WAL {r['wal_bytes'] / 1024:.0f} KB)")
    for failure in r["failures"]:
        print(f"  FAILED: {failure}")
    for line in r["bridge_log_errors"]:
        print(f"  bridge: {line}")
    print("logs: " + ", ".join(r["logs"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000, help="hostile inputs per MQTT surface (default 10000)")
    parser.add_argument("--bridge-every", type=int, default=1,
                        help="one input on each serial surface every this many MQTT rounds (default 1)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="flood for this long instead of a number of inputs (database growth)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a fresh seed)")
    parser.add_argument("--surfaces", nargs="+", choices=MQTT_SURFACES + BRIDGE_SURFACES,
                        default=list(MQTT_SURFACES + BRIDGE_SURFACES), metavar="SURFACE",
                        help=f"the surfaces to fuzz (default all: {', '.join(MQTT_SURFACES + BRIDGE_SURFACES)})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fuzz.json")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    results = asyncio.run(run(args))
    _print(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"figures: {args.out}")
    crashed = sum(s["crashed"] or 0 for s in results["surfaces"].values())
    bad = (crashed or results["hubd_restarted"] or results["task_restarts"] or results["bridge_resets"]
           or results["hostile_moves"] or results["valid_commands"]["failed"] or results["valid_alarms"]["failed"])
    if bad:
        print("FAILED: a crash, a reset, a hostile move or a valid operation that did not succeed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
