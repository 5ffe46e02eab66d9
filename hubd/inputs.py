"""What arrives from outside, before it is believed: bounds, counts, and the guard around each message.

Every surface through which the network, the serial line or a radio can reach hubd is named in
:data:`SURFACES`. Each message on a surface is handled inside :meth:`Inputs.guard`: a handler
that refuses a message says why (a short reason, counted per surface and reason); a handler that
raises is a bug, which is logged with a bounded prefix of the input and counted, and hubd goes on
with the next message. Log lines about refused input are rate-limited per surface and reason, so
a flood costs bounded CPU and disk; the counts are in the health snapshot.

:func:`json_value` is the one way hubd reads JSON it did not write itself: it bounds the size and
the nesting depth before parsing (CPython's parser raises RecursionError, not ValueError, on a
few kilobytes of ``[``) and refuses NaN, infinities and duplicate keys (two parsers that disagree
on which duplicate wins are a classic way past a signature check).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The surfaces (keys of the health snapshot's ``inputs``).
COMMANDS = "commands"  # signed open commands (MQTT)
AUDIT_REQUESTS = "audit_requests"  # the backend asks for audit entries again (MQTT)
ALARM_CONFIRMATIONS = "alarm_confirmations"  # the alarm centre's "handled" (MQTT)
STATUS_REQUESTS = "status_requests"  # health snapshot requests (MQTT)
UNKNOWN_TOPICS = "unknown_topics"  # anything the broker delivers on a topic hubd did not route
BRIDGE = "bridge"  # link messages from the bridge (serial)
SURFACES = (COMMANDS, AUDIT_REQUESTS, ALARM_CONFIRMATIONS, STATUS_REQUESTS, UNKNOWN_TOPICS, BRIDGE)

#: The reason counted when a handler raised instead of refusing.
CRASHED = "crashed"
#: Deepest JSON nesting hubd reads from outside; its own messages nest three levels at most.
MAX_DEPTH = 16
#: Characters of a refused input shown in a log line.
LOG_PREFIX = 120
#: At most one log line per surface and reason in this many seconds (the rest is counted).
LOG_EVERY_S = 10.0
#: Distinct refusal reasons counted per surface; any further reason counts as "other".
MAX_REASONS = 32


class InputRejected(ValueError):
    """Input refused before it was parsed, or that did not parse; ``reason`` is short and fixed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def json_value(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside; raise :class:`InputRejected` for anything else (never another
    exception): too large, nested deeper than ``max_depth``, not UTF-8, not JSON, NaN or an
    infinity, a duplicate key."""
    if len(data) > max_bytes:
        raise InputRejected("too_large", f"{len(data)} bytes, at most {max_bytes}")
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise InputRejected("not_utf8") from None
    if _depth(data) > max_depth:
        raise InputRejected("too_deep", f"nested deeper than {max_depth}")
    try:
        return json.loads(data, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except InputRejected:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError cannot happen after _depth
        raise InputRejected("not_json", str(exc)[:80]) from None


def _depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (an upper bound for invalid JSON)."""
    deepest = depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise InputRejected("not_json", f"{name} is not a number JSON carries")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InputRejected("duplicate_key")
    return obj


def shown(data: bytes | str) -> str:
    """A bounded, printable prefix of an input, for a log line."""
    text = repr(data[:LOG_PREFIX])
    return text + ("..." if len(data) > LOG_PREFIX else "")


class Inputs:
    """Counts per surface (messages seen, refused by reason, crashed handlers) and guards each
    message. ``clock`` is monotonic seconds (for the log's rate limit)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seen: Counter[str] = Counter()
        self.refused: dict[str, Counter[str]] = {s: Counter() for s in SURFACES}
        self._logged_at: dict[tuple[str, str], float] = {}
        self._quiet: Counter[tuple[str, str]] = Counter()  # refusals not logged since the last line

    def guard(self, surface: str, handler: Callable[..., str | None], *args: Any,
              shown_input: bytes | str = b"") -> str | None:
        """Run ``handler(*args)`` for one message on ``surface``; returns its refusal reason or
        None. A handler that raises is logged (with a prefix of ``shown_input``) and counted as
        :data:`CRASHED`; it never propagates."""
        self.seen[surface] += 1
        return self.run(surface, handler, *args, shown_input=shown_input)

    def run(self, surface: str, handler: Callable[..., Any], *args: Any,
            shown_input: bytes | str = b"") -> str | None:
        """As :meth:`guard`, for a further step of a message already counted as seen (a listener
        of a bridge report, a callback): a str it returns is a refusal, anything else is not."""
        try:
            why = handler(*args)
        except Exception:
            self.refuse(surface, CRASHED, shown_input, exc_info=True)
            return CRASHED
        if not isinstance(why, str):
            return None
        self.refuse(surface, why, shown_input)
        return why

    def refuse(self, surface: str, why: str, shown_input: bytes | str = b"", *,
               exc_info: bool = False) -> None:
        """Count one refused message under its reason (``why`` up to a ":", the rest is detail for
        the log); log it unless this surface and reason logged lately."""
        reason = why.split(":", 1)[0].strip()[:48] or "refused"
        counts = self.refused.setdefault(surface, Counter())
        if reason not in counts and len(counts) >= MAX_REASONS:
            reason = "other"  # a flood of ever new reasons must not grow memory
        counts[reason] += 1
        key = (surface, reason)
        now = self._clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < LOG_EVERY_S:
            self._quiet[key] += 1
            return
        self._logged_at[key] = now
        quiet = self._quiet.pop(key, 0)
        more = f" ({quiet} more since the last line)" if quiet else ""
        level = logging.ERROR if reason == CRASHED else logging.WARNING
        what = "handling it raised" if reason == CRASHED else f"refused: {why[:160]}"
        log.log(level, "%s input %s%s: %s", surface, what, more, shown(shown_input), exc_info=exc_info,
                extra={"surface": surface, "reason": reason})

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Per surface: ``seen`` and each refusal reason's count (the health snapshot's ``inputs``)."""
        return {surface: {"seen": self.seen[surface], **dict(self.refused.get(surface, {}))}
                for surface in SURFACES}
