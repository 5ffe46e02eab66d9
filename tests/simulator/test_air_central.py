"""The CPython central on the simulated air (simulator/air_central.py): what a hub's own adapter
does there, against the real simulated radio (simulator/radio.py) and its simulated lock, and
against a hostile radio end.

- whatever the radio end sends, framed or not, never ends a task or reaches a caller but as a
  CentralError: malformed events are dropped and counted, a broken frame ends the session (a new
  one can be opened), and a good event after the bad ones still arrives; an MTU beyond what was
  offered drops the connection (at the radio too), a flood of results is cut;
- a connection nobody asked for is not kept (the peer is not held), keys for a peer nobody is
  pairing are not taken;
- a wedged radio: a GATT procedure times out and the connection is dropped, a connect gets no
  answer; a restarted adapter works again;
- a connect to an address nobody has fails at the radio's word;
- a lock's own idle drop is a loss the connection hears, and a radio that goes away loses them
  all;
- GATT procedures asked at once run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator import air_central as air
from simulator.locks import InsideTurnerLock
from simulator.radio import Radio
from simulator.shims import airwire
from tests.waiting import until
from wire import lockproto

ADDR = "C0:FF:EE:00:00:01"
ADDR_BYTES = bytes.fromhex(ADDR.replace(":", ""))
TIMEOUT = 30.0  # a hang guard


@pytest.fixture
async def radio() -> AsyncIterator[Radio]:
    path = os.path.join(tempfile.mkdtemp(prefix="air-"), "radio.sock")
    radio = Radio(path)
    await radio.start()
    yield radio
    await radio.stop()
    os.rmdir(os.path.dirname(path))


@pytest.fixture
def lock(radio: Radio) -> InsideTurnerLock:
    lock = InsideTurnerLock("front-door", ADDR, os.urandom(32))
    radio.add(lock)
    return lock


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """What reached the event loop's exception handler: a task that died of its input."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
    return errors


class HostileRadio:
    """The radio's end of the socket played by an attacker: it sends what the test says."""

    def __init__(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="air-"), "hostile.sock")
        self.writers: list[asyncio.StreamWriter] = []
        self.requests: asyncio.Queue[tuple[int, list[Any]]] = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                header = await reader.readexactly(2)
                kind, args = airwire.decode(await reader.readexactly(airwire.body_length(header)))
                self.requests.put_nowait((kind, args))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, event: int, *args: Any) -> None:
        self.writers[-1].write(airwire.encode(event, args))

    def send_raw(self, raw: bytes) -> None:
        self.writers[-1].write(raw)

    async def request(self, kind: int) -> list[Any]:
        while True:
            got, args = await self.requests.get()
            if got == kind:
                return args

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        os.unlink(self.path)
        os.rmdir(os.path.dirname(self.path))


@pytest.fixture
async def hostile() -> AsyncIterator[HostileRadio]:
    radio = HostileRadio()
    await radio.start()
    yield radio
    await radio.stop()


async def test_malformed_radio_events_are_dropped_and_counted_and_the_central_goes_on(
        hostile: HostileRadio, loop_errors: list[dict[str, Any]]) -> None:
    central = air.AirCentral(hostile.path)
    heard: list[air.ScanResult] = []
    central.on_advert(heard.append)
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        await hostile.request(airwire.HELLO)
        hostile.send(99, 1, 2)  # no such event
        hostile.send(air.SCAN_RESULT, 0, ADDR_BYTES)  # too few arguments
        hostile.send(air.SCAN_RESULT, 0, 5, 0, -60, b"")  # an int where the address goes
        hostile.send(air.SCAN_RESULT, 0, b"\x01\x02", 0, -60, b"")  # a 2-byte address
        hostile.send(air.SCAN_RESULT, 0, ADDR_BYTES, 0, 99, b"")  # an RSSI no radio measures
        hostile.send(air.SCAN_RESULT, 7, ADDR_BYTES, 0, -60, b"")  # no such address type
        hostile.send(air.SCAN_RESULT, 0, ADDR_BYTES, 0, -60, bytes(200))  # longer than an advert
        hostile.send(air.NOTIFY, 5, 3, b"forged")  # for no connection
        hostile.send(air.READ_DONE, 5, 3, 0)  # for no connection
        hostile.send(air.DISCONNECTED, 5, 0, ADDR_BYTES)  # for no connection
        hostile.send(air.SET_SECRET, 2, b"\x00" + ADDR_BYTES[::-1], bytes(78))  # nobody pairs
        hostile.send(air.CONNECTED, 9, 0, ADDR_BYTES)  # nobody asked
        dropped_conn = await hostile.request(airwire.DISCONNECT)
        hostile.send(air.SCAN_RESULT, 1, ADDR_BYTES, 0, -61, b"\x02\x01\x06")  # a good one
        await until(lambda: heard, "the good advert after the bad ones", TIMEOUT)
    assert heard == [air.ScanResult(ADDR_BYTES, 1, 0, -61, b"\x02\x01\x06")]
    assert dropped_conn == [9], "a connection nobody asked for is dropped, not kept"
    assert central.dropped == {"bad_event": 3, "bad_advert": 4, "notify_for_no_conn": 1,
                               "event_for_no_conn": 1, "disconnect_for_no_conn": 1,
                               "unexpected_connection": 1, "secret_unasked": 1}
    assert central.is_up and central.addr_types == {ADDR_BYTES: 1} and central.bonds == {}
    assert loop_errors == []
    await central.close()


@pytest.mark.parametrize("frame", [
    struct.pack(">H", 0),  # a zero length
    struct.pack(">H", airwire.MAX_BODY + 1) + bytes(10),  # longer than any frame
    struct.pack(">H", 4) + bytes((air.NOTIFY,)) + b"x\x00\x01",  # an unknown item type
    struct.pack(">H", 4) + bytes((air.NOTIFY,)) + b"b\xff\xff",  # bytes running past the frame
], ids=["zero_length", "too_long", "unknown_item", "truncated_bytes"])
async def test_a_broken_frame_ends_the_session_cleanly_and_a_new_one_can_start(
        hostile: HostileRadio, loop_errors: list[dict[str, Any]], frame: bytes) -> None:
    central = air.AirCentral(hostile.path, gatt_timeout_s=TIMEOUT)
    lost: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        connecting = asyncio.create_task(central.connect(ADDR_BYTES, 0, timeout_s=TIMEOUT))
        await hostile.request(airwire.CONNECT)
        hostile.send(air.CONNECTED, 1, 0, ADDR_BYTES)
        await hostile.request(airwire.EXCHANGE_MTU)
        hostile.send(air.MTU_EXCHANGED, 1, 185)
        conn = await connecting
        conn.on_lost = lost.append
        reading = asyncio.create_task(conn.read(3))
        await hostile.request(airwire.READ)
        hostile.send_raw(frame)
        with pytest.raises(air.Disconnected) as failed:
            await reading
        await until(lambda: not central.is_up, "the session to end", TIMEOUT)
        assert failed.value.reason == "radio_lost" and lost == ["radio_lost"]
        assert not conn.connected and central.dropped["bad_frame"] == 1
        await central.start()  # a new session, as a reset controller
        await hostile.request(airwire.HELLO)
        assert central.is_up
    assert loop_errors == []
    await central.close()


async def test_a_bad_mtu_a_reply_of_another_procedure_and_a_flood_are_dropped_and_counted(
        hostile: HostileRadio) -> None:
    central = air.AirCentral(hostile.path, gatt_timeout_s=TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        connecting = asyncio.create_task(central.connect(ADDR_BYTES, 0, timeout_s=TIMEOUT))
        await hostile.request(airwire.CONNECT)
        hostile.send(air.CONNECTED, 1, 0, ADDR_BYTES)
        await hostile.request(airwire.EXCHANGE_MTU)
        hostile.send(air.MTU_EXCHANGED, 1, 9999)  # more than was offered
        with pytest.raises(air.Disconnected, match="MTU 9999"):
            await connecting
        assert await hostile.request(airwire.DISCONNECT) == [1], "not left holding the peer"
        connecting = asyncio.create_task(central.connect(ADDR_BYTES, 0, timeout_s=TIMEOUT))
        await hostile.request(airwire.CONNECT)
        hostile.send(air.CONNECTED, 2, 0, ADDR_BYTES)
        await hostile.request(airwire.EXCHANGE_MTU)
        hostile.send(air.MTU_EXCHANGED, 2, 185)
        conn = await connecting
        reading = asyncio.create_task(conn.read(3))
        await hostile.request(airwire.READ)
        hostile.send(air.WRITE_DONE, 2, 3, 0)  # not what a read waits for
        hostile.send(air.READ_RESULT, 2, 3, b"val")
        hostile.send(air.READ_DONE, 2, 3, 0)
        assert await reading == b"val"
        flooded = asyncio.create_task(conn.read(3))
        await hostile.request(airwire.READ)
        for _ in range(600):
            hostile.send(air.READ_RESULT, 2, 3, b"x")
        hostile.send(air.READ_DONE, 2, 3, 0)
        assert await flooded == b"x" * 512, "a flood is cut, memory stays bounded"
    assert central.dropped["event_for_no_procedure"] == 1 and conn.mtu == 185
    assert central.dropped["too_many_results"] == 600 - 512
    await central.close()


async def test_a_wedged_radio_times_a_procedure_out_drops_the_connection_and_a_reset_recovers(
        radio: Radio, lock: InsideTurnerLock) -> None:
    central = air.AirCentral(radio.socket_path, gatt_timeout_s=0.5)
    lost: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=5)
        conn.on_lost = lost.append
        db = await conn.discover()
        control = next(c for c in db.characteristics
                       if c.uuid == lockproto.uuid128_le(lockproto.CONTROL_UUID))
        radio.wedge()
        with pytest.raises(air.ProcedureTimeout):
            await conn.write(control.value_handle, lockproto.encode_challenge_request(), True)
        assert lost == ["timeout"] and not conn.connected
        with pytest.raises(air.Disconnected):
            await conn.read(control.value_handle)  # nothing more on a dropped connection
        with pytest.raises(air.ConnectFailed, match="no answer from the radio"):
            await central.connect(ADDR_BYTES, 0, timeout_s=0.5)
        await central.restart()
        again = await central.connect(ADDR_BYTES, 0, timeout_s=5)
        assert again.connected and again.mtu == lock.att_mtu
        await again.disconnect()
    await central.close()


async def test_a_connect_to_an_address_nobody_has_fails_at_the_radios_word(radio: Radio) -> None:
    central = air.AirCentral(radio.socket_path)
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        with pytest.raises(air.ConnectFailed, match="C0:FF:EE:00:00:99: no connection"):
            await central.connect(bytes.fromhex("C0FFEE000099"), 0, timeout_s=0.3)
    await central.close()


async def test_the_locks_idle_drop_is_a_loss_and_the_radio_going_away_loses_every_connection(
        radio: Radio, lock: InsideTurnerLock) -> None:
    central = air.AirCentral(radio.socket_path)
    lost: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        lock.idle_timeout_s = 0.2
        idle = await central.connect(ADDR_BYTES, 0, timeout_s=5)
        idle.on_lost = lost.append
        await until(lambda: lost, "the lock to drop the idle connection", TIMEOUT)
        assert lost == ["peer"] and not idle.connected
        lock.idle_timeout_s = None
        kept = await central.connect(ADDR_BYTES, 0, timeout_s=5)
        kept.on_lost = lost.append
        await radio.stop()
        await until(lambda: not central.is_up, "the central to see the radio gone", TIMEOUT)
    assert lost == ["peer", "radio_lost"] and not kept.connected
    with pytest.raises(air.RadioDown, match="no simulated radio"):
        await central.start()
    await radio.start()  # for the fixture's stop


async def test_procedures_asked_at_once_run_one_at_a_time_in_order(
        radio: Radio, lock: InsideTurnerLock) -> None:
    central = air.AirCentral(radio.socket_path)
    async with asyncio.timeout(TIMEOUT):
        await central.start()
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=5)
        db = await conn.discover()
        event = next(c for c in db.characteristics
                     if c.uuid == lockproto.uuid128_le(lockproto.EVENT_UUID))
        cccd = next(d for d in db.descriptors if d.characteristic == event)
        lock.response_delay_s = 0.05  # each answer comes later than the next request
        results = await asyncio.gather(conn.write(cccd.handle, b"\x01\x00", True),
                                       conn.read(cccd.handle),
                                       conn.write(cccd.handle, b"\x00\x00", True),
                                       conn.read(cccd.handle))
        await conn.disconnect()
    assert results == [None, b"\x01\x00", None, b"\x00\x00"]
    assert central.dropped == {}
    await central.close()
