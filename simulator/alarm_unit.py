"""A safety alarm base unit in software: the unit side of wire/alarmunit.py on a socket.

    unit = AlarmUnit()                      # serial 0x5A000001, heartbeat every 10 s
    home = SimulatedHome(alarm_unit=unit)   # wires it to the bridge's UART 2
    eid = unit.press()                      # the resident presses the pendant button
    unit.press(alarms.SMOKE, "smoke_detector")
    unit.heard[eid]                         # ["ack", "alarm_received", "help_on_the_way"]
    unit.heartbeats = False                 # the unit stops its heartbeats
    unit.damage_next("corrupt")             # the next event frame arrives with a flipped bit

    unit = AlarmUnit(time_scale=48 * 3600 / 12)   # 48 h of battery life pass in 12 s
    unit.mains = False                      # mains lost: a mains_lost event, the pack drains
    unit.backup_mv, unit.backup_charge      # the backup pack now (mV, percent charge)
    unit.mains = True                       # mains back: mains_restored, the pack recharges
    unit.pendant_mv = 2600                  # the pendant's CR2032 (mV); drain_pendant(100)
    unit.pendant_rssi = -88                 # how the unit hears the pendant (dBm)

Like a real unit it resends each event until the bridge acks it; its event ids keep increasing
for the life of the object, across bridge reboots. It plays each voice prompt once (``heard``
records it once, in order) and answers every copy with HEARD, so the bridge stops resending it;
``prompt_copies`` counts the copies, ``deaf_to_prompts`` makes it lose the next prompts as a
damaged line would. Every heartbeat carries its status: mains,
the backup pack's and the pendant's voltage, the pendant's RSSI, its firmware version.

The backup pack (4 NiMH cells, 4.8 V nominal) loses its charge linearly while the mains is off,
from full to empty in ``backup_hours``, and recharges on mains in ``recharge_hours``, both in
simulated time: ``time_scale`` simulated seconds pass per real second. Its voltage follows
NIMH_CURVE (charge -> mV: a steep start, a long plateau, a knee at the end), from
BACKUP_FULL_MV down to BACKUP_EMPTY_MV. An empty pack without mains is a dead unit: no heartbeats
and no events until the mains returns. The pendant loses ``pendant_mv_per_hour`` (simulated) on
its own, 0 unless set.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

from wire import alarms, alarmunit, unitside

_NAMES = {alarmunit.T_ACK: "ack", alarmunit.T_ALARM_RECEIVED: "alarm_received",
          alarmunit.T_HELP_ON_THE_WAY: "help_on_the_way"}


# The simulated pack's discharge curve: (charge in percent, pack voltage in mV), 4 cells at 1.10 V
# (the unit shuts down) to 1.38 V (resting after a full charge).
NIMH_CURVE = ((0, 4400), (5, 4580), (10, 4660), (20, 4760), (40, 4860), (60, 4930), (80, 5040),
              (95, 5280), (100, 5520))
BACKUP_FULL_MV = NIMH_CURVE[-1][1]
BACKUP_EMPTY_MV = NIMH_CURVE[0][1]
PENDANT_FRESH_MV = 3000  # a new CR2032


def _pack_mv(charge: float) -> float:
    for (c0, v0), (c1, v1) in zip(NIMH_CURVE, NIMH_CURVE[1:]):
        if charge <= c1:
            return v0 + (v1 - v0) * (max(charge, c0) - c0) / (c1 - c0)
    return float(BACKUP_FULL_MV)


class AlarmUnit:
    """The unit: scriptable presses and sensors, heartbeats with its status, retransmission, a
    record of what it heard from the bridge; its power (mains, backup pack) and its pendant's
    battery and signal."""

    def __init__(self, serial: int = 0x5A000001, heartbeat_s: float = 10.0,
                 retransmit_s: float = 1.0, *, time_scale: float = 1.0,
                 backup_hours: float = 48.0, recharge_hours: float = 12.0,
                 firmware: tuple[int, int, int] = (1, 4, 2)) -> None:
        self.serial = serial
        self.heartbeat_s = heartbeat_s
        self.retransmit_s = retransmit_s
        self.heartbeats = True  # False: no heartbeats (events still go out)
        self.time_scale = time_scale
        self.backup_hours = backup_hours
        self.recharge_hours = recharge_hours
        self.firmware = firmware
        self.backup_charge = 100.0  # percent
        self.pendant_mv = float(PENDANT_FRESH_MV)
        self.pendant_mv_per_hour = 0.0
        self.pendant_rssi: int | None = -65
        self._mains = True
        self._model_at = time.monotonic()
        self.next_event_id = 1
        self.unacked: dict[int, bytes] = {}  # event id -> its frame, until acked
        self.heard: dict[int, list[str]] = {}  # event id -> what the bridge said, in order
        self.prompt_copies = 0  # prompt frames received, repeats included
        self.deaf_to_prompts = 0  # lose this many of the next prompt frames
        self.sent_events: list[int] = []  # every event frame put on the line, resends included
        self.bad_frames = 0
        self._damage: deque[str] = deque()
        self._sock: socket.socket | None = None
        self._decoder = alarmunit.Decoder()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mains(self) -> bool:
        """Whether the unit has mains power."""
        return self._mains

    @mains.setter
    def mains(self, on: bool) -> None:
        self.advance()
        if on == self._mains:
            return
        self._mains = on
        # The unit reports its own power as an alarm event too, as it always did.
        self.press(alarms.MAINS_RESTORED if on else alarms.MAINS_LOST, "base")

    @property
    def backup_mv(self) -> float:
        """The backup pack's voltage now (mV)."""
        return _pack_mv(self.backup_charge)

    @property
    def powered(self) -> bool:
        """Mains, or a backup pack that is not empty: otherwise the unit is dead."""
        return self._mains or self.backup_charge > 0

    def advance(self) -> None:
        """Bring the batteries up to now (simulated time: real time x ``time_scale``)."""
        now = time.monotonic()
        hours = (now - self._model_at) * self.time_scale / 3600
        self._model_at = now
        if self._mains:
            self.backup_charge = min(100.0, self.backup_charge + 100 * hours / self.recharge_hours)
        else:
            self.backup_charge = max(0.0, self.backup_charge - 100 * hours / self.backup_hours)
        self.pendant_mv = max(0.0, self.pendant_mv - self.pendant_mv_per_hour * hours)

    def drain_pendant(self, mv: float) -> None:
        """The pendant's cell loses ``mv``."""
        self.pendant_mv = max(0.0, self.pendant_mv - mv)

    def status_heartbeat(self) -> bytes:
        """The HEARTBEAT frame the unit would send now."""
        self.advance()
        return unitside.heartbeat(self.serial, int(time.time()), self._mains,
                                  round(self.backup_mv), round(self.pendant_mv) or None,
                                  self.pendant_rssi, self.firmware)

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
        self.unacked[eid] = unitside.event(self.serial, eid, int(time.time()), event, device)
        self.heard.setdefault(eid, [])
        self._send_event(eid)
        return eid

    def inject(self, data: bytes) -> None:
        """Send raw bytes to the bridge, as a broken or hostile unit would."""
        self._write(data)

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
        if self._sock is None or not self.powered:
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
            heard = self.heard.setdefault(eid, [])
            if fr[0] == alarmunit.T_ACK:
                heard.append(name)
                self.unacked.pop(eid, None)  # an ack for an acked event changes nothing
                continue
            if self.deaf_to_prompts > 0:
                self.deaf_to_prompts -= 1
                continue
            self.prompt_copies += 1
            if name not in heard:
                heard.append(name)  # played once, however many copies arrive
            if self.powered:
                self._write(unitside.heard(self.serial, fr[0], eid))
        self.bad_frames = self._decoder.bad

    async def _heartbeat_loop(self) -> None:
        while True:
            frame = self.status_heartbeat()
            if self.heartbeats and self.powered:
                self._write(frame)
            await asyncio.sleep(self.heartbeat_s)

    async def _retransmit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retransmit_s)
            for eid in sorted(self.unacked):
                self._send_event(eid)
