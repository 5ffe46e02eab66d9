"""hubctl status and hubctl doctor: the hub's health as hubd sees it, and a checklist of every hop.

hubd serves its health snapshot (:class:`hubapi.models.HubStatus`) on a local unix socket
(hubd/technician/status_socket.py, ``status_socket`` in hubd.toml); hubctl.reach finds and reads it. The doctor
also loads hubd's configuration (hubd.toml and the hubd.env next to it, as systemd gives them to
hubd) and logs in to the broker itself with hubd's settings, so a wrong password or a TLS problem
is named even while hubd cannot say.

The doctor holds the running home to what was provisioned (:class:`Provisioned`): each lock of
hubd.toml's ``[locks]`` must have its pairing in hubd's state (read-only, no secret:
hubd.store.pairings.paired_kinds) and be known and heard by hubd; the alarm unit of the hub's
bridge.json (beside hubd.toml, where hubctl provision writes it) must be run by the bridge, heard,
and be the unit whose serial bridge.json pins; its LTE modem must be reported and registered. A
provisioned part that is missing fails (a bridge running without its provisioned safety alarm
unit above all); a part neither provisioned nor there passes as "not provisioned"; a part there
but not provisioned, and a pairing ``[locks]`` does not list, are warnings. The bridge's clock is
judged only where it keeps one: it takes hubd's time for its alarm flow alone, so a bridge
without an alarm unit has none. Each fix names what can mend its cause and nothing else.

Where hubd.toml's ``[uplink]`` lets hubd reach its broker through the bridge's LTE modem (mode
``lte`` or ``auto``), the doctor checks that path too: the modem's registration and signal (the
bridge's health), and a broker login through it, which hubd makes on the doctor's request
(control.UplinkProbeRequest: hubd.uplink.Uplink.probe_lte; on LTE, hubd's live session is the
proof). Each way it fails has its fix (:data:`UPLINK_FIXES`). A hub that runs broadband only
although its bridge has a modem gets a warning: not a failure, but the home has no fallback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hubapi.models import DeviceKind, DeviceState, HubStatus, UplinkProbe, UplinkStatus
from hubctl import reach
from hubd.technician import control
from wire import lockkinds

BROKER_TIMEOUT_S = 10.0
MAX_CLOCK_OFFSET_S = 30.0
MAX_OUTBOX_AGE_S = 600.0
EARLIEST_PLAUSIBLE_TIME = 1_735_689_600  # 2025-01-01: a host clock before this was never set
LTE_REGISTERED = ("home", "roaming")

OK, FAILED, SKIPPED, WARNED = "ok", "failed", "skipped", "warning"


class StatusError(Exception):
    """The snapshot cannot be read; the message is one line with the fix."""


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, what was found, and for a failure the fix."""

    name: str
    result: str  # OK, FAILED, SKIPPED or WARNED (works, but the technician should know)
    detail: str
    fix: str = ""


# --- hubctl doctor ---------------------------------------------------------------------------------

def load_hubd_config(config_path: Path):  # -> hubd.config.HubConfig
    """hubd's configuration as hubd.service gives it to hubd: hubd.toml plus the hubd.env next to
    it, read by systemd's rules and refusals (hubd.envfile, as hubd reads it: a missing one sets
    nothing, as the unit's ``EnvironmentFile=-``), none of the shell's HUBD_* variables. Raises
    StatusError with the fix."""
    from hubd.config import ENV_PREFIX, ConfigError, load_config
    from hubd.envfile import EnvFileError, applied

    if not config_path.exists():
        raise StatusError(f"{config_path} does not exist: write it with hubctl provision, or pass "
                          "--config") from None
    try:
        with applied(config_path.parent / "hubd.env", missing_ok=True, aside=ENV_PREFIX):
            return load_config(config_path)
    except EnvFileError as e:
        raise StatusError(str(e)) from None
    except ConfigError as e:
        raise StatusError(f"{e} (fix it, or write it again with hubctl provision)") from None


def check_broker(mqtt, hub_id: str, timeout: float = BROKER_TIMEOUT_S) -> Check:
    """Log in to the broker with hubd's own settings and credentials, as hubd does."""
    import paho.mqtt.client as paho

    where = f"{mqtt.host}:{mqtt.port}"
    name = "broker reachable and authorised"
    protocol = paho.MQTTv5 if mqtt.protocol == "5" else paho.MQTTv311
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"hubctl-doctor-{uuid.uuid4().hex[:8]}",
                         protocol=protocol)
    if mqtt.username is not None:
        client.username_pw_set(mqtt.username, mqtt.password.get_secret_value() if mqtt.password else None)
    tls = ""
    if mqtt.tls:
        tls = " over TLS"
        try:
            client.tls_set(ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
                           certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
                           keyfile=str(mqtt.key_file) if mqtt.key_file else None)
        except (ssl.SSLError, OSError) as e:
            return Check(name, FAILED, f"TLS setup failed: {e}",
                         "check ca_file, cert_file and key_file in hubd.toml (hubctl provision --ca "
                         "--client-cert --client-key writes them)")
    answer: list[object] = []
    errors: list[str] = []  # paho's error log lines: why the broker closed the connection
    closed = False
    client.on_connect = lambda c, u, flags, rc, props=None: answer.append(rc)
    client.on_log = lambda c, u, level, text: errors.append(text) if level == paho.MQTT_LOG_ERR else None
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=30)
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != paho.MQTT_ERR_SUCCESS:
                closed = not answer  # the broker hung up before its CONNACK
                break
    except ssl.SSLCertVerificationError as e:
        return Check(name, FAILED, f"TLS to {where} failed: the broker's certificate is not trusted "
                     f"({e.verify_message})",
                     "check ca_file in hubd.toml is the CA that signed the broker's certificate "
                     "(hubctl provision --ca), the broker host name, and the clock")
    except ssl.SSLError as e:
        return Check(name, FAILED, f"TLS to {where} failed: {e.reason or e}",
                     "check the port is the broker's TLS port, ca_file and the client certificate "
                     "(hubctl provision --ca --client-cert --client-key)")
    except socket.gaierror:
        return Check(name, FAILED, f"broker host {mqtt.host} is not known",
                     "check [mqtt] host in hubd.toml and the hub's DNS / network")
    except (OSError, TimeoutError) as e:
        reason = e.strerror or str(e) or type(e).__name__
        return Check(name, FAILED, f"broker {where} unreachable: {reason}",
                     "check the hub's network and [mqtt] host/port in hubd.toml; is the broker up?")
    finally:
        try:
            client.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
    if closed and mqtt.tls:
        # TLS 1.3: the broker checks the client certificate after the client's handshake is done,
        # so its refusal (an alert) arrives on the first read, as a closed connection.
        why = errors[0].removeprefix("failed to receive on socket: ") if errors else "connection closed"
        return Check(name, FAILED, f"broker {where} closed the TLS connection before the login: {why}",
                     "the broker did not take the hub's client certificate: cert_file must be signed "
                     "by the CA the broker trusts, with key_file its key (hubctl provision "
                     "--client-cert --client-key)")
    if closed:
        return Check(name, FAILED, f"broker {where} closed the connection before answering the login",
                     "check [mqtt] port and tls in hubd.toml (a TLS port needs tls = true) and the "
                     "broker's log")
    if not answer:
        return Check(name, FAILED, f"broker {where} did not answer the login within {timeout:g} s",
                     "check [mqtt] port and tls in hubd.toml (a TLS port needs tls = true)")
    rc = answer[0]
    if getattr(rc, "is_failure", False):
        how = "certificate" if mqtt.cert_file else "password"
        return Check(name, FAILED, f"broker {where} refused the login as {mqtt.username or hub_id}: {rc}",
                     f"the broker refused the {how}: check HUBD_MQTT__PASSWORD in hubd.env"
                     if how == "password" else
                     "the broker refused the certificate: its CN must be the hub id and the broker "
                     "must trust its CA (hubctl provision --client-cert --client-key)")
    return Check(name, OK, f"logged in to {where}{tls} as {mqtt.username or 'anonymous'}")


def _age(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    s = max(0.0, now - then)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _lock_devices(status: HubStatus) -> list[DeviceState]:
    return [d for d in status.devices if str(d.kind) in lockkinds.KINDS]


@dataclass(frozen=True)
class Provisioned:
    """What the hub's files say this home has, for the doctor to hold the running parts to:
    hubd.toml's ``[locks]``, the hub's copy of bridge.json (the alarm unit, its serial when
    pinned, the LTE modem; None: bridge.json could not be read, its check says why), the locks
    hubd holds a pairing for (its state database; None: it could not be read, the pairings check
    says why) and how hubd reaches the locks."""

    bridge_json: Path
    alarm_unit: bool | None
    unit_serial: str | None  # 8 upper-case hex digits, as the unit's label shows them
    lte: bool | None
    locks: dict[str, str]  # lock id -> kind (wire.lockkinds)
    paired: dict[str, str] | None  # lock id -> kind
    serial_port: str = "/dev/ttyUSB0"  # the bridge's ([serial] port), for a flash's command line
    via_bridge: bool = True  # [bluetooth] via: the bridge's proxy, or the hub's own adapter

    def flash(self) -> str:
        """The commands that copy the hub's bridge.json to the bridge (hubd holds its port)."""
        return (f"systemctl stop hubd; hubctl flash --resume --port {self.serial_port} --bundle "
                f"<this release's bundle> --config {self.bridge_json}; systemctl start hubd")

    def flash_fix(self) -> str:
        """The fix for a bridge that runs another bridge.json than the hub's copy."""
        return f"the bridge runs another bridge.json than the hub's: copy that one to it: {self.flash()}"


def read_provisioned(config, bridge_json: Path) -> tuple[Provisioned, list[Check]]:
    """What was provisioned (``config``: hubd's loaded configuration), and a failed check for
    each file that cannot be read: without bridge.json the doctor cannot tell a bridge that lost
    its safety alarm unit from one that never had one."""
    from hubctl.hubfiles import FilesError, read_bridge
    from hubd.store.database import DB_NAME
    from hubd.store.pairings import paired_kinds

    checks: list[Check] = []
    bridge: dict | None = None
    if not bridge_json.exists():
        checks.append(Check("bridge.json", FAILED, f"{bridge_json} does not exist: what the bridge "
                            "was provisioned with (alarm unit, LTE) cannot be checked",
                            f"hubctl provision --etc-dir {bridge_json.parent} writes it there (give "
                            "it the alarm unit's and LTE's flags again); a copy kept elsewhere: "
                            "hubctl doctor --bridge-config PATH"))
    else:
        try:
            bridge = read_bridge(bridge_json)
        except FilesError as e:  # its text says what to do, but for a file root alone may read
            text = str(e)
            checks.append(Check("bridge.json", FAILED, text, "run as root (sudo hubctl doctor): "
                                "the hub's bridge.json is 0600" if "Permission denied" in text else ""))
    unit = bridge.get("alarm_unit") if bridge is not None else None
    serial = unit.get("serial") if isinstance(unit, dict) else None
    db = config.state_dir / DB_NAME
    paired: dict[str, str] | None = None
    try:
        paired = paired_kinds(db)
    except sqlite3.Error as e:
        why = "run as root (sudo hubctl doctor): hubd's state is private to it" if os.geteuid() != 0 else (
            "hubd makes it when it starts with this hubd.toml (its state_dir): systemctl restart hubd")
        checks.append(Check("hubd's pairings", FAILED, f"cannot read {db}: {e}", why))
    return Provisioned(bridge_json, None if bridge is None else unit is not None,
                       serial if isinstance(serial, str) else None,
                       None if bridge is None else bridge.get("lte") is not None, dict(config.locks),
                       paired, config.serial.port, config.bluetooth.via == "bridge"), checks


def check_locks(status: HubStatus, now: float, p: Provisioned | None) -> list[Check]:
    """Each lock of hubd.toml's [locks]: hubd holds its pairing, knows it, and hears it with a
    battery that is not low. A pairing [locks] does not list is a warning (hubd does not drive
    it). Without the configuration, each lock hubd reports."""
    devices = {d.device: d for d in _lock_devices(status)}
    if p is None:
        return [_lock_line(d, now, None) for d in devices.values()]
    checks: list[Check] = []
    for lock in p.locks:
        name = f"lock {lock}"
        if p.paired is not None and lock not in p.paired:
            checks.append(Check(name, FAILED, "in hubd.toml's [locks], but hubd holds no pairing "
                                "for it: hubd does not drive it",
                                f"pair it under this name: hubctl pair --scan, then hubctl pair "
                                f"--addr ADDR --name {lock} with the --setup-key on its label (a "
                                "dKey: --activation-code); or remove it from [locks]"))
        elif lock not in devices:
            checks.append(Check(name, FAILED, "in hubd.toml's [locks], but hubd does not know it: "
                                "hubd.toml changed after hubd started",
                                "restart hubd so it reads hubd.toml: systemctl restart hubd"))
        else:
            checks.append(_lock_line(devices[lock], now, p))
    extra = p.paired if p.paired is not None else {d: str(devices[d].kind) for d in devices}
    for lock, kind in extra.items():
        if lock not in p.locks:
            held = "holds a pairing for" if p.paired is not None else "reports"
            checks.append(Check(f"lock {lock}", WARNED, f"hubd {held} this {kind.replace('_', ' ')} "
                                "lock, but hubd.toml's [locks] does not list it: hubd does not "
                                "drive it after its next start",
                                f'to drive it: add {lock} = "{kind}" under [locks] in hubd.toml, '
                                "then systemctl restart hubd"))
    return checks


def _lock_line(d: DeviceState, now: float, p: Provisioned | None) -> Check:
    """One lock hubd knows: heard, in reach, its battery."""
    name = f"lock {d.device}"
    signal = f"{d.rssi} dBm" if d.rssi is not None else "no signal reading"
    battery = f"battery {d.battery.percent}% {d.battery.state}" if d.battery else (
        "mains" if d.mains else "battery not reported yet")
    if not d.available:
        heard = f"last heard {_age(now, d.last_seen)} ago" if d.last_seen else "never heard since hubd started"
        near = "the bridge" if p is None or p.via_bridge else "the hub (its own Bluetooth adapter)"
        fix = f"out of range or its batteries are dead: check the lock, move {near} closer"
        if d.why == "bridge link down":
            fix = "the bridge's link is down: fix the bridge link first"
        elif p is None or p.paired is None:
            fix += " (and see the pairings check: hubd drives only a lock it holds a pairing for)"
        return Check(name, FAILED, f"unavailable ({d.why or 'not heard'}), {heard}", fix)
    if d.battery is not None and str(d.battery.state) in ("low", "critical"):
        return Check(name, FAILED, f"{battery}, {signal}", "change the batteries")
    return Check(name, OK, f"available, {signal}, {battery}")


def _no_health(name: str, status: HubStatus) -> Check:
    """The check ``name`` of a part the bridge reports in its health, when there is none to read."""
    if not status.bridge.link_up:
        return Check(name, SKIPPED, "needs the bridge's link")
    return Check(name, FAILED, "the bridge has not reported its health yet",
                 "wait a minute and run again (the bridge reports every minute); if it stays, "
                 "journalctl -u hubd says why hubd refused its report")


def check_unit(status: HubStatus, p: Provisioned | None) -> Check:
    """The safety alarm unit: provisioned (bridge.json's alarm_unit), the bridge runs its link,
    has heard it, it is up, and it is the unit whose serial bridge.json pins. Not provisioned
    and not there passes; there but not provisioned is a warning (the hub's copy of bridge.json
    is not the bridge's)."""
    name = "alarm unit"
    health = status.bridge.health
    if health is None or not status.bridge.link_up:
        return _no_health(name, status)
    unit = health.unit
    wanted = p.alarm_unit if p is not None else None
    pinned = p.unit_serial if p is not None else None
    if unit is None:
        if wanted:
            label = f" {pinned}" if pinned else ""
            return Check(name, FAILED, f"{p.bridge_json} provisions the alarm unit{label}, but the "
                         "bridge runs without one: the resident's alarms do not reach it",
                         p.flash_fix())
        if wanted is None:
            return Check(name, SKIPPED, "no alarm unit reported")
        return Check(name, OK, f"not provisioned ({p.bridge_json} has no alarm_unit)")
    cable = "check the alarm unit's cable to the bridge and its power"
    if unit.last_heard_s is None:
        fix = cable
        if health.up_s < 60:  # a unit speaks every 10 s: a bridge just started may not have heard it
            fix = f"the bridge reported {health.up_s} s after its start: wait a minute and run again; if it stays, {fix}"
        if pinned:
            fix += (f"; the bridge takes frames of unit {pinned} only (bridge.json): check the "
                    "serial on the unit's label; another unit: hubctl provision "
                    "--alarm-unit-serial <its 8 hex digits>, then copy that bridge.json to the "
                    f"bridge: {p.flash()}")
        return Check(name, FAILED, "the bridge has not heard the alarm unit since it started", fix)
    if not unit.up:
        return Check(name, FAILED, f"the unit's link is down, last heard {unit.last_heard_s} s ago", cable)
    bases = [d for d in status.devices if d.kind == DeviceKind.BASE_UNIT]
    expected = f"au{pinned.lower()}" if pinned else None
    mine = [d for d in bases if expected is None or d.device == expected]
    up = [d for d in mine if d.available]
    if not up:
        others = [d.device for d in bases if d.available]
        if expected is not None and others:
            return Check(name, FAILED, f"the bridge hears alarm unit {others[0]}, not {expected} "
                         f"that {p.bridge_json} provisions",
                         "the bridge runs another bridge.json than the hub's; read the serial on "
                         f"the unit's label: the home's unit is {others[0][2:].upper()}: hubctl "
                         f"provision --alarm-unit-serial {others[0][2:].upper()}, then copy that "
                         f"bridge.json to the bridge; it is {pinned}: connect that unit and copy "
                         f"the hub's bridge.json to the bridge. Copying: {p.flash()}")
        if mine:
            return Check(name, FAILED, f"{mine[0].device} unavailable ({mine[0].why or 'not heard'})", cable)
        return Check(name, FAILED, f"the unit's link is up, but hubd has no report of "
                     f"{expected or 'its base unit'} yet", "wait a minute and run again")
    names = ", ".join(d.device for d in up)
    line = f"{names} up, heard {unit.last_heard_s} s ago"
    if wanted is False:
        return Check(name, WARNED, f"{line}; but {p.bridge_json} provisions no alarm unit",
                     "the hub's bridge.json is not the bridge's: hubctl provision "
                     "--alarm-unit-serial <its label's 8 hex digits>, then copy that bridge.json "
                     f"to the bridge: {p.flash()}")
    return Check(name, OK, line)


def check_lte(status: HubStatus, p: Provisioned | None) -> Check:
    """The LTE modem: provisioned (bridge.json's lte), the bridge reports it, and it is
    registered. Not provisioned and not there passes; there but not provisioned is a warning."""
    name = "LTE"
    health = status.bridge.health
    if health is None or not status.bridge.link_up:
        return _no_health(name, status)
    lte = health.lte
    wanted = p.lte if p is not None else None
    if lte is None:
        if wanted:
            return Check(name, FAILED, f"{p.bridge_json} provisions the LTE modem, but the bridge "
                         "runs without it: no second path for alarms", p.flash_fix())
        if wanted is None:
            return Check(name, SKIPPED, "no LTE modem reported")
        return Check(name, OK, f"not provisioned ({p.bridge_json} has no lte)")
    if lte.registered not in LTE_REGISTERED:
        return Check(name, FAILED, f"not registered (modem: {lte.registered or 'no answer'})"
                     f"{f', {lte.rssi} dBm' if lte.rssi is not None else ', no signal'}",
                     _registration_fix(lte.registered))
    line = f"registered ({lte.registered}){f', {lte.rssi} dBm' if lte.rssi is not None else ''}"
    if wanted is False:
        return Check(name, WARNED, f"{line}; but {p.bridge_json} provisions no LTE modem",
                     "the hub's bridge.json is not the bridge's: hubctl provision --apn ... "
                     "--dc09-receiver ... --alarm-account ..., then copy that bridge.json to the "
                     f"bridge: {p.flash()}")
    return Check(name, OK, line)


def check_clock(status: HubStatus, now: float) -> Check:
    """The hub's clock, and the bridge's where it keeps one: the bridge takes hubd's time for
    its alarm flow only (it stamps the alarms and the DC-09 frames), so a bridge without an
    alarm unit keeps none and has none to judge (firmware/startup.py, alarms.py)."""
    name = "clock"
    b, health = status.bridge, status.bridge.health
    offset = b.clock_offset_s
    if now < EARLIEST_PLAUSIBLE_TIME:
        return Check(name, FAILED, f"the hub's clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}",
                     "set the hub's clock: timedatectl set-ntp true (and check its network)")
    if not b.link_up:
        return Check(name, SKIPPED, "the bridge's clock cannot be read: its link is down")
    if health is None:
        return Check(name, SKIPPED, "the bridge's clock cannot be read: no health report yet")
    if health.unit is None:
        return Check(name, OK, "hub clock set; the bridge keeps no time without an alarm unit "
                     "(hubd's time stamps its alarms only)")
    if offset is None:
        return Check(name, FAILED, "the bridge has no time yet",
                     "wait a minute and run again (hubd gives the bridge its time when the link "
                     "comes up, the bridge reports it within a minute); if it stays, restart hubd "
                     "so it gives it again: systemctl restart hubd")
    if abs(offset) > MAX_CLOCK_OFFSET_S:
        return Check(name, FAILED, f"the bridge's clock is {offset:+.0f} s off the hub's",
                     "check the hub's clock (timedatectl) and restart hubd so it sets the "
                     "bridge's: systemctl restart hubd")
    return Check(name, OK, f"hub clock set, bridge {offset:+.0f} s off")


def check_status(status: HubStatus, now: float, broker: str, provisioned: Provisioned | None = None
                 ) -> list[Check]:
    """The checks read from hubd's snapshot, held to what was provisioned (``provisioned``;
    None: the hub's files could not be read, so each part is judged as the bridge reports it)."""
    checks: list[Check] = []
    health = status.bridge.health
    # hubd's own broker connection
    if status.broker_connected:
        over = f" over {status.uplink.path}" if status.uplink is not None else ""
        checks.append(Check("hubd connected to the broker", OK, f"hubd online at {broker}{over}"))
    else:
        lte = status.uplink is not None and status.uplink.path == "lte"
        checks.append(Check("hubd connected to the broker", FAILED, f"hubd is not connected to {broker}"
                            f"{' over lte' if lte else ''}",
                            ("see the LTE and broker login over LTE checks" if lte else
                             "see the broker check") + "; journalctl -u hubd shows why hubd's login fails"))
    checks.append(check_clock(status, now))
    # bridge link and firmware
    b = status.bridge
    if not b.link_up and b.link.get("foreign_hellos", 0):
        checks.append(Check("bridge link", FAILED, f"the bridge speaks an older link protocol (down since "
                            f"{_age(now, b.since)} ago)", "flash the firmware that matches this hubd: hubctl flash"))
    elif not b.link_up and b.link.get("auth_errors", 0):
        checks.append(Check("bridge link", FAILED, f"the bridge answers, but {b.link['auth_errors']} of its frames "
                            f"failed authentication (down since {_age(now, b.since)} ago): its link key is "
                            "not hubd's", "provision once (hubctl provision keeps the same key in hubd.env and "
                            "bridge.json), flash that bridge.json (hubctl flash), restart hubd"))
    elif not b.link_up:
        checks.append(Check("bridge link", FAILED, f"the bridge's link is down since {_age(now, b.since)} ago",
                            "check the bridge's USB cable and power, and [serial] port in hubd.toml; "
                            "a bridge that stays silent: reflash it (hubctl flash)"))
    else:
        extra = ""
        if health is not None:
            # up_s is the uptime when the report was made (every minute): counted on to now.
            up_s = health.up_s + max(0.0, now - (b.health_at if b.health_at is not None else now))
            extra = f", up {_age(now, now - up_s)}, last reset {health.reset}, heap {health.heap_free} B free (least {health.heap_min} B, largest block least {health.heap_blk} B)"
        checks.append(Check("bridge link", OK, f"up, firmware {b.firmware}, link protocol {b.protocol}{extra}"))
    checks.extend(check_locks(status, now, provisioned))
    checks.append(check_unit(status, provisioned))
    checks.append(check_lte(status, provisioned))
    # hubd's own code: a handler that raised on some input, a task that had to be started again
    crashed = {s: c["crashed"] for s, c in status.inputs.items() if c.get("crashed")}
    if crashed or status.task_restarts:
        what = ", ".join([f"{s}: {n} input(s) a handler raised on" for s, n in crashed.items()]
                         + [f"task {t} restarted {n} time(s)" for t, n in status.task_restarts.items()])
        checks.append(Check("hubd", FAILED, what, "hubd went on, but this is a bug: journalctl -u hubd "
                            "has the traceback; report it with the hub's logs"))
    else:
        checks.append(Check("hubd", OK, "no handler raised, no task restarted"))
    # outbox backlog
    o = status.outbox
    if o.depth and o.oldest_at is not None and now - o.oldest_at > MAX_OUTBOX_AGE_S:
        checks.append(Check("outbox backlog", FAILED,
                            f"{o.depth} waiting, the oldest for {_age(now, o.oldest_at)}",
                            f"hubd cannot deliver to the broker {broker}: see the broker check"
                            if not status.broker_connected else
                            f"hubd is connected to {broker}, but the broker does not acknowledge "
                            "what it sends: journalctl -u hubd says which publish fails; the "
                            "broker's ACL must let the hub publish its topics (docs/broker-setup.md)"))
    else:
        oldest = f", oldest {_age(now, o.oldest_at)}" if o.oldest_at is not None else ""
        checks.append(Check("outbox backlog", OK, f"{o.depth} waiting{oldest}"))
    return checks


def _registration_fix(registered: str | None) -> str:
    """What to do about a modem that is not registered, by what it says (firmware/health.py)."""
    if registered is None:
        return ("the modem does not answer the bridge: check the modem's cable and power, then "
                "restart the bridge (power it off and on)")
    if registered == "no_sim":
        return UPLINK_FIXES["no_sim"][1]
    if registered == "denied":
        return ("the operator refuses the SIM: ask the operator whether the SIM is activated for "
                "data (LTE-M) and allowed in this network")
    return ("no LTE network where the bridge is: check the antenna is connected, move the bridge "
            "(near a window, higher up) and run again; check the SIM is inserted and activated "
            "(and the APN: hubctl provision --apn)")


#: Why a broker login through LTE failed (a wire.messages.UPLINK_WHY, ``broker``: the broker
#: refused the login, ``tls``, ``no_connack``) -> what it means and the fix. ``{where}`` is the
#: broker's host:port, ``{port}`` its port.
UPLINK_FIXES: dict[str, tuple[str, str]] = {
    "no_sim": ("the modem has no SIM ready",
               "insert the operator's SIM (contacts down, power off first) and check it has no "
               "PIN (try it in a phone and turn the PIN off), then power the bridge on"),
    "not_registered": ("the modem is not registered on an LTE network",
                       _registration_fix("searching")),
    "pdp_failed": ("the operator refused the data connection (the PDP context)",
                   "check the APN the SIM's operator gave: hubctl provision --apn APN, then "
                   "hubctl flash with the new bridge.json"),
    "open_failed": ("the modem could not connect to the broker {where}",
                    "the operator's network cannot reach the broker: [mqtt] host in hubd.toml must "
                    "be a name or address the internet reaches (not one on the home's network), "
                    "and a private APN's firewall must let port {port} through (ask the operator)"),
    "broker": ("the broker refused hubd's login through LTE",
               "the broker refused hubd's credentials: check HUBD_MQTT__PASSWORD in hubd.env or "
               "the client certificate (hubctl provision), as for the broker check"),
    "tls": ("TLS to the broker through LTE failed",
            "check ca_file in hubd.toml is the CA of the broker's certificate (hubctl provision "
            "--ca), the broker's host name, and the clock"),
    "no_connack": ("the broker did not answer the login through LTE",
                   "check [mqtt] port and tls in hubd.toml (a TLS port needs tls = true); a weak "
                   "signal makes LTE slow: run again"),
    "timeout": ("the bridge did not open the connection in time",
                "the modem is slow to attach or the signal is weak: check the antenna and run "
                "again; if it stays, restart the bridge (power it off and on)"),
    "network": ("the LTE network dropped the data connection (coverage lost)",
                "check the antenna and the signal (the LTE check), move the bridge and run again"),
    "peer": ("the connection to the broker was closed during the login",
             "the broker's log says why it closed it; a TLS broker closing at once: check [mqtt] "
             "tls and port in hubd.toml"),
    "host_link": ("the bridge's link went down during the login",
                  "fix the bridge link first (the bridge link check), then run again"),
    "no_modem": ("the bridge has no LTE modem configured",
                 "bridge.json needs its lte section: hubctl provision --apn ... --dc09-receiver "
                 "... --alarm-account ..., then hubctl flash"),
    "hubd": ("hubd is stopping", "run again once hubd runs (systemctl status hubd)"),
    "connecting": ("hubd has no broker session over LTE yet, and no error so far",
                   "hubd is connecting through the modem: wait a minute and run again "
                   "(journalctl -u hubd shows its attempts)"),
    "error": ("the bridge could not use its modem for the broker",
              "check that [mqtt] host in hubd.toml has at most 63 characters; the bridge's log "
              "says what the modem answered"),
}


def _uplink_why(error: str) -> str:
    """The UPLINK_FIXES key of a failed probe's ``error`` (hubd.uplink.Uplink.probe_lte's text:
    the channel's UplinkError says ``LTE uplink: <why>``, a live session that is not up names the
    status's last error)."""
    found = re.search(r"LTE uplink: (\w+)", error) or re.search(r"last error: (\w+)", error)
    if found and found.group(1) in UPLINK_FIXES:
        return found.group(1)
    if "refused the login" in error:
        return "broker"
    if error.startswith("SSL") or "certificate" in error:
        return "tls"
    if error.startswith("no CONNACK"):
        return "no_connack"
    if error == "no bridge":
        return "no_modem"
    if error.startswith("no broker session over LTE"):
        return "connecting"
    return "error"


def _bytes(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.0f} kB" if n < 10_000_000 else f"{n / 1e6:.1f} MB"


def uplink_summary(u: UplinkStatus, now: float) -> str:
    """How hubd reaches its broker, in one line (hubctl status and doctor)."""
    path = "the home's broadband" if u.path == "broadband" else "LTE (the bridge's modem)"
    login = f"{_age(now, u.last_lte_login)} ago" if u.last_lte_login is not None else "none since hubd started"
    text = (f"mode {u.mode}, over {path} for {_age(now, u.since)}; LTE today ({u.lte_today.day} UTC) "
            f"{_bytes(u.lte_today.up)} up, {_bytes(u.lte_today.down)} down; last LTE login {login}")
    if u.last_error is not None:
        old = u.last_error_at is not None and u.last_lte_login is not None and u.last_error_at < u.last_lte_login
        when = f" {_age(now, u.last_error_at)} ago" if u.last_error_at is not None else ""
        text += f"; last error {u.last_error}{when}{' (before that login)' if old else ''}"
    return text


def check_path(status: HubStatus, now: float, configured: str | None) -> list[Check]:
    """The broker path hubd runs (its status socket's ``uplink``): a warning for broadband alone
    beside an LTE modem, for auto on LTE (broadband is down), and for a hubd.toml hubd has not
    read yet. Nothing from a hubd before the uplink."""
    u = status.uplink
    if u is None:
        return []
    health = status.bridge.health
    modem = health is not None and health.lte is not None
    name = "broker path"
    if configured is not None and configured != u.mode:
        return [Check(name, WARNED, f"hubd.toml says uplink {configured}, hubd runs {u.mode}",
                      "hubd reads hubd.toml at its start: systemctl restart hubd")]
    line = uplink_summary(u, now)
    if u.mode == "broadband" and modem:
        return [Check(name, WARNED, f"{line}: the bridge's LTE modem is not used if broadband fails",
                      "to fall back to LTE when the home's broadband fails: hubctl provision "
                      "--uplink auto, then systemctl restart hubd")]
    if u.mode == "auto" and u.path == "lte":
        return [Check(name, WARNED, f"{line}: the broker was unreachable over broadband",
                      "check the home's broadband (router, cable, the internet provider); hubd "
                      "moves back to it by itself once it answers (LTE data costs money)")]
    return [Check(name, OK, line)]


def check_uplink(status: HubStatus, probe: Callable[[], UplinkProbe], where: tuple[str, int] | None,
                 provisioned: Provisioned | None = None) -> list[Check]:
    """A broker login through the bridge's LTE modem, when hubd's uplink may use it (mode lte or
    auto); ``probe`` asks hubd for one (:func:`probe_uplink`)."""
    u = status.uplink
    if u is None or u.mode == "broadband":
        return []
    name = "broker login over LTE"
    b, health = status.bridge, status.bridge.health
    if not b.link_up:
        return [Check(name, SKIPPED, "needs the bridge's link")]
    if health is None:
        return [Check(name, SKIPPED, "the bridge has not reported its health yet")]
    if health.lte is None:
        detail, fix = UPLINK_FIXES["no_modem"]
        if provisioned is not None and provisioned.lte:  # the hub's bridge.json has it, the bridge not
            fix = provisioned.flash_fix()
        return [Check(name, FAILED, f"uplink {u.mode}, but {detail}", fix)]
    if health.lte.registered not in LTE_REGISTERED:
        return [Check(name, SKIPPED, "needs the modem registered (the LTE check)")]
    try:
        answer = probe()
    except StatusError as e:
        detail, _, fix = str(e).partition(": ")
        return [Check(name, FAILED, f"hubd did not answer the probe: {detail}", fix)]
    if answer.ok:
        how = ("hubd's own session runs over LTE" if answer.how == "live" else
               "a login of its own through the modem, closed after")
        return [Check(name, OK, f"logged in ({how}, {answer.took_s:.1f} s)")]
    error = answer.error or "no reason given"
    why = _uplink_why(error)
    detail, fix = UPLINK_FIXES[why]
    host, port = where if where is not None else ("the broker", "its port")
    fill = {"where": f"{host}:{port}" if where is not None else "", "port": port}
    return [Check(name, FAILED, f"{detail.format(**fill).rstrip()} ({error})", fix.format(**fill))]


def probe_uplink(hubd: reach.Hubd, timeout_s: int = 60) -> UplinkProbe:
    """hubd's broker login through LTE (control.UplinkProbeRequest), asked as every request to
    hubd is (hubctl.reach), or StatusError naming the fix."""
    from hubd.uplink import OPEN_TIMEOUT_S

    # hubd's probe waits for the channel's open first (up to OPEN_TIMEOUT_S and its 5 s of slack:
    # Uplink.lte_socket), then up to timeout_s for the CONNACK.
    wait = OPEN_TIMEOUT_S + 5 + timeout_s + control.UPLINK_PROBE_SLACK_S
    try:
        done = reach.ask(hubd, control.UplinkProbeRequest(timeout_s=timeout_s), wait)
        return UplinkProbe.model_validate_json(json.dumps(done))
    except reach.ReachError as e:
        raise StatusError(str(e)) from None
    except ValidationError:
        raise StatusError(f"{hubd.socket} did not answer with a probe's result: is hubctl the "
                          "same version as hubd? reinstall the same homecare-hub release") from None


def run(config_path: Path, socket_path: Path | None, bridge_json: Path | None = None) -> list[Check]:
    """Every check of hubctl doctor, in order. ``bridge_json``: the hub's copy of bridge.json
    (default: beside hubd.toml, where hubctl provision writes it). The fixes name hubd.service;
    for a hubd.toml outside /etc/hubd (a bench), hubd by hand on its directory instead."""
    from hubctl.service import for_etc

    etc = config_path.parent
    return [Check(c.name, c.result, for_etc(c.detail, etc), for_etc(c.fix, etc))
            for c in _checks(config_path, socket_path, bridge_json)]


def _checks(config_path: Path, socket_path: Path | None, bridge_json: Path | None) -> list[Check]:
    from hubctl.hubfiles import HubFiles

    checks: list[Check] = []
    config = provisioned = None
    try:
        config = load_hubd_config(config_path)
    except StatusError as e:
        checks.append(Check("configuration loads", FAILED, str(e)))
    if config is not None:
        bridge_path = HubFiles.at(config_path.parent, bridge_json).bridge_json
        provisioned, problems = read_provisioned(config, bridge_path)
        where = f"{config_path}" + (f" and {bridge_path}" if provisioned.alarm_unit is not None else "")
        checks.append(Check("configuration loads", OK, f"{where}: hub {config.hub_id}"))
        checks.extend(problems)
        broker = f"{config.mqtt.host}:{config.mqtt.port}"
        if config.uplink.mode == "lte":  # a home without broadband: the hub's network has no way out
            checks.append(Check("broker reachable and authorised", SKIPPED,
                                "uplink lte: the hub reaches the broker through the bridge's modem "
                                "only (the broker login over LTE below)"))
        else:
            checks.append(check_broker(config.mqtt, config.hub_id))
    else:
        broker = "the broker"
        checks.append(Check("broker reachable and authorised", SKIPPED, "needs the configuration"))
    # hubd's socket as every command finds it (hubctl.reach), named with where its path came from;
    # the doctor reads hubd.env too (the others cannot: it is root's), and hubd serves where that
    # says when it sets HUBD_STATUS_SOCKET (the only way hubd's path differs from hubd.toml's)
    hubd = reach.find(socket_path, config_path)
    if socket_path is None and config is not None and config.status_socket != hubd.socket:
        hubd = reach.Hubd(config.status_socket,
                          f"HUBD_STATUS_SOCKET in {config_path.parent / 'hubd.env'}", config_path.parent)
    try:
        status = reach.status(hubd)
    except reach.ReachError as e:
        # "what was found: the fix"; the path's origin in the first part may hold ": " itself
        detail, sep, fix = str(e).rpartition(": ")
        checks.append(Check("hubd running", FAILED, detail, fix) if sep else
                      Check("hubd running", FAILED, fix))
        return checks
    checks.append(Check("hubd running", OK, f"hubd {status.hubd_version}, up {_age(status.at, status.at - status.hubd_up_s)}"))
    now = time.time()
    checks.extend(check_status(status, now, broker, provisioned))
    checks.extend(check_path(status, now, config.uplink.mode if config is not None else None))
    where = (config.mqtt.host, config.mqtt.port) if config is not None else None
    checks.extend(check_uplink(status, lambda: probe_uplink(hubd), where, provisioned))
    return checks
