"""`hubctl provision`: a hub's configuration from the technician's flags.

What it writes (``etc`` is ``--etc-dir``, /etc/hubd by default):

| file | mode | what |
|---|---|---|
| ``etc/hubd.toml`` | 0644 | hubd's configuration, no secrets |
| ``etc/hubd.env`` | 0600 | hubd's secrets as ``HUBD_<SECTION>__<FIELD>=`` lines (systemd's EnvironmentFile) |
| ``etc/tls/ca.pem`` | 0644 | the broker's CA (``--ca``) |
| ``etc/tls/client.crt``, ``client.key`` | 0644, 0600 | the hub's client certificate; the key owned by the user hubd runs as |
| ``etc/bridge.json`` | 0600 | the bridge's configuration: link, alarm unit, LTE and DC-09 (its key); no lock |

hubd.toml's ``[uplink] mode`` (how hubd reaches its broker, hubd/uplink.py) is ``--uplink``'s, or
kept from the file; without either it is ``auto`` when the bridge has its LTE modem (bridge.json's
``lte``: the home's broadband, and the modem when broadband fails) and ``broadband`` otherwise.
``lte`` or ``auto`` without the modem is refused. The section's times (fallback_s, probe_s,
lte_keepalive_s) keep hubd's defaults unless set there by hand, and are kept when they are.
``--visit-route entrance,front-door`` writes ``[visit] route`` (hubd/locks/visit.py: the next
door's connection held for a visit's command), lock ids this hub has paired; ``none`` removes it.

Everything is checked before anything is written, by the parsers that will read it: hubd's own
:class:`hubd.config.HubConfig` (with the env file's values, as hubd sees them under systemd) and
the bridge firmware's ``firmware/config.py`` ``parse()``. Each file is written to a temporary file
in its directory, given its mode (and owner) before the first byte, synced, and renamed over the
old one. A re-run starts from the files already there (the locks ``hubctl pair`` added, values set
by hand) and changes only what was given. Secrets are never printed.

hubd drives every lock through the bridge's Bluetooth proxy and keeps their pairings in its
state: bridge.json names no lock. A re-run on an older release's files removes what they had for
the bridge's own lock drivers (bridge.json's ``locks`` with their secrets and ``policy``,
hubd.toml's ``lock_driver``) and says so; locks the bridge drove are paired again with
``hubctl pair``.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import ssl
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from hubapi import signing, topics
from hubapi.schema import ALARM_CENTRE, BACKEND
from hubctl.hubfiles import (DEFAULT_ETC, DEFAULT_SERIAL, DEFAULT_STATE, DIR_MODE, PUBLIC, SECRET,
                             SERVICE_USER, FilesError, Planned, drop_visit_route, read_bridge, read_env,
                             read_toml, replace, toml_bytes)
from hubd.config import (DEFAULT_STATUS_SOCKET, ENV_PREFIX, SOCKET_PATH_MAX, ConfigError, HubConfig,
                         load_config)
from hubd.envfile import EnvFileError, applied, env_line, environment
from hubctl.service import doctor_command, run_hubd



PASSWORD_ENV = f"{ENV_PREFIX}MQTT__PASSWORD"
LINK_KEY_ENV = f"{ENV_PREFIX}SERIAL__LINK_KEY"
# The bridge's wiring (firmware/config.py's defaults, and the simulator's): the host link on
# UART 1, the safety alarm unit on UART 2 (the LTE modem is UART 3, the lte section's default).
LINK_UART = 1
ALARM_UNIT = {"uart": 2, "baudrate": 9600}
DEFAULT_BAUD = 115200

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_KID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_APN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_ACCOUNT = re.compile(r"^[0-9A-F]{3,16}$")
_DC09_FIELD = re.compile(r"^[0-9A-F]{1,6}$")
_UNIT_SERIAL = re.compile(r"^[0-9A-F]{8}$")

# hubd's settings -> the flag that sets them, for naming the flag in hubd's own refusals.
_HUBD_FLAGS: dict[tuple[str, ...], str] = {
    ("hub_id",): "--hub-id", ("state_dir",): "--state-dir", ("keys",): "--backend-key",
    ("serial", "port"): "--serial", ("alarms", "resident"): "--resident",
    ("mqtt", "host"): "--broker", ("mqtt", "port"): "--broker", ("mqtt", "tls"): "--broker",
    ("mqtt", "username"): "--username", ("mqtt", "password"): "--password-file",
    ("mqtt", "ca_file"): "--ca", ("mqtt", "cert_file"): "--client-cert",
    ("mqtt", "key_file"): "--client-key", ("mqtt",): "--broker", ("uplink", "mode"): "--uplink",
    ("visit", "route"): "--visit-route",
}
UPLINK_MODES = ("broadband", "lte", "auto")
# The same for bridge.json's lte section (firmware/config.py names the setting first).
_BRIDGE_FLAGS = {"lte.apn": "--apn", "lte.host": "--dc09-receiver", "lte.port": "--dc09-receiver",
                 "lte.account": "--alarm-account", "lte.key": "--dc09-key-file",
                 "lte.receiver": "--dc09-receiver-number", "lte.line": "--dc09-line",
                 "alarm_unit.serial": "--alarm-unit-serial"}


class BadFlag(Exception):
    """A flag's value cannot be used; ``flag`` names it, ``str()`` says why and what to give."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


class Missing(Exception):
    """A first provision lacks flags it needs; ``flags`` names them."""

    def __init__(self, flags: list[str]) -> None:
        them = "them" if len(flags) > 1 else "it"
        super().__init__(f"missing {', '.join(flags)}: a hub's first provision needs {them}")
        self.flags = flags


class ProvisionError(FilesError):
    """The hub's directories or existing files stand in the way; ``str()`` says what to do."""


@dataclass(frozen=True)
class Flags:
    """What the technician gave; None (or empty) keeps what the files already say."""

    etc_dir: Path = DEFAULT_ETC
    bridge_config: Path | None = None
    hub_id: str | None = None
    broker: str | None = None
    username: str | None = None
    password_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    ca: Path | None = None
    backend_keys: tuple[str, ...] = ()
    alarm_account: str | None = None
    alarm_unit_serial: str | None = None
    dc09_receiver: str | None = None
    dc09_key_file: Path | None = None
    dc09_receiver_number: str | None = None
    dc09_line: str | None = None
    apn: str | None = None
    uplink: str | None = None  # hubd.toml's [uplink] mode: UPLINK_MODES
    visit_route: str | None = None  # hubd.toml's [visit] route: lock ids, comma-separated; "none"
    resident: str | None = None
    serial: str | None = None
    state_dir: Path | None = None
    service_user: str = SERVICE_USER


@dataclass
class Plan:
    """Every file provision will write, checked; and the summary to print afterwards."""

    files: list[Planned]
    summary: list[str]
    hubd_toml: Path
    hubd_env: Path
    bridge_json: Path
    dirs: list[Path] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # kept out of anything printed


# --- reading what was given --------------------------------------------------------------------


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadFlag(flag, f"cannot read {path}: {e.strerror}") from None


def _one_line(flag: str, path: Path, what: str) -> str:
    """The file's text without its final line break; refused unless one line of printable text."""
    try:
        text = _read(flag, path).decode()
    except UnicodeDecodeError:
        raise BadFlag(flag, f"{path} is not text (UTF-8): it must hold the {what} alone") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise BadFlag(flag, f"{path} is empty: it must hold the {what}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadFlag(flag, f"{path} holds more than one line or a control character: it must "
                            f"hold the {what} alone, on one line")
    return text


def _hub_id(value: str) -> str:
    if not re.fullmatch(topics.SEGMENT_PATTERN, value):
        raise BadFlag("--hub-id", f"{value!r} is not a hub id: letters, digits and _.:- (1-64, "
                                  "starting with a letter or digit), e.g. hub-0042")
    if value in (BACKEND, ALARM_CENTRE):
        raise BadFlag("--hub-id", f"{value!r} is reserved for the broker's {value} user "
                                  "(docs/broker-setup.md): give the hub its own id")
    return value


def _broker(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of ``mqtt://host[:port]`` or ``mqtts://host[:port]``."""
    example = "e.g. mqtts://broker.kommune.example:8883, or mqtt://host:1883 without TLS"
    if "@" in url:  # a login in the URL: never echo it, it may carry the password
        raise BadFlag("--broker", "the URL carries a login: give the broker's address alone, the "
                                  "login with --username and --password-file")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BadFlag("--broker", f"give the broker as mqtt://HOST:PORT or mqtts://HOST:PORT, "
                                  f"{example}")
    try:
        port = parts.port
    except ValueError:
        raise BadFlag("--broker", f"the port of {url} is not a number 1-65535, {example}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadFlag("--broker", f"{url} is not a broker address, {example}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


def _backend_key(spec: str) -> tuple[str, str]:
    """(kid, public key as hubd's [keys] takes it) from ``KID=PATH``."""
    kid, eq, path = spec.partition("=")
    if not eq or not kid or not path:
        raise BadFlag("--backend-key", f"{spec!r} is not KID=PATH, e.g. backend-2025=backend-2025.pub")
    if not _KID.fullmatch(kid):
        raise BadFlag("--backend-key", f"key id {kid!r}: letters, digits and _.:- only (1-64)")
    try:
        text = _read("--backend-key", Path(path)).decode().strip()
    except UnicodeDecodeError:
        raise BadFlag("--backend-key", f"{path} is not a PEM or base64url public key") from None
    if "PRIVATE KEY" in text:
        raise BadFlag("--backend-key", f"{path} holds a private key: a hub needs only the "
                                       "backend's public key; never put the signing key on a hub")
    try:
        key = signing.load_public_key(text)
    except signing.KeyFormatError as e:
        raise BadFlag("--backend-key", f"{path} is not an Ed25519 public key ({e}): give the "
                                       "backend's public key as PEM or raw base64url") from None
    return kid, signing.public_key_text(key)


def _dc09_receiver(value: str) -> tuple[str, int]:
    host, colon, port = value.rpartition(":")
    if not colon or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadFlag("--dc09-receiver", f"{value!r} is not HOST:PORT, e.g. "
                                         "dc09.alarmsentral.example:12000")
    return host, int(port)


def _dc09_key(path: Path) -> str:
    key = _one_line("--dc09-key-file", path, "DC-09 AES key").strip()
    if not key.isascii() or not key.isprintable() or " " in key:
        raise BadFlag("--dc09-key-file", f"the key in {path} has characters other than ASCII "
                                         "letters, digits and signs")
    if len(key) not in (16, 24, 32):
        raise BadFlag("--dc09-key-file", f"the key in {path} has {len(key)} characters: a DC-09 "
                                         "AES key has 16, 24 or 32, as the receiver shows it")
    return key


def _cert_cn(path: Path, data: bytes) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise BadFlag("--client-cert", f"{path} is not a PEM certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _check_pair(cert: Path, key: Path) -> None:
    """The key opens the certificate (OpenSSL's own check, as paho will load them)."""
    asked = []

    def no_passphrase() -> bytes:
        asked.append(True)
        return b""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError:
        if asked:
            raise BadFlag("--client-key", f"{key} is encrypted with a passphrase: hubd needs it "
                                          f"unencrypted (openssl pkey -in {key} -out hub.key)") from None
        raise BadFlag("--client-key", f"{key} is not the private key of {cert} (or not a PEM "
                                      "key): give the key the certificate was issued for") from None


def _check_ca(path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError):
        raise BadFlag("--ca", f"{path} holds no PEM CA certificate: give the CA that signed the "
                              "broker's certificate") from None


def _text(flag: str, value: str, what: str, longest: int) -> str:
    if not value or len(value) > longest or not value.isprintable():
        raise BadFlag(flag, f"{value!r} is not {what} (1-{longest} printable characters)")
    return value


# --- the directories and the files already there -----------------------------------------------


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _check_dir(path: Path, flag: str) -> None:
    """A directory provision may write secrets into: ours (or root's), not writable by others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ProvisionError(f"cannot create {path}: {parent} is not writable for you: run "
                                 f"hubctl provision as root (sudo), or pass another {flag}") from None
        return
    except OSError as e:
        raise ProvisionError(f"cannot use {path}: {e.strerror}: pass another {flag}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ProvisionError(f"{path} is not a directory: pass a directory with {flag}")
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise ProvisionError(
            f"{path} belongs to {_owner_name(st.st_uid)}, not to {_owner_name(me)} or root: "
            f"whoever owns it could swap the hub's secrets; chown it or pass another {flag}")
    if st.st_mode & 0o022:
        raise ProvisionError(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                             f"chmod go-w {path}, or pass another {flag}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ProvisionError(f"cannot write {path}: permission denied: run hubctl provision as "
                             f"root (sudo), or pass another {flag}")


# --- checking with hubd's and the firmware's own parsers -----------------------------------------


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _check_hubd(hub: dict[str, Any], env: dict[str, str], toml_path: Path,
                secrets: list[str]) -> HubConfig:
    try:
        with environment(env, aside=ENV_PREFIX):  # as systemd gives it: none of the shell's
            return HubConfig(**hub)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(p) for p in error["loc"])
        name = ".".join(loc) or "config"
        message = _scrub(error["msg"].removeprefix("Value error, "), secrets)
        for n in range(len(loc), 0, -1):
            if loc[:n] in _HUBD_FLAGS:
                raise BadFlag(_HUBD_FLAGS[loc[:n]], f"hubd refuses {name}: {message}") from None
        raise ProvisionError(f"hubd refuses {name} in {toml_path}: {message}: fix or remove it "
                             "there, then provision again") from None


def _check_bridge(bridge: dict[str, Any], fw: ModuleType, path: Path, secrets: list[str]) -> None:
    try:
        fw.parse(bridge)
    except fw.ConfigError as e:
        message = _scrub(str(e), secrets)
        for prefix, flag in _BRIDGE_FLAGS.items():
            if message.startswith(prefix):
                raise BadFlag(flag, f"the bridge's firmware refuses it: {message}") from None
        raise ProvisionError(f"the bridge would not start with {path}: {message}: fix it there, "
                             "then provision again") from None


# --- the plan ------------------------------------------------------------------------------------


def _env_text(env: dict[str, str]) -> bytes:
    head = ("# hubd's secrets, written by hubctl provision. systemd reads this file\n"
            "# (EnvironmentFile= in hubd.service) and gives hubd each line as an environment\n"
            "# variable. Keep it mode 0600, owned by root.\n")
    return (head + "".join(env_line(k, v) + "\n" for k, v in sorted(env.items()))).encode()


def _ordered(obj: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: obj[k] for k in first if k in obj}, **{k: v for k, v in obj.items() if k not in first}}


def plan(flags: Flags, fw: ModuleType) -> Plan:
    """Read what is there, apply the flags, check the result with hubd's and the firmware's
    parsers; nothing is written. Raises BadFlag, Missing or ProvisionError."""
    etc = flags.etc_dir.absolute()
    tls_dir = etc / "tls"
    bridge_path = (flags.bridge_config or etc / "bridge.json").absolute()
    toml_path, env_path = etc / "hubd.toml", etc / "hubd.env"
    _check_dir(etc, "--etc-dir")
    if tls_dir.exists():
        _check_dir(tls_dir, "--etc-dir")
    if bridge_path.parent != etc:
        _check_dir(bridge_path.parent, "--bridge-config")

    hub = read_toml(toml_path)
    env = read_env(env_path)
    _apply_hub(flags, hub)
    _apply_status_socket(etc, hub)
    tls_files, sources = _apply_login(flags, hub, env, tls_dir)
    bridge = read_bridge(bridge_path)
    upgraded = _drop_bridge_drivers(hub, bridge, toml_path, bridge_path)
    bridge = _apply_bridge(flags, bridge, hub["serial"].get("baudrate", DEFAULT_BAUD))
    key_note = _apply_link_key(hub, env, bridge)
    lte = bridge["lte"]
    _apply_uplink(flags, hub, lte)
    _apply_visit_route(flags, hub)
    missing = [flag for flag, there in (
        ("--hub-id", "hub_id" in hub), ("--broker", "host" in hub["mqtt"]),
        ("--backend-key", bool(hub.get("keys"))), ("--alarm-account", "account" in lte),
        ("--dc09-receiver", "host" in lte), ("--apn", "apn" in lte)) if not there]
    if missing:
        raise Missing(missing)
    secrets = [s for s in (env.get(PASSWORD_ENV), env.get(LINK_KEY_ENV), lte.get("key")) if s]

    # Check the very text to be written, as hubd reads it (the TLS files from where they are now).
    toml_data = toml_bytes(_ordered(hub, ("hub_id", "state_dir", "status_socket", "mqtt", "uplink", "serial",
                                          "keys", "alarms", "locks", "visit")))
    as_read = tomllib.loads(toml_data.decode())
    for name in ("ca_file", "cert_file", "key_file"):
        if as_read["mqtt"].get(name) in sources:
            as_read["mqtt"][name] = str(sources[as_read["mqtt"][name]])
    config = _check_hubd(as_read, env, toml_path, secrets)
    _check_bridge(bridge, fw, bridge_path, secrets)
    link_baud = bridge["link"].get("baudrate", DEFAULT_BAUD)
    if link_baud != config.serial.baudrate:
        raise ProvisionError(f"hubd's serial baudrate ({config.serial.baudrate}, {toml_path}) and "
                             f"the bridge's link baudrate ({link_baud}, {bridge_path}) differ: "
                             "make them the same in one of the files, then provision again")
    # What the summary shows: where the TLS files will be, not where they came from.
    config.mqtt = config.mqtt.model_copy(update={
        name: Path(hub["mqtt"][name]) for name in ("ca_file", "cert_file", "key_file")
        if name in hub["mqtt"]})

    files = [*tls_files,
             Planned(bridge_path, (json.dumps(bridge, indent=1) + "\n").encode(), SECRET),
             Planned(env_path, _env_text(env), SECRET),
             Planned(toml_path, toml_data, PUBLIC)]
    dirs = [etc, tls_dir] if tls_files else [etc]
    if bridge_path.parent not in dirs:
        dirs.append(bridge_path.parent)
    summary = _summary(config, env, bridge, toml_path, env_path, bridge_path, files)
    summary.insert(-1, key_note)
    for note in upgraded:
        summary.insert(-1, note)
    return Plan(files, summary, toml_path, env_path, bridge_path, dirs, secrets)


def _apply_status_socket(etc: Path, hub: dict[str, Any]) -> None:
    """hubd's local socket for hubctl: hubd.service's /run/hubd (hubd's default) for /etc/hubd;
    for another directory (a bench, hubd by hand as a user who cannot write /run) a socket in
    that directory, so hubctl finds hubd by hubd.toml with no --socket. One set by hand stays;
    a directory whose path is too long for a unix socket (107 bytes) keeps the default."""
    if etc == DEFAULT_ETC or "status_socket" in hub:
        return
    path = etc / "status.sock"
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        hub["status_socket"] = str(path)


def _apply_hub(flags: Flags, hub: dict[str, Any]) -> None:
    """hubd's own settings: hub id, state, serial port, backend keys, resident."""
    if flags.hub_id is not None:
        hub["hub_id"] = _hub_id(flags.hub_id)
    if flags.state_dir is not None:
        if not flags.state_dir.is_absolute():
            raise BadFlag("--state-dir", f"{flags.state_dir} is relative: give an absolute path, "
                                         f"e.g. {DEFAULT_STATE}")
        hub["state_dir"] = str(flags.state_dir)
    hub.setdefault("state_dir", str(DEFAULT_STATE))
    serial = hub.setdefault("serial", {})
    if flags.serial is not None:
        if not flags.serial.startswith("/") or not flags.serial.isprintable():
            raise BadFlag("--serial", f"{flags.serial!r} is not a serial device path, e.g. "
                                      f"{DEFAULT_SERIAL}")
        serial["port"] = flags.serial
    serial.setdefault("port", DEFAULT_SERIAL)
    if flags.backend_keys:
        keys: dict[str, str] = {}
        for spec in flags.backend_keys:
            kid, text = _backend_key(spec)
            if kid in keys:
                raise BadFlag("--backend-key", f"key id {kid!r} is given twice")
            keys[kid] = text
        hub["keys"] = keys
    if flags.resident is not None:
        hub.setdefault("alarms", {})["resident"] = _text("--resident", flags.resident,
                                                         "a resident id", 128)
    hub.setdefault("locks", {})


def _apply_link_key(hub: dict[str, Any], env: dict[str, str], bridge: dict[str, Any]) -> str:
    """The serial link's key, the same in hubd.env and bridge.json: kept when it is there, made
    when it is not. Returns the summary's line about it (whether the bridge must be flashed)."""
    by_hand = hub.get("serial", {}).pop("link_key", None)  # hubd.toml is world-readable
    if by_hand is not None:
        env.setdefault(LINK_KEY_ENV, str(by_hand))
    link = bridge["link"]
    hubs, bridges = env.get(LINK_KEY_ENV), link.get("key")
    key = hubs or bridges or os.urandom(32).hex()
    env[LINK_KEY_ENV] = link["key"] = key
    if bridges == key:
        return "  serial link key: kept, the same in hubd.env and bridge.json"
    what = ("the bridge's link key differed from hubd's and is now hubd's" if bridges else
            "a new serial link key was made" if not hubs else "the bridge's link key is now hubd's")
    return f"  {what}: the bridge must be flashed with this bridge.json (hubctl flash)"


def _apply_login(flags: Flags, hub: dict[str, Any], env: dict[str, str],
                 tls_dir: Path) -> tuple[list[Planned], dict[str, Path]]:
    """The broker's address and one way of logging in: a password (hubd.env) or a client
    certificate (tls/). Returns the TLS files to write, and each one's final path -> source."""
    mqtt = hub.setdefault("mqtt", {})
    files: list[Planned] = []
    sources: dict[str, Path] = {}
    if "password" in mqtt:  # put into the world-readable file by hand: it belongs in hubd.env
        env.setdefault(PASSWORD_ENV, str(mqtt.pop("password")))
    if flags.broker is not None:
        mqtt["host"], mqtt["port"], mqtt["tls"] = _broker(flags.broker)
    by_password = flags.username is not None or flags.password_file is not None
    by_cert = flags.client_cert is not None or flags.client_key is not None
    if by_password and by_cert:
        raise BadFlag("--client-cert", "log in with a password (--username, --password-file) or "
                                       "a client certificate (--client-cert, --client-key), not both")
    if by_cert:
        if flags.client_cert is None or flags.client_key is None:
            raise BadFlag("--client-key" if flags.client_key is None else "--client-cert",
                          "a client certificate needs both --client-cert and --client-key")
        _cert_cn(flags.client_cert, _read("--client-cert", flags.client_cert))
        _read("--client-key", flags.client_key)
        _check_pair(flags.client_cert, flags.client_key)
        sources[str(tls_dir / "client.crt")] = flags.client_cert
        sources[str(tls_dir / "client.key")] = flags.client_key
        mqtt["cert_file"], mqtt["key_file"] = str(tls_dir / "client.crt"), str(tls_dir / "client.key")
        mqtt.pop("username", None)
        env.pop(PASSWORD_ENV, None)
    if by_password:
        mqtt.pop("cert_file", None)
        mqtt.pop("key_file", None)
        if flags.password_file is not None:
            env[PASSWORD_ENV] = _one_line("--password-file", flags.password_file, "broker password")
        elif PASSWORD_ENV not in env:
            raise BadFlag("--password-file", "a broker login needs its password: put it in a file "
                                             "and pass --password-file")
        if flags.username is not None:
            mqtt["username"] = flags.username
        elif "hub_id" in hub:
            mqtt["username"] = hub["hub_id"]
    if flags.ca is not None:
        _check_ca(flags.ca)
        files.append(Planned(tls_dir / "ca.pem", _read("--ca", flags.ca), PUBLIC))
        sources[str(tls_dir / "ca.pem")] = flags.ca
        mqtt["ca_file"] = str(tls_dir / "ca.pem")
    if not mqtt.get("tls"):
        if flags.ca is not None or by_cert:
            raise BadFlag("--broker", "--ca and --client-cert are for a TLS broker: give it as "
                                      "mqtts://HOST:PORT")
        if mqtt.get("cert_file"):
            raise BadFlag("--broker", "this hub logs in with a client certificate, which needs "
                                      "TLS: give mqtts://HOST:PORT, or log in with --username "
                                      "and --password-file")
        mqtt.pop("ca_file", None)  # no TLS, no CA
    # The broker's ACL gives each hub the topics under its username (docs/broker-setup.md), and
    # with a certificate the username is its CN.
    hub_id = hub.get("hub_id")
    if mqtt.get("username") is not None and hub_id is not None and mqtt["username"] != hub_id:
        raise BadFlag("--username", f"the broker username must be the hub id ({hub_id}): the "
                                    "broker's ACL gives each hub the topics under its username")
    cert_file = mqtt.get("cert_file")
    if cert_file is not None and hub_id is not None:
        source = sources.get(cert_file, Path(cert_file))
        cn = _cert_cn(source, _read("--client-cert", source))
        if cn != hub_id:
            raise BadFlag("--client-cert", f"{source} is issued to CN={cn}, not to {hub_id}: the "
                                           "broker takes the CN as the hub's username; give this "
                                           "hub's certificate")
    if by_cert:
        assert flags.client_cert is not None and flags.client_key is not None
        files += [Planned(tls_dir / "client.crt", _read("--client-cert", flags.client_cert), PUBLIC),
                  Planned(tls_dir / "client.key", _read("--client-key", flags.client_key), SECRET,
                          _key_owner(flags.service_user))]
    hub["mqtt"] = _ordered(mqtt, ("host", "port", "tls", "username", "ca_file", "cert_file",
                                  "key_file"))
    return files, sources


def _apply_uplink(flags: Flags, hub: dict[str, Any], lte: dict[str, Any]) -> None:
    """hubd.toml's ``[uplink] mode``: the flag's, else the file's, else ``auto`` with the bridge's
    LTE modem and ``broadband`` without it. LTE needs the modem: refused without it (a first
    provision lacking ``--apn`` is told so here, before the list of missing flags)."""
    uplink = hub.setdefault("uplink", {})
    if flags.uplink is not None:
        if flags.uplink not in UPLINK_MODES:
            raise BadFlag("--uplink", f"{flags.uplink!r} is not an uplink: broadband (the home's "
                                      "network), lte (the bridge's modem) or auto (broadband, LTE "
                                      "when it fails)")
        uplink["mode"] = flags.uplink
    modem = "apn" in lte
    uplink.setdefault("mode", "auto" if modem else "broadband")
    if uplink["mode"] in ("lte", "auto") and not modem:
        raise BadFlag("--uplink", f"--uplink {uplink['mode']} goes through the bridge's LTE modem, "
                                  "and this provisioning has none: give the modem's --apn (with "
                                  "--dc09-receiver and --alarm-account), or --uplink broadband")
    hub["uplink"] = _ordered(uplink, ("mode",))


def _apply_visit_route(flags: Flags, hub: dict[str, Any]) -> None:
    """hubd.toml's ``[visit] route``: the doors a visitor passes, in order, as lock ids this
    hub has paired ([locks]); "none" removes it (a signed prepare still holds a door). The
    hold's times, set by hand, stay."""
    given = flags.visit_route
    if given is None:
        return
    if given.strip().lower() in ("", "none"):
        drop_visit_route(hub)
        return
    route = [door.strip() for door in given.split(",")]
    paired = list(hub.get("locks") or {})
    unknown = [door for door in route if door not in paired]
    if unknown:
        raise BadFlag("--visit-route", f"{', '.join(map(repr, unknown))} is not a lock this hub has "
                      f"paired ({', '.join(paired) or 'none yet'}): pair each door first (hubctl "
                      "pair), then give the route as their lock ids in the order a visitor passes "
                      "them, e.g. --visit-route entrance,front-door")
    hub.setdefault("visit", {})["route"] = route


def _hex_field(flag: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    """A flag's hex value, upper-cased, or BadFlag saying what it should be."""
    if not pattern.fullmatch(value.upper()):
        raise BadFlag(flag, f"{value!r} is not {what}")
    return value.upper()


def _drop_bridge_drivers(hub: dict[str, Any], bridge: dict[str, Any], toml_path: Path,
                         bridge_path: Path) -> list[str]:
    """Remove what an older release wrote for the bridge's own lock drivers; the summary's lines
    saying what went and what the technician does next."""
    notes = []
    driver = hub.pop("lock_driver", None)
    if driver is not None:
        notes.append(f"  {toml_path}: lock_driver removed (hubd always drives the locks)")
    stale = [name for name in ("locks", "policy") if name in bridge]
    paired = [str(lk.get("id")) for lk in bridge.get("locks") or [] if isinstance(lk, dict)]
    for name in stale:
        del bridge[name]
    if stale:
        notes.append(f"  {bridge_path}: {' and '.join(stale)} removed (the bridge drives no lock; "
                     "their secrets are gone from it)")
    if paired and driver != "hubd":
        notes.append(f"  the bridge drove {', '.join(paired)}: pair each again with hubctl pair "
                     "(in pairing mode) once hubd runs this release; until then their commands "
                     "fail unknown_lock")
    return notes


def _apply_bridge(flags: Flags, bridge: dict[str, Any], baud: int) -> dict[str, Any]:
    """bridge.json: its link, the safety alarm unit, the second path (LTE to the DC-09
    receiver). No lock: hubd drives them through the bridge's proxy."""
    bridge.setdefault("link", {"uart": LINK_UART, "baudrate": baud})
    unit = bridge.setdefault("alarm_unit", dict(ALARM_UNIT))
    if flags.alarm_unit_serial is not None:
        unit["serial"] = _hex_field("--alarm-unit-serial", flags.alarm_unit_serial, _UNIT_SERIAL,
                                    "a unit serial: the 8 hex digits on the unit's label, e.g. 5A0000AB")
    lte = dict(bridge.get("lte") or {})
    if flags.apn is not None:
        if not _APN.fullmatch(flags.apn):
            raise BadFlag("--apn", f"{flags.apn!r} is not an APN: letters, digits, dots and "
                                   "hyphens, e.g. internet.m2m")
        lte["apn"] = flags.apn
    if flags.dc09_receiver is not None:
        lte["host"], lte["port"] = _dc09_receiver(flags.dc09_receiver)
    if flags.alarm_account is not None:
        lte["account"] = _hex_field("--alarm-account", flags.alarm_account, _ACCOUNT,
                                    "a DC-09 account: 3-16 hex digits, e.g. 12AB")
    for flag, name, value in (("--dc09-receiver-number", "receiver", flags.dc09_receiver_number),
                              ("--dc09-line", "line", flags.dc09_line)):
        if value is not None:
            lte[name] = _hex_field(flag, value, _DC09_FIELD, f"a DC-09 {name} number: 1-6 hex digits, e.g. 1")
    if flags.dc09_key_file is not None:
        lte["key"] = _dc09_key(flags.dc09_key_file)
    bridge["lte"] = _ordered(lte, ("apn", "host", "port", "account", "receiver", "line", "key"))
    return _ordered(bridge, ("link", "log", "alarm_unit", "lte", "proxy"))


def _key_owner(user: str) -> tuple[int, int] | None:
    """Who owns the client key: when run as root, the user hubd runs as (it must read the key)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BadFlag("--service-user", f"there is no user {user!r} to own the client key: create "
                                        "the user hubd runs as first (useradd --system "
                                        f"--no-create-home --groups dialout {SERVICE_USER}), or "
                                        "name it with --service-user") from None
    return entry.pw_uid, entry.pw_gid


def _summary(config: HubConfig, env: dict[str, str], bridge: dict[str, Any], toml_path: Path,
             env_path: Path, bridge_path: Path, files: list[Planned]) -> list[str]:
    m = config.mqtt
    scheme = "mqtts" if m.tls else "mqtt"
    password = "set (hubd.env, 0600)" if PASSWORD_ENV in env else "none"
    login = (f"client certificate {m.cert_file}" if m.cert_file else
             f"user {m.username}, password {password}" if m.username else
             "none (an anonymous broker)")
    locks = ", ".join(config.locks) or "none yet (hubctl pair adds them)"
    lines = [f"provisioned {config.hub_id}",
             f"  {toml_path} (0644): broker {scheme}://{m.host}:{m.port}"
             f"{f', CA {m.ca_file}' if m.ca_file else ''}, login {login}; state in "
             f"{config.state_dir}; bridge on {config.serial.port}; backend keys "
             f"{', '.join(config.keys)}; resident {config.alarms.resident or 'not set'}; "
             f"locks {locks}"
             + (f"; status socket {config.status_socket} (hubctl finds hubd by it)"
                if config.status_socket != DEFAULT_STATUS_SOCKET else "")]
    lines.append(f"  {env_path} (0600): " + (", ".join(f"{name} set" for name in sorted(env))
                                            or "no secrets (the broker login needs none)"))
    what = {"ca.pem": "the broker's CA", "client.crt": "the hub's client certificate",
            "client.key": "its private key"}
    for f in files:
        if f.path.name in what and f.path.parent.name == "tls":
            owner = f", owner {_owner_name(f.owner[0])}" if f.owner else ""
            lines.append(f"  {f.path} ({f.mode:04o}{owner}): {what[f.path.name]}")
    lte = bridge["lte"]
    key = "AES key set (bridge.json, 0600)" if lte.get("key") else "no AES key (plain frames)"
    lines.append(f"  {bridge_path} (0600): link on UART {bridge['link'].get('uart', LINK_UART)}; "
                 f"alarm unit on UART {bridge['alarm_unit'].get('uart', ALARM_UNIT['uart'])}, serial "
                 f"{bridge['alarm_unit'].get('serial') or 'not pinned (give --alarm-unit-serial)'}; LTE "
                 f"APN {lte['apn']}; DC-09 receiver {lte['host']}:{lte['port']}, account "
                 f"{lte['account']}, receiver {lte.get('receiver') or 'none'}, line "
                 f"{lte.get('line', '1')}, {key}; no lock (hubd drives them through the "
                 "bridge's Bluetooth proxy)")
    u = config.uplink
    lines.append("  broker path: " + {
        "broadband": "broadband only (the home's network; the bridge's LTE modem not used for it: "
                     "--uplink auto falls back to it)" if lte.get("apn") else
                     "broadband only (the home's network)",
        "lte": f"LTE only, through the bridge's modem (APN {lte.get('apn')}; MQTT keepalive "
               f"{u.lte_keepalive_s} s over LTE)",
        "auto": f"auto: broadband, LTE through the bridge's modem after {u.fallback_s:g} s without "
                f"the broker, back to broadband when a probe every {u.probe_s:g} s answers",
    }[u.mode])
    v = config.visit
    lines.append("  visit route: " + (
        f"{' -> '.join(v.route)} (when a visit's door opened, hubd holds the connection to the next "
        f"one for the visit's command{f', {v.hold_s:g} s at most' if v.hold_s else ''})" if v.route else
        "none (a signed prepare from the backend holds a door; --visit-route entrance,front-door "
        "once both are paired)"))
    lines.append(f"next: hubctl flash ... --config {bridge_path}; {run_hubd(toml_path.parent)}"
                 + (f"; {doctor_command(toml_path.parent)} (it logs in to the broker through LTE)"
                    if u.mode != "broadband" else ""))
    return lines


# --- writing -------------------------------------------------------------------------------------


def write(p: Plan, fw: ModuleType) -> None:
    """Write every planned file atomically, then read them back as hubd and the bridge will."""
    for d in p.dirs:
        try:
            if not d.exists():
                d.mkdir(parents=True)
                d.chmod(DIR_MODE)
        except OSError as e:
            raise ProvisionError(f"cannot create {d}: {e.strerror}") from None
    replace(p.files)
    _verify_written(p, fw)


def _verify_written(p: Plan, fw: ModuleType) -> None:
    try:
        with applied(p.hubd_env, aside=ENV_PREFIX):
            load_config(p.hubd_toml)
        fw.load(str(p.bridge_json))
    except (ConfigError, EnvFileError, fw.ConfigError) as e:
        raise ProvisionError(f"the files are written but do not read back ({_scrub(str(e), p.secrets)}): "
                             "a bug in hubctl provision; report it with this line") from None
