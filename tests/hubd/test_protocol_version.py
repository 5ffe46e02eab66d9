"""hubd refuses a bridge that speaks another link protocol major, or has another link key, and
says what clashes and how to fix it."""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from collections.abc import AsyncIterator, Callable

import pytest

from hubd.link.bridge import Bridge
from tests.fixtures import LINK_KEY
from wire import cobs, frame, link
from wire.crc import crc16
from wire.hmac_sha256 import Key


@pytest.fixture
async def hubd_end(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[int, Bridge]]:
    """hubd's Bridge on a pty, and the pty's other end, where the test plays the bridge."""
    caplog.set_level(logging.INFO, logger="hubd")
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    bridge = await Bridge.open(os.ttyname(slave), LINK_KEY)
    try:
        yield master, bridge
    finally:
        await bridge.close()
        os.close(master)
        os.close(slave)


Hello = Callable[[int], bytes]  # the bridge's HELLO with the given frame counter


def _bridge_hello(major: int, minor: int, version: str, peer_session: int = 0,
                  key: bytes = LINK_KEY) -> Hello:
    body = frame.encode_hello(major, minor, 0x0B0B0B0B, peer_session, frame.MAX_PAYLOAD, 4,
                              frame.ROLE_BRIDGE, 0 if peer_session else frame.HELLO_ANSWER_ME,
                              version)
    ctx = frame.context(frame.ROLE_BRIDGE, 0x0B0B0B0B, peer_session)
    return lambda counter: frame.encode(frame.T_HELLO, 0, body, counter, Key(key), ctx)


def _protocol_1_hello(counter: int) -> bytes:
    # What a bridge of an older release sends: no counter, no tag.
    raw = bytes([frame.T_HELLO, 0]) + frame.encode_hello(
        1, 0, 0x0B0B0B0B, 0, frame.MAX_PAYLOAD, 4, frame.ROLE_BRIDGE, frame.HELLO_ANSWER_ME, "0.9.0")
    return cobs.encode(raw + crc16(raw).to_bytes(2, "big")) + frame.DELIMITER


async def _hub_session(master: int) -> int:
    """hubd's session id, from the HELLOs it keeps sending until a bridge answers."""
    buf = b""
    for _ in range(200):
        try:
            buf += os.read(master, 4096)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        *blocks, buf = buf.split(frame.DELIMITER)
        for block in filter(None, blocks):
            ftype, _, _, body, _ = frame.decode(block)
            if ftype == frame.T_HELLO:
                return frame.decode_hello(body)["session"]
    raise AssertionError("hubd sent no HELLO")


async def _hello_until_logged(master: int, hello: Hello, caplog: pytest.LogCaptureFixture,
                              needle: str) -> logging.LogRecord:
    for counter in range(1, 101):  # the bridge repeats its HELLO until answered, as the firmware does
        os.write(master, hello(counter))
        await asyncio.sleep(0.02)
        found = [r for r in caplog.records if needle in r.getMessage()]
        if found:
            return found[0]
    raise AssertionError(f"hubd logged nothing with {needle!r}: "
                         f"{[r.getMessage() for r in caplog.records]}")


async def test_hubd_refuses_another_major_naming_both_versions_and_the_fix(
        hubd_end: tuple[int, Bridge], caplog: pytest.LogCaptureFixture) -> None:
    master, bridge = hubd_end
    other = link.PROTOCOL_MAJOR + 1
    record = await _hello_until_logged(master, _bridge_hello(other, 3, "fw 9.9.9"), caplog,
                                       "speaks link protocol")
    text = record.getMessage()
    assert record.levelno == logging.ERROR
    assert "'fw 9.9.9'" in text
    assert f"link protocol {other}.3" in text
    assert f"hubd speaks {link.PROTOCOL_MAJOR}.{link.PROTOCOL_MINOR}" in text
    assert "hubctl flash" in text
    assert not bridge.is_up


async def test_a_bridge_of_the_same_major_and_another_minor_is_taken(
        hubd_end: tuple[int, Bridge], caplog: pytest.LogCaptureFixture) -> None:
    master, bridge = hubd_end
    minor = link.PROTOCOL_MINOR + 1
    hello = _bridge_hello(link.PROTOCOL_MAJOR, minor, "fw 0.2.0",
                          peer_session=await _hub_session(master))
    record = await _hello_until_logged(master, hello, caplog, "bridge link up")
    assert f"link protocol {link.PROTOCOL_MAJOR}.{minor}" in record.getMessage()
    assert bridge.is_up
    assert not [r for r in caplog.records if "speaks link protocol" in r.getMessage()]


async def test_a_bridge_of_protocol_1_is_named_with_the_fix_and_never_taken(
        hubd_end: tuple[int, Bridge], caplog: pytest.LogCaptureFixture) -> None:
    master, bridge = hubd_end
    record = await _hello_until_logged(master, _protocol_1_hello, caplog, "(unauthenticated)")
    text = record.getMessage()
    assert record.levelno == logging.ERROR and "link protocol 1" in text and "hubctl flash" in text
    assert not bridge.is_up and bridge.link.engine.stats["foreign_hellos"] >= 1


async def test_a_bridge_with_another_link_key_is_named_with_the_fix_and_never_taken(
        hubd_end: tuple[int, Bridge], caplog: pytest.LogCaptureFixture) -> None:
    master, bridge = hubd_end
    hello = _bridge_hello(link.PROTOCOL_MAJOR, 0, "fw 0.2.0", peer_session=await _hub_session(master),
                          key=bytes(32))
    record = await _hello_until_logged(master, hello, caplog, "failed authentication")
    text = record.getMessage()
    assert record.levelno == logging.ERROR
    assert "HUBD_SERIAL__LINK_KEY" in text and "link.key" in text and "hubctl provision" in text
    assert not bridge.is_up and bridge.link.engine.stats["auth_errors"] >= 1
