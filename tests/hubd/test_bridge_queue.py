"""hubd's send queue to the bridge keeps room for lock operations: housekeeping (health requests,
alarm confirmations, clock) never takes the last ``OP_RESERVE`` slots, so a flood of it cannot
keep the nurse's command's Bluetooth proxy requests off the link."""

from __future__ import annotations

from hubd.link.bridge import OP_RESERVE, Bridge
from wire import frame, link, messages
from tests.fixtures import LINK_KEY


def _up(bridge: Bridge) -> None:
    """Bring hubd's link engine up against a bridge-side engine, sans-IO (no port is opened)."""
    hub = bridge.link.engine
    peer = link.Link(frame.ROLE_BRIDGE, "fw-test", 0, LINK_KEY)
    for now in range(0, 3000, 10):
        for src, dst in ((hub, peer), (peer, hub)):
            while data := src.poll(now):
                dst.feed(data, now)
        if hub.state == link.UP and peer.state == link.UP:
            return
    raise AssertionError("the link did not come up")


async def test_housekeeping_leaves_the_reserve_to_lock_operations(tmp_path) -> None:
    bridge = Bridge(str(tmp_path / "no-port"), LINK_KEY)
    _up(bridge)
    engine = bridge.link.engine
    taken = 0
    while bridge.request_health() and taken < 100:
        taken += 1
    assert taken == engine.max_queue - OP_RESERVE
    assert not bridge.send_alarm_handled("au1-1") and not bridge.send_clock()
    # The nurse's command's proxy requests still get onto the link.
    assert bridge.send_lock_message(_connect(1))
    assert engine.pending() == engine.max_queue - OP_RESERVE + 1


async def test_lock_operations_may_fill_the_queue_to_the_end(tmp_path) -> None:
    bridge = Bridge(str(tmp_path / "no-port"), LINK_KEY)
    _up(bridge)
    engine = bridge.link.engine
    sent = [bridge.send_lock_message(_connect(rid)) for rid in range(1, engine.max_queue + 2)]
    assert sent.count(False) == 1 and sent[-1] is False, "only the one beyond the queue is refused"
    assert engine.pending() == engine.max_queue


def _connect(rid: int) -> bytes:
    """A Bluetooth proxy request, as hubd/ble/proxy.py sends one for a lock operation."""
    return messages.make(messages.BLE_CONNECT, rid, "C0:FF:EE:00:00:01", 0, 3000)


def test_a_flood_of_status_requests_asks_the_bridge_at_most_once_a_second() -> None:
    # Each status request asks the bridge for a fresh report, a message on the serial link; a
    # broker user sending thousands must not turn them into thousands of link messages.
    from hubd.devices.health import HEALTH_REQUEST_MIN_S, Health
    from tests.hubd.test_fuzz_hubd import HUB, _Published, _Stub

    asked: list[float] = []

    class Counting(_Stub):
        def request_health(self) -> bool:
            asked.append(1.0)
            return True

    stub = Counting()
    health = Health(HUB, stub, stub, stub, stub, _Published())
    request = b'{"v": 1, "id": "r1", "reply_to": "' + HUB.encode() + b'"}'
    for _ in range(200):
        assert health.request(request) is None, "the request itself must be valid"
    assert len(asked) == 1
    health._health_asked -= HEALTH_REQUEST_MIN_S  # a second later
    assert health.request(request) is None
    assert len(asked) == 2
