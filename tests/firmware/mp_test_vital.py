"""A vital task that ends resets the chip (firmware/vital.py); one cancelled on purpose does not."""

import asyncio

import machine

import vital


class _Reset(Exception):
    pass


def _record_reset():
    raise _Reset()


def _run(main):
    """asyncio.run(main()) with machine.reset raising _Reset: "reset" when it was called."""
    real = machine.reset
    machine.reset = _record_reset
    try:
        return asyncio.run(main())
    except _Reset:
        return "reset"
    finally:
        machine.reset = real


async def _dies():
    await asyncio.sleep_ms(1)
    raise ValueError("a bug its guards did not catch")


async def _forever():
    while True:
        await asyncio.sleep_ms(5)


def test_a_vital_task_that_raises_resets_the_chip():
    async def main():
        vital.start(_forever(), "test writer")  # another vital task, still running
        vital.start(_dies(), "test reader")  # nobody awaits it, as on the bridge
        await asyncio.sleep_ms(200)
        return "not reset"

    assert _run(main) == "reset", "the chip was not reset"


def test_a_task_that_is_not_vital_and_raises_is_logged_and_no_reset():
    async def main():
        vital.start(_forever(), "test writer")  # the bridge's handler is in place
        asyncio.create_task(_dies())  # a proxy request's task, say, with a bug
        await asyncio.sleep_ms(50)
        return "went on"

    assert _run(main) == "went on"


def test_a_vital_task_cancelled_on_purpose_does_not_reset():
    async def main():
        task = vital.start(_forever(), "test reader")
        await asyncio.sleep_ms(20)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except _Reset:
            return "reset"
        return "ended"

    assert _run(main) == "cancelled"
