"""Children started as from a user's terminal."""

from __future__ import annotations

import signal


def interruptible() -> None:
    """``preexec_fn`` for a child the test interrupts with SIGINT, as Ctrl-C does. A shell that
    starts a job in the background without job control (CI may) makes it ignore SIGINT, and its
    children inherit that: hub-sim and hubctl would then never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
