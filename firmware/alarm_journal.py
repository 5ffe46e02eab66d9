"""The alarm journal: every safety alarm the bridge has taken, on flash until it is confirmed.

An alarm is written (append, flush, sync) before the alarm unit gets its ack, and stays until
hubd reports the alarm centre handled it, or the LTE path's receiver acknowledged it
(``confirm``). After a reboot or a power cut every alarm still in the file is pending again.

It also knows which voice prompts the unit still owes the resident (docs/alarm-unit.md,
"Prompts"): "alarm received" for a pending event until the unit says HEARD (RAM only: after a
reboot it is owed again, and the unit, which plays a prompt once, just says HEARD), and "help is
on the way" for a confirmed event until the unit says HEARD, durably: a confirmation whose prompt
was lost to a reboot is still owed after it.

The file is text, one record a line:

    A <origin> <serial hex> <number> <unit_at> <event> <device> <bridge_at or ->   an alarm
    C <origin> <serial hex> <number>          confirmed (a unit's: "help is on the way" owed)
    H <serial hex> <number>                   the unit has played "help is on the way"
    S <next bridge number>                    after compaction

origin "u" is an alarm unit's event (serial: the unit's, number: its event id); origin "b" is an
alarm the bridge raised itself (supervision: the unit link lost or back), numbered by the bridge.
When the file has grown to twice the capacity in lines it is written anew with only the pending
alarms and a C line for each prompt still owed, and renamed over the old one. A line cut short
by a power cut is skipped.

In RAM the pending alarms live in one bytearray allocated at start (``capacity`` fixed-size
slots, oldest first), and the lately confirmed unit events in another (``_RECENT`` slots):
taking and confirming alarms allocates nothing that stays.
"""

import struct
import time

from micropython import const

import log
from flashlog import FlashLog
from wire import alarms
from wire.alarmunit import DEVICES, T_ALARM_RECEIVED, T_HELP_ON_THE_WAY, unit_name

PATH = "alarms.journal"
CAPACITY = 64
ORIGIN_UNIT = "u"
ORIGIN_BRIDGE = "b"

# Event names the journal can hold; a slot stores the index.
NAMES = alarms.EVENTS + alarms.SUPERVISION
# A slot: serial, number, unit_at, bridge_at (-1: none), ticks when taken, event, device, origin,
# flags. The ticks and flags live in RAM only.
_SLOT = ">IIiiIBBBB"
SLOT = struct.calcsize(_SLOT)
# The fields of an unpacked slot, by name.
_SERIAL = const(0)
_NUMBER = const(1)
_UNIT_AT = const(2)
_BRIDGE_AT = const(3)
_TAKEN = const(4)
_EVENT = const(5)
_DEVICE = const(6)
_ORIGIN = const(7)
_FLAGS = const(8)
_STORED = const(1)  # hubd has it in its durable outbox
_RECEIVED_HEARD = const(2)  # the unit has played "alarm received" for it
_MAX_LINE = const(96)
# Unit events confirmed lately, a ring: serial, event id, owed prompts. A resend whose ack was
# lost and that arrives after the confirmation is acked again instead of becoming a second alarm,
# and the prompts the unit has not said HEARD for are sent again (an owed prompt the ring comes
# round to is given up, logged).
_RECENT = const(16)
_R = ">IIB"
_R_SIZE = const(9)
_OWE_RECEIVED = const(1)
_OWE_HELP = const(2)


def _alarm_line(origin, serial, number, unit_at, event, device, bridge_at):
    """The file's record of one alarm (an A line; ``bridge_at`` -1: none)."""
    return "A %s %08x %d %d %s %s %s" % (origin, serial, number, unit_at, event, device,
                                         "-" if bridge_at < 0 else bridge_at)


def _confirmed_line(origin, serial, number):
    """The file's record of a confirmation (a C line)."""
    return "C %s %08x %d" % (origin, serial, number)


class JournalFull(Exception):
    """The journal holds ``capacity`` unconfirmed alarms: a new one cannot be taken now."""


class AlarmJournal:
    """The unconfirmed alarms, loaded from ``path`` at start.

    ``bridge`` names the bridge in the ids of the alarms it raises itself (wire.alarms.alarm_id).
    """

    def __init__(self, path=PATH, capacity=CAPACITY, bridge="bridge"):
        self.path = path
        self.capacity = capacity
        self.bridge = bridge
        self._slots = bytearray(capacity * SLOT)
        self._recent = bytearray(_RECENT * _R_SIZE)
        self._recent_next = 0
        self._recent_count = 0  # valid entries: an empty one must not match serial 0, event 0
        self._count = 0
        self._next_local = 1
        self._file = FlashLog(path, _MAX_LINE)
        for line in self._file.read():
            self._replay(line.split(" "))

    def __len__(self):
        return self._count

    # -- file -------------------------------------------------------------------------------

    def _replay(self, f):
        try:
            if f[0] == "A" and len(f) == 8:
                origin = f[1]
                serial = int(f[2], 16)
                number = int(f[3])
                bridge_at = -1 if f[7] == "-" else int(f[7])
                if origin == ORIGIN_BRIDGE and number >= self._next_local:
                    self._next_local = number + 1
                if self._find(origin, serial, number) < 0:
                    if self._count >= self.capacity:
                        log.error("alarm journal: more pending alarms in %s than its capacity %d"
                                  % (self.path, self.capacity))
                        return
                    self._put(origin, serial, number, int(f[4]), NAMES.index(f[5]),
                              DEVICES.index(f[6]), bridge_at)
            elif f[0] == "C" and len(f) == 4:
                serial, number = int(f[2], 16), int(f[3])
                i = self._find(f[1], serial, number)
                if i >= 0:
                    self._remove(i)
                if f[1] == ORIGIN_UNIT:  # whether it heard "alarm received" is not on flash
                    self._remember(serial, number, _OWE_RECEIVED | _OWE_HELP)
            elif f[0] == "H" and len(f) == 3:
                i = self._recent_index(int(f[1], 16), int(f[2]))
                if i >= 0:
                    self._recent[i * _R_SIZE + 8] = 0  # help heard: nothing more owed
            elif f[0] == "S" and len(f) == 2:
                self._next_local = max(self._next_local, int(f[1]))
        except ValueError:
            pass  # a damaged line: the lines around it still count

    def _compact(self):
        """Write the file anew with only the pending alarms (and the bridge's next number)."""
        self._file.rewrite(self._compacted())

    def _compacted(self):
        yield "S %d" % self._next_local
        for i in range(self._count):
            yield self._line(i)
        for i in range(self._recent_count):
            serial, number, owed = struct.unpack_from(_R, self._recent, i * _R_SIZE)
            if owed & _OWE_HELP:
                yield _confirmed_line(ORIGIN_UNIT, serial, number)

    def _line(self, i):
        s = self._unpack(i)
        return _alarm_line(chr(s[_ORIGIN]), s[_SERIAL], s[_NUMBER], s[_UNIT_AT], NAMES[s[_EVENT]],
                           DEVICES[s[_DEVICE]], s[_BRIDGE_AT])

    # -- slots ------------------------------------------------------------------------------

    def _unpack(self, i):
        return struct.unpack_from(_SLOT, self._slots, i * SLOT)

    def _put(self, origin, serial, number, unit_at, ev, dev, bridge_at):
        struct.pack_into(_SLOT, self._slots, self._count * SLOT, serial, number, unit_at,
                         bridge_at, time.ticks_ms() & 0x3FFFFFFF, ev, dev, ord(origin), 0)
        self._count += 1

    def _remove(self, i):
        mv = memoryview(self._slots)
        mv[i * SLOT:(self._count - 1) * SLOT] = mv[(i + 1) * SLOT:self._count * SLOT]
        self._count -= 1

    def _find(self, origin, serial, number):
        o = ord(origin)
        for i in range(self._count):
            s = self._unpack(i)
            if s[_NUMBER] == number and s[_SERIAL] == serial and s[_ORIGIN] == o:
                return i
        return -1

    def _recent_index(self, serial, number):
        for i in range(self._recent_count):
            if struct.unpack_from(">II", self._recent, i * _R_SIZE) == (serial, number):
                return i
        return -1

    def _remember(self, serial, number, owed):
        i = self._recent_index(serial, number)
        if i < 0:
            i = self._recent_next
            if i < self._recent_count and self._recent[i * _R_SIZE + 8]:
                log.warn("alarm unit never said HEARD for event %d: %d newer alarms, given up"
                         % (struct.unpack_from(">I", self._recent, i * _R_SIZE + 4)[0], _RECENT))
            self._recent_next = (i + 1) % _RECENT
            self._recent_count = max(self._recent_count, i + 1)
        struct.pack_into(_R, self._recent, i * _R_SIZE, serial, number, owed)

    def _id(self, s):
        unit = unit_name(s[_SERIAL]) if s[_ORIGIN] == ord(ORIGIN_UNIT) else self.bridge
        return alarms.alarm_id(unit, s[_NUMBER])

    def _find_id(self, alarm_id):
        for i in range(self._count):
            if self._id(self._unpack(i)) == alarm_id:
                return i
        return -1

    # -- public -----------------------------------------------------------------------------

    def add_unit(self, serial, event_id, unit_at, event, device, bridge_at=None):
        """Journal an alarm unit's event durably; return its alarm id. Return None when it is
        pending or was confirmed lately (the unit resent it: ack it again). Raises JournalFull
        when the journal is full and OSError when the flash fails: in both cases the unit must
        not get its ack."""
        if (self._find(ORIGIN_UNIT, serial, event_id) >= 0
                or self._recent_index(serial, event_id) >= 0):
            return None
        return self._add(ORIGIN_UNIT, serial, event_id, unit_at, event, device, bridge_at)

    def add_bridge(self, event, device, unit_at, bridge_at=None):
        """Journal an alarm the bridge raises itself (wire.alarms.SUPERVISION); return its id.
        Raises JournalFull or OSError like add_unit."""
        number = self._next_local
        alarm_id = self._add(ORIGIN_BRIDGE, 0, number, unit_at, event, device, bridge_at)
        self._next_local = number + 1
        return alarm_id

    def _add(self, origin, serial, number, unit_at, event, device, bridge_at):
        if self._count >= self.capacity:
            raise JournalFull()
        ev = NAMES.index(event)
        dev = DEVICES.index(device)
        b = -1 if bridge_at is None else bridge_at
        self._file.append(_alarm_line(origin, serial, number, unit_at, event, device, b))
        self._put(origin, serial, number, unit_at, ev, dev, b)
        if self._file.lines >= 2 * self.capacity:
            self._compact()
        return self._id(self._unpack(self._count - 1))

    def confirm(self, alarm_id, path):
        """The alarm was delivered for good: by hubd (``path`` "hub": the centre handled it) or
        by the LTE path (``path`` "lte": the receiver acknowledged it). Drops it from the
        journal durably. Returns the unit's event id to tell the unit help is on the way, -1 for
        an alarm the bridge raised, None when the id is not pending (already confirmed)."""
        i = self._find_id(alarm_id)
        if i < 0:
            return None
        s = self._unpack(i)
        self._file.append(_confirmed_line(chr(s[_ORIGIN]), s[_SERIAL], s[_NUMBER]))
        self._remove(i)
        if s[_ORIGIN] == ord(ORIGIN_UNIT):
            self._remember(s[_SERIAL], s[_NUMBER],
                           _OWE_HELP | (0 if s[_FLAGS] & _RECEIVED_HEARD else _OWE_RECEIVED))
        log.info("alarm %s confirmed via %s" % (alarm_id, path))
        if self._file.lines >= 2 * self.capacity:
            self._compact()
        return s[_NUMBER] if s[_ORIGIN] == ord(ORIGIN_UNIT) else -1

    def mark_stored(self, alarm_id):
        """hubd has the alarm in its durable outbox: stop resending it (RAM only: after a
        reboot it is sent again, and hubd recognises the id). Returns whether it was pending."""
        i = self._find_id(alarm_id)
        if i < 0:
            return False
        self._slots[i * SLOT + SLOT - 1] |= _STORED
        return True

    def heard(self, serial, prompt, number):
        """The unit ``serial`` says it played ``prompt`` (wire.alarmunit T_ALARM_RECEIVED or
        T_HELP_ON_THE_WAY) for its event ``number``: stop owing it. "Help is on the way" heard
        is written to flash (an H line), so a reboot does not owe it again. Raises OSError when
        the flash fails: the prompt stays owed and the unit is asked again."""
        i = self._find(ORIGIN_UNIT, serial, number)
        if i >= 0:
            if prompt == T_ALARM_RECEIVED:
                self._slots[i * SLOT + SLOT - 1] |= _RECEIVED_HEARD
            return
        i = self._recent_index(serial, number)
        if i < 0:
            return
        at = i * _R_SIZE + 8
        if prompt == T_ALARM_RECEIVED:
            self._recent[at] &= ~_OWE_RECEIVED
        elif self._recent[at] & _OWE_HELP:
            self._file.append("H %08x %d" % (serial, number))
            self._recent[at] = 0
            if self._file.lines >= 2 * self.capacity:
                self._compact()

    def prompts_owed(self, serial):
        """The prompts the unit ``serial`` has not said HEARD for, as (prompt, event id) pairs:
        confirmed events first (their "alarm received" before their "help is on the way"), then
        each pending event's "alarm received", oldest first."""
        out = []
        for i in range(self._recent_count):
            s, number, owed = struct.unpack_from(_R, self._recent, i * _R_SIZE)
            if s == serial:
                if owed & _OWE_RECEIVED:
                    out.append((T_ALARM_RECEIVED, number))
                if owed & _OWE_HELP:
                    out.append((T_HELP_ON_THE_WAY, number))
        for i in range(self._count):
            s = self._unpack(i)
            if s[_ORIGIN] == ord(ORIGIN_UNIT) and s[_SERIAL] == serial \
                    and not s[_FLAGS] & _RECEIVED_HEARD:
                out.append((T_ALARM_RECEIVED, s[_NUMBER]))
        return out

    def pending(self):
        """Yield each unconfirmed alarm, oldest first, as a tuple (id, event, device, unit_at,
        bridge_at or None, stored, ticks_ms when taken or loaded). Confirm nothing while
        iterating: collect the ids first."""
        i = 0
        while i < self._count:
            s = self._unpack(i)
            yield (self._id(s), NAMES[s[_EVENT]], DEVICES[s[_DEVICE]], s[_UNIT_AT],
                   None if s[_BRIDGE_AT] < 0 else s[_BRIDGE_AT], bool(s[_FLAGS] & _STORED), s[_TAKEN])
            i += 1
