"""Simulated door locks that speak the reference lock protocol (wire/lockproto.py) over the radio.

``ReferenceProtocolLock`` is the protocol side (challenge, command MAC check, RESULT and STATUS,
adverts); a lock kind subclasses it and says which actions its mechanism supports.
``InsideTurnerLock`` is a Danalock-style motor that turns the thumb-turn on the inside of the door.

Tests poke a lock from the radio's loop or another thread: ``turn_manually``, ``in_range``,
``jammed`` and ``drop_link_after_move`` are safe to set at any time.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable

from simulator.radio import FLAG_NOTIFY, FLAG_WRITE, Characteristic, Link, Peripheral, Service
from wire import lockproto as lp

LOW_BATTERY_PERCENT = 5
_RECENT_TAGS = 16


class _Challenge:
    __slots__ = ("nonce", "issued_at", "used")

    def __init__(self, nonce: bytes, issued_at: float) -> None:
        self.nonce = nonce
        self.issued_at = issued_at
        self.used = False


class ReferenceProtocolLock(Peripheral):
    """A peripheral with the reference lock GATT service; subclasses define the mechanism.

    Counters for tests: ``motor_moves`` (motor runs that completed), ``commands`` (list of
    (action, status name) the lock answered), ``state_changes`` (advertised counter).
    """

    kind = "unknown"
    actions: tuple[str, ...] = ("status",)

    def __init__(
        self,
        lock_id: str,
        address: bytes | str,
        secret: bytes,
        *,
        name: str | None = None,
        travel_time_s: float = 0.0,
        battery: int = 100,
        state: str = "locked",
        battery_per_move: float = 0.05,
        idle_timeout_s: float | None = 30.0,
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
        if len(secret) != lp.SECRET_LEN:
            raise ValueError("the lock secret has %d bytes" % lp.SECRET_LEN)
        lp.state_code(state)
        self.lock_id = lock_id
        self.secret = bytes(secret)
        self.travel_time_s = travel_time_s
        self.battery_level = float(battery)
        self.battery_per_move = battery_per_move
        self.state = state
        self.clock = clock
        self.jammed = False
        self.drop_link_after_move = False
        self.motor_moves = 0
        self.state_changes = 0
        self.status_counter = 0
        self.commands: list[tuple[str, str]] = []
        self._challenges: dict[Link, _Challenge] = {}
        self._recent_tags: collections.deque[bytes] = collections.deque(maxlen=_RECENT_TAGS)
        self._motor: asyncio.Task | None = None

    @property
    def battery(self) -> int:
        return max(0, min(100, int(self.battery_level)))

    # --- adverts ------------------------------------------------------------------------------

    def advertising_data(self) -> bytes:
        return lp.encode_advert(self.kind, self.battery, self.state_changes)

    def scan_response(self) -> bytes:
        return lp.encode_scan_response(self.name)

    # --- GATT ---------------------------------------------------------------------------------

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
        else:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
        return 0

    def _on_challenge_request(self, link: Link, data: bytes) -> None:
        try:
            lp.decode_challenge_request(data)
        except lp.ProtocolError:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
            return
        # A new request replaces any outstanding nonce: one live nonce per link.
        challenge = _Challenge(os.urandom(lp.NONCE_LEN), self.clock())
        self._challenges[link] = challenge
        link.notify(self.events, lp.encode_challenge(challenge.nonce))

    def _on_command(self, link: Link, data: bytes) -> None:
        try:
            action, tag, mac = lp.decode_command(data)
        except lp.ProtocolError:
            self._answer(link, bytes(lp.TAG_LEN), lp.STATUS_BAD_REQUEST, "none")
            return
        name = lp.action_name(action)
        challenge = self._challenges.get(link)
        if challenge is None or challenge.used or self._expired(challenge):
            # Burned either way: a nonce never authorises a second attempt.
            if challenge is not None:
                challenge.used = True
            self._answer(link, tag, lp.STATUS_CHALLENGE_EXPIRED, name)
            return
        challenge.used = True
        if not lp.verify_command(self.secret, self.address, challenge.nonce, action, tag, mac):
            self._answer(link, tag, lp.STATUS_AUTH_FAILED, name)
            return
        if name == "status":
            self._answer(link, tag, lp.STATUS_OK, name)
            return
        status = self._refusal(name, tag)
        if status is not None:
            self._answer(link, tag, status, name)
            return
        self._recent_tags.append(tag)
        self._motor = asyncio.get_running_loop().create_task(self._run_motor(link, tag, name))

    def _expired(self, challenge: _Challenge) -> bool:
        return (self.clock() - challenge.issued_at) * 1000 > lp.NONCE_LIFETIME_MS

    def _refusal(self, action: str, tag: bytes) -> int | None:
        if action not in self.actions:
            return lp.STATUS_UNSUPPORTED
        if self._motor is not None and not self._motor.done():
            return lp.STATUS_BUSY
        if tag in self._recent_tags:
            return lp.STATUS_DUPLICATE
        if self.jammed:
            return lp.STATUS_JAMMED
        if self.battery < LOW_BATTERY_PERCENT:
            return lp.STATUS_LOW_BATTERY
        return None

    async def _run_motor(self, link: Link, tag: bytes, action: str) -> None:
        self._set_state("moving")
        if self.travel_time_s:
            await asyncio.sleep(self.travel_time_s)
        self.motor_moves += 1
        self.battery_level = max(0.0, self.battery_level - self.battery_per_move)
        self._set_state(self.target_state(action))
        if self.drop_link_after_move:
            link.disconnect()
            return
        self._answer(link, tag, lp.STATUS_OK, action)

    def _answer(self, link: Link, tag: bytes, status: int, action: str) -> None:
        """Notify a RESULT, MACed over the link's last nonce (zeros if it never asked for one)."""
        self.commands.append((action, lp.status_name(status)))
        challenge = self._challenges.get(link)
        nonce = challenge.nonce if challenge else bytes(lp.NONCE_LEN)
        state = lp.state_code(self.state)
        link.notify(
            self.events,
            lp.encode_result(self.secret, self.address, nonce, tag, status, state, self.battery),
        )

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changes += 1

    # --- poked by tests -----------------------------------------------------------------------

    def target_state(self, action: str) -> str:
        """The state an accepted action leaves the lock in."""
        return {"unlock": "unlocked", "lock": "locked", "unlatch": "unlatched"}[action]

    def turn_manually(self, state: str) -> None:
        """Someone turned the key or thumb-turn: change state and notify connected centrals."""
        lp.state_code(state)
        if self.radio is not None:
            self.radio.call(self._turned, state)
        else:
            self._turned(state)

    def _turned(self, state: str) -> None:
        self._set_state(state)
        self.status_counter += 1
        pdu = lp.encode_status(
            self.secret,
            self.address,
            self.status_counter,
            lp.state_code(state),
            self.battery,
            lp.source_code("manual"),
        )
        for link in list(self.links):
            link.notify(self.events, pdu)


class InsideTurnerLock(ReferenceProtocolLock):
    """Danalock-style inside turner: a motor on the thumb-turn; locks and unlocks, no unlatch."""

    kind = "inside_turner"
    actions = ("status", "unlock", "lock")

    def __init__(
        self,
        lock_id: str,
        address: bytes | str,
        secret: bytes,
        travel_time_s: float = 1.5,
        battery: int = 100,
        state: str = "locked",
        **kwargs,
    ) -> None:
        super().__init__(
            lock_id,
            address,
            secret,
            travel_time_s=travel_time_s,
            battery=battery,
            state=state,
            **kwargs,
        )
