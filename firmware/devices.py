"""Device reports: battery, supply and presence of everything the bridge knows, for hubd.

Ids: the alarm unit's base unit as ``au<serial>`` and its pendant as ``au<serial>-pendant``;
the bridge itself as ``bridge``. Locks are hubd's (it hears their adverts through the Bluetooth
proxy and judges their presence itself). Readings go out raw, with
their unit and model (`device` in wire/messages.py): hubd converts them per model.

A device's `device` message goes out when something hubd should hear changed, and every
device's once whenever the host link comes up, so a restarted hubd learns everything. A reading
in mV must move ``MV_STEP`` and an RSSI ``RSSI_STEP`` from what hubd last heard to count: ADC and
radio noise is not news. Messages leave from ``tick()`` one at a time, only while the link is
idle: they never delay an operation or an alarm, and a burst never fills the link or the heap.
The base unit is present while its link is up (alarm_unit.UnitLink).
"""

from micropython import const

from wire import link, messages

MV_STEP = 20
RSSI_STEP = 10
BRIDGE = "bridge"

# A device is a list in the order of messages.DEVICE's fields after the id.
_BATTERY = const(2)
_UNIT = const(3)
_MAINS = const(4)
_RSSI = const(5)
_PRESENT = const(6)
_FIRMWARE = const(7)


class Devices:
    """What the bridge knows of each device, and what hubd has heard of it.

    ``send(payload)`` queues a message for hubd (may raise link.LinkFull); ``idle()`` says
    whether the link is idle (nothing queued or in flight).
    """

    def __init__(self, send, idle):
        self._send = send
        self._idle = idle
        self._dev = {}  # id -> [kind, model, battery, unit, mains, rssi, present, firmware]
        self._told = {}  # id -> that list as hubd last heard it
        self._due = []  # ids with news hubd has not heard yet, oldest first
        self._up = False
        self.unit = None  # the alarm unit's UnitLink, where there is one
        self._unit_id = None  # the base unit's id, once it was heard

    def add(self, dev_id, kind, model, unit=None, mains=None, firmware=None, present=None):
        """Know a device (its readings unknown until they come)."""
        self._dev[dev_id] = [kind, model, None, unit, mains, None, present, firmware]
        self._due.append(dev_id)

    def supply(self, mv, external):
        """The bridge's backup cell (mV) and whether its external supply is there."""
        self._put(BRIDGE, _BATTERY, mv)
        self._put(BRIDGE, _MAINS, external)

    def unit_status(self, fr):
        """A HEARTBEAT from the alarm unit, as wire.alarmunit.decode() returns it. The base
        unit is present while ``unit`` (its UnitLink) is up."""
        from wire.alarmunit import unit_name

        base = unit_name(fr[1])
        pendant = base + "-pendant"
        if base not in self._dev:
            self.add(base, "base_unit", "base-nimh-4.8v", "mV")
            self.add(pendant, "pendant", "pendant-cr2032", "mV")
        self._unit_id = base
        self._put(base, _PRESENT, True)
        self._put(base, _MAINS, fr[3])
        self._put(base, _BATTERY, fr[4])
        self._put(base, _FIRMWARE, fr[7])
        self._put(pendant, _BATTERY, fr[5])
        self._put(pendant, _RSSI, fr[6])

    def on_link(self, up):
        """The host link came up (True: hubd hears every device again) or went down."""
        self._up = up
        if up:
            self._due = list(self._dev)

    def tick(self):
        """Judge the base unit's presence; send the oldest news if the link is idle."""
        if self._unit_id is not None and self.unit is not None:
            self._put(self._unit_id, _PRESENT, self.unit.up)
        if self._up and self._due and self._idle():
            dev_id = self._due[0]
            d = self._dev[dev_id]
            try:
                self._send(messages.make(messages.DEVICE, dev_id, *d))
            except link.LinkFull:
                return
            self._due.pop(0)
            told = self._told.get(dev_id)
            if told is None:
                self._told[dev_id] = d[:]
            else:
                told[:] = d  # in place: no new long-lived list between short-lived garbage

    def _put(self, dev_id, field, value):
        d = self._dev[dev_id]
        if d[field] == value:
            return
        d[field] = value
        told = self._told.get(dev_id)
        old = None if told is None else told[field]
        if old is not None and value is not None and (field == _BATTERY or field == _RSSI):
            step = RSSI_STEP if field == _RSSI else MV_STEP if d[_UNIT] == "mV" else 1
            if abs(value - old) < step:
                return
        if dev_id not in self._due:
            self._due.append(dev_id)
