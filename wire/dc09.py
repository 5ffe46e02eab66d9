"""SIA DC-09 messages with Contact ID data: what the bridge sends the alarm centre's receiver over
LTE when the primary path (hubd -> MQTT) did not confirm an alarm in time.

Written once for MicroPython (the bridge) and CPython (tests, simulator). docs/second-path.md shows
a frame byte by byte. A frame:

    <LF> CRC(4 hex) LEN(4 hex) "ADM-CID"SSSS Rrcvr Lline #ACCT [#ACCT|QEEE GG ZZZ][Iid]_HH:MM:SS,MM-DD-YYYY <CR>

CRC and LEN cover everything from the first quote up to (not including) the CR. With a key the
type is "*ADM-CID" and everything after the "[" is AES-CBC (zero IV) over a random pad, "|", the
data and the timestamp, sent as upper-case hex. The alarm's stable id rides in the "I" extended
data field, so the centre recognises an alarm that also came over the primary path.

Everything that parses receiver input treats it as hostile: bounded, ASCII only, CRC checked.
"""

import binascii
import os

from wire import alarms

ADM_CID = "ADM-CID"
NULL = "NULL"

ACK = "ack"
NAK = "nak"
DUH = "duh"
BAD = "bad"  # not a receiver answer we can trust: treat like a lost answer

MAX_ANSWER = 512  # bytes; pysiaalarm's answers are < 100
MAX_ID = 64

try:
    import cryptolib

    def _aes_cbc(key, data, encrypt):
        # MODE_CBC is 2; a fresh object per message: CBC state must not carry over.
        c = cryptolib.aes(key, 2, bytes(16))
        return c.encrypt(data) if encrypt else c.decrypt(data)

except ImportError:  # CPython: the `cryptography` package provides AES
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def _aes_cbc(key, data, encrypt):
        c = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(16)))
        op = c.encryptor() if encrypt else c.decryptor()
        return op.update(bytes(data)) + op.finalize()


# Contact ID (SIA DC-05) event codes, public: the events, and each one's qualifier (1 new event,
# 3 restore) times 1000 plus its code, read by cid(). Not a dict of tuples: that cost the
# bridge's heap ~800 bytes on 64-bit.
_CID_EVENTS = (alarms.BUTTON, alarms.PULL_CORD, alarms.FALL, alarms.SMOKE, alarms.MAINS_LOST,
               alarms.MAINS_RESTORED, alarms.LOW_BATTERY, alarms.TAMPER, alarms.TEST,
               alarms.UNIT_LINK_LOST, alarms.UNIT_LINK_RESTORED, alarms.HUB_LINK_LOST,
               alarms.HUB_LINK_RESTORED)
_CID_CODES = (
    1101,  # button: personal emergency
    1101,  # pull cord: personal emergency, from a cord instead of a button
    1100,  # fall: medical
    1111,  # smoke
    1301,  # mains lost: AC loss
    3301,
    1302,  # low system battery
    1137,  # tamper
    1601,  # manual trigger test: a person pressed test
    1330,  # system peripheral trouble: the base unit is silent
    3330,
    1350,  # communication trouble: the primary path is down
    3350,
)
GENERAL_ALARM = (1, 140)  # an event this firmware does not know yet: still an alarm, never dropped


def cid(event):
    """(qualifier, code) of a wire.alarms event; unknown events are a general alarm (140)."""
    for i in range(len(_CID_EVENTS)):
        if _CID_EVENTS[i] == event:
            return (_CID_CODES[i] // 1000, _CID_CODES[i] % 1000)
    return GENERAL_ALARM


def crc16(data, crc=0):
    """CRC-16/ARC (reflected poly 0xA001, init 0): crc16(b"123456789") == 0xBB3D."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# Days before each month in a non-leap year, for the civil calendar without time.gmtime (whose
# epoch differs between MicroPython ports).
_MDAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def timestamp(unix):
    """DC-09 timestamp (UTC) of Unix seconds: "_HH:MM:SS,MM-DD-YYYY"."""
    unix = int(unix)
    days, secs = unix // 86400, unix % 86400
    y = 1970
    while True:
        n = 366 if _leap(y) else 365
        if days < n:
            break
        days -= n
        y += 1
    m = 0
    while True:
        n = _MDAYS[m] + (1 if m == 1 and _leap(y) else 0)
        if days < n:
            break
        days -= n
        m += 1
    return "_%02d:%02d:%02d,%02d-%02d-%04d" % (secs // 3600, secs // 60 % 60, secs % 60, m + 1,
                                               days + 1, y)


def parse_timestamp(text):
    """Unix seconds of "HH:MM:SS,MM-DD-YYYY" (with or without the "_"); None when malformed."""
    if text[:1] == "_":
        text = text[1:]
    if len(text) != 19 or text[2] != ":" or text[5] != ":" or text[8] != "," \
            or text[11] != "-" or text[14] != "-":
        return None
    try:
        hh, mi, ss = int(text[0:2]), int(text[3:5]), int(text[6:8])
        mo, dd, y = int(text[9:11]), int(text[12:14]), int(text[15:19])
    except ValueError:
        return None
    if not (hh < 24 and mi < 60 and ss < 60 and 1 <= mo <= 12 and 1970 <= y <= 2200):
        return None
    mdays = _MDAYS[mo - 1] + (1 if mo == 2 and _leap(y) else 0)
    if not 1 <= dd <= mdays:
        return None
    days = dd - 1
    for yy in range(1970, y):
        days += 366 if _leap(yy) else 365
    for mm in range(mo - 1):
        days += _MDAYS[mm] + (1 if mm == 1 and _leap(y) else 0)
    return days * 86400 + hh * 3600 + mi * 60 + ss


def _check_account(account):
    # pysiaalarm (and many receivers) take 3-16 upper-case hex digits for an ADM-CID account.
    if not 3 <= len(account) <= 16:
        raise ValueError("account must have 3-16 hex digits")
    for c in account:
        if c not in "0123456789ABCDEF":
            raise ValueError("account must be upper-case hex")


def _check_id(alarm_id):
    if not 0 < len(alarm_id) <= MAX_ID:
        raise ValueError("alarm id must have 1-%d characters" % MAX_ID)
    for c in alarm_id:
        # Brackets and "|" delimit DC-09 fields; only printable ASCII survives every receiver.
        if not " " <= c <= "~" or c in "[]|":
            raise ValueError("alarm id has a character DC-09 cannot carry")


_PAD = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _pad(n):
    return "".join(_PAD[b % len(_PAD)] for b in os.urandom(n))


def frame(mtype, seq, account, data, unix, receiver="", line="0", key=None, pad=None):
    """One DC-09 frame (bytes, LF to CR). `data` is the text after "[" up to and including the
    closing "]" and any extended data, e.g. "#1234|1101 01 001][Ibu-7]"; `unix` stamps it.
    With `key` (16, 24 or 32 ASCII bytes) the data and timestamp are AES-encrypted; `pad` fixes
    the random pad (tests only)."""
    _check_account(account)
    if not 0 <= seq <= 9999:
        raise ValueError("sequence is 0000-9999")
    tail = data + timestamp(unix)
    if key is None:
        head = '"%s"%04d' % (mtype, seq)
    else:
        head = '"*%s"%04d' % (mtype, seq)
        if pad is None:
            # 1-16 pad characters: a region that is already whole blocks still gets 16 (DC-09)
            pad = _pad(16 - (len(tail) + 1) % 16)
        clear = (pad + "|" + tail).encode()
        if len(clear) % 16:
            raise ValueError("pad does not fill the last AES block")
        tail = binascii.hexlify(_aes_cbc(key, clear, True)).decode().upper()
    body = "%s%s%s%s#%s[%s" % (head, ("R" + receiver) if receiver else "", "L", line, account,
                               tail)
    return ("\n%04X%04X%s\r" % (crc16(body.encode()), len(body), body)).encode()


def alarm_frame(seq, account, event, alarm_id, unix, receiver="", line="0", key=None, zone=1,
                partition=1, pad=None):
    """The DC-09 ADM-CID frame of one alarm: its Contact ID code, and its stable id in the "I"
    extended data field so both delivery paths name the alarm alike."""
    _check_id(alarm_id)
    q, code = cid(event)
    if not (0 <= zone <= 999 and 0 <= partition <= 99):
        raise ValueError("zone is 000-999, partition 00-99")
    data = "#%s|%d%03d %02d %03d][I%s]" % (account, q, code, partition, zone, alarm_id)
    return frame(ADM_CID, seq, account, data, unix, receiver, line, key, pad)


def null_frame(seq, account, unix, receiver="", line="0", key=None):
    """The NULL supervision message: proves the path to the receiver works, carries no event."""
    return frame(NULL, seq, account, "]", unix, receiver, line, key)


def answer_complete(buf):
    """True when `buf` holds a whole receiver answer: a frame up to its CR, or a bare
    "ACK"-style word (pysiaalarm answers a message for an unknown account with a bare "NAK")."""
    if buf[:1] == b"\n":
        return b"\r" in buf
    return len(buf) >= 5 and buf[:1] == b'"' and buf.count(b'"') >= 2


def parse_answer(buf, seq, account, key=None):
    """Classify a receiver's answer to frame `seq` of `account`: (kind, receiver_unix).

    kind is ACK, NAK (receiver_unix: the receiver's clock, or None), DUH, or BAD (garbled, wrong
    CRC, another sequence or account, an encrypted ACK that does not decrypt with our key: not
    trusted). Never raises on any input."""
    try:
        return _parse_answer(buf, seq, account, key)
    except Exception:  # hostile input must only ever yield BAD
        return BAD, None


def _parse_answer(buf, seq, account, key):
    if len(buf) > MAX_ANSWER:
        return BAD, None
    buf = bytes(buf).strip(b"\n\r\x00 ")
    for b in buf:
        if b < 0x20 or b > 0x7E:
            return BAD, None
    text = buf.decode()
    if text[:1] == '"':
        # A bare word has no CRC, sequence or account: only a NAK (pysiaalarm's answer for an
        # unknown account) is worth a bounded resend; a bare ACK or DUH proves nothing.
        return (NAK, None) if text == '"NAK"' else (BAD, None)
    if len(text) < 8 + 5:
        return BAD, None
    try:
        crc, n = int(text[:4], 16), int(text[4:8], 16)
    except ValueError:
        return BAD, None
    body = text[8:]
    if n != len(body) or crc != crc16(body.encode()):
        return BAD, None
    if body[0] != '"':
        return BAD, None
    end = body.find('"', 1)
    if end < 0:
        return BAD, None
    word, rest = body[1:end], body[end + 1:]
    encrypted = word[:1] == "*"
    if encrypted:
        word = word[1:]
    if word == "NAK":
        # "NAK"0000R..L..A0[]_HH:MM:SS,MM-DD-YYYY: the receiver's clock is the last 20 chars
        return NAK, parse_timestamp(rest[-20:]) if rest[-20:-19] == "_" else None
    if word not in ("ACK", "DUH"):
        return BAD, None
    if rest[:4] != "%04d" % seq or ("#%s[" % account) not in rest:
        return BAD, None
    if word == "DUH":
        return DUH, None
    if key is not None:
        if not encrypted:
            return BAD, None  # an unkeyed ACK could come from anyone on the path
        hexpart = rest[rest.find("[") + 1:]
        if not 0 < len(hexpart) <= 256 or len(hexpart) % 32:
            return BAD, None
        clear = _aes_cbc(key, binascii.unhexlify(hexpart), False)
        # pysiaalarm puts "]" and its timestamp inside, left-padded with "0"
        if b"]_" not in clear or parse_timestamp(clear[-20:].decode()) is None:
            return BAD, None
    return ACK, None
