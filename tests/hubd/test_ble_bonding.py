"""Bonding through the bridge's Bluetooth proxy: bleak, unmodified (``BleakClient(...,
backend=ProxyClient)``), the REAL bridge firmware in MicroPython (ble_proxy, ble_central,
ble_bonds) on the simulated radio, whose peripheral needs an encrypted link for its secret
characteristic as a lock does (simulator/radio.py, "LE security").

- before pairing the secret is refused (ATT 0x05), after it readable; the bond's keys are in
  the bridge's flash; a new connection re-encrypts from them, with pair() or without it (the
  peer no longer pairable, so it cannot have paired again); unpair forgets them (then 0x0F: the
  peer still has its half);
- a peer not in pairing mode refuses (ProxyAuthFailed), the link stays up, unencrypted; a peer
  that lost the bond refuses the re-encryption;
- bonds survive the bridge's reboot; a corrupt bond file is ignored (logged), never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError

from hubd.ble import BleProxy, ProxyClient
from hubd.ble.errors import ProxyAuthFailed, ProxyError
from hubd.link.bridge import Bridge
from simulator.home import SimulatedHome
from simulator.radio import (ATT_INSUFFICIENT_AUTHENTICATION, ATT_INSUFFICIENT_ENCRYPTION,
                             FLAG_READ, FLAG_WRITE, Characteristic, Peripheral, Service)
from tests.waiting import until

ADDR = "C0:FF:EE:00:0B:01"
SECRET_UUID = "0000ffe1-0000-1000-8000-00805f9b34fb"
TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time


class Vault(Peripheral):
    """A peripheral whose one characteristic needs an encrypted link, as a lock's does."""

    def __init__(self) -> None:
        self.secret = Characteristic(0xFFE1, FLAG_READ | FLAG_WRITE, b"open sesame",
                                     encrypted=True)
        super().__init__(ADDR, "vault", [Service(0xFFE0, [self.secret])])


@pytest.fixture
def bridge_log() -> list[str]:
    return []


@pytest.fixture
async def home(tmp_path: Path, bridge_log: list[str]) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", locks=[], on_bridge_log=bridge_log.append)
    await home.start()
    home.radio.add(Vault())
    yield home
    await home.stop()


@pytest.fixture
async def proxy(home: SimulatedHome) -> AsyncIterator[BleProxy]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge).install()
    yield proxy
    proxy.close()
    await bridge.close()


def _vault(home: SimulatedHome) -> Vault:
    found = home.radio.find(0, bytes.fromhex(ADDR.replace(":", "")))
    assert isinstance(found, Vault)
    return found


def _bond_file(home: SimulatedHome) -> Path:
    return home.workdir / "bridge-flash" / "ble_bonds.bin"


async def _reboot(home: SimulatedHome, client: BleakClient) -> None:
    """Reboot the bridge, then connect (unpaired) once the link carries requests again."""
    await home.bridge.reboot()
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT
    while True:
        try:
            await client.connect()
            return
        except ProxyError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.2)


async def _read_refused(client: BleakClient, code: int) -> None:
    with pytest.raises(BleakGATTProtocolError) as refused:
        await client.read_gatt_char(SECRET_UUID)
    assert refused.value.code == code


async def test_pair_reads_the_secret_a_reconnect_re_encrypts_and_unpair_forgets(
        home: SimulatedHome, proxy: BleProxy) -> None:
    vault = _vault(home)
    client = BleakClient(ADDR, backend=ProxyClient, timeout=10)
    pairing = BleakClient(ADDR, backend=ProxyClient, timeout=10, pair=True)  # bleak's pair=
    await client.connect()
    await _read_refused(client, ATT_INSUFFICIENT_AUTHENTICATION)
    await client.pair()
    assert await client.read_gatt_char(SECRET_UUID) == b"open sesame"
    assert len(vault.bonds) == 1 and _bond_file(home).exists()
    await client.pair()  # encrypted already: nothing more happens (py-dkey pairs every time)
    await client.disconnect()

    vault.pairable = False  # from now on only the stored bond can encrypt a link
    ltk = dict(vault.bonds)
    await client.connect()  # no pair(): the bridge re-encrypts a bonded peer, as BlueZ does
    assert await client.read_gatt_char(SECRET_UUID) == b"open sesame"
    await client.disconnect()
    await pairing.connect()
    assert vault.links[0].encrypted and vault.bonds == ltk
    assert await pairing.read_gatt_char(SECRET_UUID) == b"open sesame"

    await pairing.unpair()
    assert not pairing.is_connected
    await until(lambda: not vault.links, "the bridge dropped the link")
    await client.connect()
    # The vault still holds its half of the bond, the bridge none: insufficient encryption.
    await _read_refused(client, ATT_INSUFFICIENT_ENCRYPTION)
    with pytest.raises(ProxyAuthFailed):
        await client.pair()
    await client.disconnect()


async def test_a_peer_refuses_pairing_out_of_pairing_mode_and_re_encryption_once_it_lost_the_bond(
        home: SimulatedHome, proxy: BleProxy) -> None:
    vault = _vault(home)
    vault.pairable = False
    client = BleakClient(ADDR, backend=ProxyClient, timeout=10)
    pairing = BleakClient(ADDR, backend=ProxyClient, timeout=10, pair=True)  # bleak's pair=
    await client.connect()
    with pytest.raises(ProxyAuthFailed, match="refused to pair"):
        await client.pair()
    assert client.is_connected, "a refused pairing leaves the link up, unencrypted"
    await _read_refused(client, ATT_INSUFFICIENT_AUTHENTICATION)

    vault.pairable = True
    await client.pair()
    assert await client.read_gatt_char(SECRET_UUID) == b"open sesame"
    await client.disconnect()

    vault.forget_bonds()  # a reset lock
    vault.pairable = False
    with pytest.raises(ProxyAuthFailed):
        await pairing.connect()
    assert not pairing.is_connected
    await until(lambda: not vault.links, "the failed connect was disconnected")


async def test_bonds_survive_a_reboot_and_a_corrupt_bond_file_is_ignored(
        home: SimulatedHome, proxy: BleProxy, bridge_log: list[str]) -> None:
    vault = _vault(home)
    client = BleakClient(ADDR, backend=ProxyClient, timeout=10)
    pairing = BleakClient(ADDR, backend=ProxyClient, timeout=10, pair=True)  # bleak's pair=
    await pairing.connect()
    await pairing.disconnect()
    vault.pairable = False

    await _reboot(home, client)
    await client.pair()
    assert await client.read_gatt_char(SECRET_UUID) == b"open sesame"
    await client.disconnect()

    # Garbage where the bonds were: the bridge says so, forgets them, and pairs afresh.
    _bond_file(home).write_bytes(b"BND1" + bytes((2, 200, 1)) + b"\xff" * 40)
    await _reboot(home, client)
    with pytest.raises(ProxyAuthFailed):  # no stored keys: a pairing, which the vault refuses
        await client.pair()
    await client.disconnect()
    assert any("not a bond file" in line for line in bridge_log), bridge_log[-20:]
    vault.forget_bonds()
    vault.pairable = True
    await pairing.connect()
    assert await pairing.read_gatt_char(SECRET_UUID) == b"open sesame"
    assert _bond_file(home).read_bytes()[:4] == b"BND1" and len(_bond_file(home).read_bytes()) > 100
    await pairing.disconnect()
