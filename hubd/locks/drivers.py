"""hubd's lock drivers as the daemon runs them: on a radio (hubd.ble.radio: the bridge's Bluetooth
proxy, or the hub's own adapter), one driver per paired lock (hubd.locks.transport) with its background work (hubd.locks.upkeep: polls, and the
reports a lock kept while nobody was connected), and the locks' adverts as device sightings
(hubd.locks.sightings), kept in step when a lock is paired or decommissioned.

A lock's presence is judged in one place, the device registry, by time (``[devices.absent_s]``
per kind): every advert and every authentic answer is a sighting, and hubd's drivers give no
``present`` word of their own (the firmware's devices.py judged ``absent_ms`` itself; with hubd's
drivers nobody else does).

    drivers = await LockDrivers.open(BleProxy(bridge), paired, lock_states, devices, stack)
    transport = drivers.locks                    # the command path's LockTransport
    await drivers.add("front-door", PairedLock(...))   # a lock just paired
    await drivers.remove("front-door")           # decommissioned
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from hubd.access.lockstate import LockStates
from hubd.ble.radio import Radio
from hubd.devices.registry import Devices
from hubd.locks.dkey import DkeyTimings
from hubd.locks.reference import Timings
from hubd.locks.sightings import LockSightings
from hubd.locks.transport import BleLocks, PairedLock, battery_model
from hubd.locks.upkeep import UpkeepTimings

log = logging.getLogger(__name__)


class LockDrivers:
    """What hubd runs to drive its locks itself; made by :meth:`open`."""

    def __init__(self, radio: Radio, locks: BleLocks, sightings: LockSightings,
                 kinds: dict[str, str], models: dict[str, str], devices: Devices) -> None:
        self.radio = radio
        self.locks = locks
        self.sightings = sightings
        self._kinds = kinds  # lock id -> kind, shared with the sightings' callback
        self._models = models  # lock id -> battery model, likewise
        self._devices = devices

    @classmethod
    async def open(cls, radio: Radio, paired: Mapping[str, PairedLock], lock_states: LockStates,
                   devices: Devices, stack: contextlib.AsyncExitStack, *,
                   timings: Timings = Timings(),
                   upkeep: UpkeepTimings = UpkeepTimings(),
                   dkey_timings: DkeyTimings = DkeyTimings(),
                   on_counter: Callable[[str, int], None] | None = None) -> LockDrivers:
        """Drive ``paired`` through ``radio`` (the bridge's proxy, or the hub's own adapter) on
        ``timings`` (a dKey on ``dkey_timings``), reports into
        ``lock_states``, sightings into ``devices``, the background work on ``upkeep``'s times;
        closed by ``stack`` before the bridge (its work and connections go first). hubd's start
        has registered each lock's device with its battery model (``battery_model``).
        ``on_counter(lock, number)`` keeps a lock's latest report number taken in
        (``Pairings.mark``), so that after a restart its reports from then on are asked for."""
        kinds = {lock: p.kind for lock, p in paired.items()}
        models = {lock: battery_model(p.kind, p.protocol) for lock, p in paired.items()}

        def report(lock: str, what: str, name: str | None, state: str, battery: int | None,
                   source: str) -> None:
            if what == "event" and name is not None:
                lock_states.event(lock, name, source, state, battery)
            else:
                lock_states.reported(lock, state, battery, source)

        def sighted(lock: str, battery: int | None, rssi: int | None) -> None:
            # ``battery``: a reading in the lock's battery model (an advert's, an answer's).
            kind, model = kinds.get(lock), models.get(lock)
            if kind is None or model is None:  # removed while its advert was on its way
                return
            mains = model == "mains"
            if rssi is None and (mains or battery is None):
                devices.heard(lock)  # an authentic answer that carries no reading
                return
            devices.report(lock, kind, model, battery=None if mains else battery, rssi=rssi)

        locks = BleLocks(radio, paired, timings, on_report=report, upkeep=upkeep,
                         on_heard=lambda lock, battery: sighted(lock, battery, None),
                         dkey_timings=dkey_timings, on_counter=on_counter)
        stack.push_async_callback(locks.close)
        sightings = LockSightings(radio, paired, sighted, locks.advertised)
        stack.callback(sightings.stop)
        await sightings.start()
        locks.start()
        drivers = cls(radio, locks, sightings, kinds, models, devices)
        log.info("hubd drives the locks through %s", radio.name, extra={"locks": list(paired)})
        return drivers

    @property
    def via(self) -> str:
        """How hubd reaches the locks, as the technician is told."""
        return f"through {self.radio.name}"

    @property
    def down_text(self) -> str:
        """What a technician is told while the radio is down: why, and where to look."""
        return f"{self.radio.name} is not usable ({self.radio.down_reason}): hubctl doctor, and hubd's log"

    async def add(self, lock_id: str, paired: PairedLock) -> None:
        """Drive and watch a lock just paired, and start its background work (its first poll at
        once). Its device takes the lock's battery model at once, known before or not (a bare
        report: the model, no sighting)."""
        self._kinds[lock_id] = paired.kind
        self._models[lock_id] = battery_model(paired.kind, paired.protocol)
        self._devices.report(lock_id, paired.kind, self._models[lock_id])
        self.locks.add(lock_id, paired)
        await self.sightings.add(lock_id, paired)

    async def remove(self, lock_id: str) -> None:
        """Stop driving and watching a decommissioned lock, and its background work (after the
        operation or read under way)."""
        await self.locks.remove(lock_id)
        await self.sightings.remove(lock_id)
        self._kinds.pop(lock_id, None)
        self._models.pop(lock_id, None)
