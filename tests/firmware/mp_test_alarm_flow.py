"""The bridge's alarm flow (firmware/alarms.py) with a fake unit and a fake host link, inside
MicroPython: what is acked when, what the second path is handed."""

import os
import random
import time

import asyncio

import config
from alarm_journal import AlarmJournal
from alarms import AlarmFlow
from wire import alarms, alarmunit, link, messages


class FakeUnit:
    """UnitLink's side the flow uses: what it was told, in order; up, with the unit's serial."""

    def __init__(self, serial=1):
        self.said = []
        self.up = True
        self.serial = serial

    def say(self, ftype, eid):
        self.said.append(({alarmunit.T_ACK: "ack", alarmunit.T_ALARM_RECEIVED: "alarm_received",
                           alarmunit.T_HELP_ON_THE_WAY: "help_on_the_way"}[ftype], eid))


def _flow(capacity=64, path=None, **settings):
    """An alarm flow with a FakeUnit on a journal at ``path`` (a new one by default): a second
    flow on the same path is the bridge after a reboot."""
    if path is None:
        d = "/tmp/mp-flow-%08x" % random.getrandbits(32)
        os.mkdir(d)
        path = d + "/alarms.journal"
    sent = []
    timings = dict(config.ALARM_TIMINGS)
    timings.update(settings)
    flow = AlarmFlow(AlarmJournal(path, capacity, "brT"),
                     lambda p: sent.append(messages.decode(p)), timings)
    unit = FakeUnit()
    flow.attach_unit(unit)
    return flow, unit, sent


def test_an_event_is_acked_and_sent_once_the_link_is_up():
    flow, unit, sent = _flow()
    flow.on_unit_event(0xAB, 3, 1700000000, alarms.BUTTON, "pendant")
    assert unit.said == [("ack", 3), ("alarm_received", 3)]
    assert sent == []  # the host link is not up yet
    flow.on_link_state(link.EV_UP, {})
    assert [(m["m"], m["id"]) for m in sent] == [("alarm", "au000000ab-3")]
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "au000000ab-3"})
    assert unit.said[-1] == ("help_on_the_way", 3)
    assert len(flow.journal) == 0


def test_a_full_journal_leaves_the_event_unacked():
    flow, unit, sent = _flow(capacity=1)
    flow.on_unit_event(1, 1, 0, alarms.BUTTON, "pendant")
    flow.on_unit_event(1, 2, 0, alarms.FALL, "pendant")
    assert ("ack", 2) not in unit.said
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "au00000001-1"})
    flow.on_unit_event(1, 2, 0, alarms.FALL, "pendant")  # the unit's resend
    assert ("ack", 2) in unit.said


def test_a_resent_event_is_acked_again_but_not_sent_twice():
    flow, unit, sent = _flow()
    flow.on_link_state(link.EV_UP, {})
    flow.on_unit_event(1, 1, 0, alarms.BUTTON, "pendant")
    flow.on_unit_event(1, 1, 0, alarms.BUTTON, "pendant")
    assert unit.said == [("ack", 1), ("alarm_received", 1), ("ack", 1)]
    assert len(sent) == 1


def test_the_second_path_gets_late_alarms_and_all_of_them_when_hubd_is_gone():
    flow, unit, sent = _flow(handled_deadline_ms=600, hub_down_ms=100)
    flow.on_link_state(link.EV_UP, {})
    flow.on_unit_event(1, 1, 0, alarms.BUTTON, "pendant")
    assert flow.for_second_path() == []
    time.sleep_ms(650)
    assert [a[0] for a in flow.for_second_path()] == ["au00000001-1"]
    flow.on_unit_event(1, 2, 0, alarms.SMOKE, "smoke_detector")
    assert [a[0] for a in flow.for_second_path()] == ["au00000001-1"]
    flow.on_link_state(link.EV_DOWN, "silent")
    time.sleep_ms(150)
    assert [a[0] for a in flow.for_second_path()] == ["au00000001-1", "au00000001-2"]
    flow.second_path_result("au00000001-2", "ack")
    assert unit.said[-1] == ("help_on_the_way", 2)
    assert [a[0] for a in flow.for_second_path()] == ["au00000001-1"]


def test_the_unit_link_lost_is_an_alarm_with_the_bridges_own_id():
    flow, unit, sent = _flow()
    flow.on_link_state(link.EV_UP, {})
    flow.on_unit_link(False)
    flow.on_unit_link(True)
    assert [(m["id"], m["event"]) for m in sent] == [
        ("brT-1", alarms.UNIT_LINK_LOST), ("brT-2", alarms.UNIT_LINK_RESTORED)]


def test_a_unit_time_out_of_range_is_sent_as_zero():
    flow, unit, sent = _flow()
    flow.on_link_state(link.EV_UP, {})
    flow.on_unit_event(1, 1, 0xFFFFFFFF, alarms.BUTTON, "pendant")
    assert sent[0]["unit_at"] == 0


def test_the_alarm_unit_section_is_optional_and_checked():
    link = {"key": "4b" * 32}  # every bridge.json has one
    assert config.parse({"link": link})["alarm_unit"] is None
    cfg = config.parse({"link": link, "alarm_unit": {"uart": 2, "heartbeat_ms": 500}})["alarm_unit"]
    assert (cfg["uart"], cfg["baudrate"], cfg["heartbeat_ms"], cfg["missed"]) == (2, 9600, 500, 3)
    assert cfg["serial"] is None  # not pinned: the bridge follows the unit it hears
    pinned = config.parse({"link": link, "alarm_unit": {"serial": "5A0000AB"}})["alarm_unit"]
    assert pinned["serial"] == 0x5A0000AB
    for bad in ({"heartbeat_ms": 0}, {"nonsense": 1}, {"tx": "4"}, [], {"serial": "5a0000ab"},
                {"serial": "5A0000A"}, {"serial": 0x5A0000AB}, {"serial": "5A0000ABC"}):
        try:
            config.parse({"link": link, "alarm_unit": bad})
            raise AssertionError("accepted %r" % (bad,))
        except config.ConfigError as e:
            assert "alarm_unit" in str(e), str(e)


def test_a_test_alarm_is_journaled_and_sent_with_hubds_ref_as_its_device():
    flow, unit, sent = _flow()
    flow.on_link_state(link.EV_UP, {})
    flow.on_message({"m": messages.TEST_ALARM, "ref": "hubctl-test-ab12cd", "lte": False})
    assert [(m["m"], m["id"], m["event"], m["device"]) for m in sent] == [
        ("alarm", "brT-1", alarms.TEST, "hubctl-test-ab12cd")]
    assert [a[0] for a in flow.journal.pending()] == ["brT-1"]
    assert flow.for_second_path() == []  # not over LTE unless asked
    flow.on_link_state(link.EV_RESET, {})  # hubd restarted: the resend names the ref too
    assert sent[-1]["device"] == "hubctl-test-ab12cd"
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "brT-1"})
    assert len(flow.journal) == 0 and unit.said == []


def test_a_test_alarm_with_lte_goes_to_the_second_path_at_once_even_once_handled():
    flow, unit, sent = _flow(hub_down_ms=50)
    flow.on_link_state(link.EV_UP, {})
    flow.on_message({"m": messages.TEST_ALARM, "ref": "hubctl-test-000001", "lte": True})
    assert [a[:2] for a in flow.for_second_path()] == [("brT-1", alarms.TEST)]
    flow.on_link_state(link.EV_DOWN, "silent")
    time.sleep_ms(100)
    assert [a[0] for a in flow.for_second_path()] == ["brT-1"]  # once, though hubd is gone too
    flow.on_link_state(link.EV_UP, {})
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "brT-1"})  # the primary path was faster
    assert [a[0] for a in flow.for_second_path()] == ["brT-1"]
    flow.second_path_result("brT-1", "ack")
    assert flow.for_second_path() == []
    assert (sent[-1]["m"], sent[-1]["id"], sent[-1]["result"]) == ("alarm_lte", "brT-1", "ack")


def test_a_prompt_the_unit_did_not_hear_is_sent_again_until_it_does():
    flow, unit, sent = _flow()
    flow.on_unit_event(1, 7, 0, alarms.BUTTON, "pendant")
    assert unit.said == [("ack", 7), ("alarm_received", 7)]
    flow._prompt()  # the resend round: no HEARD yet
    assert unit.said[-1] == ("alarm_received", 7)
    flow.on_prompt_heard(1, alarmunit.T_ALARM_RECEIVED, 7)
    del unit.said[:]
    flow._prompt()
    assert unit.said == []
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "au00000001-7"})
    flow._prompt()
    assert unit.said == [("help_on_the_way", 7), ("help_on_the_way", 7)]
    flow.on_prompt_heard(1, alarmunit.T_HELP_ON_THE_WAY, 7)
    del unit.said[:]
    flow._prompt()
    assert unit.said == []


def test_help_on_the_way_lost_to_a_reboot_right_after_the_confirmation_is_played_after_it():
    # The interleaving the fault run hit once under load: hubd's alarm_handled confirms the
    # alarm on flash, the bridge queues HELP_ON_THE_WAY, and the reset comes before the UART
    # sends it. The rebooted bridge (a new flow on the same journal) still owes the prompt.
    flow, unit, sent = _flow()
    flow.on_unit_event(1, 14, 0, alarms.FALL, "pendant")
    flow.on_prompt_heard(1, alarmunit.T_ALARM_RECEIVED, 14)
    flow.on_message({"m": messages.ALARM_HANDLED, "id": "au00000001-14"})
    path = flow.journal.path
    rebooted, unit, sent = _flow(path=path)
    assert len(rebooted.journal) == 0, "confirmed: not an alarm to send again"
    unit.up = False
    rebooted._prompt()
    assert unit.said == [], "nothing goes to a unit that is not there"
    unit.up = True
    rebooted._prompt()
    # "alarm received" is owed too: whether the unit heard it was RAM; the unit plays it once.
    assert unit.said == [("alarm_received", 14), ("help_on_the_way", 14)]
    rebooted.on_prompt_heard(1, alarmunit.T_HELP_ON_THE_WAY, 14)
    again, unit, sent = _flow(path=path)
    again._prompt()
    assert unit.said == [], "heard is on flash: a second reboot owes nothing"


def test_prompts_go_only_to_the_unit_whose_event_it_was():
    flow, unit, sent = _flow()
    flow.on_unit_event(1, 3, 0, alarms.BUTTON, "pendant")
    del unit.said[:]
    unit.serial = 2  # a replaced unit on the line
    flow._prompt()
    assert unit.said == []


async def test_the_run_loop_resends_prompts_every_prompt_resend_ms():
    flow, unit, sent = _flow(prompt_resend_ms=500)
    flow.on_unit_event(1, 1, 0, alarms.BUTTON, "pendant")
    task = asyncio.create_task(flow.run())
    await asyncio.sleep_ms(1600)
    task.cancel()
    resent = [s for s in unit.said if s == ("alarm_received", 1)]
    assert 2 <= len(resent) <= 5, unit.said
