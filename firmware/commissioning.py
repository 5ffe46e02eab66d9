"""A technician's requests to the bridge: scan for locks, pair one, unpair one, wipe the secrets.

Imported only when hubd forwards such a request (hubctl pair / decommission) and dropped again
afterwards by the bridge (bridge.py), so its code costs no heap in the bridge's everyday work.

    scan    -> `found` per reference lock heard (its id if the bridge has it), then `scan_done`
    pair    -> the lock proves it holds the new secret -> appended to bridge.json -> `paired`
               -> the bridge restarts and drives the lock from then on (startup.py builds it)
    unpair  -> the lock forgets its secret (locks/pairing.py) -> the bridge forgets the lock (out
               of bridge.json and of its drivers; operations on it are `unknown_lock`) -> `unpaired`
    wipe    -> bridge.json keeps no lock and no LTE section (the DC-09 key), the BLE bond keys
               are deleted (ble_bonds) -> `wiped` -> restart

bridge.json is rewritten to a temporary file and renamed over the old one (atomic on LittleFS),
so a power cut leaves the old or the new file, never half of one.
"""

import json
import os
import time

import asyncio
import machine

import log
from ble_central import addr_text, parse_addr
from wire import lockkinds, lockproto, messages

PATH = "bridge.json"  # config.PATH (config.py is not kept after boot)
MAX_LOCKS = 4  # what the bridge's heap drives (docs/architecture.md, Limits today)
_FLUSH_MS = 3000  # at most this long for the answer to leave before a restart


def _hex(text, size):
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == size else None


def _read():
    with open(PATH) as f:
        return json.load(f)


def _write(obj):
    tmp = PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    if hasattr(os, "sync"):
        os.sync()
    os.rename(tmp, PATH)


async def _restart(app):
    """Let the answer leave, then restart: startup.py builds the bridge from the new file."""
    deadline = time.ticks_add(time.ticks_ms(), _FLUSH_MS)
    while not app.link_idle() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(50)
    log.info("restarting to take the new configuration into use")
    machine.reset()


async def scan(app, msg):
    ms = msg["ms"]
    if not 0 < ms <= 30000:
        log.warn("scan of %d ms refused (1..30000)" % ms)
        ms = 30000 if ms > 0 else 1000
    by_addr = {}
    for lock_id, drv in app.drivers.items():
        by_addr[drv.addr] = lock_id
    seen = await app.central.scan(ms, lockproto.uuid128_le(lockproto.SERVICE_UUID), active=True)
    count = 0
    for r in seen:
        try:
            kind, battery, _, pairing = lockproto.decode_advert(r.adv)
            name = lockproto.decode_name(r.resp) if r.resp else None
        except lockproto.ProtocolError:
            continue  # a foreign or hostile advert
        if name is not None and not 0 < len(name) <= messages.MAX_ID:
            name = None
        app.send(messages.make(messages.FOUND, addr_text(r.addr), r.addr_type, kind, r.rssi, battery, name,
                                pairing, by_addr.get(r.addr)))
        count += 1
    app.send(messages.make(messages.SCAN_DONE, count))
    log.info("scan: %d lock(s) heard" % count)


def _pair_refusal(app, msg, addr):
    if msg["lock"] in app.drivers:
        return "exists"
    for drv in app.drivers.values():
        if drv.addr == addr:
            return "exists"
    if len(app.drivers) >= MAX_LOCKS:
        return "full"
    return None


async def pair(app, msg):
    lock_id = msg["lock"]
    addr = parse_addr(msg["addr"])
    secret = _hex(msg["secret"], lockproto.SECRET_LEN)
    setup = _hex(msg["setup"], lockproto.SECRET_LEN)
    if addr is None or secret is None or setup is None or msg["kind"] not in lockkinds.KINDS \
            or msg["addr_type"] not in (0, 1):
        log.warn("pair %s: malformed request" % lock_id)
        app.send(messages.make(messages.PAIRED, lock_id, "failed"))
        return
    refusal = _pair_refusal(app, msg, addr)
    if refusal is not None:
        log.warn("pair %s: %s" % (lock_id, refusal))
        app.send(messages.make(messages.PAIRED, lock_id, refusal))
        return
    from locks import pairing
    from locks.reference import ReferenceLock

    p = app.settings
    drv = ReferenceLock(app.central, lock_id, msg["kind"], msg["addr_type"], addr, secret,
                        connect_timeout_ms=p["connect_timeout_ms"], deadline_ms=p["deadline_ms"],
                        result_timeout_ms=p["result_timeout_ms"], settle_ms=p["settle_ms"])
    got = await pairing.pair(drv, setup)
    if got["result"] != "ok":
        log.warn("pair %s at %s: %s" % (lock_id, msg["addr"], got["result"]))
        app.send(messages.make(messages.PAIRED, lock_id, got["result"]))
        return
    try:
        obj = _read()
        locks = obj.get("locks", [])
        locks.append({"id": lock_id, "kind": msg["kind"], "protocol": "reference",
                      "addr": addr_text(addr), "addr_type": msg["addr_type"],
                      "secret": msg["secret"].lower()})
        obj["locks"] = locks
        _write(obj)
    except (OSError, ValueError) as e:
        # The lock holds the secret, the bridge could not keep it: a pairing again replaces it.
        log.error("pair %s: cannot write %s: %r" % (lock_id, PATH, e))
        app.send(messages.make(messages.PAIRED, lock_id, "failed"))
        return
    log.info("paired %s (%s) at %s" % (lock_id, msg["kind"], msg["addr"]))
    app.send(messages.make(messages.PAIRED, lock_id, "ok", got["state"], got["battery"]))
    await _restart(app)


def _forget(lock_id):
    obj = _read()
    obj["locks"] = [lk for lk in obj.get("locks", []) if lk.get("id") != lock_id]
    _write(obj)


async def unpair(app, msg):
    lock_id = msg["lock"]
    drv = app.drivers.get(lock_id)
    if drv is None:
        app.send(messages.make(messages.UNPAIRED, lock_id, "unknown_lock"))
        return
    from locks import pairing

    async with app.mutex[lock_id]:  # after any operation in flight
        got = await pairing.unpair(drv)
        del app.drivers[lock_id]  # from now on: unknown_lock, and no more polls
    result = got["result"]
    try:
        _forget(lock_id)
    except (OSError, ValueError) as e:
        log.error("unpair %s: cannot write %s: %r" % (lock_id, PATH, e))
        result = "failed"
    log.info("unpaired %s: %s" % (lock_id, result))
    app.send(messages.make(messages.UNPAIRED, lock_id, result))


async def wipe(app):
    try:
        obj = _read()
        n = len(obj.get("locks", []))
        obj.pop("locks", None)
        obj.pop("lte", None)
        _write(obj)
        import ble_bonds

        ble_bonds.remove()  # the Bluetooth proxy's bond keys (docs/ble-proxy.md, "Bonding")
    except (OSError, ValueError) as e:
        # No answer: hubd says the wipe was not confirmed (hubctl flash writes a clean file).
        log.error("wipe: cannot rewrite %s: %r" % (PATH, e))
        return
    app.drivers.clear()
    log.info("wiped: %d lock(s) and the LTE credentials forgotten" % n)
    app.send(messages.make(messages.WIPED, n))
    await _restart(app)


async def run(app, msg):
    """Carry out one request (its kind is msg["m"])."""
    kind = msg["m"]
    if kind == messages.SCAN:
        await scan(app, msg)
    elif kind == messages.PAIR:
        await pair(app, msg)
    elif kind == messages.UNPAIR:
        await unpair(app, msg)
    elif kind == messages.WIPE:
        await wipe(app)
