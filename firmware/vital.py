"""Tasks the bridge cannot do without, started beside the main ones (the modem's reader, the LTE
status loop): one that ends with an exception its own guards did not catch resets the chip, as
main.boot does for the main tasks. Left alone, asyncio would only print "Task exception wasn't
retrieved" and that part of the bridge would stay dead while the rest looked alive (seen: the
modem's reader, and with it the alarms' second path). The journals make the reset lose nothing.
"""

import asyncio

import log


def start(coro, name):
    """Run ``coro`` as a task; if it raises, log ``name`` and reset the chip."""
    return asyncio.create_task(_watch(coro, name))


async def _watch(coro, name):
    try:
        await coro
    except asyncio.CancelledError:
        raise  # stopped on purpose
    except BaseException as e:  # noqa: BLE001 - whatever ends it, the bridge is not whole
        import machine

        try:  # the last words may find no heap (a MemoryError): the reset comes anyway
            log.error("%s stopped: %r; resetting" % (name, e))
        finally:
            machine.reset()
