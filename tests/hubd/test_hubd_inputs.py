"""hubd.inputs and hubd.supervisor: bounded JSON, per-surface counts, the guard around each
message, rate-limited log lines, and tasks that are started again when they end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hubd import inputs, supervisor
from hubd.inputs import InputRejected, Inputs, json_value
from hubd.supervisor import Supervisor


@pytest.mark.parametrize(("data", "reason"), [
    (b"[" * 2000, "too_deep"),  # CPython's json raises RecursionError here, not ValueError
    (b'{"a":' * 17 + b"1" + b"}" * 17, "too_deep"),
    (b"x" * 5000, "too_large"),
    (b"\xff\xfe{}", "not_utf8"),
    (b"{not json", "not_json"),
    (b'{"a": NaN}', "not_json"),
    (b'{"a": -Infinity}', "not_json"),
    (b'{"id": "a", "id": "b"}', "duplicate_key"),
    (b'[{"k": 1, "k": 1}]', "duplicate_key"),
])
def test_json_from_outside_is_refused_with_a_reason_never_another_exception(data: bytes, reason: str) -> None:
    with pytest.raises(InputRejected) as refused:
        json_value(data, max_bytes=4096)
    assert refused.value.reason == reason


def test_json_within_bounds_parses_and_brackets_inside_strings_do_not_count_as_depth() -> None:
    assert json_value(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[", "b": [1, [2]]}', max_bytes=4096) == {
        "a": "[" * 22, "b": [1, [2]]}
    assert json_value(b'"\\"[[["', max_bytes=64) == '"[[['
    assert json_value(b"[" * 16 + b"]" * 16, max_bytes=64, max_depth=16) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]


def test_the_guard_counts_refusals_and_contains_a_handler_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    guard = Inputs()

    def handler(payload: bytes) -> str | None:
        if payload == b"boom":
            raise KeyError("a bug")
        return None if payload == b"ok" else f"invalid: {payload!r}"

    with caplog.at_level(logging.WARNING):
        assert guard.guard(inputs.COMMANDS, handler, b"ok", shown_input=b"ok") is None
        assert guard.guard(inputs.COMMANDS, handler, b"x1", shown_input=b"x1") == "invalid: b'x1'"
        assert guard.guard(inputs.COMMANDS, handler, b"boom", shown_input=b"boom") == inputs.CRASHED
    counts = guard.snapshot()[inputs.COMMANDS]
    assert counts == {"seen": 3, "invalid": 1, inputs.CRASHED: 1}
    assert set(guard.snapshot()) == set(inputs.SURFACES)
    crash = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert crash.exc_info is not None and "b'boom'" in crash.getMessage()


def test_a_flood_logs_one_line_per_reason_and_interval_and_counts_every_message(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    guard = Inputs(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for n in range(500):
            guard.refuse(inputs.UNKNOWN_TOPICS, "unrouted", b"x" * 10_000)
        now[0] += inputs.LOG_EVERY_S + 1
        guard.refuse(inputs.UNKNOWN_TOPICS, "unrouted", b"y")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "499 more since the last line" in lines[1]
    assert all(len(line) < 400 for line in lines), "a log line shows a bounded prefix"
    assert guard.snapshot()[inputs.UNKNOWN_TOPICS]["unrouted"] == 501


def test_ever_new_reasons_do_not_grow_the_counts_without_bound() -> None:
    guard = Inputs()
    for n in range(1000):
        guard.refuse(inputs.BRIDGE, f"reason-{n}: detail")
    counts = guard.snapshot()[inputs.BRIDGE]
    assert len(counts) == inputs.MAX_REASONS + 2  # seen, the first reasons, "other"
    assert counts["other"] == 1000 - inputs.MAX_REASONS


async def test_a_task_that_fails_or_ends_is_started_again_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_PAUSE_S", 0.01)
    runs: list[str] = []
    ran_three = asyncio.Event()

    async def flaky() -> None:
        runs.append("run")
        if len(runs) == 3:
            ran_three.set()
            await asyncio.Event().wait()  # the third run lasts
        if len(runs) == 1:
            raise RuntimeError("a bug nobody foresaw")
        # the second run just ends

    tasks = Supervisor()
    tasks.start("flaky", flaky)
    await asyncio.wait_for(ran_three.wait(), 10)
    assert tasks.restarts == {"flaky": 2}
    await tasks.stop()
    assert len(runs) == 3
