"""Every `ble_*` message the bridge could send, in any order and with any field values the link's
decoder lets through, is taken or dropped and counted by hubd's proxy backend, never an
exception (docs/architecture.md, "Robustness"): fuzzed with hypothesis against a BleProxy with
requests out (a connect, a discovery, a read, a write, a scan), a connection and a scanner
listening. Deterministic as tests/wire/test_fuzz_wire.py.

The messages are fed to hubd's Bridge as payloads from the link: no bridge end is involved.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubd import inputs
from hubd.ble import BleProxy, ProxyScanner
from hubd.ble.proxy import Connection
from hubd.link.bridge import Bridge
from tests.fixtures import LINK_KEY
from tests.hubd.test_bridge_queue import _up
from tests.waiting import until
from wire import messages
from wire.messages import make

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

small = st.integers(-2, 6)
anyint = st.one_of(small, st.integers(-(1 << 31), (1 << 31) - 1))
hexes = st.one_of(st.sampled_from(["", "0229", "0000", "00" * 16, "abc", "zz"]),
                  st.binary(max_size=messages.MAX_DATA).map(bytes.hex))
maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
addrs = st.one_of(st.just("C0:FF:EE:00:00:01"), st.text(min_size=1, max_size=20))

ble_messages = st.one_of(
    st.tuples(st.just(messages.BLE_DONE), small, st.sampled_from(messages.BLE_STATUSES),
              maybe(small), maybe(hexes), maybe(anyint), maybe(anyint), maybe(anyint)),
    st.tuples(st.just(messages.BLE_SERVICE), small, hexes, anyint, anyint),
    st.tuples(st.just(messages.BLE_CHAR), small, hexes, anyint, anyint, anyint),
    st.tuples(st.just(messages.BLE_DESC), small, hexes, anyint, anyint),
    st.tuples(st.just(messages.BLE_ADV), addrs, anyint, anyint, hexes, maybe(hexes)),
    st.tuples(st.just(messages.BLE_NOTIFY), small, anyint, hexes),
    st.tuples(st.just(messages.BLE_LOST), small, st.sampled_from(messages.BLE_LOST_REASONS)),
).map(lambda t: make(*t))


async def _feed(payloads: list[bytes]) -> dict[str, int]:
    bridge = Bridge("no-port", LINK_KEY)  # never opened: the link is brought up sans-IO
    _up(bridge)
    proxy = BleProxy(bridge, margin_s=0.0)
    proxy.attach(1, Connection(lambda handle, data: None, lambda reason: None), 185)
    scanner = ProxyScanner(None, None, proxy=proxy)
    await scanner.start()
    requests = [asyncio.create_task(proxy.request(kind, *fields, wait_ms=60000)) for kind, fields in (
        (messages.BLE_CONNECT, ("C0:FF:EE:00:00:01", 0, 1000)),
        (messages.BLE_DISCOVER, (1,)),
        (messages.BLE_READ, (1, 3, 1000)),
        (messages.BLE_WRITE, (1, 3, "00", True, 1000)))]
    await until(lambda: len(proxy._requests) == 5, "the requests and the scan out")
    for payload in payloads:
        bridge._on_payload(payload)
    for task in requests:
        task.cancel()
    await asyncio.wait(requests)
    await scanner.stop()
    return dict(bridge._guard.refused[inputs.BRIDGE])


@FUZZ
@given(st.lists(ble_messages, max_size=25))
def test_any_sequence_of_ble_messages_is_taken_or_dropped_never_a_crash(payloads: list[bytes]) -> None:
    refused: dict[str, Any] = asyncio.run(_feed(payloads))
    assert refused.get(inputs.CRASHED, 0) == 0, refused
