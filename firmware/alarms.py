"""The bridge's alarm flow: from the alarm unit to hubd, never lost.

    unit EVENT -> journal on flash -> ACK + ALARM_RECEIVED to the unit -> `alarm` to hubd
    -> resent every ``resend_ms`` until `alarm_stored` (and all again whenever the host link
    comes up or hubd restarts) -> `alarm_handled` -> confirmed in the journal, HELP_ON_THE_WAY
    to the unit.

The unit's voice prompts (ALARM_RECEIVED, HELP_ON_THE_WAY) are sent again every
``prompt_resend_ms`` until the unit says HEARD: a prompt lost on the line or to a reboot is
still played (the journal keeps what is owed).

The second path (LTE, SIA DC-09) plugs in through ``for_second_path()`` (which alarms it must
carry now) and ``second_path_result()`` (what its receiver answered).

A technician's test alarm (`test_alarm` from hubd, hubctl test-alarm) is an alarm the bridge raises
itself: journaled as event ``test`` and carried like any other; with ``lte`` the second path sends
it at once as well, whether or not the primary path confirms it first.
"""

import time

import asyncio

from micropython import const

import log
from alarm_journal import JournalFull
from wire import alarms, link, messages
from wire.alarmunit import T_ACK, T_ALARM_RECEIVED, T_HELP_ON_THE_WAY

_TICK_MS = const(500)
_MAX_UNIX = (1 << 31) - 1


class AlarmFlow:
    """Moves alarms between the unit link, the journal and hubd.

    ``journal``: an ``alarm_journal.AlarmJournal``; ``unit``: an ``alarm_unit.UnitLink`` (or
    None until it is attached with ``attach_unit``); ``send(payload)``: queue a message for hubd
    (may raise link.LinkFull); ``settings``: every setting of config.ALARM_TIMINGS (the config
    module is not kept after boot: its code would take heap for nothing).
    """

    def __init__(self, journal, send, settings):
        self.journal = journal
        self.unit = None
        self._send = send
        self.settings = settings
        self._clock_offset = None  # hubd's Unix time minus time.time(), once hubd told us
        self._hub_up = False
        self._hub_down_since = time.ticks_ms()  # boot: the link is not up yet
        self._last_round = time.ticks_ms()
        self._last_prompts = time.ticks_ms()
        # The last test alarm: (id, hubd's ref, its second-path tuple or None once sent). RAM
        # only: after a reboot it goes out as an ordinary test alarm from "base".
        self._test = None

    def attach_unit(self, unit):
        """Use ``unit`` (a UnitLink built with this flow's on_unit_event and on_unit_link)."""
        self.unit = unit

    def now(self):
        """Unix seconds by hubd's clock, or None before hubd sent a `clock`."""
        if self._clock_offset is None:
            return None
        return int(time.time()) + self._clock_offset

    # -- from the unit ----------------------------------------------------------------------

    def on_unit_event(self, serial, event_id, unit_at, event, device):
        """A valid EVENT frame from the unit: journal it, then ack it and tell hubd."""
        if not 0 <= unit_at <= _MAX_UNIX:
            log.warn("alarm unit event %d: time %d out of range, sent as 0" % (event_id, unit_at))
            unit_at = 0
        try:
            alarm_id = self.journal.add_unit(serial, event_id, unit_at, event, device, self.now())
        except JournalFull:
            # Not acked: the unit keeps resending it until a slot frees up.
            log.error("ALARM NOT TAKEN: journal full (%d pending); unit event %d %s unacked"
                      % (len(self.journal), event_id, event))
            return
        except OSError as e:
            log.error("ALARM NOT TAKEN: journal write failed (%r); unit event %d %s unacked"
                      % (e, event_id, event))
            return
        self.unit.say(T_ACK, event_id)
        if alarm_id is None:
            return  # a resend of a journaled event: its ack was lost (a prompt owed is resent)
        log.info("alarm %s: %s from %s journaled" % (alarm_id, event, device))
        self.unit.say(T_ALARM_RECEIVED, event_id)
        self._to_hub(alarm_id, event, device, unit_at, self.now())

    def on_prompt_heard(self, serial, prompt, event_id):
        """The unit's HEARD frame: it has played ``prompt`` for ``event_id`` (a flash error
        leaves it owed: the unit link logs it, the prompt is sent again)."""
        self.journal.heard(serial, prompt, event_id)

    def _prompt(self):
        unit = self.unit
        if unit is None or not unit.up or unit.serial is None:
            return
        for prompt, event_id in self.journal.prompts_owed(unit.serial):
            unit.say(prompt, event_id)

    def on_unit_link(self, up):
        """The unit link was lost or is back: that is an alarm too."""
        self._raise(alarms.UNIT_LINK_RESTORED if up else alarms.UNIT_LINK_LOST)

    def _raise(self, event, ref=None, lte=False):
        # An alarm the bridge raises itself. The journal stores devices as wire.alarmunit codes,
        # so it is "base" on flash; a test alarm names hubd's ref on the wire instead.
        now = self.now()
        try:
            alarm_id = self.journal.add_bridge(event, "base", now or 0, now)
        except (JournalFull, OSError) as e:
            log.error("ALARM NOT TAKEN: %s could not be journaled (%r)" % (event, e))
            return
        log.info("alarm %s: %s journaled" % (alarm_id, event))
        if ref:
            self._test = (alarm_id, ref, (alarm_id, event, "base", now or 0, now) if lte else None)
        self._to_hub(alarm_id, event, "base", now or 0, now)

    # -- to and from hubd -------------------------------------------------------------------

    def _to_hub(self, alarm_id, event, device, unit_at, bridge_at):
        if self._test is not None and self._test[0] == alarm_id:
            device = self._test[1]
        if not self._hub_up:
            return  # sent when the link comes up
        try:
            self._send(messages.make(messages.ALARM, alarm_id, event, device, unit_at, bridge_at))
        except link.LinkFull:
            log.warn("alarm %s: host link backlog full, resent later" % alarm_id)

    def _resend(self, all_of_them):
        for a in self.journal.pending():
            if all_of_them or not a[5]:
                self._to_hub(a[0], a[1], a[2], a[3], a[4])

    def on_message(self, msg):
        """An alarm message from hubd (alarm_stored, alarm_handled, clock, test_alarm)."""
        kind = msg["m"]
        if kind == messages.TEST_ALARM:
            self._raise(alarms.TEST, msg["ref"], msg["lte"])
        elif kind == messages.ALARM_STORED:
            if not self.journal.mark_stored(msg["id"]):
                log.info("alarm %s stored by hubd, no longer pending here" % msg["id"])
        elif kind == messages.ALARM_HANDLED:
            self._confirmed(msg["id"], "hub")
        elif kind == messages.CLOCK:
            # int(): the unix port's time.time() is a float, the ESP32's an int.
            self._clock_offset = msg["unix"] - int(time.time())

    def _confirmed(self, alarm_id, path):
        try:
            event_id = self.journal.confirm(alarm_id, path)
        except OSError as e:
            # Still pending on flash: hubd or the second path will confirm it again.
            log.error("alarm %s: confirmation not journaled (%r)" % (alarm_id, e))
            return
        if event_id is None:
            log.info("alarm %s confirmed via %s again" % (alarm_id, path))
        elif event_id >= 0 and self.unit is not None:
            self.unit.say(T_HELP_ON_THE_WAY, event_id)

    def on_link_state(self, kind, value):
        """The host link's up/down/reset events (hostlink.HostLink's on_state)."""
        if kind == link.EV_UP or kind == link.EV_RESET:
            self._hub_up = True
            self._resend(True)  # hubd may have restarted: it recognises what it has by the id
        elif kind == link.EV_DOWN or kind == link.EV_INCOMPATIBLE:
            if self._hub_up:
                self._hub_up = False
                self._hub_down_since = time.ticks_ms()

    # -- the second path --------------------------------------------------------------------

    def for_second_path(self):
        """The alarms the second path must carry now: all pending ones while the host link has
        been down longer than ``hub_down_ms``, else those taken more than
        ``handled_deadline_ms`` ago; and a test alarm hubd asked to go over LTE until the second
        path has answered for it, even if it is confirmed already. A list of (id, event, device,
        unit_at, bridge_at) tuples, oldest first; the second path paces its own retries."""
        now = time.ticks_ms()
        hub_gone = (not self._hub_up and time.ticks_diff(now, self._hub_down_since)
                    > self.settings["hub_down_ms"])
        late = self.settings["handled_deadline_ms"]
        t = self._test
        due = [a[:5] for a in self.journal.pending()
               if hub_gone or time.ticks_diff(now, a[6]) > late]
        if t and t[2] and t[2] not in due:
            due.append(t[2])
        return due

    def second_path_result(self, alarm_id, result):
        """What the second path's receiver answered for an alarm ("ack", "nak", "duh" or
        "failed"): an ack confirms it like alarm_handled does; hubd hears every result."""
        if self._test is not None and self._test[0] == alarm_id:
            self._test = (alarm_id, self._test[1], None)  # answered: hubd reports it
        if result == "ack":
            self._confirmed(alarm_id, "lte")
        if self._hub_up:
            try:
                self._send(messages.make(messages.ALARM_LTE, alarm_id, result))
            except link.LinkFull:
                log.warn("alarm %s: host link backlog full, LTE result not reported" % alarm_id)

    async def run(self):
        """Resend what hubd has not stored, every ``resend_ms``, and the prompts the unit has
        not heard, every ``prompt_resend_ms``, until cancelled."""
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            now = time.ticks_ms()
            if self._hub_up and time.ticks_diff(now, self._last_round) >= self.settings[
                    "resend_ms"]:
                self._last_round = now
                self._resend(False)
            if time.ticks_diff(now, self._last_prompts) >= self.settings["prompt_resend_ms"]:
                self._last_prompts = now
                self._prompt()
