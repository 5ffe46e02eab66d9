"""ble_central pieces that need no radio: advert filtering on hostile input, UUID handling."""

import ble_central
import bluetooth
from wire import lockproto as lp
from wire import lockside

SERVICE_LE = lp.uuid128_le(lp.SERVICE_UUID)


def test_service_filter_finds_the_uuid_in_a_real_advert():
    adv = lockside.encode_advert("inside_turner", 50, 1)
    assert ble_central._lists_uuid128(memoryview(adv), SERVICE_LE)
    assert not ble_central._lists_uuid128(memoryview(adv), bytes(16))


def test_service_filter_survives_hostile_adverts():
    for adv in (b"", b"\x00", b"\xff\x07", b"\x11\x07" + SERVICE_LE[:10], b"\x02\x07\x01"):
        assert not ble_central._lists_uuid128(memoryview(adv), SERVICE_LE)


def test_uuid_from_string_matches_over_the_air_bytes():
    assert bluetooth.UUID(lp.SERVICE_UUID) == bluetooth.UUID(SERVICE_LE)
    assert bluetooth.UUID(0x2902) == ble_central.CCCD_UUID
    assert bluetooth.UUID(lp.SERVICE_UUID) != bluetooth.UUID(lp.CONTROL_UUID)


class DeadStack:
    """A BLE object whose calls are taken and never answered (a hung stack), or refused."""

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.calls = []
        self.handler = None

    def active(self, on=None):
        self.calls.append(("active", on))
        return True

    def config(self, **kw):
        self.calls.append(("config", kw))

    def irq(self, handler):
        self.calls.append(("irq",))
        self.handler = handler

    def gap_scan(self, *args):
        if self.refuse and args[0] is not None:
            raise OSError(5)
        self.calls.append(("gap_scan",) + args)

    def gap_connect(self, *args):
        self.calls.append(("gap_connect",) + args)

    def gap_disconnect(self, conn):
        return True


def test_a_stack_that_owes_an_event_and_says_nothing_is_stuck():
    import asyncio
    import time

    stack = DeadStack()
    central = ble_central.Central(stack)
    assert central.stuck(50) is None  # owes nothing yet
    assert asyncio.run(central.scan(20)) == []
    assert central.stuck(10_000) is None
    time.sleep_ms(60)
    assert central.stuck(50) == "silent"
    stack.handler(6, ())  # any event: the stack lives
    assert central.stuck(50) is None


def test_calls_that_keep_failing_count_as_refusing():
    import asyncio

    central = ble_central.Central(DeadStack(refuse=True))
    for _ in range(5):
        try:
            asyncio.run(central.scan(10))
        except OSError:
            pass
    assert central.stuck(60_000) == "refusing"


def test_a_restart_fails_every_link_and_waiting_connect_and_starts_the_stack_again():
    import asyncio

    stack = DeadStack()
    central = ble_central.Central(stack)

    async def scenario():
        # a link up, a connect waiting for its outcome
        conn = ble_central.Connection(central, 7, 0, b"\x01" * 6)
        central._conns[7] = conn
        waiting = asyncio.create_task(central.connect(0, b"\x02" * 6, 60_000))
        await asyncio.sleep_ms(10)
        stack.calls = []
        central.restart("silent")
        try:
            await waiting
            raise AssertionError("the connect did not fail")
        except ble_central.Unreachable:
            pass
        return conn

    conn = asyncio.run(scenario())
    assert not conn.connected and central.connected() == 0
    assert (central.restarts, central.last_restart) == (1, "silent")
    assert [c[0] for c in stack.calls] == ["active", "active", "config", "irq"]
    assert (stack.calls[0][1], stack.calls[1][1]) == (False, True)
    assert central.stuck(0) is None


def test_a_gatt_error_carries_the_att_status_and_is_a_ble_error():
    e = ble_central.GattError("read", 0x02)
    assert e.status == 0x02 and isinstance(e, ble_central.BLEError)
    assert "0x02" in str(e)
