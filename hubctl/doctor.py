"""hubctl status and hubctl doctor: the hub's health as hubd sees it, and a checklist of every hop.

hubd serves its health snapshot (:class:`hubapi.models.HubStatus`) on a local unix socket
(hubd/technician/status_socket.py, ``status_socket`` in hubd.toml); :func:`read_status` reads it. The doctor
also loads hubd's configuration (hubd.toml and the hubd.env next to it, as systemd gives them to
hubd) and logs in to the broker itself with hubd's settings, so a wrong password or a TLS problem
is named even while hubd cannot say.

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
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hubapi.models import DeviceKind, DeviceState, HubStatus, UplinkProbe, UplinkStatus
from hubd.technician import control
from wire import lockkinds

DEFAULT_CONFIG = Path("/etc/hubd/hubd.toml")
DEFAULT_SOCKET = Path("/run/hubd/status.sock")
SOCKET_TIMEOUT_S = 5.0
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


def read_status(path: Path, timeout: float = SOCKET_TIMEOUT_S) -> HubStatus:
    """hubd's snapshot from its local socket, or :class:`StatusError` naming the fix."""
    try:
        done = control.ask(path, control.StatusRequest(), timeout=timeout)
        return HubStatus.model_validate_json(json.dumps(done))  # strict models: JSON's rules
    except control.ControlError as e:
        raise StatusError(str(e)) from None
    except ValidationError:
        raise StatusError(f"{path} did not answer with a hub status (is hubctl the same version as "
                          "hubd? reinstall the same homecare-hub release)") from None


# --- hubctl doctor ---------------------------------------------------------------------------------

@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """hubd.env's HUBD_* variables in this process's environment while the config loads."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_hubd_config(config_path: Path):  # -> hubd.config.HubConfig
    """hubd's configuration as hubd.service gives it to hubd: hubd.toml plus the hubd.env next to
    it. Raises StatusError with the fix."""
    from hubctl.hubfiles import parse_env_file
    from hubd.config import ConfigError, load_config

    env_path = config_path.parent / "hubd.env"
    env: dict[str, str] = {}
    try:
        env = {k: v for k, v in parse_env_file(env_path.read_text()).items() if k.startswith("HUBD_")}
    except FileNotFoundError:
        pass
    except PermissionError:
        raise StatusError(f"cannot read {env_path} (hubd's secrets, mode 0600): run as root "
                          "(sudo hubctl doctor)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StatusError(f"cannot read {env_path}: {e}: write it again with hubctl provision") from None
    if not config_path.exists():
        raise StatusError(f"{config_path} does not exist: write it with hubctl provision, or pass "
                          "--config") from None
    with _environment(env):
        try:
            return load_config(config_path)
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


def check_status(status: HubStatus, now: float, broker: str) -> list[Check]:
    """The checks read from hubd's snapshot (checks 4-9 of hubctl doctor)."""
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
    # clock
    offset = status.bridge.clock_offset_s
    if now < EARLIEST_PLAUSIBLE_TIME:
        checks.append(Check("clock", FAILED, f"the hub's clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}",
                            "set the hub's clock: timedatectl set-ntp true (and check its network)"))
    elif not status.bridge.link_up:
        checks.append(Check("clock", SKIPPED, "the bridge's clock cannot be read: its link is down"))
    elif offset is None:
        checks.append(Check("clock", FAILED, "the bridge has no time yet",
                            "wait a minute and run again (hubd gives the bridge its clock); if it "
                            "stays, restart hubd: systemctl restart hubd"))
    elif abs(offset) > MAX_CLOCK_OFFSET_S:
        checks.append(Check("clock", FAILED, f"the bridge's clock is {offset:+.0f} s off the hub's",
                            "check the hub's clock (timedatectl) and restart hubd so it sets the "
                            "bridge's: systemctl restart hubd"))
    else:
        checks.append(Check("clock", OK, f"hub clock set, bridge {offset:+.0f} s off"))
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
            extra = f", up {_age(now, now - health.up_s)}, last reset {health.reset}, heap {health.heap_free} B free (least {health.heap_min} B, largest block least {health.heap_blk} B)"
        checks.append(Check("bridge link", OK, f"up, firmware {b.firmware}, link protocol {b.protocol}{extra}"))
    # each lock
    for d in _lock_devices(status):
        name = f"lock {d.device}"
        signal = f"{d.rssi} dBm" if d.rssi is not None else "no signal reading"
        battery = f"battery {d.battery.percent}% {d.battery.state}" if d.battery else (
            "mains" if d.mains else "battery not reported yet")
        if not d.available:
            heard = f"last heard {_age(now, d.last_seen)} ago" if d.last_seen else "never heard since hubd started"
            fix = "out of range or its batteries are dead: check the lock, move the bridge closer"
            if d.why == "bridge link down":
                fix = "the bridge's link is down: fix the bridge link first"
            elif d.last_seen is None:
                fix = ("wait a minute for its first advert and run again; if it stays and "
                       "journalctl -u hubd says it has no pairing: pair it (hubctl pair); else "
                       + fix)
            checks.append(Check(name, FAILED, f"unavailable ({d.why or 'not heard'}), {heard}", fix))
        elif d.battery is not None and str(d.battery.state) in ("low", "critical"):
            checks.append(Check(name, FAILED, f"{battery}, {signal}", "change the batteries"))
        else:
            checks.append(Check(name, OK, f"available, {signal}, {battery}"))
    # alarm unit heartbeat
    bases = [d for d in status.devices if d.kind == DeviceKind.BASE_UNIT]
    unit = health.unit if health is not None else None
    if not bases and unit is None:
        if health is None and b.link_up:
            checks.append(Check("alarm unit", FAILED, "the bridge has not reported its health yet",
                                "wait a minute and run again"))
        else:
            checks.append(Check("alarm unit", SKIPPED, "no alarm unit reported"))
    else:
        down = [d for d in bases if not d.available]
        if down or (unit is not None and not unit.up):
            why = (f"{down[0].device} unavailable ({down[0].why or 'not heard'})" if down
                   else f"the unit's link is down, last heard {unit.last_heard_s} s ago" if unit else "")
            checks.append(Check("alarm unit heartbeat", FAILED, why,
                                "check the alarm unit's cable to the bridge and its power"))
        else:
            heard = f", heard {unit.last_heard_s} s ago" if unit and unit.last_heard_s is not None else ""
            names = ", ".join(d.device for d in bases) or "alarm unit"
            checks.append(Check("alarm unit heartbeat", OK, f"{names} up{heard}"))
    # LTE
    lte = health.lte if health is not None else None
    if lte is None:
        if health is None and b.link_up:
            checks.append(Check("LTE", FAILED, "the bridge has not reported its health yet",
                                "wait a minute and run again"))
        else:
            checks.append(Check("LTE", SKIPPED, "no LTE modem reported"))
    elif lte.registered in LTE_REGISTERED:
        rssi = f", {lte.rssi} dBm" if lte.rssi is not None else ""
        checks.append(Check("LTE", OK, f"registered ({lte.registered}){rssi}"))
    else:
        checks.append(Check("LTE", FAILED, f"not registered (modem: {lte.registered or 'no answer'})"
                            f"{f', {lte.rssi} dBm' if lte.rssi is not None else ', no signal'}",
                            _registration_fix(lte.registered)))
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
                            f"hubd cannot deliver to the broker {broker}: see the broker check"))
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


def check_uplink(status: HubStatus, probe: Callable[[], UplinkProbe], where: tuple[str, int] | None
                 ) -> list[Check]:
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


def probe_uplink(path: Path, timeout_s: int = 60) -> UplinkProbe:
    """hubd's broker login through LTE (control.UplinkProbeRequest), or StatusError naming the fix."""
    from hubd.uplink import OPEN_TIMEOUT_S

    # hubd's probe waits for the channel's open first (up to OPEN_TIMEOUT_S and its 5 s of slack:
    # Uplink.lte_socket), then up to timeout_s for the CONNACK.
    wait = OPEN_TIMEOUT_S + 5 + timeout_s + control.UPLINK_PROBE_SLACK_S
    try:
        done = control.ask(path, control.UplinkProbeRequest(timeout_s=timeout_s), timeout=wait)
        return UplinkProbe.model_validate_json(json.dumps(done))
    except control.ControlError as e:
        raise StatusError(str(e)) from None
    except ValidationError:
        raise StatusError(f"{path} did not answer with a probe's result: is hubctl the same "
                          "version as hubd? reinstall the same homecare-hub release") from None


def run(config_path: Path, socket_path: Path | None) -> list[Check]:
    """Every check of hubctl doctor, in order."""
    checks: list[Check] = []
    config = None
    try:
        config = load_hubd_config(config_path)
        checks.append(Check("configuration loads", OK, f"{config_path}: hub {config.hub_id}"))
    except StatusError as e:
        checks.append(Check("configuration loads", FAILED, str(e)))
    if config is not None:
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
    path = socket_path or (config.status_socket if config is not None else None) or DEFAULT_SOCKET
    try:
        status = read_status(path)
    except StatusError as e:
        text = str(e)
        detail, _, fix = text.partition(": ")
        checks.append(Check("hubd running", FAILED, detail, fix))
        return checks
    checks.append(Check("hubd running", OK, f"hubd {status.hubd_version}, up {_age(status.at, status.at - status.hubd_up_s)}"))
    now = time.time()
    checks.extend(check_status(status, now, broker))
    checks.extend(check_path(status, now, config.uplink.mode if config is not None else None))
    where = (config.mqtt.host, config.mqtt.port) if config is not None else None
    checks.extend(check_uplink(status, lambda: probe_uplink(path), where))
    return checks
