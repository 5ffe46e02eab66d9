"""hubd.access.lockstate: what the bridge reports without a command is audited and kept, on a real state
file; values the hub does not know are audited with a reason and never become retained state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubapi import topics
from hubd.store.audit import AuditLog
from hubd.access.lockstate import LockStates
from hubd.store.outbox import Outbox
from hubd.store.database import Store

HUB = "hub-reports"
LOCKS = {"front": "inside_turner", "box": "key_box"}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload), retain))


class Hub:
    """LockStates over a state file that can be closed and opened again (a restart)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.open()

    def open(self) -> None:
        self.store = Store.open(self.state_dir)
        self.audit = AuditLog(self.store, Outbox(self.store), HUB)
        self.published = Recorder()
        self.states = LockStates(self.store, self.audit, HUB, LOCKS, self.published)

    def restart(self) -> None:
        self.store.close()
        self.open()

    def trail(self) -> list[tuple]:
        entries, _ = self.audit.read(1, 1000)
        return [(e.lock, e.source, e.outcome, e.reason, e.state, e.event) for e in entries]


@pytest.fixture
def hub(tmp_path: Path):
    hub = Hub(tmp_path / "state")
    yield hub
    hub.store.close()


def test_a_manual_turn_is_audited_and_retained(hub: Hub) -> None:
    hub.states.reported("front", "unlocked", 80, "manual")
    assert hub.trail() == [("front", "manual", "reported", None, "unlocked", None)]
    topic, state, retain = hub.published.sent[-1]
    assert (topic, state["state"], state["source"], state["battery"], retain) == (
        topics.lock_state(HUB, "front"), "unlocked", "manual", 80, True)


def test_a_poll_that_finds_nothing_new_is_not_an_operation_even_after_a_restart(hub: Hub) -> None:
    hub.states.reported("front", "locked", 90, "poll")
    hub.states.reported("front", "locked", 90, "poll")
    hub.restart()
    hub.states.reported("front", "locked", 90, "poll")
    assert hub.trail() == [("front", "poll", "reported", None, "locked", None)]
    hub.states.reported("front", "unlocked", 90, "poll")  # it changed without anyone reporting it
    assert hub.trail()[-1] == ("front", "poll", "reported", None, "unlocked", None)


def test_key_box_events_are_audited(hub: Hub) -> None:
    hub.states.event("box", "box_opened", "manual", "unlocked", 70)
    hub.states.event("box", "key_taken", "manual", None, None)
    assert hub.trail() == [("box", "manual", "reported", None, "unlocked", "box_opened"),
                           ("box", "manual", "reported", None, None, "key_taken")]
    assert [s["state"] for _, s, _ in hub.published.sent] == ["unlocked"]


@pytest.mark.parametrize(("report", "reason"), [
    (("reported", "garage", "unlocked", 50, "manual"), "unconfigured_lock"),
    (("reported", "front", "half-open", 50, "manual"), "unrecognised_state"),
    (("reported", "front", "unlocked", 50, "ghost"), "unrecognised_source"),
    (("event", "box", "box_exploded", "manual", None, None), "unrecognised_event"),
    (("event", "box", "box_opened", "manual", "sideways", None), "unrecognised_state"),
], ids=["lock", "state", "source", "event", "event-state"])
def test_reports_the_hub_does_not_know_are_audited_with_a_reason_and_not_retained(hub: Hub, report, reason) -> None:
    method, *args = report
    getattr(hub.states, method)(*args)
    [entry] = hub.trail()
    assert entry[0] == args[0] and entry[2] == "reported" and entry[3] == reason
    assert hub.published.sent == []


def test_a_battery_value_out_of_range_is_dropped_not_stored(hub: Hub) -> None:
    hub.states.reported("front", "locked", 250, "manual")
    entries, _ = hub.audit.read(1, 1)
    assert entries[0].battery is None and hub.published.sent[-1][1]["battery"] is None


def test_every_locks_last_state_is_published_again_as_stored_for_a_new_broker_session(hub: Hub) -> None:
    hub.states.reported("front", "unlocked", 80, "manual")
    hub.states.reported("box", "locked", 60, "poll")
    first = {topic: state for topic, state, _ in hub.published.sent}
    hub.restart()  # a new hubd: nothing published yet
    hub.states.publish_all()
    again = {topic: (state, retain) for topic, state, retain in hub.published.sent}
    assert set(again) == {topics.lock_state(HUB, "front"), topics.lock_state(HUB, "box")}
    for topic, (state, retain) in again.items():
        stored = {k: v for k, v in first[topic].items() if k != "at"}
        assert retain and {k: v for k, v in state.items() if k != "at"} == stored
        assert abs(state["at"] - first[topic]["at"]) < 1.0  # its stored time (the clock is real)
    assert hub.trail()[-1][1] == "poll", "publishing again is not a report: nothing new audited"
