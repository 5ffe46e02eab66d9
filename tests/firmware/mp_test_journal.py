"""The command journal on a filesystem, inside MicroPython (run by tests/firmware/runner.py)."""

import os
import random

from journal import Journal
from wire.lockproto import command_tag


def _path():
    d = "/tmp/mp-journal-%08x" % random.getrandbits(32)
    os.mkdir(d)
    return d + "/commands.journal"


def _lines(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


def test_a_recorded_command_is_known_after_reopening():
    path = _path()
    j = Journal(path)
    j.record(command_tag("cmd-1"))
    assert j.seen(command_tag("cmd-1"))
    again = Journal(path)
    assert again.seen(command_tag("cmd-1"))
    assert not again.seen(command_tag("cmd-2"))
    assert len(again) == 1


def test_no_file_yet_means_an_empty_journal():
    j = Journal(_path())
    assert len(j) == 0
    assert not j.seen(command_tag("cmd-1"))


def test_the_file_stays_bounded_and_keeps_the_newest():
    path = _path()
    j = Journal(path, keep=8)
    for i in range(40):
        j.record(command_tag("cmd-%d" % i))
    assert len(_lines(path)) < 16
    again = Journal(path, keep=8)
    assert len(again) == 8
    for i in range(32, 40):
        assert again.seen(command_tag("cmd-%d" % i))
    assert not again.seen(command_tag("cmd-31"))
    assert not again.seen(command_tag("cmd-0"))


def test_a_line_cut_short_by_a_power_cut_is_skipped_and_later_records_survive():
    path = _path()
    j = Journal(path)
    j.record(command_tag("cmd-1"))
    with open(path, "a") as f:
        f.write("3fa2")  # the power went while writing
    j = Journal(path)
    assert len(j) == 1
    j.record(command_tag("cmd-2"))
    again = Journal(path)
    assert again.seen(command_tag("cmd-1"))
    assert again.seen(command_tag("cmd-2"))
    assert len(again) == 2


def test_garbage_lines_are_ignored():
    path = _path()
    with open(path, "w") as f:
        f.write("not a tag\n\n0011\nzzzzzzzzzzzzzzzz\n")
    j = Journal(path)
    assert len(j) == 0
    j.record(command_tag("cmd-1"))
    assert Journal(path).seen(command_tag("cmd-1"))


def test_a_compaction_left_unfinished_is_discarded():
    path = _path()
    j = Journal(path)
    j.record(command_tag("cmd-1"))
    with open(path + ".tmp", "w") as f:
        f.write("0011223344556677\n")
    again = Journal(path)
    assert again.seen(command_tag("cmd-1"))
    assert len(again) == 1
    try:
        os.stat(path + ".tmp")
        assert False, "the unfinished compaction was left behind"
    except OSError:
        pass


def test_recording_many_commands_keeps_the_heap_flat_and_forgets_only_the_oldest():
    import gc
    import os

    path = "heap-journal.test"
    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    j = Journal(path, keep=64)

    def tag(i):
        return bytes((i >> 8, i & 0xFF, 1, 2, 3, 4, 5, 6))

    for i in range(200):  # fill the ring and compact the file a few times
        j.record(tag(i))
    gc.collect()
    before = gc.mem_alloc()
    for i in range(200, 1000):
        j.record(tag(i))
    gc.collect()
    grown = gc.mem_alloc() - before
    assert grown < 512, "the journal kept %d bytes more after 800 commands" % grown
    assert len(j) == 64
    assert j.seen(tag(999)) and j.seen(tag(936))
    assert not j.seen(tag(935)) and not j.seen(tag(0))
    reopened = Journal(path, keep=64)
    assert reopened.seen(tag(999)) and not reopened.seen(tag(935))
    os.remove(path)
