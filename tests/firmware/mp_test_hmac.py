"""The HMAC-SHA256 the bridge tags every link frame with (wire/hmac_sha256.py), inside MicroPython
(run by tests/firmware/runner.py); CPython's hmac module checks it in tests/wire/test_lockproto.py."""

import binascii

from wire.hmac_sha256 import compare_digest, hmac_sha256


def test_hmac_matches_rfc4231_vectors():
    vectors = (
        (b"\x0b" * 20, b"Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    )
    for key, msg, expected in vectors:
        assert binascii.hexlify(hmac_sha256(key, msg)).decode() == expected


def test_compare_digest():
    assert compare_digest(b"abc", b"abc")
    assert not compare_digest(b"abc", b"abd")
    assert not compare_digest(b"ab", b"abc")
