"""Simulated door locks that speak the reference lock protocol (wire/lockproto.py) over the radio.

``ReferenceProtocolLock`` is the protocol side (challenge, command MAC check, RESULT, reports and
their backlog, adverts); each lock kind of ``wire.lockkinds`` subclasses it with its mechanism:

- ``InsideTurnerLock``: a motor on the inside thumb-turn; the key and thumb-turn still work
  (``turn_manually``).
- ``InCylinderLock``: the dKey type; unlock, lock, unlatch (the latch returns after
  ``latch_hold_s``, leaving the door unlocked); the inside handle opens it
  (``open_with_handle``) and it relocks by itself ``relock_delay_s`` after ``close_door``.
- ``KeyBoxLock``: unlock releases the lid, lock latches it; ``open_lid``, ``close_lid``,
  ``take_key``, ``return_key`` are what a visitor does.
- ``EntranceDoorLock``: an electric strike; unlatch releases it for ``release_s``.

Battery: ``set_battery(percent)`` and ``drain_battery(percent)`` change the level; the advert
carries it at once (the bridge sees it on its next scan, without an operation), as do every
STATUS, EVENT and RESULT after it. Each motor run also costs ``battery_per_move``.

Failure knobs, safe to set at any time from the radio's loop (``HomeThread.call``):
``in_range`` (out of range), ``advertising`` (adverts stop; set it True again and they resume),
``response_delay_s`` (a slow lock: every GATT procedure is answered that late; simulator/radio.py),
``held_by_other`` (another central
holds the lock: commands refused ``busy``), ``jammed`` (the motor stalls: ``jammed``, state
``jammed``), ``battery_level`` (below ``LOW_BATTERY_PERCENT`` the lock refuses to move),
``secret`` (re-paired elsewhere: the bridge's MAC fails, ``auth_failed``; None: not paired),
``inject`` (a forged or replayed notification), ``lose_next_result``
(the RESULT after the next move is lost, the link stays up), ``drop_link_after_move`` (the lock
drops the link instead of answering), ``stale_s`` (for that long after a move a ``status`` read
still answers the state from before it, as real locks do).

Pairing (docs/lock-protocol.md, "Pairing"): each lock has a factory ``setup_key`` (random unless
given) and enters pairing mode when the owner holds its button (``press_pairing_button``); the
advert says so. A PAIR sealed with the setup key then gives it a new ``secret``; UNPAIR makes it
forget the secret: ``paired`` is False, every command is ``auth_failed`` and it makes no reports,
while the key, thumb-turn, lid and handle still work. A lock built with ``secret=None`` starts
unpaired.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time
from collections.abc import Callable

from simulator.radio import (FLAG_INDICATE, FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, Characteristic,
                             Link, Peripheral, Service)
from wire import lockkinds
from wire import lockpair
from wire import lockproto as lp
from wire import lockside

LOW_BATTERY_PERCENT = 5
_RECENT_TAGS = 16
REPORT_BACKLOG = 16  # reports a lock keeps for a central that was not connected


class _Challenge:
    __slots__ = ("nonce", "issued_at", "used")

    def __init__(self, nonce: bytes, issued_at: float) -> None:
        self.nonce = nonce
        self.issued_at = issued_at
        self.used = False


def layout_hash(peripheral: Peripheral) -> bytes:
    """16 bytes that change whenever the layout does (the Core spec's is an AES-CMAC over the
    attributes, Vol 3 Part G 7.3.1; any digest of the layout serves the simulation)."""
    layout = repr([(s.start_handle, s.end_handle, str(s.uuid),
                    [(c.value_handle, str(c.uuid), c.properties, c.cccd_handle)
                     for c in s.characteristics]) for s in peripheral.services])
    return hashlib.sha256(layout.encode()).digest()[:16]


class ReferenceProtocolLock(Peripheral):
    """A peripheral with the reference lock GATT service; subclasses define the mechanism.

    What tests read: ``state``, ``motor_moves`` (motor runs that completed), ``moves`` (the
    actions those runs did, in order), ``commands`` (list of (action, status name) the lock
    answered), ``status_counter`` (the latest report number; the advert carries it),
    ``connections`` (links centrals opened), ``state_changes``, ``paired``, ``pairing``.
    """

    kind = "unknown"
    actions: tuple[str, ...] = ("status",)

    def __init__(
        self,
        lock_id: str,
        address: bytes | str,
        secret: bytes | None,
        *,
        setup_key: bytes | None = None,
        name: str | None = None,
        travel_time_s: float = 0.0,
        battery: int = 100,
        state: str = "locked",
        battery_per_move: float = 0.05,
        idle_timeout_s: float | None = 30.0,
        stale_s: float = 0.0,
        rssi: int = -60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = Characteristic(lp.CONTROL_UUID, FLAG_WRITE)
        self.events = Characteristic(lp.EVENT_UUID, FLAG_NOTIFY)
        super().__init__(
            address,
            name or lock_id,
            [Service(lp.SERVICE_UUID, [self.control, self.events])],
            rssi=rssi,
            idle_timeout_s=idle_timeout_s,
        )
        if secret is not None and len(secret) != lp.SECRET_LEN:
            raise ValueError("the lock secret has %d bytes" % lp.SECRET_LEN)
        if setup_key is None:
            setup_key = os.urandom(lp.SECRET_LEN)
        if len(setup_key) != lp.SECRET_LEN:
            raise ValueError("the setup key has %d bytes" % lp.SECRET_LEN)
        lockside.state_code(state)
        self.lock_id = lock_id
        # The pairing secret, kept across connections (the lock's flash); None: not paired.
        self.secret: bytes | None = None if secret is None else bytes(secret)
        self.setup_key = bytes(setup_key)  # printed on the lock (QR code), fixed at the factory
        self._pairing_until: float | None = None
        self.travel_time_s = travel_time_s
        self.battery_level = float(battery)
        self.battery_per_move = battery_per_move
        self.state = state
        self.clock = clock
        self.jammed = False
        self.held_by_other = False
        self.drop_link_after_move = False
        self.lose_next_result = False
        self.stale_s = stale_s
        self.motor_moves = 0
        self.connections = 0
        self.moves: list[str] = []
        self.state_changes = 0
        self.status_counter = 0  # the latest report number (STATUS and EVENT share it)
        self.commands: list[tuple[str, str]] = []
        self._backlog: collections.deque[tuple[int, bytes]] = collections.deque(
            maxlen=REPORT_BACKLOG)
        self._stale_state = state
        self._stale_until = 0.0
        self._challenges: dict[Link, _Challenge] = {}
        self._recent_tags: collections.deque[bytes] = collections.deque(maxlen=_RECENT_TAGS)
        self._motor: asyncio.Task | None = None

    @property
    def battery(self) -> int:
        return max(0, min(100, int(self.battery_level)))

    def set_battery(self, percent: float) -> None:
        """The battery is now at ``percent`` (0..100)."""
        self.battery_level = max(0.0, min(100.0, float(percent)))

    def drain_battery(self, percent: float) -> None:
        """The battery loses ``percent`` points (never below empty)."""
        self.set_battery(self.battery_level - percent)

    # --- pairing ------------------------------------------------------------------------------

    @property
    def paired(self) -> bool:
        """The lock holds a secret (it obeys commands MACed with it)."""
        return self.secret is not None

    @property
    def pairing(self) -> bool:
        """The lock is in pairing mode: it accepts a PAIR sealed with its setup key."""
        if self._pairing_until is None:
            return False
        if self.clock() >= self._pairing_until:
            self._pairing_until = None
            return False
        return True

    def press_pairing_button(self, window_s: float = 120.0) -> None:
        """The owner holds the lock's button: pairing mode for ``window_s`` (or until a PAIR)."""
        self._pairing_until = self.clock() + window_s

    def _take_secret(self, secret: bytes | None) -> None:
        """Replace (or, with None, forget) the secret; reports MACed with the old one are void."""
        self.secret = secret
        self._backlog.clear()

    # --- adverts ------------------------------------------------------------------------------

    def advertising_data(self) -> bytes:
        return lockside.encode_advert(self.kind, self.battery, self.status_counter, self.pairing)

    def scan_response(self) -> bytes:
        return lockside.encode_scan_response(self.name)

    # --- GATT ---------------------------------------------------------------------------------

    def on_connect(self, link: Link) -> None:
        self.connections += 1

    def on_disconnect(self, link: Link) -> None:
        self._challenges.pop(link, None)

    def on_write(self, link: Link, characteristic: Characteristic, data: bytes) -> int:
        if characteristic is not self.control:
            return 0x03  # write not permitted
        try:
            op = lp.opcode(data)
        except lp.ProtocolError:
            return 0x0D  # invalid attribute value length
        if op == lp.OP_CHALLENGE_REQUEST:
            self._on_challenge_request(link, data)
        elif op == lp.OP_COMMAND:
            self._on_command(link, data)
        elif op == lp.OP_READ_REPORTS:
            self._on_read_reports(link, data)
        elif op == lockpair.OP_PAIR:
            self._on_pair(link, data)
        elif op == lockpair.OP_UNPAIR:
            self._on_unpair(link, data)
        else:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
        return 0

    def _on_challenge_request(self, link: Link, data: bytes) -> None:
        try:
            lockside.decode_challenge_request(data)
        except lp.ProtocolError:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
            return
        # A new request replaces any outstanding nonce: one live nonce per link.
        challenge = _Challenge(os.urandom(lp.NONCE_LEN), self.clock())
        self._challenges[link] = challenge
        link.notify(self.events, lockside.encode_challenge(challenge.nonce))

    def _on_read_reports(self, link: Link, data: bytes) -> None:
        try:
            after = lockside.decode_read_reports(data)
        except lp.ProtocolError:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
            return
        if self.secret is None:
            # Nothing to MAC a REPORTS_END with: refused like a command.
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_AUTH_FAILED, "read_reports")
            return
        for counter, pdu in list(self._backlog):
            if counter > after:
                link.notify(self.events, pdu)
        challenge = self._challenges.get(link)
        nonce = challenge.nonce if challenge else bytes(lp.NONCE_LEN)
        link.notify(self.events,
                    lockside.encode_reports_end(self.secret, self.address, nonce, self.status_counter))

    def _on_command(self, link: Link, data: bytes) -> None:
        try:
            action, tag, mac = lockside.decode_command(data)
        except lp.ProtocolError:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
            return
        name = lp.action_name(action)
        challenge = self._spend_nonce(link, tag, name)
        if challenge is None:
            return
        if self.secret is None or not lockside.verify_command(
                self.secret, self.address, challenge.nonce, action, tag, mac):
            self._answer(link, tag, lp.STATUS_AUTH_FAILED, name)
            return
        if name == "status":
            self._answer(link, tag, lp.STATUS_OK, name, self._readable_state())
            return
        status = self._refusal(name, tag)
        if status is not None:
            self._answer(link, tag, status, name)
            return
        self._recent_tags.append(tag)
        self._motor = self._spawn(self._run_motor(link, tag, name))

    def _spend_nonce(self, link: Link, tag: bytes, name: str) -> _Challenge | None:
        """The link's live nonce, now spent; None (after answering challenge_expired) if none."""
        challenge = self._challenges.get(link)
        if challenge is None or challenge.used or self._expired(challenge):
            # Burned either way: a nonce never authorises a second attempt.
            if challenge is not None:
                challenge.used = True
            self._answer(link, tag, lp.STATUS_CHALLENGE_EXPIRED, name)
            return None
        challenge.used = True
        return challenge

    def _on_pair(self, link: Link, data: bytes) -> None:
        if len(data) != lockpair.PAIR_LEN:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "pair")
            return
        challenge = self._spend_nonce(link, lockpair.PAIR_TAG, "pair")
        if challenge is None:
            return
        if not self.pairing:
            self._answer(link, lockpair.PAIR_TAG, lockpair.STATUS_NOT_PAIRING, "pair")
            return
        secret = lockpair.open_pair(self.setup_key, self.address, challenge.nonce, data)
        if secret is None:
            self._answer(link, lockpair.PAIR_TAG, lp.STATUS_AUTH_FAILED, "pair")
            return
        self._take_secret(secret)
        self._pairing_until = None
        # MACed with the new secret: the central learns the lock holds it.
        self._answer(link, lockpair.PAIR_TAG, lp.STATUS_OK, "pair")

    def _on_unpair(self, link: Link, data: bytes) -> None:
        if len(data) != lockpair.UNPAIR_LEN:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "unpair")
            return
        challenge = self._spend_nonce(link, lockpair.UNPAIR_TAG, "unpair")
        if challenge is None:
            return
        if self.secret is None or not lockpair.verify_unpair(
                self.secret, self.address, challenge.nonce, data):
            self._answer(link, lockpair.UNPAIR_TAG, lp.STATUS_AUTH_FAILED, "unpair")
            return
        # The RESULT is MACed with the secret it is about to forget, then the secret is gone.
        self._answer(link, lockpair.UNPAIR_TAG, lp.STATUS_OK, "unpair")
        self._take_secret(None)

    def _expired(self, challenge: _Challenge) -> bool:
        return (self.clock() - challenge.issued_at) * 1000 > lp.NONCE_LIFETIME_MS

    def _readable_state(self) -> str:
        """What a status read reports: right after a move, the state from before it."""
        if self.clock() < self._stale_until:
            return self._stale_state
        return self.state

    def _refusal(self, action: str, tag: bytes) -> int | None:
        if action not in self.actions:
            return lp.STATUS_UNSUPPORTED
        if self.held_by_other or (self._motor is not None and not self._motor.done()):
            return lp.STATUS_BUSY
        if tag in self._recent_tags:
            return lp.STATUS_DUPLICATE
        if self.battery < LOW_BATTERY_PERCENT:
            return lp.STATUS_LOW_BATTERY
        return None

    async def _run_motor(self, link: Link, tag: bytes, action: str) -> None:
        before = self.state
        self._set_state("moving")
        if self.travel_time_s:
            await asyncio.sleep(self.travel_time_s)
        self.battery_level = max(0.0, self.battery_level - self.battery_per_move)
        if self.jammed:
            # The motor stalls against the blocked bolt and gives up; nothing moved.
            self._set_state("jammed")
            self._answer(link, tag, lp.STATUS_JAMMED, action)
            return
        self.motor_moves += 1
        self.moves.append(action)
        self._set_state(self.target_state(action))
        if self.stale_s:
            self._stale_state = before
            self._stale_until = self.clock() + self.stale_s
        if self.drop_link_after_move:
            link.disconnect()
        elif self.lose_next_result:
            self.lose_next_result = False
            self.commands.append((action, "ok (lost)"))
        else:
            self._answer(link, tag, lp.STATUS_OK, action)
        # The motor is still busy with what follows (a latch held, then released).
        await self.after_move(action)

    def _answer(self, link: Link, tag: bytes, status: int, action: str,
                state: str | None = None) -> None:
        """Notify a RESULT, MACed over the link's last nonce (zeros if it never asked for one)."""
        self.commands.append((action, lp.status_name(status)))
        challenge = self._challenges.get(link)
        nonce = challenge.nonce if challenge else bytes(lp.NONCE_LEN)
        code = lockside.state_code(state or self.state)
        if self.secret is None:
            pdu = lockpair.result_without_secret(status, code, self.battery)
        else:
            pdu = lockside.encode_result(self.secret, self.address, nonce, tag, status, code,
                                   self.battery)
        link.notify(self.events, pdu)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changes += 1

    # --- reports ------------------------------------------------------------------------------

    def _publish(self, pdu: bytes) -> None:
        """Number, keep and notify a report (the caller checked that the lock has a secret)."""
        self._backlog.append((self.status_counter, pdu))
        for link in list(self.links):
            link.notify(self.events, pdu)

    def report_state(self, state: str, source: str) -> None:
        """The state changed without a command: set it and report it (STATUS)."""
        self._set_state(state)
        self._stale_until = 0.0
        if self.secret is None:
            return  # not paired: nothing to MAC a report with, and nobody to tell
        self.status_counter += 1
        self._publish(lockside.encode_status(
            self.secret, self.address, self.status_counter, lockside.state_code(state), self.battery,
            lockside.source_code(source)))

    def report_event(self, event: str, source: str) -> None:
        """Something happened that is not a state (EVENT): a key taken, a door opened."""
        if self.secret is None:
            return
        self.status_counter += 1
        self._publish(lockside.encode_event(
            self.secret, self.address, self.status_counter, lockside.event_code(event),
            lockside.source_code(source), lockside.state_code(self.state), self.battery))

    def inject(self, pdu: bytes) -> None:
        """Notify ``pdu`` to connected centrals as if the lock sent it (a forger on the air)."""
        def send() -> None:
            for link in list(self.links):
                link.notify(self.events, pdu)

        self._on_loop(send)

    def update_firmware(self, *, gatt_service: bool = False, database_hash: bool = True,
                        device_information: bool = True, revision: str = "2") -> None:
        """A firmware update that moves the lock's handles: a Device Information service (0x180A)
        with the firmware revision (0x2A26, read only) comes before the lock's own service, so
        every handle of that service moves. With ``gatt_service``, the GATT service (0x1801)
        first, with Service Changed (0x2A05, indicate) and a Database Hash (0x2B2A) of the new
        layout, as the Core spec asks of a server whose database can change (Vol 3 Part G,
        2.5.2, 7.3); without it the lock breaks the spec as a careless vendor's might.
        ``database_hash`` False: Service Changed alone (a pre-5.1 server). ``device_information``
        False leaves that service out (another layout). Like an update, it reboots: its links
        drop."""
        def update() -> None:
            services = []
            hashed = Characteristic(0x2B2A, FLAG_READ)
            if gatt_service:
                services.append(Service(0x1801, [Characteristic(0x2A05, FLAG_INDICATE)]
                                        + ([hashed] if database_hash else [])))
            if device_information:
                services.append(Service(0x180A, [Characteristic(0x2A26, FLAG_READ,
                                                                revision.encode())]))
            services.append(Service(lp.SERVICE_UUID, [self.control, self.events]))
            self.change_database(services)
            hashed.value = layout_hash(self)

        self._on_loop(update)

    def _on_loop(self, fn: Callable, *args) -> None:
        if self.radio is not None:
            self.radio.call(fn, *args)
        else:
            fn(*args)

    async def _later(self, delay_s: float, fn: Callable, *args) -> None:
        await asyncio.sleep(delay_s)
        fn(*args)

    def _spawn(self, coro) -> asyncio.Task:
        """A task on the radio's loop, cancelled when the radio stops."""
        if self.radio is not None:
            return self.radio.spawn(coro)
        return asyncio.get_running_loop().create_task(coro)

    def _schedule(self, delay_s: float, fn: Callable, *args) -> None:
        """Run ``fn`` after ``delay_s`` on the radio's loop."""
        self._spawn(self._later(delay_s, fn, *args))

    # --- what a kind defines ------------------------------------------------------------------

    def target_state(self, action: str) -> str:
        """The state an accepted action leaves the lock in."""
        return {"unlock": "unlocked", "lock": "locked", "unlatch": "unlatched"}[action]

    async def after_move(self, action: str) -> None:
        """What the mechanism does after the RESULT, while it still counts as busy."""


class InsideTurnerLock(ReferenceProtocolLock):
    """Danalock-style inside turner: a motor on the thumb-turn; locks and unlocks, no unlatch."""

    kind = lockkinds.INSIDE_TURNER
    actions = lockkinds.ACTIONS[lockkinds.INSIDE_TURNER]

    def __init__(self, lock_id: str, address: bytes | str, secret: bytes | None,
                 travel_time_s: float = 1.5, battery: int = 100, state: str = "locked",
                 **kwargs) -> None:
        super().__init__(lock_id, address, secret, travel_time_s=travel_time_s,
                         battery=battery, state=state, **kwargs)

    def turn_manually(self, state: str) -> None:
        """Someone turned the key or thumb-turn: change state and report it (source manual)."""
        lockside.state_code(state)
        self._on_loop(self.report_state, state, lockkinds.SOURCE_MANUAL)


class InCylinderLock(ReferenceProtocolLock):
    """dKey-style lock in the cylinder: unlock, lock, unlatch; the handle opens, it relocks."""

    kind = lockkinds.IN_CYLINDER
    actions = lockkinds.ACTIONS[lockkinds.IN_CYLINDER]

    def __init__(self, lock_id: str, address: bytes | str, secret: bytes | None,
                 travel_time_s: float = 1.0, latch_hold_s: float = 3.0,
                 relock_delay_s: float = 2.0, **kwargs) -> None:
        super().__init__(lock_id, address, secret, travel_time_s=travel_time_s, **kwargs)
        self.latch_hold_s = latch_hold_s
        self.relock_delay_s = relock_delay_s
        self.door_open = False

    async def after_move(self, action: str) -> None:
        if action == "unlatch":
            await asyncio.sleep(self.latch_hold_s)
            # The latch springs back; the bolt stays retracted: unlocked until the door closes.
            self.report_state("unlocked", lockkinds.SOURCE_AUTO)

    def open_with_handle(self) -> None:
        """Someone inside presses the handle: the lock retracts and the door opens."""
        self._on_loop(self._opened_with_handle)

    def _opened_with_handle(self) -> None:
        if self.state != "unlocked":
            self.report_state("unlocked", lockkinds.SOURCE_HANDLE)
        self.door_open = True
        self.report_event("door_opened", lockkinds.SOURCE_HANDLE)

    def open_door(self) -> None:
        """The door is pushed open from outside (it must be unlocked or unlatched)."""
        self._on_loop(self._opened)

    def _opened(self) -> None:
        if self.state in ("unlocked", "unlatched"):
            self.door_open = True
            self.report_event("door_opened", lockkinds.SOURCE_MANUAL)

    def close_door(self) -> None:
        """The door shuts; the lock relocks itself ``relock_delay_s`` later."""
        self._on_loop(self._closed)

    def _closed(self) -> None:
        self.door_open = False
        self.report_event("door_closed", lockkinds.SOURCE_MANUAL)
        self._schedule(self.relock_delay_s, self._relock)

    def _relock(self) -> None:
        if not self.door_open and self.state != "locked":
            self.report_state("locked", lockkinds.SOURCE_AUTO)


class KeyBoxLock(ReferenceProtocolLock):
    """An electronic key box holding a copy of the house key: unlock releases the lid."""

    kind = lockkinds.KEY_BOX
    actions = lockkinds.ACTIONS[lockkinds.KEY_BOX]

    def __init__(self, lock_id: str, address: bytes | str, secret: bytes | None,
                 travel_time_s: float = 0.5, **kwargs) -> None:
        super().__init__(lock_id, address, secret, travel_time_s=travel_time_s, **kwargs)
        self.lid_open = False
        self.key_inside = True

    def open_lid(self) -> None:
        """A visitor lifts the lid; only a released (unlocked) box opens."""
        self._on_loop(self._lid, True)

    def close_lid(self) -> None:
        self._on_loop(self._lid, False)

    def _lid(self, opened: bool) -> None:
        if opened == self.lid_open or (opened and self.state != "unlocked"):
            return
        self.lid_open = opened
        self.report_event("box_opened" if opened else "box_closed", lockkinds.SOURCE_MANUAL)

    def take_key(self) -> None:
        self._on_loop(self._key, False)

    def return_key(self) -> None:
        self._on_loop(self._key, True)

    def _key(self, inside: bool) -> None:
        if inside == self.key_inside or not self.lid_open:
            return
        self.key_inside = inside
        self.report_event("key_returned" if inside else "key_taken", lockkinds.SOURCE_MANUAL)


class EntranceDoorLock(ReferenceProtocolLock):
    """The electric strike of a building's shared entrance door: unlatch only, then it relocks."""

    kind = lockkinds.ENTRANCE_DOOR
    # Mains-powered (the strike's controller): it can afford to advertise more often than a
    # battery lock's 1 s (docs/ble-timing.md; an assumption).
    adv_interval_s = 0.2
    actions = lockkinds.ACTIONS[lockkinds.ENTRANCE_DOOR]

    def __init__(self, lock_id: str, address: bytes | str, secret: bytes | None,
                 travel_time_s: float = 0.1, release_s: float = 3.0, **kwargs) -> None:
        kwargs.setdefault("battery_per_move", 0.0)  # mains powered
        super().__init__(lock_id, address, secret, travel_time_s=travel_time_s, **kwargs)
        self.release_s = release_s

    async def after_move(self, action: str) -> None:
        await asyncio.sleep(self.release_s)
        self.report_state("locked", lockkinds.SOURCE_AUTO)
