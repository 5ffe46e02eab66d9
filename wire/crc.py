"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

Check value: crc16(b"123456789") == 0x29B1. Table-driven; the table is 512 bytes.
"""


def _make_table():
    table = bytearray(512)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
        table[2 * i] = crc >> 8
        table[2 * i + 1] = crc & 0xFF
    return bytes(table)


_TABLE = _make_table()


def crc16(data, crc=0xFFFF):
    """Return the CRC of `data` (bytes-like), continuing from `crc`."""
    table = _TABLE
    for b in data:
        i = ((crc >> 8) ^ b) & 0xFF
        crc = ((crc << 8) & 0xFFFF) ^ ((table[2 * i] << 8) | table[2 * i + 1])
    return crc
