"""Pairing and unpairing a lock: the real firmware (locks.pairing, locks.reference, ble_central)
in MicroPython against simulated locks over the simulated radio.

Each test starts the radio and a simulated lock in CPython, then runs
tests/firmware/lock_pairing_scenario.py in the `micropython` interpreter with the `bluetooth` shim.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from simulator.bridge_device import ROOT
from simulator.locks import InsideTurnerLock, KeyBoxLock
from simulator.radio import Radio
from tests.micropython import HEAP, micropython_binary, micropython_env
from tests.wire.test_lockproto import AirCentral
from wire import lockpair
from wire import lockproto as lp

SCENARIO = ROOT / "tests" / "firmware" / "lock_pairing_scenario.py"
OLD = bytes(range(32))
NEW = bytes(range(64, 96))
SETUP = bytes(range(32, 64))
ADDR = "AA:BB:CC:DD:EE:01"


class RecordingLock(InsideTurnerLock):
    """An inside turner that keeps every PAIR written to it (what a radio eavesdropper records)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pairs: list[bytes] = []

    def on_write(self, link, characteristic, data: bytes) -> int:
        if characteristic is self.control and data[:1] == bytes([lockpair.OP_PAIR]):
            self.pairs.append(bytes(data))
        return super().on_write(link, characteristic, data)


class ForgingLock(InsideTurnerLock):
    """A lock (or an impostor at its address) that claims "ok" to PAIR and UNPAIR, MACed with a
    key of its own, and changes nothing."""

    def _on_pair(self, link, data: bytes) -> None:
        self._claim_ok(link, lockpair.PAIR_TAG)

    def _on_unpair(self, link, data: bytes) -> None:
        self._claim_ok(link, lockpair.UNPAIR_TAG)

    def _claim_ok(self, link, tag: bytes) -> None:
        kept, self.secret = self.secret, bytes(32)
        try:
            self._answer(link, tag, lp.STATUS_OK, "forged")
        finally:
            self.secret = kept


@pytest.fixture
async def radio(tmp_path):
    r = Radio(str(tmp_path / "radio.sock"))
    await r.start()
    yield r
    await r.stop()


def make_lock(radio: Radio, cls=RecordingLock, secret: bytes | None = OLD, **kwargs):
    lock = cls("front-door", ADDR, secret, setup_key=SETUP, travel_time_s=0.1, **kwargs)
    radio.add(lock)
    return lock


async def run_firmware(radio: Radio, lock, steps, **opts) -> list[dict]:
    spec = Path(radio.socket_path).with_name("spec.json")
    spec.write_text(json.dumps(
        {"addr": lock.address.hex(), "kind": lock.kind, "steps": steps, **opts}))
    proc = await asyncio.create_subprocess_exec(
        micropython_binary(), "-X", f"heapsize={HEAP}", str(SCENARIO), str(spec),
        env=micropython_env(SIM_RADIO=radio.socket_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode() + out.decode()
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert len(results) == len(steps), out.decode()
    return results


def pair(secret: bytes, setup: bytes = SETUP) -> list:
    return ["pair", secret.hex(), setup.hex()]


def unpair(secret: bytes) -> list:
    return ["unpair", secret.hex()]


def op(secret: bytes, action: str, command_id: str) -> list:
    return ["op", secret.hex(), action, command_id]


async def test_pairing_gives_the_lock_the_new_secret_and_only_it_works_afterwards(radio):
    lock = make_lock(radio)
    lock.press_pairing_button()
    paired, with_new, with_old = await run_firmware(
        radio, lock, [pair(NEW), op(NEW, "unlock", "cmd-1"), op(OLD, "lock", "cmd-2")])
    assert paired == {"result": "ok", "state": "locked", "battery": 100,
                      "connected": False, "busy": False, "codec_kept": False}
    assert lock.secret == NEW and lock.paired and not lock.pairing
    # The driver that paired is the one that operates next: still usable.
    assert (with_new["outcome"], with_new["state"]) == ("succeeded", "unlocked")
    assert (with_old["outcome"], with_old["reason"]) == ("failed", "auth_failed")
    assert lock.state == "unlocked" and lock.motor_moves == 1


async def test_a_lock_not_in_pairing_mode_keeps_its_secret(radio):
    lock = make_lock(radio)
    paired, with_old = await run_firmware(radio, lock, [pair(NEW), op(OLD, "unlock", "cmd-1")])
    assert paired["result"] == "not_pairing"
    assert (paired["state"], paired["battery"]) == (None, None)
    assert lock.secret == OLD
    assert with_old["outcome"] == "succeeded"


async def test_a_wrong_setup_key_is_refused_and_the_secret_unchanged(radio):
    lock = make_lock(radio)
    lock.press_pairing_button()
    (paired,) = await run_firmware(radio, lock, [pair(NEW, setup=bytes(32))])
    assert paired["result"] == "auth_failed"
    assert lock.secret == OLD and lock.pairing


async def test_a_recorded_pair_replayed_on_a_later_challenge_is_refused(radio):
    lock = make_lock(radio)
    stolen = bytes(range(100, 132))
    lock.press_pairing_button()
    (first,) = await run_firmware(radio, lock, [pair(stolen)])
    assert first["result"] == "ok" and len(lock.pairs) == 1
    lock.press_pairing_button()  # the owner pairs again, with another secret
    (second,) = await run_firmware(radio, lock, [pair(NEW)])
    assert second["result"] == "ok" and lock.secret == NEW
    # An eavesdropper replays the first PAIR while the lock is in pairing mode once more.
    lock.press_pairing_button()
    central = await AirCentral.open(radio.socket_path)
    try:
        conn = await central.connect(lock)
        await central.request(lock, conn, lp.encode_challenge_request())
        answer = await central.request(lock, conn, lock.pairs[0])
    finally:
        central.close()
    assert lp.status_name(lp.decode_result(answer)[0]) == "auth_failed"
    assert lock.secret == NEW


async def test_unpairing_makes_the_lock_refuse_commands_but_it_still_turns_by_hand(radio):
    lock = make_lock(radio)
    unpaired, after = await run_firmware(radio, lock, [unpair(OLD), op(OLD, "unlock", "cmd-1")])
    assert unpaired == {"result": "ok", "connected": False, "busy": False, "codec_kept": False}
    assert not lock.paired and lock.secret is None
    assert (after["outcome"], after["reason"]) == ("failed", "auth_failed")
    assert lock.motor_moves == 0 and lock.state == "locked"
    lock.turn_manually("unlocked")
    assert lock.state == "unlocked"


async def test_an_unpaired_lock_can_be_paired_again(radio):
    lock = make_lock(radio, cls=KeyBoxLock, secret=None)
    lock.press_pairing_button()
    paired, opened = await run_firmware(radio, lock, [pair(NEW), op(NEW, "unlock", "cmd-1")])
    assert paired["result"] == "ok" and lock.secret == NEW
    assert opened["outcome"] == "succeeded" and lock.state == "unlocked"
    lock.open_lid()
    assert lock.lid_open


async def test_unpairing_with_a_wrong_secret_is_refused_and_the_lock_keeps_its_secret(radio):
    lock = make_lock(radio)
    (unpaired,) = await run_firmware(radio, lock, [unpair(bytes(32))])
    assert unpaired["result"] == "auth_failed"
    assert lock.secret == OLD


async def test_an_unreachable_lock_is_reported_unreachable(radio):
    lock = make_lock(radio)
    lock.press_pairing_button()
    lock.in_range = False
    paired, unpaired = await run_firmware(
        radio, lock, [pair(NEW), unpair(OLD)], connect_timeout_ms=300, deadline_ms=1000)
    assert paired == {"result": "unreachable", "state": None, "battery": None,
                      "connected": False, "busy": False, "codec_kept": False}
    assert unpaired["result"] == "unreachable"
    assert lock.secret == OLD and lock.connections == 0


async def test_a_setup_key_of_the_wrong_length_fails_without_touching_the_lock(radio):
    lock = make_lock(radio)
    lock.press_pairing_button()
    (paired,) = await run_firmware(radio, lock, [pair(NEW, setup=bytes(31))])
    assert paired["result"] == "failed"
    assert lock.secret == OLD and lock.connections == 0


async def test_an_ok_that_does_not_verify_is_bad_lock_mac_not_success(radio):
    lock = make_lock(radio, cls=ForgingLock)
    lock.press_pairing_button()
    paired, unpaired = await run_firmware(radio, lock, [pair(NEW), unpair(OLD)])
    assert paired == {"result": "bad_lock_mac", "state": None, "battery": None,
                      "connected": False, "busy": False, "codec_kept": False}
    assert unpaired["result"] == "bad_lock_mac"
    assert lock.commands == [("forged", "ok"), ("forged", "ok")]
