"""hubctl doctor's checks beyond the ones tests/hubctl/test_hubctl_doctor.py covers: the broker over TLS
(right, a CA file that is not the broker's, a client certificate from a foreign CA), an outbox
whose oldest entry waits longer than doctor.MAX_OUTBOX_AGE_S, and a lock with a low battery.

Same setup as there (its fixtures and helpers are imported, not copied): hubd as its own process,
a real Mosquitto, the simulated home.

The clock check is not provoked here: the simulated bridge runs on this host's clock and takes
hubd's time at every link-up, so its offset to hubd is 0 by construction; a wrong clock would need
the bridge's (MicroPython) process or hubctl's to run on a faked time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hil_tests.harness import HUB_ID
from hubapi import schema
from hubapi.models import HubStatus
from hubctl import doctor
from hubd.store.database import DB_NAME
from tests.hubctl_cli import hubctl, hubctl_in_process
from tests.mosquitto import Mosquitto, TlsListener
from tests.hubctl.test_hubctl_doctor import checklist, failed, make_hub, parts_heard, ready  # noqa: F401 - fixtures
from tests.tls import CertFiles, TestCA

BROKER = "broker reachable and authorised"


def tls_env(broker: Mosquitto, ca_file: Path, client: CertFiles) -> dict[str, str]:
    """hubd.env pointing hubd at the broker's TLS listener with a client certificate."""
    assert broker.tls_port is not None
    return {"HUBD_MQTT__PORT": str(broker.tls_port), "HUBD_MQTT__TLS": "true",
            "HUBD_MQTT__CA_FILE": str(ca_file), "HUBD_MQTT__CERT_FILE": str(client.cert),
            "HUBD_MQTT__KEY_FILE": str(client.key)}


@pytest.fixture
def tls_broker(mosquitto_factory, test_ca: TestCA) -> Mosquitto:
    """Passwords on the plain listener, client certificates (CN = username) on the TLS one, the
    generated ACL on both: as docs/broker-setup.md sets a broker up."""
    server = test_ca.issue_server()
    return mosquitto_factory(passwords={schema.BACKEND: "pw-backend"}, acl=schema.acl(),
                             tls=TlsListener(test_ca.ca_file, server.cert, server.key))


def lock_id_of(hub) -> str:
    return next(iter(hub.home.home.locks))


def lock_battery(s: HubStatus, lock_id: str) -> str | None:
    device = next((d for d in s.devices if d.device == lock_id), None)
    return None if device is None or device.battery is None else str(device.battery.state)


# --- TLS ------------------------------------------------------------------------------------------


def test_doctor_is_green_over_tls_with_a_client_certificate(tls_broker, test_ca, make_hub) -> None:
    hub = make_hub(tls_broker, env=tls_env(tls_broker, test_ca.ca_file, test_ca.issue_client(HUB_ID)))
    hub.wait_for("a complete snapshot over TLS", ready)

    proc = hubctl("doctor", "--config", hub.config)
    lines = checklist(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not failed(lines), proc.stdout
    assert lines[BROKER].startswith("✓")
    assert f"logged in to {tls_broker.host}:{tls_broker.tls_port} over TLS" in lines[BROKER]
    assert lines["hubd connected to the broker"].startswith("✓")


@pytest.mark.parametrize("wrong", ["ca_file", "client_certificate"])
def test_doctor_names_tls_with_a_foreign_ca_and_its_fix(wrong: str, tls_broker, test_ca, tmp_path,
                                                        make_hub) -> None:
    foreign = TestCA(tmp_path / "foreign-pki", name="foreign CA")
    right_env = tls_env(tls_broker, test_ca.ca_file, test_ca.issue_client(HUB_ID))
    if wrong == "ca_file":  # hubd would trust another CA than the one that signed the broker's certificate
        env = tls_env(tls_broker, foreign.ca_file, test_ca.issue_client(HUB_ID))
        found, fix = ("the broker's certificate is not trusted",
                      "check ca_file in hubd.toml is the CA that signed the broker's certificate")
    else:  # hubd's client certificate comes from a CA the broker does not trust
        env = tls_env(tls_broker, test_ca.ca_file, foreign.issue_client(HUB_ID))
        found, fix = ("closed the TLS connection before the login",
                      "cert_file must be signed by the CA the broker trusts")
    hub = make_hub(tls_broker, env=env)
    hub.wait_for("the bridge and its parts", parts_heard)

    proc = hubctl("doctor", "--config", hub.config)
    lines = checklist(proc)
    assert proc.returncode == 1
    assert lines[BROKER].startswith("✗"), proc.stdout
    detail, _, fix_line = lines[BROKER].partition("\n")
    assert "TLS" in detail and found in detail, proc.stdout
    assert fix_line.startswith("fix: ") and fix in fix_line, proc.stdout
    assert failed(lines) == {BROKER, "hubd connected to the broker"}, proc.stdout

    # The same broker takes hubd's right settings: the doctor's own TLS login is not the problem.
    (hub.config.parent / "hubd.env").write_text("".join(f"{k}={v}\n" for k, v in right_env.items()))
    again = checklist(hubctl_in_process("doctor", "--config", hub.config))
    assert again[BROKER].startswith("✓") and "over TLS" in again[BROKER]


# --- outbox backlog -------------------------------------------------------------------------------


def test_doctor_names_a_stale_outbox_and_hubd_delivers_it_when_the_broker_is_back(mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto)
    hub.wait_for("a complete snapshot", ready)
    mosquitto.stop()
    hub.wait_for("hubd offline", lambda s: not s.broker_connected)

    # A real entry: the low battery warning hubd queues for the backend while the broker is away.
    lock_id = lock_id_of(hub)
    lock = hub.home.home.locks[lock_id]
    hub.home.call(lambda: lock.set_battery(20))
    queued = hub.wait_for("a battery warning in the outbox",
                          lambda s: s.outbox.depth >= 1 and lock_battery(s, lock_id) == "low")
    assert queued.outbox.oldest_at is not None

    proc = hubctl("doctor", "--config", hub.config)
    assert checklist(proc)["outbox backlog"].startswith("✓"), proc.stdout  # young: not stale yet

    # Its wait grows past the limit: the rows are dated back (instead of sleeping for 10 minutes).
    aged_by = 2 * doctor.MAX_OUTBOX_AGE_S
    with sqlite3.connect(hub.config.parent / "hubd-state" / DB_NAME, timeout=10) as db:
        db.execute("UPDATE outbox SET created = created - ?", (aged_by,))
    db.close()
    hub.wait_for("the outbox's oldest entry dated back",
                 lambda s: s.outbox.oldest_at is not None
                 and s.outbox.oldest_at <= queued.outbox.oldest_at - aged_by + 1)

    proc = hubctl_in_process("doctor", "--config", hub.config)
    lines = checklist(proc)
    assert proc.returncode == 1
    outbox = lines["outbox backlog"]
    assert outbox.startswith("✗"), proc.stdout
    assert "waiting, the oldest for" in outbox
    assert f"fix: hubd cannot deliver to the broker {mosquitto.host}:{mosquitto.port}: see the broker check" in outbox
    assert "unreachable" in lines[BROKER]
    assert failed(lines) == {BROKER, "hubd connected to the broker", "outbox backlog", f"lock {lock_id}"}, proc.stdout

    # The broker back: hubd empties the outbox (the broker acknowledged each), the check is green.
    mosquitto.start()
    hub.wait_for("the outbox delivered", lambda s: s.broker_connected and s.outbox.depth == 0)
    lines = checklist(hubctl_in_process("doctor", "--config", hub.config))
    assert lines["outbox backlog"].startswith("✓") and "0 waiting" in lines["outbox backlog"]
    assert failed(lines) == {f"lock {lock_id}"}  # the battery is still low


# --- battery --------------------------------------------------------------------------------------


def test_doctor_fails_a_lock_with_a_low_or_critical_battery(mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto)
    hub.wait_for("a complete snapshot", ready)
    lock_id = lock_id_of(hub)
    lock = hub.home.home.locks[lock_id]
    name = f"lock {lock_id}"

    for percent, state in ((20, "low"), (5, "critical")):
        hub.home.call(lambda percent=percent: lock.set_battery(percent))
        hub.wait_for(f"{lock_id}'s battery {state}", lambda s, state=state: lock_battery(s, lock_id) == state)
        proc = hubctl("doctor", "--config", hub.config)
        lines = checklist(proc)
        assert proc.returncode == 1
        assert failed(lines) == {name}, proc.stdout
        assert f"battery {percent}% {state}" in lines[name]
        assert "fix: change the batteries" in lines[name]

    # New batteries: the lock's line is green again and says so.
    hub.home.call(lambda: lock.set_battery(100))
    hub.wait_for(f"{lock_id}'s battery ok", lambda s: lock_battery(s, lock_id) == "ok")
    proc = hubctl_in_process("doctor", "--config", hub.config)
    lines = checklist(proc)
    assert proc.returncode == 0, proc.stdout
    assert lines[name].startswith("✓") and "battery 100% ok" in lines[name]
