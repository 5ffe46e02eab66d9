"""Pairing through the simulated adapter (simulator/bleak_backend.py on simulator/air_central.py),
with unmodified bleak, against the simulated radio's LE security (simulator/radio.py): the
peripheral's bonds and its characteristic's refusals are the evidence.

- an encrypted characteristic is refused (insufficient authentication) until bleak's pair();
  pairing bonds (the peripheral holds a key for this adapter);
- a later connection is encrypted with the bond as it connects (as BlueZ does for a paired
  device), without a second pairing;
- a peripheral that lost the bond refuses the re-encryption: the refusal reaches bleak;
- a peripheral that is not pairable: pair() fails with a BleakError, the link stays up;
- unpair() forgets the bond: the next pairing is a new one.

(Keys a hostile radio pushes for a peer nobody is pairing: tests/simulator/test_air_central.py.)
"""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from simulator.bleak_backend import SimClient
from simulator.radio import (
    FLAG_READ,
    FLAG_WRITE,
    Characteristic,
    Peripheral,
    Radio,
    Service,
)

ADDR = "C0:FF:EE:00:00:0D"
SERVICE = "6a3c0001-0000-4000-8000-00000000d0d0"
SECRET_CHAR = "6a3c0002-0000-4000-8000-00000000d0d0"
TIMEOUT = 30.0  # a hang guard


@pytest.fixture
def peripheral(air: Radio) -> Peripheral:
    secret = Characteristic(SECRET_CHAR, FLAG_READ | FLAG_WRITE, b"kept", encrypted=True)
    peripheral = Peripheral(ADDR, "bonded-lock", [Service(SERVICE, [secret])])
    peripheral.pair_delay_s = 0.05
    air.add(peripheral)
    return peripheral


def _client(air: Radio) -> BleakClient:
    return BleakClient(ADDR, backend=SimClient, radio_socket=air.socket_path, addr_type=0,
                       timeout=10.0)


async def test_pairing_opens_an_encrypted_characteristic_and_bonds(
        air: Radio, peripheral: Peripheral) -> None:
    async with asyncio.timeout(TIMEOUT), _client(air) as client:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.read_gatt_char(SECRET_CHAR)
        assert refused.value.code == BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION
        await client.pair()
        assert await client.read_gatt_char(SECRET_CHAR) == b"kept"
        await client.write_gatt_char(SECRET_CHAR, b"new", response=True)
    assert peripheral.services[0].characteristics[0].value == b"new"
    assert len(peripheral.bonds) == 1, "the peripheral keeps a key for this adapter"


async def test_a_later_connection_is_re_encrypted_with_the_bond_without_pairing_again(
        air: Radio, peripheral: Peripheral) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with _client(air) as client:
            await client.pair()
        bond = dict(peripheral.bonds)
        peripheral.pairable = False  # a new pairing would fail: only the bond can encrypt
        async with _client(air) as client:
            assert peripheral.links[0].encrypted, "encrypted as it connected, as BlueZ does"
            assert await client.read_gatt_char(SECRET_CHAR) == b"kept"
    assert peripheral.bonds == bond


async def test_a_peer_that_lost_the_bond_refuses_and_the_refusal_reaches_bleak(
        air: Radio, peripheral: Peripheral) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with _client(air) as client:
            await client.pair()
        peripheral.forget_bonds()
        async with _client(air) as client:
            with pytest.raises(BleakGATTProtocolError) as refused:
                await client.read_gatt_char(SECRET_CHAR)
            assert refused.value.code == BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION
            with pytest.raises(BleakError, match="lost the bond"):
                await client.pair()  # the adapter still offers its old key
            assert client.is_connected


async def test_a_peer_not_pairable_fails_pair_and_the_link_stays_up(
        air: Radio, peripheral: Peripheral) -> None:
    peripheral.pairable = False
    async with asyncio.timeout(TIMEOUT), _client(air) as client:
        with pytest.raises(BleakError, match="refused to pair"):
            await client.pair()
        assert client.is_connected
    assert peripheral.bonds == {}


async def test_unpair_forgets_the_bond_so_the_next_pairing_is_new(
        air: Radio, peripheral: Peripheral) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with _client(air) as client:
            await client.pair()
            first = dict(peripheral.bonds)
            await client.unpair()
            assert not client.is_connected
        async with _client(air) as client:
            await client.pair()
    assert peripheral.bonds.keys() == first.keys() and peripheral.bonds != first

