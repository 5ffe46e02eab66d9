"""Lock protocols in hubd, on bleak (docs/architecture.md, "Where lock protocols run").

    locks = BleLocks(BleProxy(bridge), {"front-door": PairedLock("inside_turner", addr, secret)})
    result = await locks.operate("front-door", "unlock", command_id, on_written, timeout=30)

- reference: the reference lock protocol's driver (docs/lock-protocol.md)
- dkey: a dormakaba dKey's driver, through py-dormakaba-dkey (docs/dkey.md)
- transport: the lock ids' drivers as hubd.access.transport's LockTransport, one operation at a
  time per lock
- upkeep: what the firmware's connection policy did for a lock nobody commands: polls, and
  reads of the reports it kept when its advert says there are some
- sightings: the locks' adverts, watched through the proxy, as battery, signal and report number
  (a dKey's: presence and signal)
- kept: the connection a driver keeps between operations, and its end (one rule for both)
- visit: a visit's next door held: its connection opened when the door before it opened
  (``[visit] route``), kept alive by reads that move nothing until its command comes
- drivers: the daemon's wiring of the above
"""

from hubd.locks.dkey import DkeyLock, DkeyTimings
from hubd.locks.reference import ReferenceLock, Timings
from hubd.locks.transport import BleLocks, PairedLock
from hubd.locks.upkeep import UpkeepTimings

__all__ = ["BleLocks", "DkeyLock", "DkeyTimings", "PairedLock", "ReferenceLock", "Timings",
           "UpkeepTimings"]
