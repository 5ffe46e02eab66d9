"""Hostile writes to the simulated dKey (simulator/dkey.py): every byte from a central is radio
input from anyone nearby. Seeded, so a failure repeats.

- frames of any size and content, on either characteristic, from a bonded central with no
  session: each is refused (an ATT error, an error acknowledgement, or the lock ends the link),
  no exception escapes the lock (``faults``), nothing moves, and afterwards the unmodified
  library still associates and unlocks;
- well-encrypted commands of any id and length from an authenticated key holder (sent with the
  library's own ``send_cmd``, so every frame passes its CRC): the same, and the motor moves only
  for an UNLOCK or a CHANGE_MODE that is well formed;
- mid-association, an ECDH point off the curve ends the link, no association kept.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from bleak import BleakClient
from bleak.exc import BleakError
from py_dormakaba_dkey.commands import UnknownCommand, UnlockStatus

from simulator import ble_timing
from simulator.bleak_backend import SimClient
from simulator.dkey import (FROM_LOCK_UUID, TO_LOCK_UUID, DKeyLock, SessionCrypto, code_answer,
                            session_iv)
from simulator.radio import Radio
from tests.simulator.test_dkey import CODE, associated, dkey, sim_backend  # noqa: F401
from tests.waiting import until

TIMEOUT = 120.0  # a hang guard
SEED = int(os.environ.get("DKEY_FUZZ_SEED", "1402"))


@pytest.fixture(autouse=True)
def fast_air(air: Radio) -> None:
    """The fast air whatever SIM_BLE_TIMING says (set before any central is on it: the radio
    reads its timing as it runs). The point here is what the lock makes of hostile bytes, not
    the air's time, and the fuzz ends the link and connects again dozens of times: on the
    realistic air each costs a wait for the next advert (every 1.0 s) and the set-up, past
    the hang guard (docs/ble-timing.md, "The suite")."""
    air.timing = ble_timing.fast()


def hostile_frame(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # anything
        return rng.randbytes(rng.randrange(0, 21))
    if kind == 1:  # a well-framed message of any id
        payload = rng.randbytes(rng.randrange(0, 19))
        return bytes((rng.randrange(256), len(payload))) + payload
    if kind == 2:  # a segment, then whatever
        return bytes((0x80 | rng.randrange(128),)) + rng.randbytes(rng.randrange(0, 20))
    # a frame the size of an encrypted one
    return rng.randbytes(20)


@pytest.mark.long
async def test_hostile_frames_outside_a_session_are_refused(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:  # noqa: F811
    rng = random.Random(SEED)
    address = ":".join(f"{b:02X}" for b in dkey.address)
    refused = dropped = 0
    async with asyncio.timeout(TIMEOUT):
        client = None
        for _ in range(200):
            if client is None or not client.is_connected:
                if client is not None:
                    dropped += 1
                await until(lambda: not dkey.links, "the lock to be free")
                client = BleakClient(address, backend=SimClient, radio_socket=air.socket_path)
                await client.connect()
                await client.pair()
                for uuid in (TO_LOCK_UUID, FROM_LOCK_UUID):
                    await client.start_notify(uuid, lambda _c, _d: None)
            uuid = rng.choice((TO_LOCK_UUID, FROM_LOCK_UUID))
            try:
                await client.write_gatt_char(uuid, hostile_frame(rng), response=True)
            except BleakError:
                refused += 1
            await asyncio.sleep(0)
        await client.disconnect()
        assert dkey.faults == [], f"seed {SEED}"
        assert dkey.refusals["link ended"] + dkey.refusals["frame size"] >= 100, dkey.refusals
        assert refused + dropped > 0 and dkey.motor_moves == 0 and dkey.locked
        assert dkey.associations == {}
        lock, _ = await associated(air, dkey)
        assert await lock.unlock()
        await until(lambda: lock.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
        await lock.disconnect()
    assert dkey.motor_moves == 1 and dkey.faults == []


async def test_hostile_commands_inside_a_session_are_refused(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:  # noqa: F811
    rng = random.Random(SEED + 1)
    moves_allowed = 0
    async with asyncio.timeout(TIMEOUT):
        lock, _ = await associated(air, dkey)
        for _ in range(200):
            await until(lambda: not dkey.moving, "the motor to stop")
            if not (dkey.sessions and next(iter(dkey.sessions.values())).phase == "ready"
                    and next(iter(dkey.sessions.values())).authenticated):
                await lock.disconnect()
                await until(lambda: not dkey.links, "the lock to be free")
                await lock.update()  # a new session: connect, authenticate, notifications
            cmd = rng.randrange(0x50)
            size = rng.choice((0, 1, 2, 7, rng.randrange(0, 40)))
            payload = rng.randbytes(size)
            if cmd in (0x03, 0x27) and size in (1, 7):
                moves_allowed += 1
            send = asyncio.create_task(lock.send_cmd(UnknownCommand(
                bytes((cmd, size & 0xFF)) + payload)))
            await asyncio.wait({send}, timeout=2.0)
            if not send.done():
                send.cancel()
            await asyncio.gather(send, return_exceptions=True)
        await until(lambda: not dkey.moving, "the motor to stop")
        assert dkey.faults == [], f"seed {SEED + 1}"
        assert sum(dkey.refusals.values()) >= 100, dkey.refusals  # the commands reached it
        assert dkey.motor_moves <= moves_allowed
        await lock.disconnect()
        await until(lambda: not dkey.links, "the lock to be free")
        target = not dkey.locked
        assert await (lock.lock() if target else lock.unlock())
        await until(lambda: dkey.locked == target, "the last move")
        await lock.disconnect()
    assert dkey.faults == []


async def test_a_point_off_the_curve_ends_the_association(
        air: Radio, dkey: DKeyLock) -> None:  # noqa: F811
    """A central that knows the activation code (the code challenge done by hand, with the
    stream rules of docs/dkey.md) sends an ECDH point that is not on P-256: the lock ends the
    link and keeps no association."""
    address = ":".join(f"{b:02X}" for b in dkey.address)
    heard: asyncio.Queue[bytes] = asyncio.Queue()
    async with asyncio.timeout(TIMEOUT):
        client = BleakClient(address, backend=SimClient, radio_socket=air.socket_path)
        await client.connect()
        await client.pair()
        for uuid in (TO_LOCK_UUID, FROM_LOCK_UUID):
            await client.start_notify(uuid, lambda _c, data: heard.put_nowait(bytes(data)))
        tail = os.urandom(4)
        await client.write_gatt_char(TO_LOCK_UUID, bytes((0x00, 4)) + tail, response=True)
        assert (await heard.get())[:2] == bytes((0x50, 18))
        assert (await heard.get())[:2] == bytes((0x00, 4))
        identity = bytes((0, 27, 1, 2, 6)) + b"\xff\xff\xff\xfe" + bytes(9)
        await client.write_gatt_char(FROM_LOCK_UUID, bytes((0x50, 18)) + identity, response=True)
        await client.write_gatt_char(TO_LOCK_UUID, bytes((0x34, 5, 1)) + b"\xff\xff\xff\xfe",
                                     response=True)
        challenge = await heard.get()
        assert challenge[:2] == bytes((0x23, 16))
        await client.write_gatt_char(FROM_LOCK_UUID, bytes((0x51, 2, 0, 0x23)), response=True)
        iv = session_iv(challenge[2:18], tail)
        await client.write_gatt_char(TO_LOCK_UUID, bytes((0x24, 16)) + code_answer(CODE, iv),
                                     response=True)
        assert await heard.get() == bytes((0x51, 2, 0, 0x24)), "the code accepted, in the clear"
        session = SessionCrypto.for_code(CODE, iv)  # the central's ends of the two streams

        async def receive() -> bytes:
            plain = session.to_central.open(await heard.get())
            assert plain is not None, "a frame from the lock failed its check"
            return plain

        async def send(uuid: str, plain: bytes) -> None:
            await client.write_gatt_char(uuid, session.from_central.seal(plain), response=True)

        assert (await receive())[:16] == bytes((0x25, 14)) + b"handshakecheck"
        await send(FROM_LOCK_UUID, bytes((0x51, 2, 0, 0x25)))
        point = b""
        while True:
            frame = await receive()
            if frame[0] == 0x97:  # a segment of ECDH_PUBLIC
                point += frame[1:16]
                await send(FROM_LOCK_UUID, bytes((0x51, 2, 0, 0x17)))
                continue
            assert frame[:2] == bytes((0x17, 4))
            point += frame[2:6]
            break
        assert len(point) == 64
        await send(FROM_LOCK_UUID, bytes((0x51, 2, 0, 0x17)))
        off_curve = bytes(63) + b"\x01"  # (0, 1) is not on P-256
        for i in range(4):
            await send(TO_LOCK_UUID, bytes((0x98,)) + off_curve[i * 15:(i + 1) * 15])
            assert (await receive())[:4] == bytes((0x51, 2, 0, 0x18)), "each segment ACKed"
        await send(TO_LOCK_UUID, bytes((0x18, 4)) + off_curve[60:])
        await until(lambda: not client.is_connected and not dkey.links, "the link to end")
    assert dkey.associations == {} and dkey.refusals["link ended"] == 1
    assert dkey.faults == []
