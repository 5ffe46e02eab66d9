"""UUIDs between the air and bleak: the over-the-air bytes are little-endian (2, 4 or 16 of
them); bleak names every UUID by its 128-bit lower-case string."""

from __future__ import annotations

from uuid import UUID

from bleak.uuids import normalize_uuid_16, normalize_uuid_32

#: Bytes of a 16-, 32- and 128-bit UUID on the air.
WIDTHS = (2, 4, 16)


def from_air(raw: bytes) -> str | None:
    """bleak's string for a UUID's little-endian bytes; None for any other length."""
    if len(raw) == 2:
        return normalize_uuid_16(int.from_bytes(raw, "little"))
    if len(raw) == 4:
        return normalize_uuid_32(int.from_bytes(raw, "little"))
    if len(raw) == 16:
        return str(UUID(bytes=raw[::-1]))
    return None


def from_wire(text: str) -> str | None:
    """bleak's string for a link message's UUID (the hex of its little-endian bytes: 4 or 32
    digits, docs/ble-proxy.md); None for anything else."""
    if len(text) not in (4, 32):
        return None
    try:
        return from_air(bytes.fromhex(text))
    except ValueError:
        return None
