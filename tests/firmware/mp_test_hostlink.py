"""The bridge's end of the serial link (firmware/hostlink.py) in MicroPython: when its producers
that can wait (the Bluetooth proxy) must hold their messages back. The UART is not used here:
the link engine is driven against hubd's engine directly, as mp_test_link.py does."""

import time

from hostlink import HostLink
from wire import frame, link, messages

KEY = b"K" * 32


def _exchange(bridge, hub, now, ms, acks=True):
    # ``acks``: hubd's frames reach the bridge (False: hubd hears, the bridge hears nothing back)
    for _ in range(ms // 10):
        now = time.ticks_add(now, 10)
        for src, dst, goes in ((bridge, hub, True), (hub, bridge, acks)):
            while True:
                f = src.poll(now)
                if not f:
                    break
                if goes:
                    dst.feed(f, now)
        for end in (bridge, hub):
            end.events()
    return now


def _msg(i):
    return messages.make(messages.BLE_DONE, i, "ok")


def test_busy_only_while_a_window_and_two_more_wait_on_a_link_that_is_up():
    host = HostLink(None, "fw", KEY)
    lk = host.link
    now = time.ticks_ms()
    hub = link.Link(frame.ROLE_HUB, "hub", now, KEY)
    # Down: what is said waits in the link's queue, never in a producer's task.
    for i in range(lk.window + 4):
        host.send(_msg(i))
    assert lk.state != link.UP and not host.busy()
    now = _exchange(lk, hub, now, 1000)  # up, and what waited went out
    assert lk.state == link.UP and lk.pending() == 0 and not host.busy()
    # Up, hubd silent: the window fills, then the queue behind it.
    now = _exchange(lk, hub, now, 0)
    for i in range(lk.window + 1):
        host.send(_msg(i))
    now = _exchange(lk, hub, now, 20, acks=False)
    assert lk.pending() == lk.window + 1 and not host.busy()
    host.send(_msg(99))
    assert lk.pending() == lk.window + 2 and host.busy()
    # hubd acknowledges: the window empties, the producers go on.
    now = _exchange(lk, hub, now, 1000)
    assert lk.pending() == 0 and not host.busy()


def test_busy_while_messages_wait_beyond_the_links_queue():
    host = HostLink(None, "fw", KEY)
    lk = host.link
    now = time.ticks_ms()
    hub = link.Link(frame.ROLE_HUB, "hub", now, KEY)
    now = _exchange(lk, hub, now, 300)
    assert lk.state == link.UP
    for i in range(lk.max_queue + 1):  # the last one waits in the overflow
        host.send(_msg(i))
    assert host._overflow and host.busy()
