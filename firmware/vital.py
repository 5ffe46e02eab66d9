"""Tasks the bridge cannot do without, started beside the main ones (the host link's and the
modem's readers, the alarm unit's, the LTE status loop, the alarm flow...): one that ends with an
exception its own guards did not catch resets the chip, as main.boot does for the task it runs.
Left alone, asyncio would only print "Task exception wasn't retrieved" and that part of the
bridge would stay dead while the rest looked alive (seen: the modem's reader, and with it the
alarms' second path). The journals make the reset lose nothing.

asyncio hands such an exception (of a task nobody awaits) to the event loop's exception handler;
this module's, set at the first start(), names the task and resets the chip. No coroutine wraps
each task to catch it: a wrapper's frame cost about 250 bytes of heap on 64-bit, 130 on 32-bit,
for each of the bridge's ten vital tasks. A task that is not vital and ends that way (a bug past
the guards of a proxy request's task) is logged, as asyncio would, and the bridge goes on.
"""

import asyncio

import log

_names = {}  # vital task -> its name


def start(coro, name):
    """Run ``coro`` as a task; if it raises, log ``name`` and reset the chip. One cancelled on
    purpose, or one that returns, ends quietly."""
    names = _names
    if not names:
        asyncio.get_event_loop().set_exception_handler(_ended)
    else:
        for task in [t for t in names if t.done()]:  # cancelled (a stopped modem's reader)
            del names[task]
    task = asyncio.create_task(coro)
    names[task] = name
    return task


def _ended(loop, context):
    # The event loop's exception handler: a task nobody awaits ended with an exception.
    name = _names.get(context["future"])
    if name is None:
        try:
            log.error("a task ended: %r" % (context["exception"],))
        except MemoryError:
            pass  # the line is lost; the bridge goes on
        return
    import machine

    try:  # the last words may find no heap (a MemoryError): the reset comes anyway
        log.error("%s stopped: %r; resetting" % (name, context["exception"]))
    finally:
        machine.reset()
