"""ble_central pieces that need no radio: the stack's watchdog signs, restarts, scans handing
every advert to on_advert, GATT errors."""

import ble_central


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

    def gattc_read(self, *args):
        self.calls.append(("gattc_read",) + args)


def test_a_stack_that_owes_an_event_and_says_nothing_is_stuck():
    import asyncio
    import time

    stack = DeadStack()
    central = ble_central.Central(stack)
    assert central.stuck(50) is None  # owes nothing yet
    asyncio.run(central.scan(20))
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
        except ble_central.BLEError as e:
            assert e.why == ble_central.UNREACHABLE
        return conn

    conn = asyncio.run(scenario())
    assert not conn.connected and central.connected() == 0
    assert (central.restarts, central.last_restart) == (1, "silent")
    assert [c[0] for c in stack.calls] == ["active", "active", "config", "irq"]
    assert (stack.calls[0][1], stack.calls[1][1]) == (False, True)
    assert central.stuck(0) is None


def test_a_scan_hands_every_advert_and_scan_response_to_on_advert_as_it_comes():
    import asyncio

    stack = DeadStack()
    central = ble_central.Central(stack)
    heard = []
    central.on_advert = lambda *a: heard.append((a[0], a[1], a[2], a[3], bytes(a[4])))

    async def scenario():
        task = asyncio.create_task(central.scan(1000, active=False))
        await asyncio.sleep_ms(10)
        assert stack.calls[-1] == ("gap_scan", 1000, 30000, 30000, False)
        adv = bytearray(b"\x02\x01\x06")
        stack.handler(5, (0, memoryview(bytearray(b"\x01" * 6)), 0, -60, memoryview(adv)))
        stack.handler(5, (1, memoryview(bytearray(b"\x02" * 6)), 4, -70, memoryview(b"\x01\xff")))
        stack.handler(6, ())  # the scan is done
        await task

    asyncio.run(scenario())
    assert heard == [(0, b"\x01" * 6, 0, -60, b"\x02\x01\x06"),
                     (1, b"\x02" * 6, 4, -70, b"\x01\xff")]
    assert isinstance(heard[0][1], bytes)  # a copy: the stack's memoryview is not kept


def test_a_gatt_error_carries_the_att_status_and_every_cause_is_a_proxy_status():
    import asyncio

    from wire import messages

    central = ble_central.Central(DeadStack())
    conn = ble_central.Connection(central, 1, 0, b"\x01" * 6)

    async def scenario():
        reading = asyncio.create_task(conn.read(5, 60_000))
        await asyncio.sleep_ms(10)
        conn._on_gatt(16, (1, 5, 0x02))  # _IRQ_GATTC_READ_DONE (conn, handle, ATT status)
        try:
            await reading
        except ble_central.BLEError as e:
            return e
        raise AssertionError("the read did not fail")

    e = asyncio.run(scenario())
    assert e.why == ble_central.GATT_ERROR and e.status == 0x02 and "0x02" in str(e)
    # The proxy answers hubd with the cause itself (firmware/ble_proxy.py).
    for why in (ble_central.TIMEOUT, ble_central.DISCONNECTED, ble_central.UNREACHABLE,
                ble_central.GATT_ERROR, ble_central.ERROR):
        assert why in messages.BLE_STATUSES, why


def test_a_procedure_started_while_another_waits_is_refused_and_the_waiting_one_goes_on():
    # No lock per connection (the proxy runs a link's requests one after the other): a second
    # procedure meanwhile must not take over the first one's wait.
    import asyncio

    stack = DeadStack()
    central = ble_central.Central(stack)
    conn = ble_central.Connection(central, 1, 0, b"\x01" * 6)

    async def scenario():
        reading = asyncio.create_task(conn.read(5, 60_000))
        await asyncio.sleep_ms(10)
        try:
            await conn.read(6, 60_000)
            raise AssertionError("a second read started")
        except ble_central.BLEError as e:
            refused = e
        conn._on_gatt(15, (1, 6, b"other"))  # a result for the refused read's handle: not taken
        conn._on_gatt(15, (1, 5, b"value"))  # _IRQ_GATTC_READ_RESULT (conn, handle, data)
        conn._on_gatt(16, (1, 5, 0))  # _IRQ_GATTC_READ_DONE
        return refused, await reading

    refused, value = asyncio.run(scenario())
    assert refused.why == ble_central.ERROR and "another procedure" in str(refused), refused
    assert value == b"value", value
    assert [c for c in stack.calls if c[0] == "gattc_read"] == [("gattc_read", 1, 5)]


def test_an_mtu_exchange_answers_the_exchanged_mtu_and_a_timed_out_procedure_drops_the_link():
    import asyncio

    class Stack(DeadStack):
        def gattc_exchange_mtu(self, conn):
            self.calls.append(("gattc_exchange_mtu", conn))

    stack = Stack()
    central = ble_central.Central(stack)
    conn = ble_central.Connection(central, 1, 0, b"\x01" * 6)
    central._conns[1] = conn

    async def scenario():
        exchanging = asyncio.create_task(conn.exchange_mtu(60_000))
        await asyncio.sleep_ms(10)
        conn._on_gatt(21, (1, 185))  # _IRQ_MTU_EXCHANGED (conn, mtu)
        mtu = await exchanging
        try:
            await conn.read(5, 30)  # never answered
            raise AssertionError("the read did not time out")
        except ble_central.BLEError as e:
            return mtu, e

    mtu, e = asyncio.run(scenario())
    assert mtu == 185, mtu
    assert e.why == ble_central.TIMEOUT, e
    assert conn._expect == 0  # nothing waits any more: the next procedure may start


def test_a_procedure_started_by_a_caller_that_waits_itself_ends_with_its_result_and_frees_the_link():
    # The proxy starts a read or write and waits on the flag in its own frame (no frame of
    # Connection's under each request): start_*, waiting(), end(); free() when it gives up.
    stack = DeadStack()
    central = ble_central.Central(stack)
    conn = ble_central.Connection(central, 1, 0, b"\x01" * 6)
    central._conns[1] = conn
    conn.start_read(5, 60_000)
    assert conn.waiting()
    try:
        conn.start_read(6, 60_000)
        raise AssertionError("a second read started")
    except ble_central.BLEError as e:
        assert e.why == ble_central.ERROR, e
    conn._on_gatt(15, (1, 5, b"value"))  # _IRQ_GATTC_READ_RESULT
    assert conn.waiting()
    conn._on_gatt(16, (1, 5, 0))  # _IRQ_GATTC_READ_DONE
    assert not conn.waiting()
    assert conn.end("read") == b"value"
    conn.start_read(6, 60_000)  # free again
    conn.free()  # its caller gave up
    conn.start_read(7, 60_000)
    assert [c for c in stack.calls if c[0] == "gattc_read"] == [
        ("gattc_read", 1, 5), ("gattc_read", 1, 6), ("gattc_read", 1, 7)]
    conn._on_disconnect()
    assert not conn.waiting()
    try:
        conn.end("read")
        raise AssertionError("a read on a lost link ended")
    except ble_central.BLEError as e:
        assert e.why == ble_central.DISCONNECTED, e
