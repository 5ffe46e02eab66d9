"""A safety alarm base unit in software: the unit side of wire/alarmunit.py on a socket.

    unit = AlarmUnit()                      # serial 0x5A000001, heartbeat every 10 s
    home = SimulatedHome(alarm_unit=unit)   # wires it to the bridge's UART 2
    eid = unit.press()                      # the resident presses the pendant button
    unit.press(alarms.SMOKE, "smoke_detector")
    unit.heard[eid]                         # ["ack", "alarm_received", "help_on_the_way"]
    unit.heartbeats = False                 # the unit stops its heartbeats
    unit.damage_next("corrupt")             # the next event frame arrives with a flipped bit

Like a real unit it resends each event until the bridge acks it; its event ids keep increasing
for the life of the object, across bridge reboots.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

from wire import alarms, alarmunit

_NAMES = {alarmunit.T_ACK: "ack", alarmunit.T_ALARM_RECEIVED: "alarm_received",
          alarmunit.T_HELP_ON_THE_WAY: "help_on_the_way"}


class AlarmUnit:
    """The unit: scriptable presses and sensors, heartbeats, retransmission, a record of what
    it heard from the bridge."""

    def __init__(self, serial: int = 0x5A000001, heartbeat_s: float = 10.0,
                 retransmit_s: float = 1.0) -> None:
        self.serial = serial
        self.heartbeat_s = heartbeat_s
        self.retransmit_s = retransmit_s
        self.heartbeats = True  # False: no heartbeats (events still go out)
        self.next_event_id = 1
        self.unacked: dict[int, bytes] = {}  # event id -> its frame, until acked
        self.heard: dict[int, list[str]] = {}  # event id -> what the bridge said, in order
        self.sent_events: list[int] = []  # every event frame put on the line, resends included
        self.bad_frames = 0
        self._damage: deque[str] = deque()
        self._sock: socket.socket | None = None
        self._decoder = alarmunit.Decoder()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def unit_name(self) -> str:
        """The unit's name in alarm ids."""
        return alarmunit.unit_name(self.serial)

    def alarm_id(self, event_id: int) -> str:
        """The id the bridge and hubd give this unit's event."""
        return alarms.alarm_id(self.unit_name, event_id)

    def press(self, event: str = alarms.BUTTON, device: str = "pendant") -> int:
        """Raise an event (any of wire.alarms.EVENTS); return its event id."""
        eid = self.next_event_id
        self.next_event_id += 1
        self.unacked[eid] = alarmunit.event(self.serial, eid, int(time.time()), event, device)
        self.heard.setdefault(eid, [])
        self._send_event(eid)
        return eid

    def damage_next(self, kind: str = "corrupt", count: int = 1) -> None:
        """Damage the next `count` event frames the unit sends: "corrupt" flips a bit,
        "drop" loses the frame, "truncate" cuts it short."""
        if kind not in ("corrupt", "drop", "truncate"):
            raise ValueError(f"unknown damage {kind!r}")
        self._damage.extend([kind] * count)

    async def start(self, sock: socket.socket) -> None:
        """Speak on `sock` (the simulator's end of the bridge's UART)."""
        sock.setblocking(False)
        self._sock = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable)
        self._tasks = [asyncio.create_task(self._heartbeat_loop()),
                       asyncio.create_task(self._retransmit_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock = None

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(data)
        except BlockingIOError:
            pass  # the bridge is not reading (rebooting): a resend follows

    def _send_event(self, eid: int) -> None:
        if self._sock is None:
            return
        data = self.unacked[eid]
        self.sent_events.append(eid)
        damage = self._damage.popleft() if self._damage else None
        if damage == "drop":
            return
        if damage == "corrupt":
            b = bytearray(data)
            b[3] ^= 0x04 if b[3] != 0x04 else 0x01  # never turn a byte into the 0x00 delimiter
            data = bytes(b)
        elif damage == "truncate":
            data = data[:len(data) // 2] + b"\x00"
        self._write(data)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(4096)
        except BlockingIOError:
            return
        for fr in self._decoder.feed(data):
            name = _NAMES.get(fr[0])
            if name is None:
                continue
            eid = fr[1]
            self.heard.setdefault(eid, []).append(name)
            if fr[0] == alarmunit.T_ACK:
                self.unacked.pop(eid, None)  # an ack for an acked event changes nothing
        self.bad_frames = self._decoder.bad

    async def _heartbeat_loop(self) -> None:
        while True:
            if self.heartbeats:
                self._write(alarmunit.heartbeat(self.serial, int(time.time())))
            await asyncio.sleep(self.heartbeat_s)

    async def _retransmit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retransmit_s)
            for eid in sorted(self.unacked):
                self._send_event(eid)
