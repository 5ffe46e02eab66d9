"""hubctl's side of the LTE uplink (issue 16): ``hubctl provision --uplink`` writes hubd.toml's
``[uplink]``; ``hubctl status`` shows the broker's path; ``hubctl doctor`` logs in to the broker
through the bridge's LTE modem (hubd's probe, asked on its local socket) and names each way that
fails with its fix.

End to end: hubd as its own process, a real Mosquitto, the simulated home with the real bridge
firmware in MicroPython and its BG95 model, the home's broadband through its router. The modem's
knobs make the failures: no SIM, the operator's network not reaching the broker, coverage lost;
a broker refusing the login makes the credentials' one. The APN's failure is not made: the modem
model activates any APN (simulator/modem.py), so ``pdp_failed`` has its fix from the table alone.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.harness import HUB_ID
from hubapi import schema
from hubapi.models import HubStatus, UplinkProbe
from hubctl import doctor, reach
from hubd.technician import control
from simulator import lte_network
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome, default_locks
from simulator.ports import free_port
from tests.fixtures import BackendKey
from tests.hubctl.test_hubctl_doctor import FAST_ABSENT, FAST_HEALTH, FAST_POLICY, checklist, failed, parts_heard
from tests.hubctl.test_hubctl_provision import Inputs, hubd_sees, inputs  # noqa: F401 - the fixture
from tests.hubctl_cli import hubctl, hubctl_in_process, one_error_line
from tests.local_hub import LocalHub, start_local_hub
from tests.mosquitto import Mosquitto
from tests.sia_receiver import ACCOUNT
from wire.messages import UPLINK_WHY

LOGIN = "broker login over LTE"
PASSWORD = "the-right-password"


# --- hubctl provision --uplink -------------------------------------------------------------------


def _uplink(etc: Path) -> dict:
    return tomllib.loads((etc / "hubd.toml").read_text()).get("uplink", {})


def test_provision_defaults_to_auto_with_the_modem_and_keeps_the_mode_on_a_rerun(inputs: Inputs) -> None:
    proc = hubctl_in_process("provision", *inputs.args())
    assert proc.returncode == 0, proc.stderr
    assert _uplink(inputs.etc) == {"mode": "auto"}, "the bridge has its modem: auto by default"
    assert "broker path: auto: broadband, LTE through the bridge's modem after 60 s" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith(
        f"hubctl doctor --config {inputs.etc / 'hubd.toml'} (it logs in to the broker through LTE)")

    # A home without broadband; the times set by hand are kept, hubd reads them.
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--uplink", "lte")
    assert proc.returncode == 0, proc.stderr
    assert "broker path: LTE only, through the bridge's modem (APN internet.m2m" in proc.stdout
    text = (inputs.etc / "hubd.toml").read_text().replace('mode = "lte"', 'mode = "lte"\nfallback_s = 30')
    (inputs.etc / "hubd.toml").write_text(text)
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--resident", "resident-9")
    assert proc.returncode == 0, proc.stderr
    assert _uplink(inputs.etc) == {"mode": "lte", "fallback_s": 30}, "a re-run changes only what was given"

    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--uplink", "broadband")
    assert proc.returncode == 0, proc.stderr
    assert _uplink(inputs.etc)["mode"] == "broadband"
    assert "broadband only (the home's network; the bridge's LTE modem not used for it" in proc.stdout
    assert "hubctl doctor" not in proc.stdout.strip().splitlines()[-1]
    assert hubd_sees(inputs.etc).uplink.mode == "broadband"


def test_provision_refuses_lte_without_the_modem_and_a_mode_it_does_not_know(inputs: Inputs) -> None:
    for mode in ("lte", "auto"):
        line = one_error_line(hubctl_in_process("provision", *inputs.args(apn=None, uplink=mode)))
        assert f"--uplink {mode} goes through the bridge's LTE modem" in line
        assert "give the modem's --apn" in line and "or --uplink broadband" in line
        assert not (inputs.etc / "hubd.toml").exists(), "nothing written"
    line = one_error_line(hubctl_in_process("provision", *inputs.args(uplink="wifi")))
    assert "'wifi' is not an uplink: broadband" in line
    # hubd's own validation names the flag that fixes it: a mode hubd.toml got by hand.
    assert hubctl_in_process("provision", *inputs.args()).returncode == 0
    (inputs.etc / "hubd.toml").write_text((inputs.etc / "hubd.toml").read_text()
                                          .replace('mode = "auto"', 'mode = "satellite"'))
    line = one_error_line(hubctl_in_process("provision", "--etc-dir", inputs.etc))
    assert "'--uplink'" in line and "hubd refuses uplink.mode: Input should be 'broadband'" in line


# --- the doctor's table of fixes -----------------------------------------------------------------


def test_every_reason_the_bridge_gives_has_its_fix() -> None:
    """A new wire.messages.UPLINK_WHY without a fix here would reach the technician as 'error'."""
    assert set(UPLINK_WHY) <= doctor.UPLINK_FIXES.keys()
    for why in UPLINK_WHY:  # as hubd's channel words them (hubd.link.uplink.UplinkError)
        assert doctor._uplink_why(f"UplinkError: LTE uplink: {why} (the bridge could not open it)") == why
    assert doctor._uplink_why("no broker session over LTE now (last error: broker)") == "broker"
    assert doctor._uplink_why("the broker refused the login: Not authorized") == "broker"
    assert doctor._uplink_why("no broker session over LTE now (last error: None)") == "connecting"


# --- status and doctor against hubd --------------------------------------------------------------


@pytest.fixture
def make_hub(tmp_path: Path, backend_key: BackendKey, short_dir: Path) -> Iterator[Callable[..., LocalHub]]:
    """A simulated home with broadband (its router) and an LTE modem reaching the broker, and
    hubd on it with ``[uplink] mode``, its broker address the router's (as a real hub has its
    broker's address, which the operator's network reaches too)."""
    started: list[LocalHub] = []

    def make(broker: Mosquitto, mode: str, broadband: bool = True, sim: bool = True,
             env: dict[str, str] | None = None, uplink: str = "", modem: bool = True) -> LocalHub:
        lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": free_port(), "account": ACCOUNT,
               "receiver": "1", "retry_ms": 1000}
        home = SimulatedHome(tmp_path / "home", locks=default_locks(), policy=FAST_POLICY,
                             health=FAST_HEALTH, alarm_unit=AlarmUnit(heartbeat_s=0.5),
                             lte=lte if modem else None, broker=(broker.host, broker.port),
                             broadband=broadband)
        if modem:
            assert home.modem is not None
            home.modem.network.conditions = lte_network.fast()
            home.modem.sim = sim
        host, port = home.broker_address
        hub = start_local_hub(home, broker, backend_key, tmp_path / "etc", short_dir / "status.sock",
                              env={"HUBD_MQTT__HOST": host, "HUBD_MQTT__PORT": str(port), **(env or {})},
                              extra=FAST_ABSENT + f'[uplink]\nmode = "{mode}"\n{uplink}')
        started.append(hub)
        # The doctor's checks of the alarm unit and the locks judge what the bridge has reported:
        # every test here looks at the uplink with the rest of the home heard (CI once ran the
        # doctor 1 s after hubd's start, before the alarm unit's first report).
        hub.wait_for("the bridge's parts heard", parts_heard, timeout=90)
        return hub

    yield make
    for hub in started:
        hub.stop()


def registered(s: HubStatus) -> bool:
    h = s.bridge.health
    return (s.bridge.link_up and s.uplink is not None and h is not None and h.lte is not None
            and h.lte.registered in doctor.LTE_REGISTERED)


def no_sim(status: HubStatus) -> bool:
    """The bridge's health says its modem has no SIM ready."""
    health = status.bridge.health
    return health is not None and health.lte is not None and health.lte.registered == "no_sim"


def doctor_lines(hub: LocalHub) -> tuple[int, dict[str, str], str]:
    proc = hubctl("doctor", "--config", hub.config)
    return proc.returncode, checklist(proc), proc.stdout


def test_a_home_without_broadband_status_shows_lte_and_doctor_proves_the_live_session(
        mosquitto: Mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto, "lte", broadband=False)
    hub.wait_for("hubd's session over LTE", lambda s: registered(s) and s.broker_connected
                 and s.uplink is not None and s.uplink.path == "lte" and s.uplink.lte_today.up > 0, timeout=90)

    shown = hubctl("status", "--socket", hub.socket)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("broker path: "))
    assert "mode lte, over LTE (the bridge's modem) for" in line
    assert "B up" in line and "B down" in line and "last LTE login" in line and "ago" in line, line

    code, lines, out = doctor_lines(hub)
    assert code == 0, out + hub.logs()
    assert lines[LOGIN].startswith("✓") and "hubd's own session runs over LTE" in lines[LOGIN], out
    assert lines["broker path"].startswith("✓") and "mode lte" in lines["broker path"]
    assert lines["hubd connected to the broker"].endswith("over lte"), out
    # No broadband: the doctor's own login over the hub's network is no check here, not a failure.
    assert lines["broker reachable and authorised"].startswith("- ")


def test_a_home_without_broadband_and_without_a_sim_names_the_sim(mosquitto: Mosquitto, make_hub) -> None:
    """Without a SIM the modem registers nowhere; the bridge says why, and so does hubd's open."""
    hub = make_hub(mosquitto, "lte", broadband=False, sim=False)
    hub.wait_for("the bridge's no SIM, hubd's failed open over LTE",
                 lambda s: no_sim(s) and s.uplink is not None and s.uplink.last_error == "no_sim",
                 timeout=90)

    code, lines, out = doctor_lines(hub)
    assert code == 1, out
    assert failed(lines) == {"hubd connected to the broker", "LTE"}, out
    assert "hubd is not connected to" in lines["hubd connected to the broker"]
    assert "see the LTE and broker login over LTE checks" in lines["hubd connected to the broker"]
    assert "not registered (modem: no_sim)" in lines["LTE"], out
    assert "insert the operator's SIM" in lines["LTE"]
    assert lines[LOGIN].startswith("- ") and "needs the modem registered" in lines[LOGIN]


def test_doctor_logs_in_through_lte_on_broadband_and_names_each_failure_with_its_fix(
        mosquitto: Mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto, "auto", sim=False)
    hub.wait_for("hubd on broadband, the bridge's no SIM",
                 lambda s: no_sim(s) and s.broker_connected and s.uplink is not None
                 and s.uplink.path == "broadband", timeout=90)
    modem = hub.home.home.modem
    assert modem is not None

    # No SIM: the modem registers nowhere (+CME ERROR: 10 to AT+CPIN?); no login is tried.
    code, lines, out = doctor_lines(hub)
    assert code == 1 and failed(lines) == {"LTE"}, out
    assert "not registered (modem: no_sim)" in lines["LTE"] and "insert the operator's SIM" in lines["LTE"]
    assert lines[LOGIN].startswith("- ") and "needs the modem registered" in lines[LOGIN]
    assert lines["broker path"].startswith("✓") and "mode auto, over the home's broadband" in lines["broker path"]

    # The SIM in: a login of its own through the modem, closed after; hubd stays on broadband.
    hub.home.call(lambda: setattr(modem, "sim", True))
    hub.wait_for("the modem registered", registered, timeout=90)
    code, lines, out = doctor_lines(hub)
    assert code == 0, out + hub.logs()
    assert "a login of its own through the modem, closed after" in lines[LOGIN], out
    # A full healthy home (the alarm unit, LTE, the paired locks hubd.toml lists, the broker path
    # with its fallback): every line passes, none only warns or is left out.
    assert all(line.startswith("✓ ") for line in lines.values()), out
    assert {"clock", "alarm unit", "LTE", "broker path", *(f"lock {lock}" for lock in hub.home.home.locks)
            } <= lines.keys(), out
    status = reach.status(reach.Hubd(hub.socket, "the test's hubd"))
    assert status.uplink is not None and status.uplink.path == "broadband"
    assert status.uplink.last_lte_login is not None

    # The operator's network does not reach the broker's address: the modem's open fails.
    address = hub.home.home.broker_address
    target = hub.home.call(lambda: modem.network.addresses.pop(address))
    code, lines, out = doctor_lines(hub)
    assert code == 1 and failed(lines) == {LOGIN}, out
    assert f"the modem could not connect to the broker {address[0]}:{address[1]}" in lines[LOGIN]
    assert "open_failed" in lines[LOGIN]
    assert f"a private APN's firewall must let port {address[1]} through" in lines[LOGIN]
    hub.home.call(lambda: modem.network.addresses.__setitem__(address, target))

    # Coverage lost: registration fails with its fix; no login is tried without it.
    hub.home.call(lambda: setattr(modem, "coverage", False))
    hub.wait_for("the modem not registered", lambda s: s.bridge.health is not None
                 and s.bridge.health.lte is not None and s.bridge.health.lte.registered not in doctor.LTE_REGISTERED)
    code, lines, out = doctor_lines(hub)
    assert code == 1 and failed(lines) == {"LTE"}, out
    assert "no LTE network where the bridge is: check the antenna is connected, move the bridge" in lines["LTE"]
    assert lines[LOGIN].startswith("- ") and "needs the modem registered" in lines[LOGIN]


def test_doctor_names_the_credentials_when_the_broker_refuses_the_login_over_lte(
        mosquitto_factory, make_hub) -> None:
    broker = mosquitto_factory(passwords={HUB_ID: PASSWORD}, acl=schema.acl())
    hub = make_hub(broker, "auto", env={"HUBD_MQTT__USERNAME": HUB_ID, "HUBD_MQTT__PASSWORD": "not-it"})
    hub.wait_for("the modem registered", registered, timeout=90)

    code, lines, out = doctor_lines(hub)
    assert code == 1, out
    assert LOGIN in failed(lines), out
    assert "the broker refused hubd's login through LTE" in lines[LOGIN]
    assert "check HUBD_MQTT__PASSWORD in hubd.env" in lines[LOGIN]


def test_auto_on_lte_is_a_warning_about_the_broadband_and_the_live_session_is_the_login(
        mosquitto: Mosquitto, make_hub) -> None:
    from simulator.router import RESET

    hub = make_hub(mosquitto, "auto", uplink="fallback_s = 2\nprobe_s = 3600\n")
    hub.wait_for("hubd on broadband", lambda s: registered(s) and s.broker_connected, timeout=90)
    router = hub.home.home.router
    assert router is not None
    hub.home.call(lambda: router.cut(RESET))
    hub.wait_for("hubd moved to LTE", lambda s: s.broker_connected and s.uplink is not None
                 and s.uplink.path == "lte", timeout=90)

    code, lines, out = doctor_lines(hub)
    assert code == 1, out
    # The doctor's own login goes over the hub's network, which is cut: that is the fault.
    assert failed(lines) == {"broker reachable and authorised"}, out
    assert lines["broker path"].startswith("! "), out
    assert "mode auto, over LTE (the bridge's modem)" in lines["broker path"]
    assert "the broker was unreachable over broadband" in lines["broker path"]
    assert "check the home's broadband" in lines["broker path"]
    assert lines[LOGIN].startswith("✓") and "hubd's own session runs over LTE" in lines[LOGIN], out
    assert lines["hubd connected to the broker"].endswith("over lte")

    # hubd.toml changed, hubd not restarted: the doctor says hubd runs another mode.
    toml = hub.config.read_text()
    hub.config.write_text(toml.replace('mode = "auto"', 'mode = "broadband"'))
    code, lines, out = doctor_lines(hub)
    assert "hubd.toml says uplink broadband, hubd runs auto" in lines["broker path"], out
    assert f"hubd --config {hub.config}" in lines["broker path"]  # not /etc/hubd: hubd by hand


def test_auto_with_a_bridge_without_its_modem_fails_the_login_naming_the_lte_section(
        mosquitto: Mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto, "auto", modem=False)
    hub.wait_for("the bridge's health", lambda s: s.broker_connected and s.bridge.health is not None
                 and s.uplink is not None, timeout=90)
    code, lines, out = doctor_lines(hub)
    assert code == 1, out
    assert failed(lines) == {LOGIN}, out
    assert "uplink auto, but the bridge has no LTE modem configured" in lines[LOGIN]
    assert "bridge.json needs its lte section: hubctl provision --apn" in lines[LOGIN]
    assert lines["LTE"].startswith("✓ LTE: not provisioned"), "no modem provisioned, none there"


def test_the_probe_is_a_control_request_hubd_answers_with_its_result(mosquitto: Mosquitto, make_hub) -> None:
    """The request's bounds hold on hubd's side too (a typed refusal, hubd goes on)."""
    hub = make_hub(mosquitto, "auto")
    hub.wait_for("the modem registered", lambda s: registered(s) and s.broker_connected, timeout=90)
    probe = doctor.probe_uplink(reach.Hubd(hub.socket, "the test's"), timeout_s=30)
    assert isinstance(probe, UplinkProbe) and probe.ok and probe.how == "probe", probe
    with pytest.raises(ValueError, match="timeout_s"):
        control.parse_request(b'{"request": "uplink_probe", "timeout_s": 100000}\n')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(hub.socket))
    s.sendall(b'{"request": "uplink_probe", "timeout_s": 1}\n')
    answer = s.makefile("rb").readline()
    s.close()
    assert b'"error"' in answer and b"timeout_s" in answer
    assert hub.hubd.poll() is None
