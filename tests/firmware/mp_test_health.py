"""The health report and its watchdogs (firmware/health.py) inside MicroPython, with fakes for
the host link, the BLE central and the chip's WDT."""

import time

import asyncio
import machine

import heap

from bridge import Bridge
from devices import Devices
from health import Health
from wire import frame, link, messages

FAST = {"health_ms": 500, "wdt_ms": 400, "ble_stuck_ms": 1000}  # the loop ticks every 500 ms


class Host:
    def __init__(self):
        self.link = link.Link(frame.ROLE_BRIDGE, "test", time.ticks_ms(), b"K" * 32)
        self.sent = []
        self.bad_messages = 2
        self.downs = 1
        self.heap_drops = 3
        self.beat = time.ticks_ms()
        self.alive = True

    def send(self, payload):
        self.sent.append(messages.decode(payload))

    def idle(self):
        return True

    def health(self):
        return [m for m in self.sent if m["m"] == messages.HEALTH]


class Central:
    def __init__(self):
        self.restarts = 0
        self.last_restart = None
        self.why = None

    def connected(self):
        return 1

    def stuck(self, ms):
        return self.why

    def restart(self, why):
        self.restarts += 1
        self.last_restart = why
        self.why = None


class Wdt:
    made = []

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        Wdt.made.append(self)

    def feed(self):
        self.feeds += 1


def _health(**settings):
    s = dict(FAST)
    s.update(settings)
    host = Host()
    central = Central()
    devices = Devices(host.send, host.idle)
    return Health(host, central, devices, s), host, central


async def _run(health, host, ms):
    task = asyncio.create_task(health.run())
    end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        if host.alive:
            host.beat = time.ticks_ms()
        await asyncio.sleep_ms(20)
    task.cancel()
    await asyncio.sleep_ms(0)


def test_the_health_message_has_sane_values():
    health, host, central = _health()
    host.link.stats["crc_errors"] = 5
    msg = messages.decode(health.message())
    assert msg["reset"] == "power_on"  # the shim's cause without SIM_RESET_CAUSE
    assert 0 <= msg["up_s"] < 5
    assert 0 < msg["heap_min"] <= msg["heap_free"]
    assert msg["link"]["crc_errors"] == 5
    assert (msg["link"]["bad_messages"], msg["link"]["downs"]) == (2, 1)
    assert sorted(msg["link"]) == sorted(messages.LINK_COUNTERS)
    assert msg["ble"] == {"restarts": 0, "last_restart": None, "connected": 1}
    assert (msg["lte"], msg["unit"], msg["clock"]) == (None, None, None)
    assert msg["journals"] == {"commands": 0, "alarms": 0}  # no command journal on the bridge


def test_health_goes_out_every_health_ms_while_the_link_is_up():
    machine.WDT = Wdt
    health, host, central = _health()
    asyncio.run(_run(health, host, 300))
    assert host.health() == []  # the link never came up
    health.on_link_state(link.EV_UP, {})
    asyncio.run(_run(health, host, 1900))
    assert 2 <= len(host.health()) <= 3  # every 500 ms from the link coming up, on 500 ms ticks
    health.on_link_state(link.EV_DOWN, "silent")
    before = len(host.health())
    asyncio.run(_run(health, host, 1100))
    assert len(host.health()) == before


def test_a_health_request_is_answered_at_once():
    health, host, central = _health(health_ms=600000)
    app = Bridge(host.send)
    app.health = health
    app.on_message({"m": messages.HEALTH_REQUEST})
    assert len(host.health()) == 1


def test_the_wdt_is_fed_only_while_the_link_task_goes_round():
    machine.WDT = Wdt
    Wdt.made = []
    health, host, central = _health()
    asyncio.run(_run(health, host, 1600))
    wdt = Wdt.made[-1]
    assert wdt.timeout == FAST["wdt_ms"]
    assert wdt.feeds >= 3
    host.alive = False  # the link's task stopped going round
    Wdt.made = []
    asyncio.run(_run(health, host, 1600))
    # fed at most on the first tick, while its last beat was under wdt_ms / 2 old; never after
    assert Wdt.made[-1].feeds <= 1


def test_a_stuck_ble_stack_is_restarted_and_health_says_why_at_once():
    machine.WDT = Wdt
    health, host, central = _health(health_ms=600000)
    health.on_link_state(link.EV_UP, {})
    asyncio.run(_run(health, host, 100))
    before = len(host.health())
    assert before == 0
    central.why = "silent"
    asyncio.run(_run(health, host, 700))
    assert central.restarts == 1
    last = host.health()[-1]
    assert len(host.health()) == before + 1
    assert (last["ble"]["restarts"], last["ble"]["last_restart"]) == (1, "silent")


def test_uptime_does_not_wrap_with_the_tick_counter():
    health, host, central = _health()
    health._up_ms = (1 << 30) * 3  # three wraps of an ESP32's ticks_ms
    assert messages.decode(health.message())["up_s"] >= 3 * (1 << 30) // 1000


def test_counts_saturate_so_health_always_fits_a_link_frame():
    health, host, central = _health()
    for name in host.link.stats:
        host.link.stats[name] = 1 << 40
    host.bad_messages = host.downs = host.heap_drops = 1 << 40
    health._up_ms = 1 << 45
    payload = health.message()
    assert len(payload) <= frame.MAX_PAYLOAD
    assert messages.decode(payload)["link"]["frames_rx"] == messages.COUNT_CAP


def test_heap_min_is_the_low_water_mark_of_free_heap_after_a_collection():
    health, host, central = _health()
    first = messages.decode(health.message())
    held = bytearray(8192)  # live data the bridge holds for a while (a burst of work)
    during = messages.decode(health.message())
    assert during["heap_free"] <= first["heap_free"] - 8192
    assert during["heap_min"] <= during["heap_free"]
    held = None
    after = messages.decode(health.message())
    assert after["heap_free"] > during["heap_free"], "the block is free again"
    assert after["heap_min"] == during["heap_min"], "the low-water mark stays"


def test_heap_blk_is_the_low_water_mark_of_the_largest_free_block():
    health, host, central = _health()
    first = messages.decode(health.message())
    assert 0 < first["heap_blk"] <= first["heap_free"]
    # A burst of work leaves the heap in holes: plenty free, no big block (nodes are lists, so
    # a block is let go without allocating).
    hog = None
    try:
        while True:
            hog = [bytearray(512), hog]
    except MemoryError:
        pass
    node = hog
    odd = False
    while node is not None:
        if odd:
            node[0] = None
        odd = not odd
        node = node[1]
    during = messages.decode(health.message())
    assert during["heap_blk"] < 2048 < during["heap_free"]
    hog = None
    after = messages.decode(health.message())
    assert after["heap_free"] > during["heap_free"], "the blocks are free again"
    assert after["heap_blk"] == during["heap_blk"], "the low-water mark stays"


def test_a_report_that_meets_a_full_heap_is_dropped_and_counted_not_the_bridge():
    # Seen in the soak: building the report met a full heap, the health task (which feeds the
    # watchdog) ended and the bridge reset.
    health, host, central = _health()
    heap._start = heap._last = None
    before = heap.drops
    hog = None
    for size in (256, 64, 16):
        try:
            while True:
                hog = [bytearray(size), hog]
        except MemoryError:
            pass
    raised = None
    try:
        health.send_now()
    except MemoryError as e:
        raised = e
    hog = None
    assert raised is None, "send_now raised %r" % raised
    assert heap.drops == before + 1
    assert host.health() == []
    health.send_now()  # the heap back: the next report goes out
    assert len(host.health()) == 1
