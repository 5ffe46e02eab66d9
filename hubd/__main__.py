"""hubd: the home hub daemon (entry point ``hubd``, or ``python -m hubd``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from hubd.commands import Commands
from hubd.config import CONFIG_ENV, ConfigError, HubConfig, load_config
from hubd.mqtt import HubMqtt
from hubd.verify import Verifier

log = logging.getLogger("hubd")

EPILOG = f"""\
example:
  hubd --config /etc/hubd/hubd.toml
  HUBD_MQTT__PASSWORD=secret HUBD_SERIAL__PORT=/dev/ttyACM0 hubd --config hub.toml

The config file can also be named by ${CONFIG_ENV}; any setting can be overridden by an
environment variable HUBD_<SECTION>__<FIELD> (e.g. HUBD_MQTT__HOST). Exit status 2 means the
configuration is unusable; the message names the field to fix.
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
    """Wire config, bridge, verifier, pipeline and MQTT; run until ``stop`` is set, then shut down cleanly."""
    from hubd.bridge import Bridge  # the serial stack is only loaded when the daemon really runs

    log.info("hubd starting", extra={"hub_id": config.hub_id, "locks": config.locks, "serial": config.serial.port})
    try:
        bridge = await Bridge.open(config.serial.port, config.serial.baudrate)
    except OSError as exc:
        log.error("cannot open the bridge's serial port: %s", exc, extra={"serial": config.serial.port})
        raise SystemExit(1) from None
    mqtt = HubMqtt(config.mqtt, hub_id=config.hub_id, client_id=config.client_id)
    verifier = Verifier(
        hub_id=config.hub_id,
        keys=config.public_keys(),
        locks=config.locks,
        clock_skew_s=config.clock_skew_s,
        max_validity_s=config.max_validity_s,
    )
    commands = Commands(
        hub_id=config.hub_id,
        verifier=verifier,
        bridge=bridge,
        publisher=mqtt,
        command_timeout_s=config.command_timeout_s,
        queue_size=config.queue_size,
    )
    await mqtt.start()
    pipeline = asyncio.create_task(commands.run(mqtt.messages()), name="commands")
    started = time.monotonic()
    stopping = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({pipeline, stopping}, return_when=asyncio.FIRST_COMPLETED)

    log.info("hubd stopping", extra={"uptime_s": round(time.monotonic() - started, 1)})
    stopping.cancel()
    pipeline.cancel()
    failure: BaseException | None = None
    try:
        await pipeline
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # a bug: still shut down cleanly, then let it surface
        failure = exc
    await commands.close()
    await mqtt.stop()  # after close(): the last answers go out before "offline"
    await bridge.close()
    log.info("hubd stopped")
    if failure is not None:
        raise failure


if __name__ == "__main__":
    sys.exit(main())
