"""Bridge firmware entry point: MicroPython runs main.py at boot (the bundle's main.py imports
this module as app).

startup.py builds the bridge from bridge.json; this runs it until power is cut, and resets the
chip when anything stops it.
"""

import gc
import sys

import asyncio

import machine

import log
import vital


async def main():
    import startup

    tasks = startup.build()
    # Boot-only code: dropped, its heap is free for the bridge's work.
    del sys.modules["startup"]
    del startup
    gc.collect()
    # Collect after every quarter of what is left is allocated, not only when an allocation
    # fails: garbage freed early leaves fewer holes between long-lived objects, and the link's
    # frames need contiguous blocks (a full heap once had 10 KB free, none of it 600 B long).
    gc.threshold(gc.mem_free() // 4)
    # Every task but the host link's beside this one (vital.py: one that ends with an exception
    # resets the chip, as this function's does), the host link's awaited here. Not
    # asyncio.gather: its bookkeeping for the bridge's five tasks cost heap for ever.
    for name, coro in tasks[1:]:
        vital.start(coro, name)
    host = tasks[0][1]
    tasks = None  # the pairs go; each coroutine is held by its task
    await host


def boot():
    """Run the bridge; whatever stops it (a MemoryError, a bug) resets the chip, because a bridge
    sitting at the REPL carries no alarm. The journals on flash make the reset lose nothing."""
    # Collect before the heap is nearly full, not when an allocation already failed: fewer, larger
    # free blocks (MicroPython's heap is never compacted) for the link's frames. main() sets it
    # again once the bridge is built and the heap's real size is known.
    gc.collect()
    gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        raise  # a technician at the REPL
    except BaseException as e:  # noqa: BLE001 - everything else is a reset
        try:  # the last words may find no heap either (a MemoryError): the reset comes anyway
            gc.collect()
            log.error("bridge firmware stopped: %r; resetting" % (e,))
            sys.print_exception(e)
        finally:
            machine.reset()


boot()
