"""hubd: the home hub daemon (entry point ``hubd``, or ``python -m hubd``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hubapi import topics
from hubd import envfile, inputs, systemd
from hubd.access.commands import Commands
from hubd.access.journal import Journal
from hubd.access.lockstate import LockStates
from hubd.access.verify import Verifier
from hubd.alarms.delivery import Alarms
from hubd.config import CONFIG_ENV, ConfigError, HubConfig, load_config
from hubd.devices.health import Health
from hubd.devices.registry import Devices
from hubd.mqtt import HubMqtt, Inbound, Route
from hubd.store.audit import AuditLog, AuditRequests
from hubd.store.database import Store, StoreError
from hubd.store.outbox import Outbox, OutboxSender
from hubd.supervisor import Supervisor
from hubd.uplink import Uplink
from hubd.technician import control, status_socket
from hubd.technician.commissioning import Commissioning
from hubd.technician.trial_alarm import TrialAlarms
from wire import lockkinds, messages

if TYPE_CHECKING:
    from hubd.ble.radio import Radio
    from hubd.link.bridge import Bridge
    from hubd.locks.drivers import LockDrivers
    from hubd.locks.transport import BleLocks
    from hubd.locks.visit import VisitHold
    from hubd.store.pairings import Pairings

log = logging.getLogger("hubd")

EPILOG = f"""\
example:
  hubd --config /etc/hubd/hubd.toml                       (as hubd.service runs it)
  sudo hubd --config /etc/hubd/hubd.toml --env-file /etc/hubd/hubd.env   (by hand, the same)
  HUBD_SERIAL__PORT=/dev/ttyACM0 hubd --config hub.toml --env-file hub.env

The config file can also be named by ${CONFIG_ENV}; any setting can be overridden by an
environment variable HUBD_<SECTION>__<FIELD> (e.g. HUBD_MQTT__HOST). The secrets (the broker
password, the serial link key) are in hubd.env beside hubd.toml: under systemd, hubd.service's
EnvironmentFile= reads it; started by hand, --env-file reads it by the same rules, its values
replacing the same variables of the caller's environment (as systemd's EnvironmentFile= replaces
Environment= and the manager's). Exit status 2 means the configuration or the environment file
is unusable; the message names what to fix.

State (command journal, audit trail, outbox) lives in <state_dir>/hubd.sqlite3. Check the audit
trail with: python -m hubd.store.audit verify <state_dir>/hubd.sqlite3
"""

# Attributes every LogRecord has; anything else came in through ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line: ``--config PATH``, ``--env-file PATH``."""
    parser = argparse.ArgumentParser(
        prog="hubd",
        description="Home hub daemon: verifies signed lock commands from MQTT and drives the locks "
                    "through the bridge's Bluetooth proxy.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help=f"TOML config file (default: ${CONFIG_ENV})")
    parser.add_argument("--env-file", metavar="PATH", type=Path,
                        help="hubd.env, read as systemd's EnvironmentFile= reads it (hubd.service "
                             "does; give it when starting hubd by hand): its variables replace the "
                             "caller's of the same name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run hubd until SIGINT/SIGTERM; returns the exit status."""
    args = parse_args(argv)
    with contextlib.ExitStack() as env:
        try:
            # --env-file does what hubd.service's EnvironmentFile= does, by the same rules and
            # refusals (hubd.envfile, which hubctl doctor and hub-sim read it by too) and in the
            # same order: systemd's EnvironmentFile= wins over Environment= and the manager's
            # environment (systemd.exec(5)), so the file's values win over the shell's here too,
            # each replaced named in the log (not its value). A flag, not a hubd.toml setting:
            # under systemd, systemd reads the file as root before hubd starts, and hubd (user
            # hubd) cannot read it (0600, root's): a hubd.toml naming it would fail there.
            replaced = env.enter_context(envfile.applied(args.env_file)) \
                if args.env_file is not None else []
            config = load_config(args.config)
        except (ConfigError, envfile.EnvFileError) as exc:
            print(f"hubd: {exc}", file=sys.stderr)
            return 2
        return _serve(config, args.env_file, replaced)


def _serve(config: HubConfig, env_file: Path | None, replaced: list[str]) -> int:
    """Log as hubd.service does (the journal's fields, else JSON lines on stderr), say what the
    start-up should know, and run until a signal."""
    handler: logging.Handler
    if systemd.journal_is_stderr() and os.path.exists(systemd.JOURNAL_SOCKET):
        handler = systemd.JournalHandler(standard=_STANDARD_ATTRS)  # fields, not text
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLinesFormatter())
    logging.basicConfig(level=config.log_level, handlers=[handler], force=True)
    for name in replaced:
        log.warning("%s of the environment replaced by %s's, as systemd gives it to hubd", name,
                    env_file, extra={"variable": name})
    _warn_without_password(config, env_file)
    asyncio.run(_run_until_signal(config))
    return 0


def _warn_without_password(config: HubConfig, env_file: Path | None) -> None:
    """A broker login with a username and no password (hubd started by hand without hubd.env)
    is refused by the broker ("Not authorized"): say where the password is, before it refuses."""
    mqtt = config.mqtt
    if mqtt.username is None or mqtt.password is not None or mqtt.cert_file is not None:
        return
    where = (f"{env_file} does not set it: hubctl provision --password-file writes it there"
             if env_file is not None else
             "hubctl provision keeps it in hubd.env beside hubd.toml, which systemd reads for "
             "hubd.service (EnvironmentFile=); started by hand, give hubd --env-file "
             "/etc/hubd/hubd.env (as root)")
    log.warning("no broker password (HUBD_MQTT__PASSWORD) for user %s: the broker will refuse "
                "the login (Not authorized) unless it takes one without; %s", mqtt.username,
                where, extra={"mqtt_user": mqtt.username})


async def _run_until_signal(config: HubConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop)


async def run(config: HubConfig, stop: asyncio.Event) -> None:
    """Wire config, state, bridge, verifier, pipeline and MQTT; run until ``stop`` is set, then shut down cleanly."""
    from hubd.link.bridge import Bridge  # the serial stack is only loaded when the daemon really runs
    from hubd.link.uplink import Channel, LteBytes

    log.info("hubd starting", extra={"hub_id": config.hub_id, "locks": config.locks, "serial": config.serial.port,
                                     "state_dir": str(config.state_dir)})
    for note in config.upgrade_notes:
        log.warning("hubd.toml: %s", note)
    # Every resource is closed on every way out, a failure half-way through start-up included,
    # in the reverse order of opening (the stack): what is opened is registered at once.
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = Store.open(config.state_dir)
        except StoreError as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
        stack.callback(store.close)
        outbox = Outbox(store)
        audit = AuditLog(store, outbox, config.hub_id)
        journal = Journal(store, audit)
        guard = inputs.Inputs()  # every message from outside is handled inside it
        supervisor = Supervisor()
        try:
            bridge = await Bridge.open(config.serial.port, config.serial.key, config.serial.baudrate, guard)
        except OSError as exc:
            log.error("cannot open the bridge's serial port: %s", exc, extra={"serial": config.serial.port})
            raise SystemExit(1) from None
        stack.push_async_callback(bridge.close)
        # The broker's path (docs/second-path.md, "The uplink: hubd's side"): the channel through
        # the bridge's modem is made in every mode, so doctor's probe_lte can use it.
        channel = Channel(bridge, LteBytes(config.state_dir / LteBytes.FILE))
        stack.callback(channel.counter.save)
        uplink = Uplink(config.uplink, config.mqtt, channel, hub_id=config.hub_id)
        mqtt = HubMqtt(config.mqtt, hub_id=config.hub_id, client_id=config.client_id, uplink=uplink)
        stack.push_async_callback(mqtt.stop)  # after the commands' close: the last answers go out before "offline"
        lock_states = LockStates(store, audit, config.hub_id, config.locks, mqtt)
        # Registered before the first await, so no alarm and no link change can arrive unheard.
        alarms = Alarms(store, config.hub_id, config.alarms, bridge, mqtt)
        bridge.on_message(messages.ALARM, alarms.received)
        bridge.on_message(messages.ALARM_LTE, alarms.lte_reported)
        bridge.on_link_change(alarms.link_changed)
        devices = Devices(store, outbox, config.hub_id, mqtt, battery=config.battery, devices=config.devices)
        devices.expect("bridge", "bridge", "bridge-liion-1s")  # the locks: _lock_drivers
        bridge.on_link_change(devices.bridge_link)
        devices.bridge_link(bridge.is_up)
        bridge.on_message(messages.DEVICE, lambda msg: _device_report(devices, msg))
        health = Health(config.hub_id, bridge, devices, outbox, alarms, mqtt, guard, supervisor, uplink=uplink)
        bridge.on_message(messages.HEALTH, health.bridge_reported)
        bridge.on_link_change(health.link_changed)
        drivers, pairings = await _lock_drivers(config, store, bridge, lock_states, devices, stack)
        verifier = Verifier(
            hub_id=config.hub_id,
            keys=config.public_keys(),
            locks=config.locks,
            clock_skew_s=config.clock_skew_s,
            max_validity_s=config.max_validity_s,
            seen=journal,
            protocols=drivers.locks.protocols,
        )
        visits = _visit_hold(config, drivers.locks, stack)
        commands = Commands(
            hub_id=config.hub_id,
            verifier=verifier,
            transport=drivers.locks,
            publisher=mqtt,
            journal=journal,
            audit=audit,
            lock_states=lock_states,
            command_timeout_s=config.command_timeout_s,
            bridge_wait_s=config.bridge_wait_s,
            queue_size=config.queue_size,
            visits=visits,
        )
        stack.push_async_callback(commands.close)
        stack.callback(alarms.close)
        requests = AuditRequests(audit, config.hub_id, mqtt)

        def audit_request(message: Inbound) -> str | None:
            return requests.handle(message.payload, retained=message.retain)

        def status_request(message: Inbound) -> str | None:
            return health.request(message.payload)

        # What hubd takes from the broker, in one table: it subscribes and it dispatches.
        mqtt.route(
            Route(topics.commands(config.hub_id), inputs.COMMANDS, commands.handle),
            Route(topics.audit_request(config.hub_id), inputs.AUDIT_REQUESTS, audit_request),
            alarms.route(),
            Route(topics.status_request(config.hub_id), inputs.STATUS_REQUESTS, status_request),
        )
        # hubctl pair / decommission: config.locks is the live map of paired locks.
        commissioning = Commissioning(config.hub_id, bridge, config.locks, audit, mqtt, alarms,
                                      drivers=drivers, pairings=pairings)
        journal.prune()
        alarms.prune()
        audit.prune(config.audit.keep_days)
        unfinished = commands.recover()
        log.info("state loaded", extra={"audit_last_seq": audit.last_seq(), "outbox": len(outbox),
                                        "unfinished_commands": unfinished, "pending_alarms": len(alarms.pending())})
        status_server = None
        if config.status_socket is not None:  # hubctl status / doctor
            status_server = await status_socket.serve(config.status_socket, {
                control.StatusRequest: health.answer,
                control.TestAlarmRequest: TrialAlarms(bridge, alarms, health).handle,
                control.UplinkProbeRequest: lambda request, _: uplink.probe_lte(request.timeout_s),
                **commissioning.handlers(),
            })
            stack.push_async_callback(status_socket.close, status_server, config.status_socket)
        mqtt.on_connected(devices.publish_all)  # the current truth, at every broker session
        mqtt.on_connected(lock_states.publish_all)
        await mqtt.start()
        # Each runs until hubd stops; one that ends anyway is started again (hubd/supervisor.py).
        sender = OutboxSender(outbox, mqtt)
        stack.callback(_flush_refusals, audit)  # what was counted since the last interval
        stack.push_async_callback(supervisor.stop)
        supervisor.start("mqtt-inbox", lambda: mqtt.dispatch(guard))
        supervisor.start("devices", devices.supervise)
        supervisor.start("health", lambda: health.publish_every(config.devices.refresh_s))
        supervisor.start("alarms", alarms.deliver)
        supervisor.start("alarm-heartbeat", alarms.heartbeat)
        supervisor.start("bridge-clock", alarms.clock)
        supervisor.start("outbox", sender.run)
        supervisor.start("uplink", uplink.run)
        supervisor.start("prune", lambda: _prune_hourly(journal, audit, config.audit.keep_days))
        supervisor.start("audit-refusals", audit.flush_refusals_every)
        if systemd.watchdog_interval() is not None:
            supervisor.start("systemd-watchdog", systemd.watchdog)
        # Ready: state recovered, the bridge's port open, MQTT connecting (a broker that is down at
        # boot is retried, not a failed start).
        systemd.notify("READY=1", f"STATUS=serving hub {config.hub_id}: {len(alarms.pending())} alarm(s) "
                                  f"pending, {len(outbox)} audit entr(ies) in the outbox")
        started = time.monotonic()
        await stop.wait()  # hubd stops when asked to, and only then

        log.info("hubd stopping", extra={"uptime_s": round(time.monotonic() - started, 1)})
        systemd.notify("STOPPING=1", "STATUS=stopping")
    log.info("hubd stopped")


async def _lock_drivers(config: HubConfig, store: Store, bridge: Bridge, lock_states: LockStates,
                        devices: Devices, stack: contextlib.AsyncExitStack
                        ) -> tuple[LockDrivers, Pairings]:
    """hubd's lock drivers on bleak through the bridge's Bluetooth proxy (docs/ble-proxy.md,
    "hubd's lock drivers"), which also hear the locks' adverts. They take each lock of [locks]
    from its pairing in the state database; a lock without one is not driven (its commands fail
    ``unknown_lock``) and the log names the fix. (A hub with its own adapter will drive them
    through bleak's platform backend instead: docs/direct-mode.md.)"""
    from hubd.locks import DkeyTimings, Timings, UpkeepTimings
    from hubd.locks.drivers import LockDrivers  # bleak is loaded only when the daemon really runs
    from hubd.locks.transport import battery_model
    from hubd.store.pairings import Pairings

    pairings = Pairings(store)
    paired = pairings.all()
    for lock, kind in config.locks.items():  # known, and shown unavailable, before they first report
        p = paired.get(lock)
        devices.expect(lock, kind, battery_model(kind, p.protocol if p else lockkinds.REFERENCE))
    for lock in config.locks:
        if lock not in paired:
            log.error("lock %s of [locks] has no pairing in hubd's state: its commands fail "
                      "unknown_lock; pair it with hubctl pair (or remove it from [locks])", lock,
                      extra={"lock": lock})
    for lock in paired:
        if lock not in config.locks:
            log.warning("a pairing for %s, which [locks] does not name, is kept but not driven: add "
                        "it to [locks] with its kind, or hubctl decommission", lock, extra={"lock": lock})
    driven = {lock: p for lock, p in paired.items() if lock in config.locks}
    radio = await _radio(config, bridge, stack)
    drivers = await LockDrivers.open(radio, driven, lock_states, devices, stack,
                                     timings=Timings(**config.lock_timing.given()),
                                     upkeep=UpkeepTimings(**config.lock_upkeep.given()),
                                     dkey_timings=DkeyTimings(**config.dkey_timing.given()),
                                     on_counter=pairings.mark)
    return drivers, pairings


def _visit_hold(config: HubConfig, locks: BleLocks, stack: contextlib.AsyncExitStack
                ) -> VisitHold:
    """A visit's door held (``[visit]``, hubd.locks.visit): the next door of a route, and the
    door a ``prepare`` names, with or without a route."""
    from hubd.locks.visit import VisitHold, VisitRoute

    visits = VisitHold(locks, VisitRoute(tuple(config.visit.route), **config.visit.given()))
    stack.push_async_callback(visits.close)  # before the drivers close
    if config.visit.route:
        log.info("visit route: %s; the next door held %.0f s", " -> ".join(config.visit.route),
                 visits.route.hold_s)
    return visits


async def _radio(config: HubConfig, bridge: Bridge, stack: contextlib.AsyncExitStack
                 ) -> Radio:
    """How hubd reaches the locks (``[bluetooth]``): the bridge's Bluetooth proxy, or the hub's
    own adapter (docs/direct-mode.md)."""
    from hubd.ble import BleProxy, DirectRadio

    if config.bluetooth.via == "bridge":
        proxy = BleProxy(bridge, gatt_cache=config.bluetooth.gatt_cache)
        stack.callback(proxy.close)
        return proxy
    simulated = config.bluetooth.simulated_radio
    if simulated is not None:  # a test bench: the simulator's radio is the hub's adapter
        from simulator import bleak_backend

        radio = DirectRadio(backends=(bleak_backend.SimClient, bleak_backend.SimScanner),
                            options={"radio_socket": str(simulated)},
                            presence_s=config.bluetooth.presence_s)
        stack.push_async_callback(bleak_backend.close_adapters)
    else:
        radio = DirectRadio(adapter=config.bluetooth.adapter, presence_s=config.bluetooth.presence_s)
    stack.push_async_callback(radio.close)
    if not await radio.start():  # logged by the radio in one line; tried again until it is up
        log.error("hubd cannot reach the locks until %s is usable", radio.name)
    return radio


def _flush_refusals(audit: AuditLog) -> None:
    try:
        audit.flush_refusals()
    except sqlite3.Error as exc:
        log.error("cannot write the counted refusals: %s", exc)


def _device_report(devices: Devices, msg: dict[str, object]) -> None:
    """A `device` link message into the registry; what it refuses is logged, the rest taken."""
    why = devices.report(msg["id"], msg["kind"], msg["model"], battery=msg["battery"], unit=msg["unit"],
                         mains=msg["mains"], rssi=msg["rssi"], firmware=msg["firmware"], present=msg["present"])
    if why is not None:
        log.warning("device report from the bridge partly refused: %s", why, extra={"device": msg["id"]})


async def _prune_hourly(journal: Journal, audit: AuditLog, keep_days: float) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            journal.prune()
            audit.prune(keep_days)
        except sqlite3.Error as exc:
            log.error("cannot prune the journal or the audit trail: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
