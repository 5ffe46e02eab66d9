"""hubctl doctor holds the running home to what was provisioned (issue 18): each lock of
hubd.toml's [locks] with hubd's pairing, the alarm unit (with its pinned serial) and the LTE modem
of the hub's bridge.json. A provisioned part the bridge does not report fails with a fix that can
help; a part not provisioned and not there passes as "not provisioned"; one there but not
provisioned, and a pairing [locks] does not list, are warnings. The clock is judged only where
the bridge keeps one (an alarm unit's flow).

The judgements are functions of hubd's snapshot and the hub's files: here they are given each
snapshot by hand, as hubd's status socket would give it (the same models), so every branch is
checked in milliseconds. tests/hubctl/test_hubctl_doctor.py checks the same lines end to end,
against hubd, the real bridge firmware and the hub's files on disk.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubapi.models import (
    BridgeBle,
    BridgeHealth,
    BridgeJournals,
    BridgeLte,
    BridgeStatus,
    BridgeUnit,
    DeviceKind,
    DeviceState,
    HubStatus,
    QueueStatus,
)
from hubctl.doctor import (
    FAILED,
    OK,
    SKIPPED,
    WARNED,
    Provisioned,
    check_clock,
    check_locks,
    check_lte,
    check_status,
    check_unit,
)
from hubd.locks.transport import PairedLock
from hubd.store.database import DB_NAME
from hubd.store.pairings import paired_kinds, record_pairing

NOW = 1_800_000_000.0
BRIDGE_JSON = Path("/etc/hubd/bridge.json")
SERIAL = "5A0000AB"
UNIT = "au5a0000ab"


def provisioned(unit: bool = True, serial: str | None = SERIAL, lte: bool = True,
                locks: dict[str, str] | None = None, paired: dict[str, str] | None = None) -> Provisioned:
    locks = {"front-door": "inside_turner"} if locks is None else locks
    return Provisioned(BRIDGE_JSON, unit, serial if unit else None, lte, locks,
                       dict(locks) if paired is None else paired, "/dev/ttyUSB0")


def device(name: str, kind: str, available: bool = True, why: str | None = None,
           seen: float | None = NOW - 2) -> DeviceState:
    return DeviceState(hub="hub-1", device=name, kind=DeviceKind(kind), model="reference", battery=None,
                       mains=None, last_seen=seen, rssi=-60, firmware=None, available=available, why=why,
                       at=NOW)


def status(unit: BridgeUnit | None = BridgeUnit(up=True, last_heard_s=1),
           lte: BridgeLte | None = BridgeLte(registered="home", rssi=-70), clock: int | None = None,
           offset: float | None = 0, devices: list[DeviceState] | None = None, reported: bool = True,
           link_up: bool = True) -> HubStatus:
    health = BridgeHealth(up_s=600, reset="power_on", heap_free=40000, heap_min=30000, heap_blk=20000,
                          link={}, ble=BridgeBle(restarts=0, last_restart=None, connected=0), lte=lte,
                          unit=unit, journals=BridgeJournals(commands=0, alarms=0),
                          clock=clock if clock is not None else (int(NOW) if unit else None))
    if devices is None:
        devices = [device("front-door", "inside_turner"), device(UNIT, "base_unit")]
    return HubStatus(hub="hub-1", request_id=None, at=NOW, hubd_version="0.1.0", hubd_up_s=600,
                     broker_connected=True,
                     bridge=BridgeStatus(link_up=link_up, since=NOW - 600, clock_offset_s=offset,
                                         firmware="0.1.0", protocol="2.0", link={},
                                         health=health if reported else None,
                                         health_at=NOW - 5 if reported else None),
                     devices=devices, outbox=QueueStatus(depth=0, oldest_at=None),
                     alarms=QueueStatus(depth=0, oldest_at=None), alarms_overdue=0)


def test_a_healthy_home_passes_every_part() -> None:
    s, p = status(), provisioned()
    assert check_unit(s, p).result == OK and UNIT in check_unit(s, p).detail
    assert check_lte(s, p).result == OK
    assert [c.result for c in check_locks(s, NOW, p)] == [OK]
    assert check_clock(s, NOW).result == OK
    # The bridge's uptime as of now: its report (up 50 s) came 5 s ago.
    assert s.bridge.health is not None and s.bridge.health_at == NOW - 5
    young = s.model_copy(update={"bridge": s.bridge.model_copy(update={
        "health": s.bridge.health.model_copy(update={"up_s": 50})})})
    link = next(c for c in check_status(young, NOW, "broker:1883", p) if c.name == "bridge link")
    assert "up 55 s, last reset power_on" in link.detail, link.detail


# --- the alarm unit ---------------------------------------------------------------------------------


def test_a_bridge_running_without_its_provisioned_alarm_unit_fails_with_the_flash() -> None:
    c = check_unit(status(unit=None, devices=[]), provisioned())
    assert c.result == FAILED
    assert f"{BRIDGE_JSON} provisions the alarm unit {SERIAL}, but the bridge runs without one" in c.detail
    assert "hubctl flash --resume --port /dev/ttyUSB0" in c.fix and f"--config {BRIDGE_JSON}" in c.fix
    assert c.fix.startswith("the bridge runs another bridge.json than the hub's")


def test_an_alarm_unit_never_heard_down_or_another_fails() -> None:
    never = check_unit(status(unit=BridgeUnit(up=True, last_heard_s=None), devices=[]), provisioned())
    assert never.result == FAILED and "has not heard the alarm unit since it started" in never.detail
    assert "cable to the bridge and its power" in never.fix
    assert f"frames of unit {SERIAL} only" in never.fix and "--alarm-unit-serial" in never.fix
    assert "wait a minute" not in never.fix, "a bridge up for 10 min has had its chance"
    s = status(unit=BridgeUnit(up=True, last_heard_s=None), devices=[])
    assert s.bridge.health is not None
    just_started = s.model_copy(update={"bridge": s.bridge.model_copy(update={
        "health": s.bridge.health.model_copy(update={"up_s": 4})})})
    young = check_unit(just_started, provisioned())
    assert young.result == FAILED and young.fix.startswith("the bridge reported 4 s after its start: wait a minute")

    down = check_unit(status(unit=BridgeUnit(up=False, last_heard_s=95)), provisioned())
    assert down.result == FAILED and "last heard 95 s ago" in down.detail and "cable" in down.fix

    # The bridge hears another unit than the one the hub's bridge.json pins (it runs another file).
    other = check_unit(status(devices=[device("au5a000001", "base_unit")]), provisioned())
    assert other.result == FAILED
    assert f"hears alarm unit au5a000001, not {UNIT} that {BRIDGE_JSON} provisions" in other.detail
    assert "read the serial on the unit's label" in other.fix and "hubctl flash --resume" in other.fix
    assert "--alarm-unit-serial 5A000001, then copy" in other.fix

    # Without a pinned serial any unit the bridge hears is the home's.
    assert check_unit(status(devices=[device("au5a000001", "base_unit")]),
                      provisioned(serial=None)).result == OK


def test_no_alarm_unit_provisioned_passes_and_one_not_provisioned_is_a_warning() -> None:
    none = check_unit(status(unit=None, devices=[]), provisioned(unit=False))
    assert none.result == OK and none.detail == f"not provisioned ({BRIDGE_JSON} has no alarm_unit)"
    extra = check_unit(status(), provisioned(unit=False))
    assert extra.result == WARNED and "provisions no alarm unit" in extra.detail
    assert "hubctl provision --alarm-unit-serial" in extra.fix and "hubctl flash --resume" in extra.fix


def test_the_parts_wait_for_the_bridge() -> None:
    for check in (check_unit, check_lte):
        link_down = check(status(link_up=False), provisioned())
        assert link_down.result == SKIPPED and "needs the bridge's link" in link_down.detail
        silent = check(status(reported=False), provisioned())
        assert silent.result == FAILED and "has not reported its health yet" in silent.detail
        assert "wait a minute and run again" in silent.fix
    # Without the hub's files (hubd.toml or bridge.json unreadable: their own line fails), what
    # the bridge reports is all there is to judge.
    assert check_unit(status(unit=None, devices=[]), None).result == SKIPPED
    assert check_lte(status(lte=None), None).result == SKIPPED
    # bridge.json alone unreadable: its parts unknown, the locks still held to [locks].
    unknown = Provisioned(BRIDGE_JSON, None, None, None, {"front-door": "inside_turner", "key-box": "key_box"},
                          {"front-door": "inside_turner"})
    assert check_unit(status(unit=None, devices=[]), unknown).result == SKIPPED
    assert check_lte(status(lte=None), unknown).result == SKIPPED
    assert [c.result for c in check_locks(status(), NOW, unknown)] == [OK, FAILED]


# --- LTE --------------------------------------------------------------------------------------------


def test_lte_provisioned_but_missing_fails_not_provisioned_passes_extra_warns() -> None:
    missing = check_lte(status(lte=None), provisioned())
    assert missing.result == FAILED
    assert f"{BRIDGE_JSON} provisions the LTE modem, but the bridge runs without it" in missing.detail
    assert "hubctl flash --resume" in missing.fix
    none = check_lte(status(lte=None), provisioned(lte=False))
    assert none.result == OK and none.detail == f"not provisioned ({BRIDGE_JSON} has no lte)"
    extra = check_lte(status(), provisioned(lte=False))
    assert extra.result == WARNED and "provisions no LTE modem" in extra.detail
    unregistered = check_lte(status(lte=BridgeLte(registered="searching", rssi=None)), provisioned())
    assert unregistered.result == FAILED and "check the antenna" in unregistered.fix


# --- the locks --------------------------------------------------------------------------------------


def test_each_lock_of_locks_needs_its_pairing_and_hubd_knowing_it() -> None:
    p = provisioned(locks={"front-door": "inside_turner", "key-box": "key_box", "back-door": "inside_turner"},
                    paired={"front-door": "inside_turner", "back-door": "inside_turner"})
    lines = {c.name: c for c in check_locks(status(), NOW, p)}
    assert lines["lock front-door"].result == OK
    unpaired = lines["lock key-box"]
    assert unpaired.result == FAILED and "hubd holds no pairing for it" in unpaired.detail
    assert "hubctl pair --addr ADDR --name key-box" in unpaired.fix
    unknown = lines["lock back-door"]
    assert unknown.result == FAILED and "hubd does not know it" in unknown.detail
    assert unknown.fix == "restart hubd so it reads hubd.toml: systemctl restart hubd"


def test_a_pairing_locks_does_not_list_is_a_warning() -> None:
    p = provisioned(paired={"front-door": "inside_turner", "shed": "key_box"})
    lines = {c.name: c for c in check_locks(status(), NOW, p)}
    assert lines["lock front-door"].result == OK
    shed = lines["lock shed"]
    assert shed.result == WARNED and "hubd holds a pairing for this key box lock" in shed.detail
    assert 'add shed = "key_box" under [locks] in hubd.toml' in shed.fix


def test_a_lock_never_heard_is_out_of_reach_once_its_pairing_is_known() -> None:
    silent = [device("front-door", "inside_turner", available=False, why="not heard from yet", seen=None)]
    line = check_locks(status(devices=silent), NOW, provisioned())[0]
    assert line.result == FAILED and "never heard since hubd started" in line.detail
    assert line.fix == "out of range or its batteries are dead: check the lock, move the bridge closer"
    # Through the hub's own adapter (docs/direct-mode.md) it is the hub that must come closer.
    direct = Provisioned(BRIDGE_JSON, True, SERIAL, True, {"front-door": "inside_turner"},
                         {"front-door": "inside_turner"}, via_bridge=False)
    assert "move the hub (its own Bluetooth adapter) closer" in check_locks(status(devices=silent), NOW, direct)[0].fix
    link_down = [device("front-door", "inside_turner", available=False, why="bridge link down")]
    assert check_locks(status(devices=link_down), NOW, provisioned())[0].fix == \
        "the bridge's link is down: fix the bridge link first"


def test_the_pairings_are_read_from_hubds_state_without_their_secrets(tmp_path: Path) -> None:
    record_pairing(tmp_path, "front-door", PairedLock("inside_turner", "C0:FF:EE:00:00:01", bytes(32)))
    db = tmp_path / DB_NAME
    assert paired_kinds(db) == {"front-door": "inside_turner"}
    with pytest.raises(sqlite3.Error):
        paired_kinds(tmp_path / "nothing-here" / DB_NAME)


# --- the clock --------------------------------------------------------------------------------------


def test_the_clock_is_judged_where_the_bridge_keeps_one() -> None:
    # No alarm unit: nothing on the bridge uses hubd's time, so it keeps none (firmware/startup.py).
    no_unit = check_clock(status(unit=None, offset=None), NOW)
    assert no_unit.result == OK and "the bridge keeps no time without an alarm unit" in no_unit.detail
    # With one, its alarms are stamped with hubd's time: it must have it, close to the hub's.
    waiting = check_clock(status(offset=None, clock=None), NOW)
    assert waiting.result == FAILED and waiting.detail == "the bridge has no time yet"
    assert "systemctl restart hubd" in waiting.fix
    off = check_clock(status(offset=95), NOW)
    assert off.result == FAILED and "+95 s off" in off.detail
    assert check_clock(status(reported=False, offset=None), NOW).result == SKIPPED
    assert check_clock(status(), 1_600_000_000.0).result == FAILED  # the hub's own clock never set
