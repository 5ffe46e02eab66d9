"""A simulated dormakaba dKey (the lock's side of its Bluetooth protocol) on the simulated radio.

The hub drives a real dKey through py-dormakaba-dkey, unmodified; this is the lock that library
talks to in the tests and the hil scenarios. Written from the protocol as docs/dkey.md describes
it (what the library sends and expects, read in py-dormakaba-dkey 1.0.6), not from its code.

    lock = DKeyLock("F0:94:0A:00:00:01", activation_code="BCDF2345")
    radio.add(lock)
    ...
    lock.turn_by_hand(locked=False)    # the key or thumb-turn, no motor
    lock.set_battery(18)               # raw units: the library warns below 20, critical at 17
    lock.forget_associations()         # the owner removed every key holder
    lock.factory_reset()               # and its BLE bonds; its activation window opens again

What it does, as the real lock does where the library can tell (docs/dkey.md, "Faithful"):

- One service, two characteristics, both written with response and both notifying, both
  needing an encrypted link: nothing is read or written before the central bonded. It bonds
  only while its activation window is open (a new lock, or after ``open_activation_window``);
  a successful association closes it.
- The handshake: identification both ways, then either the activation-code challenge and the
  ECDH P-256 association (a new key holder id and secret, kept) or the key holder's challenge
  (triple AES keyed by SHA-256 of the secret and the session's IV). A wrong activation code is
  answered WRONG_PIN; an unknown key holder NOT_ASSOCIATED; a wrong challenge answer ends the
  link. Every frame after the challenge answer is encrypted, CRC-checked and counted into the
  session's key streams; one that fails its check ends the link.
- Lock, unlock and the lock mode move a motor for ``travel_time_s``; the state and battery
  reach a key holder that enabled notifications; a manual turn does too.
- A link silent for ``idle_timeout_s`` (30 s, as the real lock) is ended with a disconnect
  request (reason TIMEOUT), then dropped. One central at a time: no adverts while one is
  connected, and a link not encrypted within ``encrypt_within_s`` is dropped (assumed, see
  docs/dkey.md).

Every byte from a central is hostile: a frame of the wrong size, an unknown or misplaced
command, a point off the curve, a segment flood are refused (an ATT error, an error
acknowledgement or the end of the link), never an exception out of the peripheral; ``faults``
lists any exception that escaped the protocol code anyway (the fuzz test asserts it empty).
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import enum
import hashlib
import math
import os
import secrets
import struct
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from simulator.radio import (
    ATT_INVALID_VALUE_LENGTH,
    ATT_WRITE_NOT_PERMITTED,
    FLAG_NOTIFY,
    FLAG_WRITE,
    Characteristic,
    Link,
    Peripheral,
    Service,
)
from wire import lockkinds
from wire.lockproto import uuid128_le

SERVICE_UUID = "e7a60000-6639-429f-94fd-86de8ea26897"
TO_LOCK_UUID = "e7a60001-6639-429f-94fd-86de8ea26897"  # the central's commands (ids < 0x50)
FROM_LOCK_UUID = "e7a60002-6639-429f-94fd-86de8ea26897"  # the central's responses (ids >= 0x50)

ACTIVATION_WINDOW_S = 300.0
IDLE_TIMEOUT_S = 30.0
ENCRYPT_WITHIN_S = 5.0  # a link not encrypted by then is dropped (docs/dkey.md, "Simplified")
PROTOCOL_VERSION = 27
SW_VERSION = (2, 4, 1)
ASSOCIATE_ID = b"\xff\xff\xff\xfe"  # the key holder id that asks for an association
MAX_KEY_HOLDERS = 32
MAX_MESSAGE = 96  # a reassembled message: the longest the central sends is 64 bytes
MAX_OUTBOX = 64  # frames queued for a central; more ends the link
SEGMENT_ACK_S = 5.0  # the central acknowledges each segment of ours; silence ends the link
BATTERY_FULL = 30  # raw units (the library's scale: >= 28 is 100 %)


class Cmd(enum.IntEnum):
    """Command ids on the wire (ids from 0x50 are responses)."""

    GET_IDENTIFICATION = 0x00
    AUTH_CHALLENGE = 0x01
    AUTH_CHALLENGE_ACCEPTED = 0x02
    UNLOCK = 0x03
    DISCONNECT_REQ = 0x04
    ASSOCIATION_PARAMETERS = 0x09
    NOT_ASSOCIATED = 0x13
    DET_TYPE_NAME = 0x15
    ECDH_PUBLIC = 0x17
    ECDH_PUBLIC_REPLY = 0x18
    GET_NOTIFICATIONS_MASK = 0x1B
    SET_NOTIFICATIONS_MASK = 0x1C
    NOTIFICATIONS_UPDATE = 0x1D
    AUTH_PIN_CHALLENGE = 0x23
    AUTH_PIN_CHALLENGE_REPLY = 0x24
    AUTH_CHECK = 0x25
    CHANGE_MODE = 0x27
    REQUEST_CHALLENGE = 0x34
    STATUS_REPORT = 0x35
    GET_IDENTIFICATION_RSP = 0x50
    ACK = 0x51
    AUTH_CHALLENGE_RSP = 0x52
    GET_NOTIFICATIONS_MASK_RSP = 0x57
    SET_NOTIFICATIONS_MASK_RSP = 0x58
    UNLOCK_RSP = 0x5A


class Err(enum.IntEnum):
    """The error code of an acknowledgement."""

    SUCCESS = 0
    UNKNOWN_CMD = 1
    NOT_AUTHENTICATED = 2
    AUTHENTICATION_FAILED = 3
    WRONG_PIN = 4
    NO_AVAILABLE_KEYS = 5
    WRONG_STATE = 10
    PARAM_NOT_SUPPORTED = 14


# Notification types (a bit each in the notifications mask) and the values the lock reports.
N_BATTERY, N_DOOR, N_UNLOCK_STATUS, N_UNLOCK_MODE, N_AWAY, N_SHELL, N_SHB_DELAY = range(7)
ALL_NOTIFICATIONS = 0x7F
STATUS_UNLOCKED, STATUS_LOCKED = 0, 1
DOOR_CLOSED, DOOR_OPEN = 0, 1
MODE_LOCK, MODE_FORCED_UNLOCK = 1, 6
REPORT_STUCK, REPORT_LOCK_UNLOCK = 1, 4
DISCONNECT_TIMEOUT = 2
HANDSHAKE_CHECK = b"handshakecheck"
DETECTOR = 1  # the device type a lock says it is
FRONT_DOOR, DETECTOR_INSIDE = 1, 1


def new_activation_code() -> str:
    """Eight characters of the activation alphabet, as printed on a dKey's card."""
    return "".join(secrets.choice(lockkinds.DKEY_CODE_ALPHABET)
                   for _ in range(lockkinds.DKEY_CODE_LEN))


def _aes(key: bytes):
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()


def session_iv(lock_nonce: bytes, central_tail: bytes) -> bytes:
    """A session's IV: the first 12 bytes of the lock's challenge nonce, then the 4 bytes of the
    central's identification, last byte first."""
    return lock_nonce[:12] + central_tail[::-1]


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, initial 0xFFFF), as each frame's check uses it."""
    return binascii.crc_hqx(data, 0xFFFF)


class _Keystream:
    """One direction of a session. Each step gives the block E_out(state) and moves the state
    to E_chain(state); a frame takes two steps: one for its 16-byte body, one for its 4-byte
    check (2 bytes of salt, the CRC-16 of body + salt, little-endian). With the activation
    code both ciphers are the same AES; with a key holder's secret, E_chain is keyed by the
    first half of SHA-256(secret + IV) and E_out by the second (the library's "triple AES"
    reduces to this: its outer two encryptions with the first key cancel)."""

    def __init__(self, chain, out, state: bytes) -> None:
        self._chain = chain
        self._out = out
        self._state = state

    def _step(self) -> bytes:
        block = self._out.update(self._state)
        self._state = self._chain.update(self._state)
        return block

    def seal(self, plain: bytes) -> bytes:
        body = plain + bytes(16 - len(plain))
        salt = os.urandom(2)
        check = salt + struct.pack("<H", crc16(body + salt))
        sealed = bytes(a ^ b for a, b in zip(self._step(), body))
        return sealed + bytes(a ^ b for a, b in zip(self._step(), check))

    def open(self, frame: bytes) -> bytes | None:
        """The 16-byte body, or None if the check fails (the stream has moved on anyway)."""
        body = bytes(a ^ b for a, b in zip(self._step(), frame[:16]))
        check = bytes(a ^ b for a, b in zip(self._step(), frame[16:20]))
        if struct.unpack("<H", check[2:4])[0] != crc16(body + check[:2]):
            return None
        return body


class SessionCrypto:
    """Both directions of an encrypted session; see :class:`_Keystream`."""

    def __init__(self, chain_key: bytes, out_key: bytes, iv: bytes) -> None:
        chain = _aes(chain_key)
        out = chain if out_key == chain_key else _aes(out_key)
        self.iv = iv
        self.to_central = _Keystream(chain, out, iv)
        self.from_central = _Keystream(chain, out, chain.update(bytes((iv[0] ^ 0xAB,)) + iv[1:]))

    @classmethod
    def for_code(cls, code: str, iv: bytes) -> SessionCrypto:
        key = code_key(code)
        return cls(key, key, iv)

    @classmethod
    def for_secret(cls, secret: bytes, iv: bytes) -> SessionCrypto:
        digest = hashlib.sha256(secret + iv).digest()
        return cls(digest[:16], digest[16:], iv)


def code_key(code: str) -> bytes:
    """The AES-128 key of an activation code: its 8 characters padded with eight '*'."""
    return (code + "*" * 8).encode("ascii")[:16]


def code_answer(code: str, iv: bytes) -> bytes:
    """What a central that knows the activation code answers to its challenge."""
    return _aes(code_key(code)).update(iv)


def secret_answer(secret: bytes, iv: bytes) -> bytes:
    """What a key holder answers to its challenge: E1(E2(E1(IV))), keys from SHA-256(secret+IV)."""
    digest = hashlib.sha256(secret + iv).digest()
    e1, e2 = _aes(digest[:16]), _aes(digest[16:])
    return e1.update(e2.update(e1.update(iv)))


def association_secret(shared: bytes, iv: bytes, lock_secret: bytes) -> bytes:
    """The 32-byte association secret both ends derive: the lock's 16 secret bytes encrypted
    with AES-128-CFB (key: the ECDH shared secret's first half, IV: the session's), then the
    shared secret's second half."""
    # CFB over one block is the block XOR E(IV).
    stream = _aes(shared[:16]).update(iv)
    return bytes(a ^ b for a, b in zip(stream, lock_secret)) + shared[16:32]


def message(cmd: int, payload: bytes = b"") -> bytes:
    return bytes((cmd, len(payload))) + payload


class _Refused(Exception):
    """A frame the session will not take: the link ends."""


class _Session:
    """One central's link: its handshake state, its crypto, its reassembly and its outbox."""

    def __init__(self, lock: DKeyLock, link: Link) -> None:
        self.lock = lock
        self.link = link
        self.crypto: SessionCrypto | None = None
        self.next_clear = False  # the challenge answer comes in the clear
        self.reply_clear = False  # and so does the lock's verdict on an activation code
        self.phase = "idle"
        self.central_tail: bytes | None = None
        self.nonce = b""
        self.key_holder: bytes | None = None
        self.authenticated = False
        self.notify_mask = 0
        self.expect_ack: int | None = None
        self.ecdh_key: ec.EllipticCurvePrivateKey | None = None
        self.segment_cmd: int | None = None
        self.segment = bytearray()
        self.outbox: collections.deque[tuple[Characteristic, bytes, SessionCrypto | None]] = \
            collections.deque()
        self.segment_acked = asyncio.Event()
        self.waiting_segment: int | None = None
        self.pump: asyncio.Task | None = None
        self.last_heard = asyncio.get_running_loop().time()
        self.closing = False  # drop the link once the outbox is sent
        self.dropping = False

    # --- out ---------------------------------------------------------------------------------

    def send(self, cmd: int, payload: bytes = b"") -> None:
        """Queue a message, cut into frames: a segment is the id with bit 7 and 15 bytes; the
        last frame is the id, its length and at most 14 bytes (encrypted: one 16-byte block)
        or 18 (in the clear: one 20-byte notification)."""
        clear = self.crypto is None or self.reply_clear
        crypto = None if clear else self.crypto
        char = self.lock.to_lock if cmd < 0x50 else self.lock.from_lock
        last = 18 if clear else 14
        pos = 0
        while len(payload) - pos > last:
            self.outbox.append((char, bytes((cmd | 0x80,)) + payload[pos:pos + 15], crypto))
            pos += 15
        self.outbox.append((char, message(cmd, payload[pos:]), crypto))
        self.reply_clear = False
        if len(self.outbox) > MAX_OUTBOX:  # a central that writes faster than it acknowledges
            self.end()
            return
        if self.pump is None or self.pump.done():
            self.pump = self.lock.radio.spawn(self._pump())

    async def _pump(self) -> None:
        while self.outbox and self.link.connected:
            char, frame, crypto = self.outbox.popleft()
            wire_frame = crypto.to_central.seal(frame) if crypto is not None else frame
            self.link.notify(char, wire_frame)
            if frame[0] & 0x80:
                self.waiting_segment = frame[0] & 0x7F
                self.segment_acked.clear()
                try:
                    async with asyncio.timeout(SEGMENT_ACK_S):
                        await self.segment_acked.wait()
                except TimeoutError:
                    self.end()
                    return
        if self.closing:
            self.link.disconnect()

    def ack(self, cmd: int, error: int = Err.SUCCESS) -> None:
        if error != Err.SUCCESS:
            self.lock.refusals[Err(error).name] += 1
        self.send(Cmd.ACK, bytes((error, cmd)))

    def end(self) -> None:
        """Drop the link (the lock's verdict on a hostile or broken exchange): nothing more is
        taken now, and the link goes once the write that ended it has had its ATT answer."""
        self.outbox.clear()
        if self.phase == "ended" and self.dropping:
            return
        self.phase = "ended"
        self.dropping = True
        self.lock.refusals["link ended"] += 1
        asyncio.get_running_loop().call_soon(self._drop)

    def _drop(self) -> None:
        if self.link.connected:
            self.link.disconnect()

    # --- in ----------------------------------------------------------------------------------

    def frame(self, char: Characteristic, data: bytes) -> int:
        """One write from the central; an ATT status."""
        if self.phase == "ended":
            self.lock.refusals["after the end"] += 1
            return ATT_WRITE_NOT_PERMITTED
        self.last_heard = asyncio.get_running_loop().time()
        # The challenge's answer comes in the clear; the acknowledgements of the challenge's
        # segments before it do not.
        if self.crypto is None or (self.next_clear and self.waiting_segment is None):
            if not 2 <= len(data) <= 20:
                self.lock.refusals["frame size"] += 1
                return ATT_INVALID_VALUE_LENGTH
            plain = data
            self.next_clear = False
        else:
            if len(data) != 20:
                self.lock.refusals["frame size"] += 1
                return ATT_INVALID_VALUE_LENGTH
            plain = self.crypto.from_central.open(data)
            if plain is None:
                self.lock.refusals["frame check"] += 1
                self.end()
                return 0
        try:
            self._fragment(char, plain, encrypted=plain is not data)
        except _Refused:
            self.lock.refusals["refused frame"] += 1
            self.end()
        return 0

    def _fragment(self, char: Characteristic, plain: bytes, encrypted: bool) -> None:
        head = plain[0]
        cmd = head & 0x7F
        if (char is self.lock.to_lock) != (cmd < 0x50):
            raise _Refused  # a response on the command characteristic or the reverse
        if head & 0x80:
            if self.segment_cmd not in (None, cmd):
                raise _Refused
            part = plain[1:16] if encrypted else plain[1:]
            if len(self.segment) + len(part) > MAX_MESSAGE:
                raise _Refused
            self.segment_cmd = cmd
            self.segment += part
            self.ack(cmd)
            return
        length = plain[1]
        if length > (14 if encrypted else 18) or (not encrypted and len(plain) != length + 2):
            raise _Refused
        if encrypted and any(plain[2 + length:]):
            raise _Refused  # the padding of a block is zeros
        body = plain[2:2 + length]
        if self.segment_cmd is not None:
            if self.segment_cmd != cmd:
                raise _Refused
            body = bytes(self.segment) + body
            self.segment_cmd, self.segment = None, bytearray()
        self._message(cmd, body)

    def _message(self, cmd: int, body: bytes) -> None:
        if cmd == Cmd.ACK:
            if len(body) != 2:
                raise _Refused
            self._on_ack(body[0], body[1])
        elif cmd == Cmd.GET_IDENTIFICATION:
            self._on_identification(body)
        elif self.phase == "identified" and cmd == Cmd.GET_IDENTIFICATION_RSP:
            self._on_central_identity(body)
        elif self.phase == "associate" and cmd == Cmd.REQUEST_CHALLENGE:
            self._on_request_challenge(body)
        elif self.phase == "pin" and cmd == Cmd.AUTH_PIN_CHALLENGE_REPLY:
            self._on_code_answer(body)
        elif self.phase == "ecdh" and cmd == Cmd.ECDH_PUBLIC_REPLY:
            self._on_central_public(body)
        elif self.phase == "challenge" and cmd == Cmd.AUTH_CHALLENGE_RSP:
            self._on_challenge_answer(body)
        elif self.phase not in ("idle", "ready"):
            raise _Refused  # out of turn in a handshake
        elif not self.authenticated:
            self.ack(cmd, Err.NOT_AUTHENTICATED)
        elif cmd == Cmd.GET_NOTIFICATIONS_MASK and not body:
            self.send(Cmd.GET_NOTIFICATIONS_MASK_RSP, bytes((ALL_NOTIFICATIONS,)))
        elif cmd == Cmd.SET_NOTIFICATIONS_MASK and len(body) == 1:
            self.notify_mask = body[0] & ALL_NOTIFICATIONS
            self.send(Cmd.SET_NOTIFICATIONS_MASK_RSP, self.lock.notifications(self.notify_mask))
        elif cmd == Cmd.UNLOCK and len(body) == 7:
            if body[0] > 5:
                self.send(Cmd.UNLOCK_RSP, struct.pack("!Bl", Err.PARAM_NOT_SUPPORTED, 0))
            else:
                self._answer_move(cmd, self.lock.drive(False))
        elif cmd == Cmd.CHANGE_MODE and len(body) == 1:
            if body[0] in (MODE_LOCK, MODE_FORCED_UNLOCK):
                self._answer_move(cmd, self.lock.drive(body[0] == MODE_LOCK))
            else:
                self.ack(cmd, Err.PARAM_NOT_SUPPORTED)
        elif cmd in Cmd.__members__.values() and cmd < 0x50:
            self.ack(cmd, Err.PARAM_NOT_SUPPORTED)  # a known command, malformed or unsupported
        else:
            self.ack(cmd, Err.UNKNOWN_CMD)

    def _answer_move(self, cmd: int, error: int) -> None:
        self.lock.move_commands += 1
        if self.lock.drop_link_before_write_answer:  # even the ATT answer to the write is lost
            self.lock.drop_link_before_write_answer = False
            self.phase = "ended"
            self.link.disconnect()
        elif self.lock.drop_link_after_command:  # the link lost before the lock's answer
            self.lock.drop_link_after_command = False
            self.end()
        elif cmd == Cmd.UNLOCK:
            self.send(Cmd.UNLOCK_RSP, struct.pack("!Bl", error, 0))
        else:
            self.ack(cmd, error)

    def _on_ack(self, error: int, cmd: int) -> None:
        if self.waiting_segment == cmd and not self.segment_acked.is_set():
            if error != Err.SUCCESS:
                raise _Refused
            self.waiting_segment = None
            self.segment_acked.set()
            return
        if self.expect_ack is None or cmd != self.expect_ack:
            return  # the acknowledgement of a report or a notification
        if error != Err.SUCCESS:
            raise _Refused
        self.expect_ack = None
        if cmd == Cmd.AUTH_PIN_CHALLENGE:
            self.phase = "pin"
            self.next_clear = True
        elif cmd == Cmd.AUTH_CHECK:
            self.ecdh_key = ec.generate_private_key(ec.SECP256R1())
            point = self.ecdh_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            self.send(Cmd.ECDH_PUBLIC, point[1:])
            self.expect_ack = Cmd.ECDH_PUBLIC
        elif cmd == Cmd.ECDH_PUBLIC:
            self.phase = "ecdh"
        elif cmd == Cmd.ASSOCIATION_PARAMETERS:
            self.send(Cmd.DET_TYPE_NAME, self.lock.type_and_name())
            self.expect_ack = Cmd.DET_TYPE_NAME
        elif cmd == Cmd.AUTH_CHALLENGE_ACCEPTED:
            self.send(Cmd.DET_TYPE_NAME, self.lock.type_and_name())
            self.expect_ack = Cmd.DET_TYPE_NAME
        elif cmd == Cmd.DET_TYPE_NAME:
            self.phase = "ready"

    def _on_identification(self, body: bytes) -> None:
        if len(body) != 4 or self.phase not in ("idle", "ready"):
            raise _Refused
        self.central_tail = body
        self.authenticated = False
        self.notify_mask = 0
        self.expect_ack = None
        self.phase = "identified"
        lock = self.lock
        self.send(Cmd.GET_IDENTIFICATION_RSP, struct.pack(
            "!HBBB4sB7sB", PROTOCOL_VERSION, *SW_VERSION, lock.device_id, 0, lock.user_id,
            DETECTOR))
        self.send(Cmd.GET_IDENTIFICATION, os.urandom(4))

    def _on_central_identity(self, body: bytes) -> None:
        if len(body) != 18:
            raise _Refused
        key_holder = body[5:9]
        if key_holder == ASSOCIATE_ID:
            self.phase = "associate"
            return
        if key_holder not in self.lock.associations:
            self.phase = "idle"
            self.send(Cmd.NOT_ASSOCIATED)
            return
        self.key_holder = key_holder
        self.nonce = os.urandom(16)
        self.send(Cmd.AUTH_CHALLENGE, self.nonce)
        self.phase = "challenge"
        self.next_clear = True

    def _on_request_challenge(self, body: bytes) -> None:
        if len(body) != 5 or body[1:] != ASSOCIATE_ID:
            raise _Refused
        if len(self.lock.associations) >= MAX_KEY_HOLDERS:
            self.ack(Cmd.REQUEST_CHALLENGE, Err.NO_AVAILABLE_KEYS)
            self.closing = True
            return
        self.nonce = os.urandom(16)
        self.send(Cmd.AUTH_PIN_CHALLENGE, self.nonce)
        self.expect_ack = Cmd.AUTH_PIN_CHALLENGE
        self.phase = "pin-ack"

    def _on_code_answer(self, body: bytes) -> None:
        if len(body) != 16 or self.central_tail is None:
            raise _Refused
        iv = session_iv(self.nonce, self.central_tail)
        self.reply_clear = True
        if not secrets.compare_digest(body, code_answer(self.lock.activation_code, iv)):
            self.lock.wrong_codes += 1
            self.ack(Cmd.AUTH_PIN_CHALLENGE_REPLY, Err.WRONG_PIN)
            self.phase = "ended"
            return
        self.ack(Cmd.AUTH_PIN_CHALLENGE_REPLY)
        self.crypto = SessionCrypto.for_code(self.lock.activation_code, iv)
        self.phase = "association"
        self.send(Cmd.AUTH_CHECK, HANDSHAKE_CHECK)
        self.expect_ack = Cmd.AUTH_CHECK

    def _on_central_public(self, body: bytes) -> None:
        if len(body) != 64 or self.ecdh_key is None or self.crypto is None:
            raise _Refused
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + body)
        except ValueError:
            raise _Refused from None
        shared = self.ecdh_key.exchange(ec.ECDH(), peer)
        self.ecdh_key = None
        key_holder = self.lock.new_key_holder_id()
        lock_secret = os.urandom(16)
        self.lock.associate(key_holder, association_secret(shared, self.crypto.iv, lock_secret))
        self.ack(Cmd.ECDH_PUBLIC_REPLY)
        self.send(Cmd.ASSOCIATION_PARAMETERS, key_holder + lock_secret)
        self.expect_ack = Cmd.ASSOCIATION_PARAMETERS
        self.phase = "association"

    def _on_challenge_answer(self, body: bytes) -> None:
        secret = self.lock.associations.get(self.key_holder or b"")
        if len(body) != 16 or self.central_tail is None or secret is None:
            raise _Refused
        iv = session_iv(self.nonce, self.central_tail)
        if not secrets.compare_digest(body, secret_answer(secret, iv)):
            self.lock.failed_challenges += 1
            raise _Refused  # it cannot read anything sealed with the right keys: the link ends
        self.crypto = SessionCrypto.for_secret(secret, iv)
        self.authenticated = True
        self.phase = "authenticating"
        self.send(Cmd.AUTH_CHALLENGE_ACCEPTED, HANDSHAKE_CHECK)
        self.expect_ack = Cmd.AUTH_CHALLENGE_ACCEPTED

    # --- reports -----------------------------------------------------------------------------

    def report(self, mask: int, status_report: bytes | None = None) -> None:
        """Tell a key holder that enabled notifications what changed (``mask`` of types)."""
        if not (self.authenticated and self.phase == "ready"):
            return
        if status_report is not None:
            self.send(Cmd.STATUS_REPORT, status_report)
        if mask & self.notify_mask:
            self.send(Cmd.NOTIFICATIONS_UPDATE, self.lock.notifications(mask & self.notify_mask))


class DKeyLock(Peripheral):
    """The simulated dKey; see the module docstring. Knobs: ``travel_time_s`` (one motor run),
    ``idle_timeout_s`` (a silent link is ended), ``jammed`` (the motor stalls: STUCK report,
    the state stays), ``battery`` (raw units: set with :meth:`set_battery`)."""

    # Between its advertising events on the realistic air: a battery lock's ~1 s (dormakaba
    # publishes no figure: an assumption, docs/ble-timing.md).
    adv_interval_s = 1.0

    def __init__(self, address: bytes | str, name: str = "dKey",
                 activation_code: str | None = None, travel_time_s: float = 1.0,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, battery: int = BATTERY_FULL,
                 rssi: int = -65) -> None:
        self.to_lock = Characteristic(TO_LOCK_UUID, FLAG_WRITE | FLAG_NOTIFY, encrypted=True)
        self.from_lock = Characteristic(FROM_LOCK_UUID, FLAG_WRITE | FLAG_NOTIFY, encrypted=True)
        self._window_until: float | None = None
        self._until_bonded = False  # the window closes at the first bond, not at a time
        self._advertising = True
        super().__init__(address, name, [Service(SERVICE_UUID, [self.to_lock, self.from_lock])],
                         rssi=rssi)
        code = activation_code if activation_code is not None else new_activation_code()
        if len(code) != lockkinds.DKEY_CODE_LEN or any(
                c not in lockkinds.DKEY_CODE_ALPHABET for c in code):
            raise ValueError(f"an activation code is {lockkinds.DKEY_CODE_LEN} characters of "
                             f"{lockkinds.DKEY_CODE_ALPHABET}")
        self.activation_code = code
        self.device_id = os.urandom(4)
        self.user_id = b"dKey\x00\x00\x00"
        self.travel_time_s = travel_time_s
        self.session_idle_s = idle_timeout_s
        self.encrypt_within_s = ENCRYPT_WITHIN_S
        self.battery = battery
        self.locked = True
        self.moving = False
        self.jammed = False
        # The next UNLOCK or CHANGE_MODE is taken (the motor runs) but the link drops before
        # its answer, as a link lost right after the write.
        self.drop_link_after_command = False
        self.drop_link_before_write_answer = False  # ... before even the write's ATT answer
        self.move_commands = 0  # UNLOCK and CHANGE_MODE commands taken (authenticated)
        self.door_open = False
        self.associations: dict[bytes, bytes] = {}
        self.sessions: dict[Link, _Session] = {}
        self.motor_moves = 0
        self.manual_turns = 0
        self.connections = 0
        self.wrong_codes = 0
        self.failed_challenges = 0
        self.idle_disconnects = 0
        self.unencrypted_drops = 0
        self.faults: list[BaseException] = []
        self.refusals: collections.Counter[str] = collections.Counter()  # why, how often
        self.open_activation_window()  # a new lock is in its activation window

    @property
    def advertising(self) -> bool:
        """Connectable adverts while no central holds its one connection."""
        return self._advertising and not self.links

    @advertising.setter
    def advertising(self, value: bool) -> None:
        self._advertising = value

    # --- the activation window (BLE bonding) ----------------------------------------------

    @property
    def pairable(self) -> bool:
        if self._until_bonded and self.bonds:
            self.close_activation_window()
        return self._window_until is not None and time.monotonic() < self._window_until

    @pairable.setter
    def pairable(self, value: bool) -> None:
        self._until_bonded = False
        self._window_until = time.monotonic() + ACTIVATION_WINDOW_S if value else None

    def open_activation_window(self, seconds: float = ACTIVATION_WINDOW_S, *,
                               until_bonded: bool = False) -> None:
        """The owner's button: a central may bond for ``seconds``. ``until_bonded``: until the
        first central bonds instead, however long that takes (a lock associated before the hub
        ever connected: simulator.home.paired_dkey, docs/dkey.md "In a simulated home")."""
        self._until_bonded = until_bonded
        self._window_until = math.inf if until_bonded else time.monotonic() + seconds

    def close_activation_window(self) -> None:
        self._until_bonded = False
        self._window_until = None

    # --- association data ----------------------------------------------------------------

    def new_key_holder_id(self) -> bytes:
        while True:
            key_holder = os.urandom(4)
            if key_holder != ASSOCIATE_ID and key_holder not in self.associations:
                return key_holder

    def associate(self, key_holder: bytes, secret: bytes) -> None:
        self.associations[key_holder] = secret
        self.close_activation_window()

    def forget_associations(self) -> None:
        """Every key holder removed (the owner's app): their secrets no longer authenticate."""
        self.associations.clear()

    def factory_reset(self) -> None:
        """Associations and BLE bonds gone, every link dropped, the activation window open."""
        self.forget_associations()
        self.forget_bonds()
        for session in list(self.sessions.values()):
            session.end()
        self.open_activation_window()

    # --- the lock ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The bolt in the hub's words (wire.lockkinds.STATES), as a simulated reference lock
        says it: "moving" while the motor runs, else "locked" or "unlocked"."""
        return "moving" if self.moving else ("locked" if self.locked else "unlocked")

    def notifications(self, mask: int) -> bytes:
        """The (type, value) pairs of the types in ``mask``."""
        values = {
            N_BATTERY: self.battery,
            N_DOOR: DOOR_OPEN if self.door_open else DOOR_CLOSED,
            N_UNLOCK_STATUS: STATUS_LOCKED if self.locked else STATUS_UNLOCKED,
            N_UNLOCK_MODE: 1 if self.locked else 0,
            N_AWAY: 2,  # disabled
            N_SHELL: 2,  # disabled
            N_SHB_DELAY: 0,
        }
        return b"".join(bytes((t, v & 0xFF)) for t, v in values.items() if mask & (1 << t))

    def type_and_name(self) -> bytes:
        name = self.name.encode("latin-1", "replace")[:12].ljust(12, b"\x00")
        return struct.pack("!4sbB12sBB", self.device_id, FRONT_DOOR, DETECTOR_INSIDE, name, 0, 1)

    def drive(self, locked: bool) -> int:
        """Start the motor towards ``locked``; the error code of the command."""
        if self.moving:
            return Err.WRONG_STATE
        if self.locked == locked:
            return Err.SUCCESS
        self.moving = True
        self.radio.spawn(self._travel(locked))
        return Err.SUCCESS

    async def _travel(self, locked: bool) -> None:
        try:
            await asyncio.sleep(self.travel_time_s)
        finally:
            self.moving = False
        if self.jammed:
            self._report(0, bytes((REPORT_STUCK, 0)))
            return
        self.motor_moves += 1
        self.locked = locked
        status = STATUS_LOCKED if locked else STATUS_UNLOCKED
        self._report((1 << N_UNLOCK_STATUS) | (1 << N_UNLOCK_MODE),
                     bytes((REPORT_LOCK_UNLOCK, status)))

    def turn_by_hand(self, locked: bool) -> None:
        """The key or the thumb-turn: the bolt moves without the motor; a key holder with
        notifications hears it. Call it on the radio's loop."""
        if self.locked == locked:
            return
        self.locked = locked
        self.manual_turns += 1
        self._report((1 << N_UNLOCK_STATUS) | (1 << N_UNLOCK_MODE))

    def set_battery(self, raw: int) -> None:
        """The battery in raw units (the library: warning below 20, critical at 17 and under)."""
        self.battery = max(0, min(255, raw))
        self._report(1 << N_BATTERY)

    def _report(self, mask: int, status_report: bytes | None = None) -> None:
        for session in list(self.sessions.values()):
            session.report(mask, status_report)

    # --- the radio's side ----------------------------------------------------------------

    def advertising_data(self) -> bytes:
        uuid = uuid128_le(SERVICE_UUID)
        return bytes((2, 0x01, 0x06, 1 + len(uuid), 0x07)) + uuid

    def scan_response(self) -> bytes:
        name = self.name.encode()[:29]
        return bytes((1 + len(name), 0x09)) + name

    def on_connect(self, link: Link) -> None:
        self.connections += 1
        if self.sessions:  # one central at a time
            link.disconnect()
            return
        session = self.sessions[link] = _Session(self, link)
        self.radio.spawn(self._idle_watch(session))
        self.radio.spawn(self._encryption_watch(session))

    def on_disconnect(self, link: Link) -> None:
        session = self.sessions.pop(link, None)
        if session is not None:
            session.phase = "ended"
            session.outbox.clear()
            session.segment_acked.set()

    def on_write(self, link: Link, characteristic: Characteristic, data: bytes) -> int:
        session = self.sessions.get(link)
        if session is None:
            return ATT_WRITE_NOT_PERMITTED
        try:
            return session.frame(characteristic, bytes(data))
        except Exception as exc:  # a bug here, not the central's: recorded for the tests
            self.faults.append(exc)
            session.end()
            return 0

    def on_read(self, link: Link, characteristic: Characteristic) -> bytes:
        return b""

    async def _encryption_watch(self, session: _Session) -> None:
        """A central that has not bonded (or re-encrypted with its bond) in time does not keep
        the lock's one connection: a failed pairing leaves the link up, and a client that
        gave up on it may never drop it (py-dormakaba-dkey leaves it open when pair() fails)."""
        await asyncio.sleep(self.encrypt_within_s)
        if session.link.connected and not session.link.encrypted:
            self.unencrypted_drops += 1
            session.end()

    async def _idle_watch(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        while session.link.connected:
            left = session.last_heard + self.session_idle_s - loop.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            self.idle_disconnects += 1
            if session.crypto is not None and session.phase == "ready":
                session.send(Cmd.DISCONNECT_REQ, bytes((DISCONNECT_TIMEOUT,)))
                session.closing = True
                await asyncio.sleep(1.0)  # the request's time on the air, then the drop
            session.end()
            return
