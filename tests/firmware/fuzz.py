"""Seeded fuzzing inside MicroPython, for the mp_test_fuzz_*.py files (no hypothesis here).

The seed comes from FUZZ_SEED, else a fresh random one; every failure names it, so

    FUZZ_SEED=<n> ./scripts/test tests/firmware/test_firmware_units.py -k fuzz

replays the same inputs. Each test calls start() first: its inputs do not depend on which tests
ran before it in the same process.
"""

import os
import random

_env = os.getenv("FUZZ_SEED")
SEED = int(_env) if _env else int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF

# Bytes that mean something to one of the decoders: delimiters, quotes, escapes, brackets.
SPECIAL = b'\x00\xff\x80\n\r"\\[]{}:,|*#_>+-0123456789 eE.'


def start():
    """Seed the generator with SEED (call at the start of every test)."""
    random.seed(SEED)


def rand(n):
    """A random int 0..n-1 (n at most 2**31: MicroPython's randrange never returns for more)."""
    return random.randrange(n)


def rbytes(n):
    """n random bytes."""
    return bytes(random.getrandbits(8) for _ in range(n))


def mutate(data):
    """One random change to ``data`` (bytes): a byte replaced, flipped, removed, inserted or
    duplicated, a cut, a splice of random bytes, or a special byte dropped in."""
    if not data:
        return rbytes(1 + rand(8))
    i = rand(len(data))
    head, tail = data[:i], data[i + 1:]
    how = rand(8)
    if how == 0:
        return head + rbytes(1) + tail
    if how == 1:
        return head + bytes([data[i] ^ (1 << rand(8))]) + tail
    if how == 2:
        return head + tail
    if how == 3:
        return data[:i] + rbytes(1) + data[i:]
    if how == 4:
        return data[:i] + data[i:i + 1 + rand(8)] + data[i:]
    if how == 5:
        return data[:i]
    if how == 6:
        return data[:i] + rbytes(1 + rand(6)) + data[i + rand(4):]
    return head + bytes([SPECIAL[rand(len(SPECIAL))]]) + tail


def mutants(valid, count, most=3):
    """``count`` inputs, one at a time: ``valid`` with 1..``most`` random changes each."""
    for _ in range(count):
        data = valid
        for _ in range(1 + rand(most)):
            data = mutate(data)
        yield data


def noise(count, longest=64):
    """``count`` random byte strings of 0..``longest`` bytes, one at a time; every fourth one
    is made of special bytes only."""
    for k in range(count):
        n = rand(longest + 1)
        if k % 4 == 3:
            yield bytes(SPECIAL[rand(len(SPECIAL))] for _ in range(n))
        else:
            yield rbytes(n)


def chain(*iterables):
    """The items of each iterable in turn (MicroPython has no itertools)."""
    for items in iterables:
        for item in items:
            yield item


class Ended(Exception):
    """Raised by Reader when its chunks are used up: it ends the read loop under test."""


class Reader:
    """An asyncio stream reader (read(n)) of a fixed list of chunks, then Ended: it drives a
    firmware read loop through exactly these bytes."""

    def __init__(self, chunks):
        self.chunks = chunks

    async def read(self, n):
        if not self.chunks:
            raise Ended()
        return self.chunks.pop(0)


def fail(data, what):
    """The message of a failed fuzz check: how to replay it, the input (its first 300 bytes),
    what happened."""
    shown = repr(data[:300]) + (" ... (%d bytes)" % len(data) if len(data) > 300 else "")
    return "FUZZ_SEED=%d replays it: input %s: %s" % (SEED, shown, what)
