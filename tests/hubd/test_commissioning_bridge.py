"""What hubd tells the technician when a pairing through the bridge's proxy lost the lock's
answer with the bridge (hubd.technician.commissioning, issue 18): it judges by the bridge's own
word once it is back, its first health report (uptime, last reset cause). The real bridge
restarting at the lock's PAIR is in tests/hubctl/test_hubctl_pair.py; here the cases a real
bridge makes only slowly or not on demand: a link that went down without a restart (a cable),
a bridge that does not come back, the reset causes a restart is named with, and the same
judgement for a request the bridge answers itself (decommission's wipe) that timed out.

The bridge here is a stand-in for hubd's Bridge at its edge (its link changes and its health
messages, as hubd.link.bridge dispatches them); nothing else of Commissioning is reached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from hubd.technician import commissioning, control
from hubd.technician.commissioning import Commissioning
from wire import messages


class Bridge:
    """hubd's Bridge as Commissioning hears it: link changes and health messages, fed by the test."""

    def __init__(self) -> None:
        self.is_up = True
        self._link: list[Callable[[bool], None]] = []
        self._messages: dict[str, list[Callable[[dict[str, Any]], None]]] = {}

    def send(self, payload: bytes) -> bool:
        return self.is_up  # taken; it never answers here

    def on_link_change(self, callback: Callable[[bool], None]) -> None:
        self._link.append(callback)

    def on_message(self, kind: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self._messages.setdefault(kind, []).append(callback)

    def link(self, up: bool) -> None:
        self.is_up = up
        for callback in self._link:
            callback(up)

    def health(self, up_s: int, reset: str) -> None:
        for callback in self._messages[messages.HEALTH]:
            callback({"m": messages.HEALTH, "up_s": up_s, "reset": reset})


def commissioning_on(bridge: Bridge) -> Commissioning:
    unused: Any = None  # the pairing's other parts: not reached by the bridge's judgement
    return Commissioning("hub-1", bridge, {}, unused, unused, unused, drivers=unused, pairings=unused)


def test_a_pairing_is_judged_by_the_bridge_s_word_once_it_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    async def walk() -> None:
        bridge = Bridge()
        c = commissioning_on(bridge)
        said: list[str] = []

        # The link stayed up: the bridge has nothing to do with the failure.
        started, downs = time.monotonic() - 10, c._link_downs  # the pairing began 10 s ago
        assert await c._bridge_gone(downs, started, said.append) is None and said == []

        # Down and back, the bridge up 2 s: it restarted during the pairing, its firmware reset it.
        bridge.link(False)
        gone = asyncio.create_task(c._bridge_gone(downs, started, said.append))
        await asyncio.sleep(0)
        assert not gone.done() and "waiting for the bridge to say why" in said[-1]
        bridge.link(True)
        await asyncio.sleep(0)
        assert not gone.done(), "the link alone does not say why: its health does"
        bridge.health(2, "soft")
        reason, why = await gone
        assert reason == "bridge_restarted"
        assert why.startswith("the bridge restarted during the pairing (last reset: soft: its "
                              "firmware reset itself"), why

        # Down and back, the bridge up for an hour: no restart, the link (the cable) went.
        started, downs = time.monotonic() - 10, c._link_downs
        bridge.link(False)
        bridge.link(True)
        bridge.health(3600, "power_on")
        reason, why = await c._bridge_gone(downs, started, said.append)
        assert reason == "link_lost" and "did not restart (up 3600 s)" in why and "cable" in why

        # Down and not back in time.
        monkeypatch.setattr(commissioning, "BRIDGE_BACK_S", 0.2)
        started, downs = time.monotonic(), c._link_downs
        bridge.link(False)
        reason, why = await c._bridge_gone(downs, started, said.append)
        assert reason == "bridge_unavailable" and "has not answered since" in why, why

    asyncio.run(walk())


def test_a_request_to_the_bridge_that_timed_out_names_a_restart_meanwhile() -> None:
    """The technician's requests the bridge answers itself (decommission's wipe): a timeout says
    the bridge restarted meanwhile, with its reset cause, when it did; "is its firmware
    current?" only when it did not go."""
    async def ask(restart: bool) -> str:
        bridge = Bridge()
        c = commissioning_on(bridge)
        if restart:
            asyncio.get_running_loop().call_later(
                0.05, lambda: (bridge.link(False), bridge.link(True), bridge.health(0, "wdt")))
        async with c._busy:
            with pytest.raises(control.Refused) as refused:
                await c._exchange(messages.make(messages.WIPE), lambda m: m["m"] == messages.WIPED,
                                  0.5, "wipe")
        return str(refused.value)

    said = asyncio.run(ask(restart=True))
    assert said.startswith("the bridge did not answer the wipe within 0.5 s: the bridge restarted "
                           "during the wipe (last reset: wdt: its watchdog reset it"), said
    assert "firmware current" not in said
    said = asyncio.run(ask(restart=False))
    assert "is its firmware current? hubctl flash" in said, said


def test_every_reset_cause_the_bridge_reports_has_its_meaning() -> None:
    """A restart is named with the bridge's last reset cause (the link's health vocabulary,
    wire.messages.RESETS): a new cause without a meaning here would be shown bare."""
    assert set(commissioning.RESET_CAUSES) == set(messages.RESETS)


def test_the_wait_for_the_bridge_fits_in_hubctl_s_wait() -> None:
    """The longest pairing (a dKey's association) and then the wait for the bridge to come back
    must end before hubctl gives up on hubd ("hubd did not answer ... it may be hung"), and the
    wait must outlast a hung bridge's watchdog (firmware/config.py HEALTH wdt_ms) and a boot."""
    from firmware import config

    longest = max(commissioning.PAIR_TIMEOUT_S, commissioning.ASSOCIATE_TIMEOUT_S)
    assert longest + commissioning.BRIDGE_BACK_S < control.COMMISSIONING_WAIT_S
    assert commissioning.BRIDGE_BACK_S >= config.HEALTH["wdt_ms"] / 1000 + 5


def test_every_way_a_pairing_ends_has_the_fix_of_its_protocol() -> None:
    # One vocabulary (wire.outcomes.PAIR_RESULTS, and EXISTS for a refusal before the lock):
    # hubd's pairing reports in it, and the technician hears a fix for each word but ok, the
    # one for its own protocol where a dKey's differs, never the catch-all "failed" one for a
    # word that has its own.
    from hubd.locks import pairing
    from wire import lockkinds
    from wire import outcomes as oc

    assert pairing.PAIR_RESULTS == oc.PAIR_RESULTS and pairing.UNPAIR_RESULTS == oc.UNPAIR_RESULTS
    assert set(oc.UNPAIR_RESULTS) <= set(oc.PAIR_RESULTS)
    ends = [r for r in oc.PAIR_RESULTS if r != oc.PAIRED] + [oc.EXISTS]
    assert set(commissioning.PAIR_FIXES) == set(ends) - {oc.NOT_BONDED}  # a dKey's alone
    assert set(commissioning.DKEY_PAIR_FIXES) <= set(ends)
    for protocol in lockkinds.PROTOCOLS:
        fixes = commissioning.DKEY_PAIR_FIXES if protocol == lockkinds.DKEY else {}
        for end in ends:
            if end == oc.NOT_BONDED and protocol != lockkinds.DKEY:
                continue  # a reference lock bonds with nothing: hubd never reports it
            fix = commissioning.pair_fix(protocol, end)
            assert fix == fixes.get(end, commissioning.PAIR_FIXES.get(end)), (protocol, end)
    assert commissioning.pair_fix(lockkinds.DKEY, oc.NOT_BONDED) != commissioning.PAIR_FIXES[oc.FAILED]
