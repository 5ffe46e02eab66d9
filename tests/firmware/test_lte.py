"""The second path end to end: firmware/lte.py and firmware/second_path.py in the real MicroPython
interpreter, talking AT to simulator/modem.py over a UART socketpair; the modem opens real TCP on
loopback to pysiaalarm, the alarm centre's receiver."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator.bridge_device import DEFAULT_HEAP
from simulator.modem import Modem, pair
from tests.micropython import micropython_binary, micropython_env
from tests.sia_receiver import ACCOUNT, KEY, Receiver

# The bridge side: one JSON command per stdin line, one "RESULT {...}" line per command.
SCENARIO = r"""
import json, os, sys, time
import asyncio
import machine
from lte import Lte
from second_path import SecondPath

skew = int(os.getenv("LTE_SKEW"))
key = os.getenv("LTE_KEY")
lte = Lte(machine.UART(3), "internet.m2m", cmd_timeout_ms=2000, attach_timeout_ms=1000,
          open_timeout_ms=3000)
path = SecondPath(lte, "alarm-receiver.example", int(os.getenv("LTE_PORT")),
                  os.getenv("LTE_ACCOUNT"), key.encode() if key else None, receiver="1",
                  line="1", now=lambda: time.time() + skew, deadline_ms=8000,
                  answer_timeout_ms=2000, retry_ms=100)


async def main():
    lte.start()
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd["op"] == "send":
            r = await path.send_alarm({"id": cmd["id"], "event": cmd["event"]},
                                      cmd.get("deadline_ms"))
        elif cmd["op"] == "null":
            r = await path.supervise()
        else:
            return
        print("RESULT " + json.dumps({"result": r, "offset": path.offset, "stats": path.stats,
                                      "noise": lte.noise}))

asyncio.run(main())
"""


class Bridge:
    """The MicroPython process and the modem model, wired by a socketpair (UART 3)."""

    def __init__(self, receiver: Receiver, key: str | None, skew: int, modem: Modem,
                 proc: asyncio.subprocess.Process) -> None:
        self.receiver = receiver
        self.key = key
        self.skew = skew
        self.modem = modem
        self.proc = proc
        self.log: list[str] = []

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            assert raw, "the firmware exited:\n" + "\n".join(self.log)
            line = raw.decode().rstrip()
            if line.startswith("RESULT "):
                return dict(json.loads(line[7:]))
            self.log.append(line)


async def start_bridge(receiver: Receiver, key: str | None = None, skew: int = 0,
                       **knobs: Any) -> tuple[Bridge, asyncio.Task[None]]:
    modem_end, fw_end = pair()
    modem = Modem(modem_end, connect_to=("127.0.0.1", receiver.port), **knobs)
    task = asyncio.create_task(modem.run())
    env = micropython_env(LTE_SKEW=str(skew), LTE_KEY=key or "", LTE_PORT=str(receiver.port),
                          LTE_ACCOUNT=ACCOUNT, SIM_UART3_FD=str(fw_end.fileno()))
    proc = await asyncio.create_subprocess_exec(
        micropython_binary(), "-X", f"heapsize={DEFAULT_HEAP}", "-c", SCENARIO, env=env,
        pass_fds=(fw_end.fileno(),), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    fw_end.close()
    return Bridge(receiver, key, skew, modem, proc), task


@pytest.fixture
async def run_bridge() -> AsyncIterator[Any]:
    started: list[tuple[Bridge, asyncio.Task[None], Receiver]] = []

    async def go(key: str | None = None, skew: int = 0, **knobs: Any) -> Bridge:
        receiver = Receiver(key)
        await receiver.start()
        bridge, task = await start_bridge(receiver, key, skew, **knobs)
        started.append((bridge, task, receiver))
        return bridge

    yield go
    for bridge, task, receiver in started:
        if bridge.proc.returncode is None:
            bridge.proc.kill()
            await bridge.proc.wait()
        task.cancel()
        await receiver.stop()


async def test_an_alarm_reaches_pysiaalarm_over_the_modem(run_bridge: Any) -> None:
    b = await run_bridge()
    r = await b.ask(op="send", id="unit1-1", event="button")
    assert r["result"] == "ack", b.log
    (ev,) = b.receiver.events
    assert ev.account == ACCOUNT and ev.code == "QA" and ev.x_data == "Iunit1-1"
    assert ev.receiver == "R1" and ev.line == "L1"
    cmds = b.modem.commands
    for expected in ("AT", "ATE0", "AT+CPIN?", "AT+CEREG?", "AT+CSQ", "AT+QIACT=1"):
        assert expected in cmds
    assert 'AT+QICSGP=1,1,"internet.m2m","","",1' in cmds
    assert any(c.startswith('AT+QIOPEN=1,0,"TCP","alarm-receiver.example",') for c in cmds)
    assert all(s.count(b"\n") == 1 for s in b.modem.sent)  # one frame per write
    r = await b.ask(op="send", id="unit1-2", event="smoke")
    assert r["result"] == "ack" and b.modem.opens == 1  # the socket stays open
    assert (await b.ask(op="null"))["result"] == "ack"


async def test_an_encrypted_alarm_reaches_pysiaalarm(run_bridge: Any) -> None:
    b = await run_bridge(key=KEY)
    r = await b.ask(op="send", id="unit1-3", event="fall")
    assert r["result"] == "ack", b.log
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-3"]
    assert all(b'"*ADM-CID"' in s for s in b.modem.sent)


async def test_no_coverage_fails_then_succeeds_when_coverage_returns(run_bridge: Any) -> None:
    b = await run_bridge(coverage=False)
    r = await b.ask(op="send", id="unit1-4", event="button", deadline_ms=1500)
    assert r["result"] == "failed"
    assert b.receiver.events == []
    b.modem.attach_delay = 0.3  # a slow attach after coverage returns
    b.modem.coverage = True
    r = await b.ask(op="send", id="unit1-4", event="button")
    assert r["result"] == "ack", b.log
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-4"]


async def test_coverage_lost_while_connected_is_recovered(run_bridge: Any) -> None:
    b = await run_bridge()
    assert (await b.ask(op="send", id="unit1-5", event="button"))["result"] == "ack"
    b.modem.coverage = False
    asyncio.get_running_loop().call_later(0.5, setattr, b.modem, "coverage", True)
    assert (await b.ask(op="send", id="unit1-6", event="tamper"))["result"] == "ack", b.log
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-5", "Iunit1-6"]


async def test_a_nak_corrects_the_clock_and_the_alarm_is_resent(run_bridge: Any) -> None:
    b = await run_bridge(skew=-3600)  # the bridge's clock is an hour behind
    r = await b.ask(op="send", id="unit1-7", event="pull_cord")
    assert r["result"] == "ack", b.log
    assert abs(r["offset"] - 3600) <= 3 and r["stats"]["resent"] == 1
    assert len(b.modem.sent) == 2 and b.modem.sent[0][:9] != b.modem.sent[1][:9]
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-7"]
    ts = b.receiver.events[0].timestamp.timestamp()
    assert abs(ts - time.time()) < 5


async def test_a_dropped_socket_is_reopened_and_the_alarm_retried(run_bridge: Any) -> None:
    b = await run_bridge()
    assert (await b.ask(op="send", id="unit1-8", event="button"))["result"] == "ack"
    b.modem.drop_socket()
    assert (await b.ask(op="send", id="unit1-9", event="button"))["result"] == "ack", b.log
    assert b.modem.opens == 2
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-8", "Iunit1-9"]


async def test_a_socket_dropped_before_the_answer_is_retried(run_bridge: Any) -> None:
    b = await run_bridge(delay=0.0)
    # Drop the socket as soon as the frame is written, before the receiver's answer is read.
    real = b.modem._send

    async def send_then_drop(*args: Any) -> bytes:
        out = await real(*args)
        if len(b.modem.sent) == 1:
            b.modem.drop_socket()
        return out

    b.modem._send = send_then_drop  # type: ignore[method-assign]
    r = await b.ask(op="send", id="unit1-10", event="button")
    assert r["result"] == "ack", b.log
    assert b.modem.opens == 2 and len(b.modem.sent) == 2
    # the receiver may have the first copy too: the same id tells it is a duplicate
    assert {e.x_data for e in b.receiver.events} == {"Iunit1-10"}


async def test_modem_noise_is_dropped_and_delivery_goes_on(run_bridge: Any) -> None:
    b = await run_bridge()
    assert (await b.ask(op="send", id="unit1-11", event="button"))["result"] == "ack"
    # a line far too long, bytes that are not text, a URC for a socket we never opened
    b.modem._out(b"\xff" * 700 + b"\r\n\xfe\xfd\r\n+QIOPEN: 5,0\r\n+QIURC: \"recv\",3\r\n")
    r = await b.ask(op="send", id="unit1-12", event="button")
    assert r["result"] == "ack", b.log
    assert r["noise"] > 0
    assert [e.x_data for e in b.receiver.events] == ["Iunit1-11", "Iunit1-12"]
