"""The bridge application: runs hubd's lock operations through the lock drivers.

The path of a command through the firmware: hostlink delivers an `op` message -> Bridge.on_message
-> one operation at a time per lock -> the lock's driver (locks/) over BLE -> `written` just before
the command reaches the lock, then one `result` -> hostlink -> hubd.
"""

import hashlib
import time

import asyncio

import log
from wire import messages

_RECENT_MAX = 64  # command ids remembered so a repeated id never moves a lock twice


def command_tag(cmd):
    """The 8-byte tag a lock command carries: the start of SHA-256 of the command id."""
    return hashlib.sha256(cmd.encode()).digest()[:8]


class Bridge:
    """Owns the lock drivers and answers hubd's operations."""

    def __init__(self, drivers, send):
        self.drivers = drivers  # lock id -> driver with `async operate(action, tag, on_written)`
        self._send = send
        self._mutex = {}
        for lock_id in drivers:
            self._mutex[lock_id] = asyncio.Lock()
        self._recent = []

    def on_message(self, msg):
        """Called by the host link for each decoded message from hubd."""
        if msg["m"] == messages.OP:
            asyncio.create_task(self._run_op(msg))
        else:
            log.warn("ignored a %s message: the bridge does not take it" % msg["m"])

    async def _run_op(self, msg):
        rid = msg["rid"]
        lock_id = msg["lock"]
        driver = self.drivers.get(lock_id)
        if driver is None:
            log.warn("op %d: unknown lock %s" % (rid, lock_id))
            self._send(messages.result(rid, "failed", "unknown_lock", None, None))
            return
        if msg["cmd"] in self._recent:
            log.warn("op %d: command %s already ran; not moving the lock again" % (rid, msg["cmd"]))
            self._send(messages.result(rid, "failed", "duplicate_command", None, None))
            return
        self._recent.append(msg["cmd"])
        if len(self._recent) > _RECENT_MAX:
            self._recent.pop(0)
        received = time.ticks_ms()
        async with self._mutex[lock_id]:
            if time.ticks_diff(time.ticks_ms(), received) > msg["ttl"]:
                log.warn("op %d: waited past its ttl behind other operations; not started" % rid)
                self._send(messages.result(rid, "timed_out", "queued_too_long", None, None))
                return
            log.info("op %d: %s %s" % (rid, msg["action"], lock_id))

            written = []

            def on_written():
                written.append(True)
                self._send(messages.written(rid))

            try:
                res = await driver.operate(msg["action"], command_tag(msg["cmd"]), on_written)
            except Exception as e:  # a driver bug must still produce an answer
                log.error("op %d: driver raised %r" % (rid, e))
                res = {"outcome": "incomplete" if written else "failed",
                       "reason": "driver_error", "state": "unknown" if written else None,
                       "battery": None}
            log.info("op %d: %s%s, lock %s" % (rid, res["outcome"],
                                              " (%s)" % res["reason"] if res["reason"] else "",
                                              res["state"]))
            self._send(messages.result(rid, res["outcome"], res["reason"], res["state"],
                                       res["battery"]))
