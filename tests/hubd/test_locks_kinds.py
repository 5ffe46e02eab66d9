"""What each lock kind can report (wire.lockkinds.can_report, which hubd's drivers use to drop the
rest) agrees with the firmware's drivers' own tables (firmware/locks/kinds.py) while both exist,
for every kind, report source and event the protocol can carry.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from wire import lockkinds
from wire import lockproto as lp

FIRMWARE_KINDS = Path(__file__).resolve().parents[2] / "firmware" / "locks" / "kinds.py"


def _firmware_kinds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firmware_lock_kinds", FIRMWARE_KINDS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", lockkinds.KINDS)
def test_hubd_and_the_firmware_drop_the_same_reports(kind: str) -> None:
    firmware = _firmware_kinds()
    hub_names = {"motor": lockkinds.SOURCE_REMOTE}  # hubd.locks.transport's mapping
    for protocol_source in lp.SOURCES:
        source = hub_names.get(protocol_source, protocol_source)
        for event in (None, *lp.EVENTS):
            firmware_takes = firmware.source(kind, protocol_source) is not None and (
                event is None or firmware.has_event(kind, event))
            assert lockkinds.can_report(kind, source, event) == firmware_takes, \
                (kind, protocol_source, event)


def test_a_kind_can_report_a_manual_state_but_not_what_its_mechanism_lacks() -> None:
    assert lockkinds.can_report(lockkinds.INSIDE_TURNER, lockkinds.SOURCE_MANUAL)
    assert not lockkinds.can_report(lockkinds.INSIDE_TURNER, lockkinds.SOURCE_HANDLE)
    assert not lockkinds.can_report(lockkinds.INSIDE_TURNER, lockkinds.SOURCE_MANUAL, "key_taken")
    assert lockkinds.can_report(lockkinds.KEY_BOX, lockkinds.SOURCE_MANUAL, "key_taken")
    assert not lockkinds.can_report("garage", lockkinds.SOURCE_MANUAL)
    assert not lockkinds.can_report(lockkinds.IN_CYLINDER, lockkinds.SOURCE_POLL), \
        "a poll is the hub's, never a lock's report"
