"""Device reports (firmware/devices.py) inside MicroPython: what goes to hubd, and when.

The bridge reports itself and the alarm unit's base unit and pendant; locks are hubd's."""

from devices import BRIDGE, MV_STEP, RSSI_STEP, Devices
from wire import alarmunit, link, messages, unitside


class Unit:
    up = True


class Reports(Devices):
    def add_bridge(self, firmware="0.1.0"):
        # as startup.py does
        self.add(BRIDGE, "bridge", "bridge-liion-1s", "mV", None, firmware, True)

    def flush(self):
        # one message per tick, while the link is idle (always, here)
        for _ in range(10):
            self.tick()


def _devices(idle=None):
    sent = []
    d = Reports(lambda p: sent.append(messages.decode(p)), idle or (lambda: True))
    return d, sent


def _heartbeat(mains=True, backup=5200, pendant=2950, rssi=-70, fw=(1, 4, 2)):
    return alarmunit.decode(unitside.heartbeat(0x5A0000AB, 0, mains, backup, pendant, rssi,
                                                fw)[:-1])


def test_nothing_goes_out_before_the_link_is_up_then_every_device_once():
    d, sent = _devices()
    d.unit = Unit()
    d.add_bridge()
    d.unit_status(_heartbeat())
    d.supply(4100, True)
    d.flush()
    assert sent == []
    d.on_link(True)
    d.flush()
    sent.sort(key=lambda m: m["id"])  # MicroPython's dict has no order: neither has this
    assert [m["id"] for m in sent] == ["au5a0000ab", "au5a0000ab-pendant", BRIDGE]
    bridge = sent[2]
    assert (bridge["kind"], bridge["model"], bridge["battery"], bridge["unit"], bridge["mains"],
            bridge["firmware"], bridge["present"]) == (
        "bridge", "bridge-liion-1s", 4100, "mV", True, "0.1.0", True)
    d.unit_status(_heartbeat())
    d.supply(4100, True)
    d.flush()
    assert len(sent) == 3  # nothing new


def test_a_restarted_hubd_hears_every_device_again():
    d, sent = _devices()
    d.unit = Unit()
    d.add_bridge()
    d.unit_status(_heartbeat())
    d.on_link(True)
    d.flush()
    assert len(sent) == 3
    d.on_link(False)
    d.supply(3900, True)
    d.flush()
    assert len(sent) == 3  # the link is down: nothing
    d.on_link(True)
    d.flush()
    assert sorted((m["id"], m["battery"]) for m in sent[3:]) == [
        ("au5a0000ab", 5200), ("au5a0000ab-pendant", 2950), (BRIDGE, 3900)]


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
    d.add_bridge()
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
    d.unit = Unit()
    d.unit_status(_heartbeat())
    d.tick()
    assert [m["id"] for m in sent] == [BRIDGE]
    d.tick()
    assert [m["id"] for m in sent] == [BRIDGE, "au5a0000ab"]
    d.tick()
    assert [m["id"] for m in sent] == [BRIDGE, "au5a0000ab", "au5a0000ab-pendant"]
