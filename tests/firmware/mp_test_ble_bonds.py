"""The bond store (firmware/ble_bonds.py) inside MicroPython, on real files: the stack's
secret requests, its bounds, forgetting one peer, surviving a reload, and whatever bytes the
file holds never raising."""

import os
import random

import ble_bonds

A = b"\xc0\xff\xee\x00\x0b\x01"
B = b"\xc0\xff\xee\x00\x0b\x02"
OUR, PEER, IRK = 1, 2, 10
SECRET = bytes(range(70))


def _path():
    return "/tmp/mp_test_bonds_%08x.bin" % random.getrandbits(32)


def _fresh():
    path = _path()
    ble_bonds.remove(path)
    return ble_bonds.Bonds(path), path


def test_a_peer_key_is_nimbles_ble_addr_t():
    assert ble_bonds.peer_key(1, A) == b"\x01\x01\x0b\x00\xee\xff\xc0"


def test_the_stack_gets_what_it_set_by_key_and_by_index_and_saved_bonds_come_back():
    bonds, path = _fresh()
    key = memoryview(ble_bonds.peer_key(0, A))  # the stack hands over views
    assert bonds.get(PEER, 0, key) is None and not bonds.holds(0, A)
    assert bonds.set(OUR, key, memoryview(SECRET)) and bonds.set(PEER, key, SECRET[::1])
    assert bonds.set(PEER, ble_bonds.peer_key(0, B), b"b" * 70)
    assert bonds.get(PEER, 0, key) == SECRET and bonds.holds(0, A) and not bonds.holds(1, A)
    assert bonds.get(PEER, 1, None) == b"b" * 70 and bonds.get(PEER, 2, None) is None
    assert bonds.peers() == 2 and bonds.dirty
    bonds.save()
    assert not bonds.dirty
    again = ble_bonds.Bonds(path)
    assert again.get(PEER, 0, key) == SECRET and again.get(OUR, 0, key) == SECRET
    assert again.peers() == 2
    assert bonds.set(PEER, key, None) and bonds.get(PEER, 0, key) is None  # the stack deletes
    assert not bonds.set(PEER, key, None)  # nothing left to delete
    ble_bonds.remove(path)


def test_forget_drops_every_secret_of_one_peer_and_saves():
    bonds, path = _fresh()
    for sec_type in (OUR, PEER):
        bonds.set(sec_type, ble_bonds.peer_key(0, A), SECRET)
        bonds.set(sec_type, ble_bonds.peer_key(0, B), SECRET)
    bonds.save()
    assert bonds.forget(0, A) == 1 and bonds.forget(0, A) == 0 and bonds.forget(1, B) == 0
    bonds.save()
    again = ble_bonds.Bonds(path)
    assert not again.holds(0, A) and again.holds(0, B) and again.peers() == 1
    ble_bonds.remove(path)
    assert not ble_bonds.Bonds(path).holds(0, B)  # the wipe's remove: nothing left


def test_a_new_peer_beyond_the_limit_and_oversized_secrets_are_refused_never_evicting():
    bonds, path = _fresh()
    bonds.max_peers = 2
    assert bonds.set(PEER, ble_bonds.peer_key(0, A), SECRET)
    assert bonds.set(PEER, ble_bonds.peer_key(0, B), SECRET)
    third = ble_bonds.peer_key(1, A)
    assert not bonds.set(PEER, third, SECRET) and not bonds.set(OUR, third, SECRET)
    assert bonds.holds(0, A) and bonds.holds(0, B) and bonds.peers() == 2
    assert bonds.set(OUR, ble_bonds.peer_key(0, A), SECRET)  # a known peer's other half fits
    assert not bonds.set(PEER, ble_bonds.peer_key(0, A), bytes(129))
    assert not bonds.set(PEER, bytes(17), SECRET) and not bonds.set(PEER, None, SECRET)
    assert bonds.set(IRK, b"\x00" * 7, bytes(16)) and bonds.set(IRK, b"\x01" * 7, bytes(16))
    assert not bonds.set(IRK, b"\x02" * 7, bytes(16))  # a few others only


def test_whatever_the_file_holds_loading_never_raises_and_a_bad_file_is_ignored_whole():
    path = _path()
    good = ble_bonds.MAGIC + bytes((PEER, 7, 3)) + ble_bonds.peer_key(0, A) + b"abc"
    cases = [b"", b"BND", b"XXXX" + good[4:], good[:-1], good + b"\x02",
             ble_bonds.MAGIC + bytes((PEER, 0, 0)),  # a key of no bytes
             ble_bonds.MAGIC + bytes((PEER, 17, 0)) + bytes(17),  # a key too long
             ble_bonds.MAGIC + bytes((PEER, 7, 200)) + bytes(207),  # a value too long
             good + good[4:],  # the same key twice
             ble_bonds.MAGIC + (bytes((PEER, 1, 0, 0))) * 40]  # more records than fit
    for _ in range(60):
        cases.append(bytes(random.getrandbits(8) for _ in range(random.getrandbits(7))))
        cases.append(ble_bonds.MAGIC
                     + bytes(random.getrandbits(8) for _ in range(random.getrandbits(8))))
    for data in cases:
        with open(path, "wb") as f:
            f.write(data)
        bonds = ble_bonds.Bonds(path)  # must not raise
        assert bonds.peers() <= 2 * ble_bonds.MAX_PEERS + 2
        assert bonds.get(PEER, 0, None) is None or isinstance(bonds.get(PEER, 0, None), bytes)
    with open(path, "wb") as f:
        f.write(good)
    assert ble_bonds.Bonds(path).get(PEER, 0, ble_bonds.peer_key(0, A)) == b"abc"
    ble_bonds.remove(path)


def test_a_save_replaces_the_file_whole():
    bonds, path = _fresh()
    bonds.set(PEER, ble_bonds.peer_key(0, A), SECRET)
    bonds.save()
    size = os.stat(path)[6]
    bonds.forget(0, A)
    bonds.save()
    assert os.stat(path)[6] == len(ble_bonds.MAGIC) < size
    try:
        os.stat(path + ".tmp")
        raise AssertionError("the temporary file was left behind")
    except OSError:
        pass
    ble_bonds.remove(path)
