"""When the heap runs out in the middle of one input: drop that input, not the bridge.

The bridge's heap is small and never compacted; noisy or hostile input (frames to decode, modem
output) can meet it at its fullest moment (a lock operation, an alarm and a health report at
once). An input loop that hits a MemoryError collects, drops what it held (the link and the alarm
unit resend, DC-09 retries) and goes on. Drops come in episodes: each within ``GAP_MS`` of the one
before. A moment passes; a heap that has kept failing for ``STUCK_MS`` is a leak, and the chip
resets (the journals lose nothing), from whichever task saw it.
"""

import gc
import time

import log

GAP_MS = 1000
STUCK_MS = 10000

drops = 0  # inputs dropped for want of heap since boot (health's link counter "heap_drops")
_start = None  # ticks_ms when the current episode began
_last = None  # ticks_ms of the latest drop


def _reset(drops):
    import machine

    try:
        log.error("bridge firmware stopped: heap exhausted for %d ms (%d inputs dropped since "
                  "boot); resetting" % (STUCK_MS, drops))
    finally:
        machine.reset()


def survive(where):
    """Call in an input loop's ``except MemoryError``: collect, count, log the first drop of an
    episode; reset the chip when the episode has lasted ``STUCK_MS``. Never raises: a log line
    the heap has no room for is left out (the count stays)."""
    global drops, _start, _last
    gc.collect()
    drops += 1
    now = time.ticks_ms()
    if _last is None or time.ticks_diff(now, _last) > GAP_MS:
        _start = now
        try:
            log.warn("%s: out of heap, input dropped (%d B free after a collection)"
                     % (where, gc.mem_free()))
        except MemoryError:
            pass
    _last = now
    if time.ticks_diff(now, _start) > STUCK_MS:
        _reset(drops)


def largest_block():
    """The largest bytearray the heap can give now, in bytes (to a GC block, 16 bytes on the
    chip): what the next big allocation can count on, where ``gc.mem_free()`` counts holes too.
    MicroPython tells it only by printing (``micropython.mem_info``), so it is measured: after a
    collection, a binary search of allocations each dropped at once (a failed one collects again
    and retries before it raises), and a collection after, so nothing of it stays. A few
    collections' time: call it rarely (at each health report), never in a hot path, and from
    one task between awaits (nothing else allocates while it searches)."""
    gc.collect()
    lo = 0
    hi = gc.mem_free()
    while hi - lo > 16:
        mid = (lo + hi) // 2
        try:
            # Never bound to a name: garbage the moment it exists, so anything that allocates
            # next (a scheduled BLE callback on the chip) finds its room after a collection.
            bytearray(mid)
        except MemoryError:
            hi = mid
            continue
        lo = mid
    gc.collect()
    return lo

