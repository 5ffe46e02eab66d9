"""What each lock kind can report (wire.lockkinds.can_report, which hubd's drivers use to drop the
rest: hubd/locks/transport.py) is the table of docs/lock-protocol.md ("Lock kinds"), for every
kind, report source and event the protocol can carry.
"""

from __future__ import annotations

import pytest

from wire import lockkinds as lk
from wire import lockproto as lp

# docs/lock-protocol.md, "Lock kinds": the reports each mechanism makes, and a remote one (a
# report of the motor's) from any kind.
DOCUMENTED = {
    lk.INSIDE_TURNER: ({lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO}, set()),
    lk.IN_CYLINDER: ({lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_HANDLE, lk.SOURCE_AUTO},
                     {"door_opened", "door_closed"}),
    lk.KEY_BOX: ({lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO},
                 {"box_opened", "box_closed", "key_taken", "key_returned"}),
    lk.ENTRANCE_DOOR: ({lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO},
                       {"door_opened", "door_closed"}),
}


@pytest.mark.parametrize("kind", lk.KINDS)
def test_each_kind_can_report_what_its_mechanism_makes_and_nothing_else(kind: str) -> None:
    sources, events = DOCUMENTED[kind]
    for source in lk.SOURCES:
        for event in (None, *lp.EVENTS):
            expected = source in sources and (event is None or event in events)
            assert lk.can_report(kind, source, event) == expected, (kind, source, event)


def test_an_unknown_kind_and_the_hubs_own_poll_report_nothing() -> None:
    assert not lk.can_report("garage", lk.SOURCE_MANUAL)
    assert not any(lk.can_report(kind, lk.SOURCE_POLL) for kind in lk.KINDS), \
        "a poll is the hub's, never a lock's report"
