"""The alarm unit link's frames (wire/alarmunit.py), inside MicroPython."""

from wire import alarms, alarmunit, unitside


def test_an_event_round_trips_through_the_decoder():
    d = alarmunit.Decoder()
    frames = d.feed(unitside.event(0xA1B2C3D4, 7, 1700000000, alarms.FALL, "pendant"))
    assert frames == [(alarmunit.T_EVENT, 0xA1B2C3D4, 7, 1700000000, alarms.FALL, "pendant")]
    assert d.bad == 0


def test_every_event_and_device_has_a_code():
    d = alarmunit.Decoder()
    for i, name in enumerate(alarms.EVENTS):
        dev = alarmunit.DEVICES[i % len(alarmunit.DEVICES)]
        assert d.feed(unitside.event(1, i, 0, name, dev))[0][4:] == (name, dev)


def test_bridge_frames_and_heartbeats_decode():
    d = alarmunit.Decoder()
    data = (unitside.heartbeat(5, 99) + alarmunit.frame(alarmunit.T_ACK, 3) + alarmunit.frame(alarmunit.T_ALARM_RECEIVED, 3)
            + alarmunit.frame(alarmunit.T_HELP_ON_THE_WAY, 3))
    assert d.feed(data) == [(alarmunit.T_HEARTBEAT, 5, 99, True, None, None, None, "0.0.0"),
                            (alarmunit.T_ACK, 3), (alarmunit.T_ALARM_RECEIVED, 3),
                            (alarmunit.T_HELP_ON_THE_WAY, 3)]


def test_a_heartbeat_carries_the_units_status():
    d = alarmunit.Decoder()
    hb = unitside.heartbeat(0x5A0000AB, 1700000000, False, 5200, 2950, -71, (1, 4, 2))
    assert d.feed(hb) == [(alarmunit.T_HEARTBEAT, 0x5A0000AB, 1700000000, False, 5200, 2950, -71,
                           "1.4.2")]
    assert len(hb) == alarmunit.MAX_ENCODED + 1  # the longest frame, with its delimiter


def test_the_old_eight_byte_heartbeat_is_rejected_as_a_wrong_length():
    import struct

    from wire import cobs
    from wire.crc import crc16

    raw = bytearray(b"\x02" + struct.pack(">II", 5, 99))
    raw += struct.pack(">H", crc16(raw))
    d = alarmunit.Decoder()
    assert d.feed(cobs.encode(raw) + b"\x00") == []
    assert d.bad == 1


def test_a_flipped_bit_is_rejected_and_the_next_frame_still_decodes():
    d = alarmunit.Decoder()
    bad = bytearray(unitside.event(1, 2, 3, alarms.BUTTON, "wrist"))
    bad[4] ^= 0x10
    assert d.feed(bytes(bad) + alarmunit.frame(alarmunit.T_ACK, 9)) == [(alarmunit.T_ACK, 9)]
    assert d.bad == 1


def test_a_frame_split_across_reads_decodes():
    d = alarmunit.Decoder()
    data = unitside.event(1, 2, 3, alarms.SMOKE, "smoke_detector")
    assert d.feed(data[:5]) == []
    assert d.feed(data[5:]) == [(alarmunit.T_EVENT, 1, 2, 3, alarms.SMOKE, "smoke_detector")]


def test_noise_longer_than_any_frame_is_dropped_without_growing():
    d = alarmunit.Decoder()
    assert d.feed(b"\x41" * 5000 + b"\x00" + alarmunit.frame(alarmunit.T_ACK, 1)) == [(alarmunit.T_ACK, 1)]
    assert d.bad == 1


def test_a_valid_crc_with_an_unknown_event_code_is_rejected():
    # Built by hand: the codec itself cannot produce an unknown code.
    import struct

    from wire import cobs
    from wire.crc import crc16

    raw = bytearray(b"\x01" + struct.pack(">IIIBB", 1, 2, 3, 200, 1))
    raw += struct.pack(">H", crc16(raw))
    d = alarmunit.Decoder()
    assert d.feed(cobs.encode(raw) + b"\x00") == []
    assert d.bad == 1
