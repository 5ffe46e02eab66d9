"""A wait on an asyncio Event or ThreadSafeFlag that gives up after a time, at less heap than
``asyncio.wait_for_ms``.

``wait_for_ms(flag.wait(), ms)`` holds two tasks and three coroutine frames while it waits (the
wait made a task, a runner task, and its own frame): measured on the unix port, about 650 bytes
beyond the waiting task on 64-bit, 320 on 32-bit. The bridge waits like that all the time: the
host link's writer between frames, every GATT procedure of every proxy connection, every AT
command. Here a sleeping task sets the flag when the time is up instead (about 130 and 65 bytes),
so the caller cannot tell the two apart by the flag: ``wait`` says which it was.
"""

import asyncio


async def _ring(flag, ms):
    await asyncio.sleep_ms(ms)
    flag.set()


async def wait(flag, ms):
    """Wait until ``flag`` (an Event or a ThreadSafeFlag) is set or ``ms`` have passed; True when
    it was set, False when the time was up (the flag is then set: callers clear an Event before
    their next wait, a ThreadSafeFlag clears itself)."""
    timer = asyncio.create_task(_ring(flag, ms))
    try:
        await flag.wait()
    finally:
        # Done: it rang (time up). Otherwise it is still sleeping, and goes now.
        rang = timer.done()
        if not rang:
            timer.cancel()
    return not rang
