"""The alarm unit link: frames between the safety alarm base unit and the bridge over a UART.

Written once for both ends (the firmware in MicroPython, the simulator in CPython); the byte
layout is in docs/alarm-unit.md. The frames only a unit builds (EVENT, HEARTBEAT, HEARD) are in
wire/unitside.py, which the bridge never loads: its heap holds its compiled code. A frame on the line is COBS(type, body, CRC-16) followed by 0x00;
the CRC (wire/crc.py, big-endian) covers type and body. Integers are big-endian.

unit -> bridge
    EVENT      serial u32, event id u32, unit time u32 (Unix s), event u8, device u8
    HEARTBEAT  serial u32, unit time u32, flags u8 (bit 0: mains present), backup battery mV u16,
               pendant battery mV u16, pendant RSSI i8 (dBm), unit firmware major, minor, patch u8
               (0 mV: no reading; RSSI 127: not known)
    HEARD      serial u32, prompt type u8, event id u32: the unit has played that prompt (sent
               for every copy it receives; it plays each prompt once)
bridge -> unit
    ACK             event id u32   the event is journaled on the bridge's flash: stop resending
    ALARM_RECEIVED  event id u32   the unit plays "alarm received"      } prompts: resent until
    HELP_ON_THE_WAY event id u32   the alarm centre handled it: the     } the unit says HEARD
                                   unit says help is coming
"""

import struct

from wire import alarms, cobs
from wire.crc import crc16

T_EVENT = 0x01
T_HEARTBEAT = 0x02
T_HEARD = 0x03
T_ACK = 0x81
T_ALARM_RECEIVED = 0x82
T_HELP_ON_THE_WAY = 0x83
PROMPTS = (T_ALARM_RECEIVED, T_HELP_ON_THE_WAY)  # what a HEARD frame may name

# Event codes on the wire: code n is EVENT_CODES[n - 1]. New events are appended, never reordered.
EVENT_CODES = alarms.EVENTS
# Device codes: code n is DEVICES[n - 1].
DEVICES = ("base", "pendant", "wrist", "fall_detector", "pull_cord", "smoke_detector")

FLAG_MAINS = 0x01  # HEARTBEAT flags: the unit runs on mains power (else on its backup pack)
NO_MV = 0  # a battery voltage the unit has no reading of
NO_RSSI = 127  # a pendant RSSI the unit does not know

_BODY = {T_EVENT: ">IIIBB", T_HEARTBEAT: ">IIBHHbBBB", T_HEARD: ">IBI", T_ACK: ">I",
         T_ALARM_RECEIVED: ">I", T_HELP_ON_THE_WAY: ">I"}
_SIZE = {t: struct.calcsize(f) for t, f in _BODY.items()}
MAX_RAW = 1 + 17 + 2  # the longest frame (HEARTBEAT) before COBS
MAX_ENCODED = cobs.encoded_size(MAX_RAW)


class UnitFrameError(ValueError):
    """Bytes that are not a valid alarm unit frame."""


def unit_name(serial):
    """The unit's name in alarm ids (wire.alarms.alarm_id): a replaced unit starts its event
    numbers again, so the serial keeps the ids of two units apart."""
    return "au%08x" % serial


def frame(ftype, *fields):
    """One frame on the line (COBS, CRC, the 0x00 delimiter). The bridge's frames carry the
    unit's event id: ``frame(T_ACK, event_id)``, ``frame(T_HELP_ON_THE_WAY, event_id)``; the
    unit's are built by wire/unitside.py."""
    raw = bytearray(1 + _SIZE[ftype] + 2)
    raw[0] = ftype
    struct.pack_into(_BODY[ftype], raw, 1, *fields)
    struct.pack_into(">H", raw, len(raw) - 2, crc16(memoryview(raw)[:len(raw) - 2]))
    return cobs.encode(raw, True)


def decode(block):
    """Decode one COBS block (without the 0x00) into a tuple: (T_EVENT, serial, event id, unit
    time, event name, device name), (T_HEARTBEAT, serial, unit time, mains, backup mV, pendant
    mV, pendant RSSI, firmware "major.minor.patch"; no reading: None), (T_HEARD, serial, prompt
    type, event id) or (type, event id) for the bridge's frames. Raises UnitFrameError for
    anything else (any bytes), including unknown codes."""
    if len(block) > MAX_ENCODED:
        raise UnitFrameError("frame too long")
    try:
        raw = cobs.decode(block)
    except cobs.CobsError:
        raise UnitFrameError("bad COBS")
    if len(raw) < 3:
        raise UnitFrameError("frame too short")
    ftype = raw[0]
    size = _SIZE.get(ftype)
    if size is None or len(raw) != 1 + size + 2:
        raise UnitFrameError("unknown type or wrong length")
    if crc16(memoryview(raw)[:len(raw) - 2]) != struct.unpack_from(">H", raw, len(raw) - 2)[0]:
        raise UnitFrameError("bad CRC")
    fields = struct.unpack_from(_BODY[ftype], raw, 1)
    if ftype == T_HEARTBEAT:
        serial, unit_time, flags, backup, pendant, rssi, major, minor, patch = fields
        return (ftype, serial, unit_time, bool(flags & FLAG_MAINS), backup or None,
                pendant or None, None if rssi == NO_RSSI else rssi,
                "%d.%d.%d" % (major, minor, patch))
    if ftype == T_HEARD and fields[1] not in PROMPTS:
        raise UnitFrameError("HEARD names no prompt: type %d" % fields[1])
    if ftype != T_EVENT:
        return (ftype,) + tuple(fields)
    serial, event_id, unit_time, code, dev = fields
    if not 0 < code <= len(EVENT_CODES) or not 0 < dev <= len(DEVICES):
        raise UnitFrameError("unknown event code %d or device code %d" % (code, dev))
    return (ftype, serial, event_id, unit_time, EVENT_CODES[code - 1], DEVICES[dev - 1])


class Decoder:
    """Splits a byte stream into frames, with one buffer allocated up front.

    A run of bytes longer than any valid frame is hostile or line noise: it is discarded up to
    the next 0x00 without growing the buffer. ``bad`` counts rejected frames.
    """

    def __init__(self):
        self._buf = bytearray(MAX_ENCODED)
        self._n = 0
        self._overlong = False
        self.bad = 0

    def feed(self, data):
        """Take received bytes; return the list of decoded frames (see decode())."""
        out = []
        buf = self._buf
        for b in data:
            if b != 0:
                if self._n < MAX_ENCODED:
                    buf[self._n] = b
                    self._n += 1
                else:
                    self._overlong = True
                continue
            if self._overlong:
                self.bad += 1
            elif self._n:
                try:
                    out.append(decode(memoryview(buf)[:self._n]))
                except UnitFrameError:
                    self.bad += 1
            self._n = 0
            self._overlong = False
        return out
