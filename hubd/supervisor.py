"""hubd's long-running tasks, kept running: a task that ends is started again and counted.

Each task handles its messages one at a time inside a guard (hubd/inputs.py), so one bad message
does not end it; a task that ends anyway (a bug, an error nobody foresaw) is logged with its
exception, restarted after a pause that grows with quick successive failures (up to
:data:`MAX_PAUSE_S`), and counted in the health snapshot. hubd stops only when asked to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: First pause before a restart, doubled for each restart within :data:`STABLE_S`.
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 30.0
#: A task that ran this long before it ended starts again after the first pause.
STABLE_S = 60.0


class Supervisor:
    """Runs named coroutine factories until :meth:`stop`; ``restarts`` counts restarts per name."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.restarts: Counter[str] = Counter()

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` as task ``name``, again whenever it ends, until stopped."""
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=name)

    async def _keep(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        pause = FIRST_PAUSE_S
        while True:
            started = time.monotonic()
            try:
                await factory()
                log.error("task %s ended by itself; starting it again", name, extra={"task": name})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s failed; starting it again", name, extra={"task": name})
            self.restarts[name] += 1
            if time.monotonic() - started > STABLE_S:
                pause = FIRST_PAUSE_S
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)

    async def stop(self) -> None:
        """Cancel every task and wait for them."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
