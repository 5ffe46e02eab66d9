"""What this module held now lives in simulator/home.py: every SimulatedHome's bridge names no
lock, and the helpers are there. Kept only so the files of other work in flight that still
import it (tests/hubd/test_locks_*.py, test_direct_mode.py, benchmarks/soak.py) keep running; import from
simulator.home instead, and delete this module when nothing imports it.
"""

from __future__ import annotations

from simulator.home import SimulatedHome as ProxyOnlyHome
from simulator.home import address, paired, unpaired_lock

__all__ = ["ProxyOnlyHome", "address", "paired", "unpaired_lock"]
