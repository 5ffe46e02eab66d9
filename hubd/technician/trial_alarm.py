"""hubctl test-alarm: a test alarm from the bridge to the alarm centre, through every hop, watched.

    tests = TrialAlarms(bridge, alarms, health)     # before the link can deliver anything
    handlers = {control.TestAlarmRequest: tests.handle, ...}   # hubd/technician/status_socket.py

hubd sends the bridge ``test_alarm`` with a fresh ref; the bridge journals a ``test`` alarm and
sends it back as an ``alarm`` whose device is that ref, which is how hubd recognises it. From
there it is an alarm like any other (hubd/alarms/delivery.py): stored, published on ``alarms/raised``
marked ``test``, resent until the centre handles it. With ``second_path`` the bridge also sends it
over LTE at once, and its ``alarm_lte`` result is awaited too. Each hop is a progress line; the
wait is bounded by the request's ``timeout_s`` and a refusal names what did not answer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hubapi.models import HubStatus
from hubd.technician import control
from hubd.alarms.delivery import Alarms
from hubd.devices.health import Health
from wire import alarms as vocabulary
from wire import messages

log = logging.getLogger(__name__)

#: How often the alarm store is read for the centre's "handled" while waiting.
POLL_S = 0.2
#: The bridge journals a test alarm within milliseconds; this allows a busy link.
BRIDGE_ANSWER_S = 10.0


class _Bridge(Protocol):
    @property
    def is_up(self) -> bool: ...

    def on_message(self, kind: str, callback: Callable[[dict[str, Any]], None]) -> None: ...

    def send(self, payload: bytes) -> bool: ...


@dataclass
class _Watch:
    """What the bridge said so far about one test alarm."""

    journaled: asyncio.Future[str]  # its alarm id
    # The second path's result, and when it came (perhaps before the primary path's "handled").
    lte: asyncio.Future[tuple[str, float]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class TrialAlarms:
    """Runs technicians' test alarms; ``handle`` is the local socket's ``test_alarm`` handler."""

    __test__ = False  # not a pytest class, despite its name

    def __init__(self, bridge: _Bridge, alarms: Alarms, health: Health,
                 clock: Callable[[], float] = time.time) -> None:
        self._bridge = bridge
        self._alarms = alarms
        self._health = health
        self._clock = clock
        self._by_ref: dict[str, _Watch] = {}
        self._by_id: dict[str, _Watch] = {}
        # After hubd/alarms/delivery.py's own listener (registered first): the alarm is stored when heard.
        bridge.on_message(messages.ALARM, self._alarm)
        bridge.on_message(messages.ALARM_LTE, self._alarm_lte)

    def _alarm(self, msg: dict[str, Any]) -> None:
        watch = self._by_ref.get(msg["device"])
        if watch is not None and msg["event"] == vocabulary.TEST and not watch.journaled.done():
            self._by_id[msg["id"]] = watch
            watch.journaled.set_result(msg["id"])

    def _alarm_lte(self, msg: dict[str, Any]) -> None:
        watch = self._by_id.get(msg["id"])
        if watch is not None and not watch.lte.done():
            watch.lte.set_result((msg["result"], self._clock()))

    async def handle(self, request: control.TestAlarmRequest,
                     progress: Callable[[str], None]) -> control.TestAlarmResult:
        """Send a test alarm and wait for the centre's "handled" (and the LTE result); raises
        :class:`control.Refused` naming the hop that did not answer, and its fix."""
        self._check(self._health.snapshot(), request.second_path)
        ref = f"hubctl-test-{secrets.token_hex(3)}"
        watch = _Watch(asyncio.get_running_loop().create_future())
        self._by_ref[ref] = watch
        try:
            return await self._run(request, ref, watch, progress)
        finally:
            del self._by_ref[ref]
            self._by_id = {k: v for k, v in self._by_id.items() if v is not watch}

    @staticmethod
    def _check(snap: HubStatus, second_path: bool) -> None:
        if not snap.bridge.link_up:
            raise control.Refused("the bridge link is down, so no alarm can reach the bridge: "
                                  "hubctl doctor names why (USB cable, bridge power)")
        health = snap.bridge.health
        if health is None:
            raise control.Refused("the bridge has not reported its health since the link came "
                                  "up: try again in a few seconds (hubctl status shows it)")
        if health.unit is None:
            raise control.Refused("this bridge has no alarm unit (no alarm_unit in its "
                                  "bridge.json), so it carries no alarms: hubctl provision writes "
                                  "the section; copy it with hubctl flash --resume")
        if second_path and health.lte is None:
            raise control.Refused("this bridge has no second path (no lte in its bridge.json): "
                                  "hubctl provision --dc09-receiver HOST:PORT --alarm-account ... "
                                  "--apn ..., then hubctl flash --resume; or leave out "
                                  "--second-path")

    async def _run(self, request: control.TestAlarmRequest, ref: str, watch: _Watch,
                   progress: Callable[[str], None]) -> control.TestAlarmResult:
        started = self._clock()
        deadline = time.monotonic() + request.timeout_s
        if not self._bridge.send(messages.make(messages.TEST_ALARM, ref, request.second_path)):
            raise control.Refused("the bridge link did not take the request (down or busy): "
                                  "try again; hubctl doctor if it goes on")
        progress(f"test alarm {ref} sent to the bridge"
                 f"{' (also over LTE at once)' if request.second_path else ''}")
        try:
            alarm_id = await asyncio.wait_for(asyncio.shield(watch.journaled), BRIDGE_ANSWER_S)
        except TimeoutError:
            raise control.Refused(f"the bridge did not journal the test alarm within "
                                  f"{BRIDGE_ANSWER_S:g} s (its alarm journal may be full, or its "
                                  "firmware too old for test alarms): hubctl status shows its "
                                  "journal depth and firmware") from None
        progress(f"journaled by the bridge as {alarm_id}")
        row = self._alarms.get(alarm_id)
        if row is None:
            raise control.Refused(f"hubd could not store test alarm {alarm_id} (the bridge keeps "
                                  "it and its second path will carry it): journalctl -u hubd "
                                  "says why")
        progress("stored in hubd's outbox")
        handled_s = await self._handled(alarm_id, started, deadline, request.timeout_s, progress)
        lte: str | None = None
        lte_s: float | None = None
        if request.second_path:
            lte, lte_s = await self._second_path(watch, alarm_id, started, deadline, request.timeout_s,
                                                 handled_s)
            progress(f"second path (LTE, SIA DC-09): {lte} after {lte_s:.1f} s")
        log.info("test alarm %s handled after %.1f s%s", alarm_id, handled_s,
                 f", LTE {lte} after {lte_s:.1f} s" if lte_s is not None else "",
                 extra={"alarm": alarm_id, "lte": lte})
        return control.TestAlarmResult(alarm_id=alarm_id, primary="handled",
                                       primary_s=round(handled_s, 1), second_path=lte,
                                       second_path_s=None if lte_s is None else round(lte_s, 1))

    async def _handled(self, alarm_id: str, started: float, deadline: float, timeout_s: int,
                       progress: Callable[[str], None]) -> float:
        while True:
            row = self._alarms.get(alarm_id)
            if row is not None and row["handled_at"] is not None:
                handled_s = max(0.0, row["handled_at"] - started)
                progress(f"handled by the alarm centre after {handled_s:.1f} s")
                return float(handled_s)
            if time.monotonic() >= deadline:
                published = row is not None and row["attempts"] > 0
                where = ("published it" if published else
                         "could not publish it yet (is hubd connected to the broker?)")
                raise control.Refused(
                    f"the alarm centre did not handle test alarm {alarm_id} within {timeout_s} s "
                    f"(hubd {where} and keeps resending it until the centre confirms it): check "
                    "the broker and the alarm centre's connection: hubctl doctor")
            await asyncio.sleep(POLL_S)

    @staticmethod
    async def _second_path(watch: _Watch, alarm_id: str, started: float, deadline: float,
                           timeout_s: int, handled_s: float) -> tuple[str, float]:
        primary = f"the alarm centre handled test alarm {alarm_id} after {handled_s:.1f} s, but"
        try:
            result, at = await asyncio.wait_for(asyncio.shield(watch.lte),
                                                max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise control.Refused(f"{primary} the second path (LTE, SIA DC-09) did not answer "
                                  f"within {timeout_s} s: check LTE coverage, antenna and SIM, "
                                  "and the DC-09 receiver: hubctl doctor") from None
        lte_s = max(0.0, at - started)
        if result == "ack":
            return result, lte_s
        why = {"nak": "the DC-09 receiver refused it (NAK): check the alarm account and key "
                      "(hubctl provision --alarm-account, --dc09-key-file)",
               "duh": "the DC-09 receiver did not understand it (DUH): check the alarm account "
                      "and the receiver number (hubctl provision --alarm-account, "
                      "--dc09-receiver-number)",
               }.get(result, "the second path (LTE, SIA DC-09) gave up before the receiver "
                             "answered: check LTE coverage, antenna and SIM, and the DC-09 "
                             "receiver: hubctl doctor")
        raise control.Refused(f"{primary} over LTE {why}")
