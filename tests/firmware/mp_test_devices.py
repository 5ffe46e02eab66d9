"""Device reports (firmware/devices.py) inside MicroPython: what goes to hubd, and when."""

import time

from devices import BRIDGE, MV_STEP, RSSI_STEP, Devices
from wire import alarmunit, link, messages, unitside


class Unit:
    up = True


class Reports(Devices):
    def add_lock(self, lock_id, kind):
        # as startup.py does
        if kind == "entrance_door":
            self.add(lock_id, kind, "mains", None, True, heard=True)
        else:
            self.add(lock_id, kind, "reference", "pct", heard=True)

    def flush(self):
        # one message per tick, while the link is idle (always, here)
        for _ in range(10):
            self.tick()


def _devices(absent_ms=600000, idle=None):
    sent = []
    d = Reports(lambda p: sent.append(messages.decode(p)), idle or (lambda: True), absent_ms)
    return d, sent


def _heartbeat(mains=True, backup=5200, pendant=2950, rssi=-70, fw=(1, 4, 2)):
    return alarmunit.decode(unitside.heartbeat(0x5A0000AB, 0, mains, backup, pendant, rssi,
                                                fw)[:-1])


def test_nothing_goes_out_before_the_link_is_up_then_every_device_once():
    d, sent = _devices()
    d.add_lock("front-door", "in_cylinder")
    d.add(BRIDGE, "bridge", "bridge-liion-1s", "mV", None, "0.1.0", True)
    d.lock_heard("front-door", 80, -61)
    d.flush()
    assert sent == []
    d.on_link(True)
    d.flush()
    sent.sort(key=lambda m: m["id"])  # MicroPython's dict has no order: neither has this
    assert [m["id"] for m in sent] == [BRIDGE, "front-door"]
    door = sent[1]
    assert (door["kind"], door["model"], door["battery"], door["unit"], door["rssi"],
            door["present"], door["mains"]) == ("in_cylinder", "reference", 80, "pct", -61, True,
                                                None)
    assert (sent[0]["firmware"], sent[0]["present"]) == ("0.1.0", True)
    d.lock_heard("front-door", 80, -61)
    d.flush()
    assert len(sent) == 2  # nothing new


def test_a_restarted_hubd_hears_every_device_again():
    d, sent = _devices()
    d.add_lock("a", "inside_turner")
    d.add_lock("b", "key_box")
    d.on_link(True)
    d.flush()
    d.on_link(False)
    d.lock_heard("a", 50)
    d.flush()
    assert len(sent) == 2  # the link is down: nothing
    d.on_link(True)
    d.flush()
    assert sorted((m["id"], m["battery"] or 0) for m in sent[2:]) == [("a", 50), ("b", 0)]


def test_every_percent_of_a_lock_battery_is_news():
    d, sent = _devices()
    d.add_lock("door", "inside_turner")
    d.on_link(True)
    for pct in (100, 99, 99, 98):
        d.lock_heard("door", pct)
        d.flush()
    assert [m["battery"] for m in sent] == [100, 99, 98]


def test_the_entrance_door_is_on_mains_and_has_no_battery():
    d, sent = _devices()
    d.add_lock("entrance", "entrance_door")
    d.lock_heard("entrance", 100, -50)
    d.on_link(True)
    d.flush()
    m = sent[0]
    assert (m["model"], m["battery"], m["unit"], m["mains"], m["present"]) == (
        "mains", None, None, True, True)


def test_a_lock_not_heard_for_absent_ms_is_absent_and_present_again_when_heard():
    d, sent = _devices(absent_ms=60)
    d.add_lock("door", "inside_turner")
    d.lock_heard("door", 90, -70)
    d.on_link(True)
    d.flush()
    time.sleep_ms(100)
    d.flush()
    assert [(m["present"], m["rssi"]) for m in sent] == [(True, -70), (False, -70)]
    d.flush()
    assert len(sent) == 2
    d.lock_heard("door", None, -75)
    d.flush()
    assert (sent[-1]["present"], sent[-1]["rssi"], sent[-1]["battery"]) == (True, -75, 90)


def test_a_lock_never_heard_is_absent_after_absent_ms_from_boot():
    d, sent = _devices(absent_ms=40)
    d.add_lock("door", "inside_turner")
    d.on_link(True)
    d.flush()
    assert sent[-1]["present"] is None
    time.sleep_ms(60)
    d.flush()
    assert sent[-1]["present"] is False


def test_small_mv_and_rssi_moves_are_not_news_large_ones_are():
    d, sent = _devices()
    d.unit = Unit()
    d.on_link(True)
    d.unit_status(_heartbeat(backup=5200, rssi=-70))
    d.flush()
    assert sorted(m["id"] for m in sent) == ["au5a0000ab", "au5a0000ab-pendant"]
    base, pendant = sorted(sent, key=lambda m: m["id"])
    assert (base["kind"], base["model"], base["unit"], base["battery"], base["mains"],
            base["firmware"], base["present"]) == (
        "base_unit", "base-nimh-4.8v", "mV", 5200, True, "1.4.2", True)
    assert (pendant["kind"], pendant["model"], pendant["battery"], pendant["rssi"]) == (
        "pendant", "pendant-cr2032", 2950, -70)
    d.unit_status(_heartbeat(backup=5200 - MV_STEP + 1, rssi=-70 - RSSI_STEP + 1))
    d.flush()
    assert len(sent) == 2
    d.unit_status(_heartbeat(backup=5200 - MV_STEP, rssi=-70 - RSSI_STEP + 1))
    d.flush()
    assert [(m["id"], m["battery"]) for m in sent[2:]] == [("au5a0000ab", 5200 - MV_STEP)]
    d.unit_status(_heartbeat(backup=5200 - MV_STEP, rssi=-70 - RSSI_STEP))
    d.flush()
    assert [(m["id"], m["rssi"]) for m in sent[3:]] == [("au5a0000ab-pendant", -70 - RSSI_STEP)]


def test_mains_loss_and_a_lost_unit_link_are_news_at_once():
    d, sent = _devices()
    unit = Unit()
    d.unit = unit
    d.on_link(True)
    d.unit_status(_heartbeat())
    d.flush()
    d.unit_status(_heartbeat(mains=False))
    d.flush()
    assert (sent[-1]["id"], sent[-1]["mains"]) == ("au5a0000ab", False)
    unit.up = False
    d.flush()
    assert (sent[-1]["id"], sent[-1]["present"]) == ("au5a0000ab", False)


def test_the_bridge_supply():
    d, sent = _devices()
    d.add(BRIDGE, "bridge", "bridge-liion-1s", "mV", None, "0.1.0", True)
    d.on_link(True)
    d.supply(4100, True)
    d.flush()
    d.supply(4095, False)
    d.flush()
    assert [(m["battery"], m["mains"]) for m in sent] == [(4100, True), (4095, False)]


def test_one_message_a_tick_only_while_the_link_is_idle_and_a_full_link_keeps_it_due():
    room = [False]
    d, sent = _devices(idle=lambda: room[0])
    d.add_lock("door", "inside_turner")
    d.on_link(True)
    d.flush()
    assert sent == []
    room[0] = True
    full = [True]

    def send(payload):
        if full[0]:
            raise link.LinkFull("full")
        sent.append(messages.decode(payload))

    d._send = send
    d.flush()
    assert sent == []
    full[0] = False
    d.add_lock("gate", "key_box")
    d.tick()
    assert [m["id"] for m in sent] == ["door"]
    d.tick()
    assert [m["id"] for m in sent] == ["door", "gate"]
