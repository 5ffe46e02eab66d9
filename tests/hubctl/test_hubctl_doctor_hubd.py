"""hubctl doctor's check of hubd itself: a handler that raised on some input, or a task that had
to be started again, is a bug the technician reports (hubd went on); and its outbox: a backlog
while hubd is connected is not the broker check's to explain."""

from __future__ import annotations

from hubapi.models import BridgeStatus, HubStatus, QueueStatus
from hubctl.doctor import FAILED, OK, check_status


def _status(inputs: dict[str, dict[str, int]], restarts: dict[str, int]) -> HubStatus:
    return HubStatus(hub="hub-1", request_id=None, at=1000.0, hubd_version="0.1.0", hubd_up_s=60,
                     broker_connected=True,
                     bridge=BridgeStatus(link_up=True, since=900.0, clock_offset_s=None, firmware="0.1.0",
                                         protocol="1.0", link={}, health=None, health_at=None),
                     devices=[], outbox=QueueStatus(depth=0, oldest_at=None),
                     alarms=QueueStatus(depth=0, oldest_at=None), alarms_overdue=0,
                     inputs=inputs, task_restarts=restarts)


def _hubd_check(status: HubStatus):
    return next(c for c in check_status(status, 1000.0, "broker:8883") if c.name == "hubd")


def test_refused_input_alone_is_no_fault_of_hubd() -> None:
    check = _hubd_check(_status({"commands": {"seen": 900, "malformed": 899}}, {}))
    assert check.result == OK


def test_a_handler_that_raised_or_a_restarted_task_fails_the_check_and_says_what_to_do() -> None:
    check = _hubd_check(_status({"bridge": {"seen": 10, "crashed": 2}}, {"alarms": 1}))
    assert check.result == FAILED
    assert "bridge: 2 input(s)" in check.detail and "task alarms restarted 1 time(s)" in check.detail
    assert "journalctl -u hubd" in check.fix


def test_a_stale_outbox_while_hubd_is_connected_is_not_sent_to_the_broker_check() -> None:
    """The broker check passes when hubd is connected: the fix names what then keeps the outbox."""
    status = _status({}, {}).model_copy(update={"outbox": QueueStatus(depth=3, oldest_at=1000.0 - 900)})
    check = next(c for c in check_status(status, 1000.0, "broker:8883") if c.name == "outbox backlog")
    assert check.result == FAILED and "see the broker check" not in check.fix
    assert "does not acknowledge" in check.fix and "broker's ACL" in check.fix
    offline = status.model_copy(update={"broker_connected": False})
    check = next(c for c in check_status(offline, 1000.0, "broker:8883") if c.name == "outbox backlog")
    assert check.fix == "hubd cannot deliver to the broker broker:8883: see the broker check"
