"""The alarm journal on a filesystem, inside MicroPython (run by tests/firmware/runner.py)."""

import gc
import os
import random

from alarm_journal import AlarmJournal, JournalFull
from wire import alarms
from wire.alarmunit import T_ALARM_RECEIVED as RECEIVED
from wire.alarmunit import T_HELP_ON_THE_WAY as HELP


def _path():
    d = "/tmp/mp-alarms-%08x" % random.getrandbits(32)
    os.mkdir(d)
    return d + "/alarms.journal"


def _ids(j):
    return [a[0] for a in j.pending()]


def test_an_alarm_is_pending_after_reopening_until_confirmed():
    path = _path()
    j = AlarmJournal(path, bridge="brX")
    aid = j.add_unit(0xAB, 5, 1700000000, alarms.BUTTON, "pendant", 1700000001)
    assert aid == "au000000ab-5"
    again = AlarmJournal(path, bridge="brX")
    assert list(again.pending()) == [(aid, alarms.BUTTON, "pendant", 1700000000, 1700000001,
                                      False, again._unpack(0)[4])]
    assert again.confirm(aid, "hub") == 5
    assert len(again) == 0
    assert len(AlarmJournal(path, bridge="brX")) == 0
    assert again.confirm(aid, "hub") is None


def test_a_resent_event_is_not_journaled_twice():
    j = AlarmJournal(_path())
    assert j.add_unit(1, 1, 0, alarms.FALL, "pendant") is not None
    assert j.add_unit(1, 1, 0, alarms.FALL, "pendant") is None
    assert len(j) == 1


def test_a_resend_arriving_after_the_confirmation_is_not_a_new_alarm():
    j = AlarmJournal(_path())
    assert j.add_unit(0, 0, 0, alarms.FALL, "pendant") == "au00000000-0"  # no false match
    aid = j.add_unit(1, 1, 0, alarms.FALL, "pendant")
    j.confirm(aid, "hub")
    assert j.add_unit(1, 1, 0, alarms.FALL, "pendant") is None
    assert len(j) == 1
    assert j.add_unit(2, 1, 0, alarms.FALL, "pendant") == "au00000002-1"  # another unit


def test_bridge_alarms_keep_counting_across_reopen_and_compaction():
    path = _path()
    j = AlarmJournal(path, capacity=4, bridge="brX")
    first = j.add_bridge(alarms.UNIT_LINK_LOST, "base", 0)
    for _ in range(6):
        j.confirm(j.add_bridge(alarms.UNIT_LINK_RESTORED, "base", 0), "hub")
    j.confirm(first, "lte")
    again = AlarmJournal(path, capacity=4, bridge="brX")
    assert again.add_bridge(alarms.UNIT_LINK_LOST, "base", 0) == "brX-8"


def test_a_full_journal_refuses_and_a_confirm_makes_room():
    j = AlarmJournal(_path(), capacity=3)
    ids = [j.add_unit(1, n, 0, alarms.BUTTON, "wrist") for n in range(3)]
    try:
        j.add_unit(1, 99, 0, alarms.BUTTON, "wrist")
        raise AssertionError("a full journal took an alarm")
    except JournalFull:
        pass
    assert _ids(j) == ids
    j.confirm(ids[1], "hub")
    assert j.add_unit(1, 99, 0, alarms.BUTTON, "wrist") == "au00000001-99"
    assert _ids(j) == [ids[0], ids[2], "au00000001-99"]


def test_a_line_cut_short_by_a_power_cut_is_skipped_and_later_records_survive():
    path = _path()
    j = AlarmJournal(path)
    a = j.add_unit(1, 1, 0, alarms.BUTTON, "pendant")
    with open(path, "a") as f:
        f.write("A u 00000001 2 0 fa")  # the power went while writing
    j = AlarmJournal(path)
    assert _ids(j) == [a]
    b = j.add_unit(1, 3, 0, alarms.SMOKE, "smoke_detector")
    assert _ids(AlarmJournal(path)) == [a, b]


def test_a_compaction_left_unfinished_is_discarded():
    # flashlog.FlashLog.rewrite writes a .tmp file and renames it over the journal: a power cut
    # before the rename leaves the old journal whole and the .tmp behind, which is dropped.
    path = _path()
    j = AlarmJournal(path)
    a = j.add_unit(1, 1, 0, alarms.BUTTON, "pendant")
    with open(path + ".tmp", "w") as f:
        f.write("A u 00000001 9 0 smoke smoke_detector -\n")
    again = AlarmJournal(path)
    assert _ids(again) == [a]
    try:
        os.stat(path + ".tmp")
        raise AssertionError("the unfinished compaction was left behind")
    except OSError:
        pass


def test_garbage_lines_are_skipped():
    path = _path()
    with open(path, "w") as f:
        f.write("A u zz 1 0 button pendant -\nA u 00000001 1 0 nonsense pendant -\n"
                + "x" * 500 + "\nC\n")
    j = AlarmJournal(path)
    assert len(j) == 0
    assert j.add_unit(1, 1, 0, alarms.BUTTON, "pendant") == "au00000001-1"


def test_stored_is_remembered_in_ram():
    j = AlarmJournal(_path())
    a = j.add_unit(1, 1, 0, alarms.BUTTON, "pendant")
    assert j.mark_stored(a)
    assert [x[5] for x in j.pending()] == [True]
    assert not j.mark_stored("au00000001-2")


def test_the_file_and_the_heap_stay_flat_over_many_alarms():
    path = _path()
    j = AlarmJournal(path, capacity=16)
    for n in range(40):
        j.confirm(j.add_unit(7, n, n, alarms.BUTTON, "pendant"), "hub")
        j.heard(7, HELP, n)
    gc.collect()
    before = gc.mem_free()
    for n in range(40, 440):
        held = j.add_unit(7, n, n, alarms.BUTTON, "pendant")
        j.mark_stored(held)
        j.heard(7, RECEIVED, n)
        j.confirm(held, "hub")
        j.heard(7, HELP, n)
    gc.collect()
    assert before - gc.mem_free() < 1024, before - gc.mem_free()
    with open(path) as f:
        assert len(f.read().split("\n")) <= 2 * 16 + 2
    assert len(AlarmJournal(path, capacity=16)) == 0


def test_alarm_received_is_owed_while_pending_until_the_unit_heard_it():
    j = AlarmJournal(_path())
    j.add_unit(5, 1, 0, alarms.BUTTON, "pendant")
    j.add_bridge(alarms.UNIT_LINK_LOST, "base", 0)  # the bridge's own: nobody to prompt
    assert j.prompts_owed(5) == [(RECEIVED, 1)]
    assert j.prompts_owed(6) == [], "another unit's events are not its prompts"
    j.heard(5, RECEIVED, 1)
    assert j.prompts_owed(5) == []
    j.heard(5, RECEIVED, 99)  # a HEARD for an event the journal never had changes nothing
    assert j.prompts_owed(5) == []


def test_help_on_the_way_is_owed_on_flash_until_the_unit_heard_it():
    path = _path()
    j = AlarmJournal(path)
    aid = j.add_unit(5, 2, 0, alarms.FALL, "pendant")
    j.heard(5, RECEIVED, 2)
    j.confirm(aid, "hub")
    assert j.prompts_owed(5) == [(HELP, 2)]
    again = AlarmJournal(path)  # a reboot: "alarm received" heard was RAM, so owed again
    assert again.prompts_owed(5) == [(RECEIVED, 2), (HELP, 2)]
    assert again.add_unit(5, 2, 0, alarms.FALL, "pendant") is None, "a late resend is no new alarm"
    again.heard(5, HELP, 2)
    assert again.prompts_owed(5) == []
    assert AlarmJournal(path).prompts_owed(5) == []


def test_owed_prompts_survive_compaction():
    path = _path()
    j = AlarmJournal(path, capacity=4)
    j.confirm(j.add_unit(5, 1, 0, alarms.BUTTON, "pendant"), "lte")  # the unit never heard it
    for n in range(2, 12):
        j.confirm(j.add_unit(5, n, 0, alarms.BUTTON, "pendant"), "hub")
        j.heard(5, HELP, n)
    with open(path) as f:
        assert len(f.read().split("\n")) < 2 * 4 + 2, "compacted"
    assert AlarmJournal(path, capacity=4).prompts_owed(5) == [(RECEIVED, 1), (HELP, 1)]


def test_prompts_owed_are_bounded_and_the_oldest_goes_first():
    j = AlarmJournal(_path())
    for n in range(1, 21):  # a unit that never answers
        j.confirm(j.add_unit(5, n, 0, alarms.BUTTON, "pendant"), "hub")
    owed = [n for p, n in j.prompts_owed(5) if p == HELP]
    assert sorted(owed) == list(range(5, 21)), owed
