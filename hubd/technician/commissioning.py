"""The technician's requests that change what hubd controls: scan, pair, decommission.

    commissioning = Commissioning(hub_id, bridge, config.locks, audit, publisher, alarms,
                                  drivers=drivers, pairings=pairings)
    handlers = commissioning.handlers()          # for status_socket.serve (hubd/technician/control.py)

hubd drives the locks itself (``drivers``, hubd/locks/), through the bridge as their Bluetooth
proxy or the hub's own adapter (hubd.ble.radio); scan hears the locks' adverts the same way.
The path of a pairing: hubctl pair -> local socket -> :meth:`pair` -> a reference lock: a fresh
secret, given to the lock with PAIR through hubd's own driver; a dKey: an association made with
its activation code through py-dormakaba-dkey (both hubd/locks/pairing.py) -> the pairing kept,
with its protocol, in the state database (hubd/store/pairings.py) -> the lock joins ``locks``
(the live map the verifier and the lock states read) and hubd drives it at once
(``LockDrivers.add``, which picks the protocol's driver), no bridge restart -> the proving cycle
(lock operations through hubd's driver, audited as the technician's, source ``technician``) ->
hubctl writes hubd.toml's [locks]. The secret (a dKey's association data) never leaves hubd:
not on the socket, not in a log, not in hubctl's files, not on the bridge.

Every pairing attempt hubd is asked for, refused or failed ones too, is audited (actor
``hubctl``, the lock's name and address, the reason). A pairing through the bridge's proxy that
ends without the lock's answer while the bridge's link went down is judged by what the bridge
says when it is back (its first health report: uptime and last reset cause): a restart during
the pairing is ``bridge_restarted`` and the technician is told its cause (:data:`RESET_CAUSES`),
not only that the pairing did not complete.

Decommissioning: refused while alarms still wait for the alarm centre (unless forced) -> every
paired reference lock is told to forget its secret (UNPAIR with it) and hubd forgets the pairing
(``LockDrivers.remove``, the row deleted) -> a dKey cannot be told (py-dormakaba-dkey has no
command that removes a key holder, nor has the protocol as the library shows it): hubd forgets
its association data and the radio its bond, so the hub opens nothing any more, and the lock
keeps a stale key holder entry until its owner removes it in the dKey app
(:data:`control.FORGOTTEN_BY_HUB`) -> the bridge drops its bonds and LTE credentials (`wipe`) and
restarts -> the backend is told, retained, on ``hubs/{hub}/v1/decommissioned`` -> hubctl removes
the hub's own credentials and keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hubapi import topics
from hubapi.models import AuditOutcome, Decommissioned, Role
from hubd.technician import control
from hubd.store.audit import AuditLog
from hubd.store.outbox import PublishFailed
from wire import lockkinds, messages
from wire import outcomes as oc

if TYPE_CHECKING:
    from hubd.ble.advert import Advert
    from hubd.locks.drivers import LockDrivers
    from hubd.store.pairings import Pairings

log = logging.getLogger(__name__)

PAIR_TIMEOUT_S = 40.0  # connecting (through the proxy, or the adapter) and the exchange
# A dKey's association: connecting and bonding (the library retries both), the handshake with
# the code, the ECDH exchange and the first authentication with the new data, each frame
# through the proxy a round trip over the serial link too.
ASSOCIATE_TIMEOUT_S = 60.0
UNPAIR_TIMEOUT_S = 40.0
UNBOND_TIMEOUT_S = 15.0  # the radio forgetting a dKey's bond
WIPE_TIMEOUT_S = 40.0  # the bridge writing its flash
CYCLE_OP_TIMEOUT_S = 30.0
TELL_TIMEOUT_S = 15.0  # the broker's PUBACK for the decommissioned notice
# A pairing whose bridge link went down: how long hubd waits for the bridge to be back and say
# why (its health report, asked for when the link comes up): a hung bridge's watchdog resets it
# within its wdt_ms (firmware/config.py HEALTH: 30 s), then it boots in a few seconds. With the
# pairing's own bound (at most ASSOCIATE_TIMEOUT_S) it stays within hubctl's wait
# (control.COMMISSIONING_WAIT_S).
BRIDGE_BACK_S = 40.0
ACTOR = "hubctl"
LINK_DOWN = "the bridge link is down: hubctl doctor shows why"
SOURCE = "technician"

# Why a pairing failed (wire.outcomes.PAIR_RESULTS but ok, and EXISTS), and what the technician
# does about it.
PAIR_FIXES = {
    oc.NOT_PAIRING: "the lock is not in pairing mode: hold its pairing button until it signals, "
                   "then run hubctl pair again within its pairing window",
    oc.AUTH_FAILED: "the lock refused the setup key: check the setup code printed on this lock "
                   "(--setup-key) and that --addr is this lock",
    oc.UNREACHABLE: "hubd could not connect to the lock: bring the hub (or the bridge) closer or "
                   "check the lock's batteries (hubctl pair --scan shows its signal)",
    oc.BAD_LOCK_MAC: "the lock's answer did not verify: it may not be a genuine reference lock; do "
                    "not use it",
    oc.EXISTS: "hubd already has a pairing for this id or address: choose another name, or "
              "decommission the old pairing first",
    oc.FAILED: "the pairing did not complete (the lock may hold the new secret: pair it again, "
              "in pairing mode): hubctl doctor, then try again",
}
# Where a dKey's fix differs (docs/dkey.md; docs/technician-guide.md, "Pairing a dKey"): it is
# associated with the activation code on its card or leaflet, and bonds only in the activation
# window its owner opens with the button (for a time the lock decides: the simulated dKey's is
# 5 minutes, a real one's is not known here; an association closes it).
DKEY_WINDOW = ("open the lock's activation window (the owner's button on the lock) and run "
               "hubctl pair again at once, while it is open")
DKEY_PAIR_FIXES = {
    oc.NOT_PAIRING: f"the lock refused to bond with the hub: its activation window is closed (or "
                   f"it has no room for another key holder: its owner removes one in the dKey "
                   f"app): {DKEY_WINDOW}",
    oc.NOT_BONDED: f"the lock did not bond with the hub: either its activation window is closed "
                  f"(the likelier: {DKEY_WINDOW}) or the radio lost the lock while bonding (bring "
                  f"the hub closer, hubctl pair --scan shows its signal); the hub's own adapter "
                  f"cannot tell these apart",
    oc.AUTH_FAILED: "the lock refused the activation code: check the 8 characters on this lock's "
                   "card or leaflet (--activation-code) and that --addr is this lock, then run "
                   "hubctl pair again",
    oc.FAILED: f"the association did not complete; the lock may keep a key holder entry for this "
              f"hub that hubd did not record (its owner can remove it in the dKey app): "
              f"{DKEY_WINDOW}, then hubctl doctor if it fails again",
}

# What a bridge's last reset cause (its health's "reset": wire.messages.RESETS) says happened.
RESET_CAUSES = {
    "power_on": "it lost its power (its supply or the USB cable)",
    "hard": "its reset line was pulled (its reset button, a flash tool, or a brown-out)",
    "wdt": "its watchdog reset it: the firmware stopped running (hung)",
    "soft": "its firmware reset itself after an error it could not survive (heap exhausted, or "
            "a task that ended: the bridge's log says which)",
    "deepsleep": "it woke from deep sleep (a bridge never sleeps: a firmware bug)",
    "unknown": "the chip does not say why",
}


def pair_fix(protocol: str, result: str) -> str:
    """What the technician does about a pairing of a ``protocol`` lock that ended in ``result``."""
    if protocol == lockkinds.DKEY and result in DKEY_PAIR_FIXES:
        return DKEY_PAIR_FIXES[result]
    return PAIR_FIXES.get(result, PAIR_FIXES[oc.FAILED])


class _Publisher(Protocol):
    async def publish_acked(self, topic: str, payload: bytes, timeout: float, *,
                            retain: bool = False) -> None: ...


class _Bridge(Protocol):
    @property
    def is_up(self) -> bool: ...
    def send(self, payload: bytes) -> bool: ...
    def on_message(self, kind: str, callback: Callable[[dict[str, Any]], None]) -> None: ...
    def on_link_change(self, callback: Callable[[bool], None]) -> None: ...


class _Alarms(Protocol):
    def pending(self) -> list[Any]: ...


class Commissioning:
    """Serves scan, pair and decommission; one request at a time (one technician, one radio)."""

    def __init__(self, hub_id: str, bridge: _Bridge, locks: dict[str, str],
                 audit: AuditLog, publisher: _Publisher, alarms: _Alarms,
                 clock: Callable[[], float] = time.time, *, drivers: LockDrivers,
                 pairings: Pairings) -> None:
        """``drivers`` and ``pairings``: hubd's lock drivers and its pairings table."""
        self._hub = hub_id
        self._bridge = bridge
        self._drivers = drivers
        self._pairings = pairings
        self._locks = locks
        self._audit = audit
        self._publisher = publisher
        self._alarms = alarms
        self._clock = clock
        self._busy = asyncio.Lock()  # one request at a time, so one waiter for the bridge's answers
        self._answers: asyncio.Queue[dict[str, Any]] | None = None
        bridge.on_message(messages.WIPED, self._heard)
        # The bridge's link and health, to say why a pairing through its proxy failed.
        self._link_downs = 0
        self._health: tuple[float, dict[str, Any]] | None = None  # (monotonic, the last report)
        self._health_heard = asyncio.Event()
        bridge.on_link_change(self._link_changed)
        bridge.on_message(messages.HEALTH, self._bridge_health)

    def handlers(self) -> dict[type, Any]:
        return {control.ScanRequest: self.scan, control.PairRequest: self.pair,
                control.DecommissionRequest: self.decommission}

    def _link_changed(self, up: bool) -> None:
        if not up:
            self._link_downs += 1
            self._health = None  # it described a bridge that is gone

    def _bridge_health(self, msg: dict[str, Any]) -> None:
        self._health = (time.monotonic(), msg)
        self._health_heard.set()

    def _heard(self, msg: dict[str, Any]) -> None:
        if self._answers is None:
            log.warning("the bridge sent %s nobody asked for", msg["m"])
            return
        self._answers.put_nowait(msg)

    async def _exchange(self, payload: bytes, until: Callable[[dict], bool], timeout: float,
                        what: str) -> list[dict[str, Any]]:
        """Send ``payload`` (holding ``_busy``); collect the bridge's answers until one satisfies
        ``until``."""
        assert self._busy.locked()
        self._answers = asyncio.Queue()
        got: list[dict[str, Any]] = []
        downs, started = self._link_downs, time.monotonic()
        try:
            if not self._bridge.send(payload):
                raise control.Refused(LINK_DOWN)
            async with asyncio.timeout(timeout):
                while True:
                    got.append(await self._answers.get())
                    if until(got[-1]):
                        return got
        except TimeoutError:
            # A bridge that went meanwhile is why, as it says once back (it had the time);
            # else one that does not know the request: older firmware.
            gone = await self._bridge_gone(downs, started, lambda _: None, what, back_s=0)
            raise control.Refused(f"the bridge did not answer the {what} within {timeout:g} s: "
                                  + (f"{gone[1]}: hubctl doctor" if gone else
                                     "hubctl doctor (is its firmware current? hubctl flash)")
                                  ) from None
        finally:
            self._answers = None

    def _need_bridge(self) -> None:
        if not self._bridge.is_up:
            raise control.Refused(LINK_DOWN)

    # --- scan ----------------------------------------------------------------------------------

    async def scan(self, request: control.ScanRequest, progress: Callable[[str], None]) -> control.ScanResult:
        """The locks heard within ``seconds`` (through the bridge's proxy or the hub's own
        adapter: hubd.ble.radio), reference locks and dKeys, each named if hubd has paired it;
        the strongest signal first. A dKey's advert says neither its battery nor whether its
        activation window is open (``pairing`` None)."""
        from hubd.locks.sightings import dkey_advert, reference_advert  # bleak: only when hubd drives locks

        radio = self._drivers.radio
        if not radio.is_up:
            raise control.Refused(self._drivers.down_text)
        paired = {p.address: lock for lock, p in self._pairings.all().items()}
        heard: dict[str, control.FoundLock] = {}

        def advert(addr: str, addr_type: int, rssi: int, parsed: Advert, msg: dict[str, Any]) -> None:
            read = reference_advert(parsed)
            if read is not None:
                kind, battery, _, pairing = read
                protocol: str = lockkinds.REFERENCE
            elif dkey_advert(parsed):
                kind, battery, pairing = lockkinds.PROTOCOL_KINDS[lockkinds.DKEY][0], None, None
                protocol = lockkinds.DKEY
            else:
                return  # not a lock hubd drives, or a hostile advert
            name = parsed.local_name if parsed.local_name and len(parsed.local_name) <= messages.MAX_ID \
                else None
            if name is None and addr in heard:  # heard without its scan response (a dKey's name)
                name = heard[addr].name
            heard[addr] = control.FoundLock(addr=addr, addr_type=addr_type, kind=kind, rssi=rssi,
                                            battery=battery, name=name, pairing=pairing,
                                            lock=paired.get(addr), protocol=protocol)

        until = None if request.until is None else request.until.upper()

        def ready() -> bool:  # the lock hubctl pair looks for, heard as it needs it
            found = heard.get(until) if until is not None else None
            return found is not None and (found.pairing is not False or found.lock is not None)

        async with self._busy:
            progress(f"listening for locks for {request.seconds} s ({self._drivers.via})")
            stop = radio.on_advert(advert)
            started = asyncio.get_running_loop().time()
            try:
                # Looking for one lock, a scan of a second at a time, until it is heard: a
                # technician (and the bridge's radio, which connects to nothing while it scans)
                # waits for no more. A scan is the radio's own: it cannot be ended early.
                step = 1 if until is not None else request.seconds
                for _ in range(request.seconds // step):
                    done = await radio.scan(step)
                    if not done.ok:
                        raise control.Refused(f"could not scan ({done.status}): hubctl doctor")
                    if ready():
                        break
            finally:
                stop()
        return control.ScanResult(locks=sorted(heard.values(), key=lambda f: -f.rssi),
                                  listened_s=round(asyncio.get_running_loop().time() - started, 1))

    # --- pair ----------------------------------------------------------------------------------

    async def pair(self, request: control.PairRequest, progress: Callable[[str], None]) -> control.PairResult:
        """Pair through hubd's own driver (a reference lock: PAIR with a fresh secret; a dKey: an
        association with its activation code); the pairing kept, the lock driven at once. A lock
        of [locks] without a pairing (hubd logged it at start) may be paired under its name."""
        from hubd.locks import pairing  # bleak is loaded only when hubd drives the locks
        from hubd.locks.transport import PairedLock

        addr = request.addr.upper()
        if not self._drivers.radio.is_up:
            self._audit_pairing(request, oc.BRIDGE_UNAVAILABLE if self._through_bridge()
                                else oc.UNREACHABLE)
            raise control.Refused(self._drivers.down_text)
        async with self._busy:  # the checks too: one pairing at a time
            other = self._pairings.lock_at(addr)
            if other is not None or request.lock in self._pairings.all():
                self._audit_pairing(request, oc.EXISTS)
                raise control.Refused(f"pairing refused (exists): {PAIR_FIXES[oc.EXISTS]}"
                                      + (f" ({addr} is {other})" if other else ""))
            if self._locks.get(request.lock, request.kind) != request.kind:
                self._audit_pairing(request, oc.EXISTS)
                raise control.Refused(f"[locks] names {request.lock} as {self._locks[request.lock]}, but "
                                      f"the lock at {addr} is {request.kind}: choose another --name, or "
                                      "correct [locks] in hubd.toml and restart hubd")
            dkey = request.protocol == lockkinds.DKEY
            progress(f"pairing the {'dKey' if dkey else request.kind.replace('_', ' ')} at {addr} "
                     f"as {request.lock}")
            downs, started = self._link_downs, time.monotonic()
            if dkey:
                assert request.activation_code is not None  # control.PairRequest's rule
                progress("associating with its activation code (it must be in its activation window)")
                outcome = await pairing.associate(addr, request.addr_type, request.activation_code,
                                                  radio=self._drivers.radio,
                                                  timeout=ASSOCIATE_TIMEOUT_S)
                secret = outcome.association
            else:
                assert request.setup_key is not None
                secret = pairing.new_secret()
                outcome = await pairing.pair(addr, request.addr_type, secret,
                                             bytes.fromhex(request.setup_key),
                                             timeout=PAIR_TIMEOUT_S, radio=self._drivers.radio)
            if outcome.result != pairing.OK or secret is None:
                result, fix = outcome.result, pair_fix(request.protocol, outcome.result)
                if result in (pairing.FAILED, pairing.UNREACHABLE) and self._through_bridge():
                    gone = await self._bridge_gone(downs, started, progress)
                    if gone is not None:  # the lock's answer was lost with the bridge
                        result = gone[0]
                        fix = f"{gone[1]}; {pair_fix(request.protocol, pairing.FAILED)}"
                self._audit_pairing(request, result)
                log.warning("pairing refused", extra={"lock": request.lock, "result": result,
                                                      "why": outcome.why, "protocol": request.protocol})
                raise control.Refused(f"pairing failed ({result}): {fix}")
            paired = PairedLock(request.kind, addr, secret, request.addr_type, request.protocol)
            try:
                self._pairings.record(request.lock, paired)
            except sqlite3.Error as exc:
                self._audit_pairing(request, "store_failed")
                log.error("cannot keep the pairing of %s: %s", request.lock, exc)
                again = (f"the lock keeps a key holder entry for this hub: its owner removes it in "
                         f"the dKey app; then {DKEY_WINDOW}") if dkey else \
                    "put the lock in pairing mode and pair it again"
                raise control.Refused(f"the lock took the new secret but hubd could not keep it "
                                      f"({exc}): free the state directory's disk; {again}") from None
            self._locks[request.lock] = request.kind
            await self._drivers.add(request.lock, paired)  # its device and battery model too
            self._audit.record(lock=request.lock, source=SOURCE, outcome=AuditOutcome.PAIRED,
                               actor=ACTOR, role=Role.TECHNICIAN, action="pair", state=outcome.state,
                               battery=outcome.battery, address=addr)
            log.info("lock paired", extra={"lock": request.lock, "kind": request.kind, "addr": addr,
                                           "protocol": request.protocol})
            held = "an association with hubd" if dkey else "the new secret"
            battery = "battery unknown" if outcome.battery is None else f"battery {outcome.battery} %"
            progress(f"paired: the lock holds {held} ({outcome.state}, {battery}); hubd drives it "
                     "from now on")
            cycle = await self._prove(request.lock, request.kind, progress)
        return control.PairResult(lock=request.lock, kind=request.kind, addr=addr,
                                  state=outcome.state, battery=outcome.battery, cycle=cycle)

    def _audit_pairing(self, request: control.PairRequest, result: str) -> None:
        """A pairing attempt that did not pair, in the audit trail: the name it was to have, the
        lock's address, why."""
        try:
            self._audit.record(lock=request.lock, source=SOURCE, outcome=AuditOutcome.FAILED,
                               actor=ACTOR, role=Role.TECHNICIAN, action="pair", reason=result,
                               address=request.addr.upper())
        except sqlite3.Error as exc:
            log.error("cannot audit the failed pairing of %s: %s", request.lock, exc)

    def _through_bridge(self) -> bool:
        """hubd reaches the locks through the bridge's Bluetooth proxy (not the hub's adapter)."""
        from hubd.ble.proxy import BleProxy  # bleak: only when hubd drives locks

        return isinstance(self._drivers.radio, BleProxy)

    async def _bridge_gone(self, downs: int, started: float, progress: Callable[[str], None],
                           what: str = "pairing", back_s: float | None = None
                           ) -> tuple[str, str] | None:
        """Why the ``what`` with the bridge, begun at ``started`` (monotonic) with ``downs`` link
        downs counted, ended without its answer, if the bridge's link went down meanwhile:
        (reason, what happened), as the bridge's first health report once it is back says (its
        uptime and last reset cause), waited for at most ``back_s`` (default BRIDGE_BACK_S).
        None: the link stayed up, the bridge's going has nothing to do with it."""
        if self._link_downs == downs and self._bridge.is_up:
            return None
        back_s = BRIDGE_BACK_S if back_s is None else back_s
        if self._health is None or not self._bridge.is_up:
            progress(f"the bridge's link went down during the {what}: waiting for the bridge to "
                     "say why")
        try:
            async with asyncio.timeout(back_s):
                while self._health is None or not self._bridge.is_up:  # None since each down
                    self._health_heard.clear()
                    await self._health_heard.wait()
        except TimeoutError:
            return (oc.BRIDGE_UNAVAILABLE,
                    f"the bridge's link went down during the {what} and the bridge has not "
                    f"answered since: check its power and the hub-bridge cable")
        heard_at, health = self._health
        if health["up_s"] <= heard_at - started + 1:
            cause = health["reset"]
            return (oc.BRIDGE_RESTARTED, f"the bridge restarted during the {what} (last reset: "
                                         f"{cause}: {RESET_CAUSES.get(cause, cause)})")
        return (oc.LINK_LOST, f"the link to the bridge went down during the {what}, but the "
                              f"bridge did not restart (up {health['up_s']} s): check the "
                              f"hub-bridge cable")

    async def _prove(self, lock: str, kind: str, progress: Callable[[str], None]) -> list[control.CycleStep]:
        """Operate the lock once each way (ending closed), as the technician, and audit it."""
        actions = ["unlatch"] if kind == lockkinds.ENTRANCE_DOOR else ["unlock", "lock"]
        steps = []
        for action in actions:
            command = f"hubctl-{uuid.uuid4()}"
            progress(f"proving it: {action}")
            result = await self._drivers.locks.operate(lock, action, command, lambda: None, CYCLE_OP_TIMEOUT_S)
            step = control.CycleStep(action=action, status=result.outcome, reason=result.reason,
                                     state=result.state)
            steps.append(step)
            self._audit.record(lock=lock, source=SOURCE, outcome=AuditOutcome(result.outcome),
                               command=command, action=action, actor=ACTOR, role=Role.TECHNICIAN,
                               reason=result.reason, state=result.state, battery=result.battery)
            progress(f"  {action}: {result.outcome}" + (f" ({result.reason})" if result.reason else "")
                     + (f", {result.state}" if result.state else ""))
            if result.outcome != "succeeded":
                break
        return steps

    # --- decommission --------------------------------------------------------------------------

    async def decommission(self, request: control.DecommissionRequest,
                           progress: Callable[[str], None]) -> control.DecommissionResult:
        self._need_bridge()
        pending = len(self._alarms.pending())
        if pending and not request.force:
            raise control.Refused(f"{pending} alarm(s) still wait for the alarm centre: wait until "
                                  "hubctl status shows none, or --force to decommission anyway")
        async with self._busy:
            results: dict[str, str] = {}
            await self._unpair(results, progress)
            progress("bridge: forgetting its bonds and LTE credentials")
            # The bridge restarts on a wipe; the proxy follows the link.
            await self._exchange(messages.make(messages.WIPE), lambda m: m["m"] == messages.WIPED,
                                 WIPE_TIMEOUT_S, "wipe")
            progress("bridge: forgot its bonds and LTE credentials; it restarts")
            notice = Decommissioned(hub=self._hub, at=round(self._clock(), 3), locks=results, by=ACTOR)
            told = True
            try:
                await self._publisher.publish_acked(topics.decommissioned(self._hub),
                                                    notice.model_dump_json().encode(), TELL_TIMEOUT_S,
                                                    retain=True)
                progress(f"backend told: {topics.decommissioned(self._hub)}")
            except PublishFailed as exc:
                told = False
                progress(f"the backend could not be told ({exc}): tell the municipality's operators "
                         "the hub is decommissioned")
            log.info("hub decommissioned", extra={"locks": results, "backend_told": told})
        return control.DecommissionResult(locks=results, backend_told=told)


    async def _unpair(self, results: dict[str, str], progress: Callable[[str], None]) -> None:
        """Each reference lock hubd paired told to forget its secret (UNPAIR with it); the
        pairing forgotten whatever the lock said, so the secret opens nothing any more. A dKey
        cannot be told (the module docstring): hubd forgets its association data and the radio
        its bond (the bridge's wipe deletes every bond again after), ``forgotten_by_hub``. A
        lock of [locks] without a pairing is ``unknown_lock``."""
        from hubd.locks import pairing  # bleak is loaded only when hubd drives the locks

        paired = self._pairings.all()
        for lock in sorted(set(self._locks) | set(paired)):
            p = paired.get(lock)
            if p is None:
                result = "unknown_lock"
            elif p.protocol == lockkinds.DKEY:
                progress(f"{lock}: forgetting its dKey association and its Bluetooth bond")
                await self._drivers.remove(lock)  # after an operation in flight; none after it
                result = control.FORGOTTEN_BY_HUB
                if not await pairing.unbond(p.address, p.addr_type, radio=self._drivers.radio,
                                            timeout=UNBOND_TIMEOUT_S):
                    progress(f"{lock}: the radio could not forget its bond now (the bridge's wipe "
                             "deletes it; on the hub's own adapter: bluetoothctl remove "
                             f"{p.address}); without the association it opens nothing")
            else:
                progress(f"{lock}: telling the lock to forget its secret")
                await self._drivers.remove(lock)  # after an operation in flight; none after it
                result = (await pairing.unpair(p.address, p.addr_type, p.secret,
                                               timeout=UNPAIR_TIMEOUT_S,
                                               radio=self._drivers.radio)).result
            if p is not None:
                try:
                    self._pairings.forget(lock)
                except sqlite3.Error as exc:
                    log.error("cannot forget the pairing of %s: %s", lock, exc)
                    result = "failed"
            results[lock] = result
            self._locks.pop(lock, None)
            self._audit.record(lock=lock, source=SOURCE, outcome=AuditOutcome.UNPAIRED, actor=ACTOR,
                               role=Role.TECHNICIAN, reason=None if result == "ok" else result,
                               address=None if p is None else p.address.upper())
            progress(f"{lock}: {control.unpaired_text(result)}")
