"""hubd: the home hub daemon (entry point ``hubd``, or ``python -m hubd``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import time

from hubapi import topics
from wire import lockkinds, messages
from hubd import control, status_socket, systemd
from hubd.alarms import AlarmMqtt, Alarms
from hubd.audit import AuditLog, AuditRequests
from hubd.commands import Commands
from hubd.commissioning import Commissioning
from hubd.config import CONFIG_ENV, ConfigError, HubConfig, load_config
from hubd.devices import Devices
from hubd.health import Health
from hubd.journal import Journal
from hubd.lockstate import LockStates
from hubd.outbox import Outbox, OutboxSender
from hubd.store import Store, StoreError
from hubd.test_alarm import TestAlarms
from hubd.verify import Verifier

log = logging.getLogger("hubd")

EPILOG = f"""\
example:
  hubd --config /etc/hubd/hubd.toml
  HUBD_MQTT__PASSWORD=secret HUBD_SERIAL__PORT=/dev/ttyACM0 hubd --config hub.toml

The config file can also be named by ${CONFIG_ENV}; any setting can be overridden by an
environment variable HUBD_<SECTION>__<FIELD> (e.g. HUBD_MQTT__HOST). Exit status 2 means the
configuration is unusable; the message names the field to fix.

State (command journal, audit trail, outbox) lives in <state_dir>/hubd.sqlite3. Check the audit
trail with: python -m hubd.audit verify <state_dir>/hubd.sqlite3
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
    """Command line: ``--config PATH``."""
    parser = argparse.ArgumentParser(
        prog="hubd",
        description="Home hub daemon: verifies signed lock commands from MQTT and runs them through the bridge.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help=f"TOML config file (default: ${CONFIG_ENV})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run hubd until SIGINT/SIGTERM; returns the exit status."""
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hubd: {exc}", file=sys.stderr)
        return 2
    handler: logging.Handler
    if systemd.journal_is_stderr() and os.path.exists(systemd.JOURNAL_SOCKET):
        handler = systemd.JournalHandler(standard=_STANDARD_ATTRS)  # fields, not text
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLinesFormatter())
    logging.basicConfig(level=config.log_level, handlers=[handler], force=True)
    asyncio.run(_run_until_signal(config))
    return 0


async def _run_until_signal(config: HubConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop)


async def run(config: HubConfig, stop: asyncio.Event) -> None:
    """Wire config, state, bridge, verifier, pipeline and MQTT; run until ``stop`` is set, then shut down cleanly."""
    from hubd.bridge import Bridge  # the serial stack is only loaded when the daemon really runs

    log.info("hubd starting", extra={"hub_id": config.hub_id, "locks": config.locks, "serial": config.serial.port,
                                     "state_dir": str(config.state_dir)})
    try:
        store = Store.open(config.state_dir)
    except StoreError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    outbox = Outbox(store)
    audit = AuditLog(store, outbox, config.hub_id)
    journal = Journal(store, audit)
    try:
        bridge = await Bridge.open(config.serial.port, config.serial.baudrate)
    except OSError as exc:
        log.error("cannot open the bridge's serial port: %s", exc, extra={"serial": config.serial.port})
        store.close()
        raise SystemExit(1) from None
    mqtt = AlarmMqtt(config.mqtt, hub_id=config.hub_id, client_id=config.client_id)
    lock_states = LockStates(store, audit, config.hub_id, config.locks, mqtt)
    bridge.on_lock_state(lock_states.reported)
    bridge.on_lock_event(lock_states.event)
    # Registered before the first await, so no alarm and no link change can arrive unheard.
    alarms = Alarms(store, config.hub_id, config.alarms, bridge, mqtt)
    bridge.on_message(messages.ALARM, alarms.received)
    bridge.on_message(messages.ALARM_LTE, alarms.lte_reported)
    bridge.on_link_change(alarms.link_changed)
    devices = Devices(store, outbox, config.hub_id, mqtt, battery=config.battery, devices=config.devices)
    for lock, kind in config.locks.items():  # known, and shown unavailable, before they first report
        devices.expect(lock, kind, "mains" if kind == lockkinds.ENTRANCE_DOOR else "reference")
    devices.expect("bridge", "bridge", "bridge-liion-1s")
    bridge.on_link_change(devices.bridge_link)
    devices.bridge_link(bridge.is_up)
    bridge.on_message(messages.DEVICE, lambda msg: _device_report(devices, msg))
    health = Health(config.hub_id, bridge, devices, outbox, alarms, mqtt)
    bridge.on_message(messages.HEALTH, health.bridge_reported)
    bridge.on_link_change(health.link_changed)
    verifier = Verifier(
        hub_id=config.hub_id,
        keys=config.public_keys(),
        locks=config.locks,
        clock_skew_s=config.clock_skew_s,
        max_validity_s=config.max_validity_s,
        seen=journal,
    )
    commands = Commands(
        hub_id=config.hub_id,
        verifier=verifier,
        bridge=bridge,
        publisher=mqtt,
        journal=journal,
        audit=audit,
        lock_states=lock_states,
        command_timeout_s=config.command_timeout_s,
        queue_size=config.queue_size,
    )
    requests = AuditRequests(audit, config.hub_id, mqtt)
    # hubctl pair / decommission: config.locks is the live map of paired locks.
    commissioning = Commissioning(config.hub_id, bridge, config.locks, devices, audit, mqtt, alarms)
    journal.prune()
    alarms.prune()
    unfinished = commands.recover()
    log.info("state loaded", extra={"audit_last_seq": audit.last_seq(), "outbox": len(outbox),
                                    "unfinished_commands": unfinished, "pending_alarms": len(alarms.pending())})
    status_server = None
    if config.status_socket is not None:  # hubctl status / doctor
        status_server = await status_socket.serve(config.status_socket, {
            control.StatusRequest: health.answer,
            control.TestAlarmRequest: TestAlarms(bridge, alarms, health).handle,
            **commissioning.handlers(),
        })
    await mqtt.start()
    devices.publish_all()  # the current truth for late subscribers at once
    tasks = [
        asyncio.create_task(_dispatch(mqtt, commands, requests, alarms, health, config.hub_id), name="commands"),
        asyncio.create_task(devices.supervise(), name="devices"),
        asyncio.create_task(health.publish_every(config.devices.refresh_s), name="health"),
        asyncio.create_task(alarms.deliver(), name="alarms"),
        asyncio.create_task(alarms.heartbeat(), name="alarm-heartbeat"),
        asyncio.create_task(alarms.clock(), name="bridge-clock"),
        asyncio.create_task(OutboxSender(outbox, mqtt).run(), name="outbox"),
        asyncio.create_task(_prune_hourly(journal), name="prune"),
    ]
    if systemd.watchdog_interval() is not None:
        tasks.append(asyncio.create_task(systemd.watchdog(), name="systemd-watchdog"))
    # Ready: state recovered, the bridge's port open, MQTT connecting (a broker that is down at
    # boot is retried, not a failed start).
    systemd.notify("READY=1", f"STATUS=serving hub {config.hub_id}: {len(alarms.pending())} alarm(s) "
                              f"pending, {len(outbox)} audit entr(ies) in the outbox")
    started = time.monotonic()
    stopping = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)

    log.info("hubd stopping", extra={"uptime_s": round(time.monotonic() - started, 1)})
    systemd.notify("STOPPING=1", "STATUS=stopping")
    stopping.cancel()
    for task in tasks:
        task.cancel()
    failure: BaseException | None = None
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: still shut down cleanly, then let it surface
            failure = failure or exc
    if config.status_socket is not None:
        await status_socket.close(status_server, config.status_socket)
    alarms.close()
    await commands.close()
    await mqtt.stop()  # after close(): the last answers go out before "offline"
    await bridge.close()
    store.close()
    log.info("hubd stopped")
    if failure is not None:
        raise failure


def _device_report(devices: Devices, msg: dict[str, object]) -> None:
    """A `device` link message into the registry; what it refuses is logged, the rest taken."""
    why = devices.report(msg["id"], msg["kind"], msg["model"], battery=msg["battery"], unit=msg["unit"],
                         mains=msg["mains"], rssi=msg["rssi"], firmware=msg["firmware"], present=msg["present"])
    if why is not None:
        log.warning("device report from the bridge partly refused: %s", why, extra={"device": msg["id"]})


async def _dispatch(mqtt: AlarmMqtt, commands: Commands, requests: AuditRequests, alarms: Alarms,
                    health: Health, hub_id: str) -> None:
    audit_requests = topics.audit_request(hub_id)
    alarm_confirmations = topics.alarms_confirmed(hub_id)
    status_requests = topics.status_request(hub_id)
    async for message in mqtt.messages():
        if message.topic == audit_requests:
            requests.handle(message.payload, retained=message.retain)
        elif message.topic == alarm_confirmations:
            alarms.confirmation(message.payload)
        elif message.topic == status_requests:
            health.request(message.payload)
        else:
            commands.handle(message)


async def _prune_hourly(journal: Journal) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            journal.prune()
        except sqlite3.Error as exc:
            log.error("cannot prune the journal: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
