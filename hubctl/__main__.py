"""hubctl: the technician's command line for a bridge. `hubctl --help` lists the commands.

Every failure is one line on stderr naming the fix, and a non-zero exit status: 1 when the work
failed, 2 when the command line was wrong.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

# Each hubctl is a process of its own: a command's modules are imported when it runs, not here.
# hubd's models (pydantic, hubd.config) are most of a start (~0.4 s of ~0.6 s on the 2-core CI
# machine), and build and flash never use them (audit export reads the audit store's models). The command line's defaults come
# from modules that load none: hubfiles (the hub's layout), bundle, image, limits.
from hubctl import bundle, hubfiles, image
from hubd.technician import limits

if TYPE_CHECKING:
    from hubapi.models import HubStatus
    from hubctl import deploy, reach

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    help="The technician's tool for a home hub: its bridge (the ESP32 running firmware/), its "
         "configuration, its audit trail.\n\n"
         "**Example:** hubctl provision ... (see hubctl provision --help), hubctl build, then "
         "hubctl flash --port /dev/ttyUSB0 --image bridge-micropython-v1.28.0.bin "
         "--bundle build/bundles/bridge-0.1.0-94373b7a1eba --config /etc/hubd/bridge.json")
audit_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="markdown",
    help="The hub's audit trail (hubd's state database).\n\n"
         "**Example:** hubctl audit export --db /var/lib/hubd/hubd.sqlite3 --from 1 --to 500 "
         "--out audit.jsonl")
app.add_typer(audit_app, name="audit")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# After a fresh image the bridge boots and formats its filesystem before its REPL answers.
BOOT_WAIT_S = 30
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C


class Failed(Exception):
    """A command failed for a reason the technician can fix; the message says how."""


class Unanswered(Exception):
    """A question was left without an answer (Ctrl-C, or no more input): nothing was done; the
    message says so (exit status 130, as an interrupt)."""


@app.command()
def build(
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Where bundles are written; each gets its own bridge-<version>-<id>/.",
        show_default="build/bundles in the checkout")] = bundle.DEFAULT_OUT,
    source: Annotated[Path, typer.Option(
        help="The checkout whose firmware/ and wire/ are compiled.",
        show_default="the checkout hubctl runs from")] = bundle.ROOT,
) -> None:
    """Compile the firmware with mpy-cross into a versioned bundle with a manifest.

    The bundle holds app.mpy (firmware/main.py), every other firmware and wire module as .mpy,
    the same .mpy files as one ROMFS image (bridge.romfs, imported in place from flash), a
    main.py that imports app, and manifest.json (firmware version, link protocol version, sha256
    of every file and of the image). The same sources build the same bundle.

    **Example:** hubctl build --out /tmp/bundles
    """
    try:
        built = bundle.build(out_dir.resolve(), source)
    except bundle.BundleError as e:
        raise Failed(str(e)) from None
    m = built.manifest
    size = sum(f.size for f in m.files)
    out.print(f"bundle {built.path}")
    out.print(f"  firmware {m.firmware_version}, link protocol {m.protocol}, .mpy v{m.mpy_version}"
              f", {len(m.files)} files, {size} bytes")
    out.print(f"  ROMFS image {m.romfs.path}, {m.romfs.size} bytes, sha256 {m.romfs.sha256[:16]}…")


def _load_config(path: Path) -> bytes:
    """bridge.json as given, refused unless the firmware's own parser takes it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Failed(f"cannot read the configuration {path}: {e.strerror}: pass the bridge.json "
                     "for this home with --config") from None
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise Failed(f"{path} is not valid JSON ({e}): fix it or write it again") from None
    config = bundle.firmware_config()
    try:
        config.parse(obj)
    except config.ConfigError as e:
        raise Failed(f"{path} would not start the bridge: {e}") from None
    return data


def _open_bridge(port: str, soft_reset: bool, wait_s: float) -> deploy.BridgeFS:
    """The bridge's REPL; after a fresh image it boots (and formats its filesystem) first."""
    from hubctl import deploy

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return deploy.BridgeFS.open(port, soft_reset=soft_reset)
        except deploy.DeviceError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


@app.command()
def flash(
    port: Annotated[str, typer.Option(help="The bridge's serial port.")],
    bundle_dir: Annotated[Path, typer.Option(
        "--bundle", help="The bundle directory hubctl build printed.")],
    config: Annotated[Path, typer.Option(help="This home's bridge.json.")],
    image_path: Annotated[Path | None, typer.Option(
        "--image", help="The bridge's MicroPython .bin (built from deploy/esp32: ROMFS on); "
                        "needed unless --resume.")] = None,
    resume: Annotated[bool, typer.Option(
        help="Keep the MicroPython image already on the bridge and write only what it does not "
             "have yet (after a cut flash).")] = False,
    mpy_files: Annotated[bool, typer.Option(
        "--mpy-files", help="Copy the modules as .mpy files instead of the ROMFS image, for a "
                            "MicroPython without ROMFS on the bench: on a chip the firmware "
                            "then fills the heap with an alarm unit and LTE.")] = False,
    baud: Annotated[int, typer.Option(help="Baud rate while writing the image.")] =
        image.DEFAULT_BAUD,
    soft_reset: Annotated[bool, typer.Option(
        help="Soft-reset MicroPython before copying; --no-soft-reset for MicroPython's unix port "
             "(a test bench), which has none.")] = True,
) -> None:
    """Write MicroPython to the bridge, then the bundle's ROMFS image and bridge.json; verify;
    reboot.

    1. esptool erases the flash and writes the image at 0x1000, reads it back, resets the chip;
    2. mpremote writes the bundle's ROMFS image to the bridge's romfs partition (unless its
       sha256 there already matches), checks its hash on the bridge, removes .mpy files an older
       flash left, and copies manifest.json, bridge.json and main.py (last) under temporary
       names, each checked on the bridge and renamed;
    3. the bridge reboots into the firmware, which it imports from /rom.

    The bridge's MicroPython must have ROMFS (the build from deploy/esp32; no stock ESP32 build
    has it). A flash cut short (cable pulled) resumes: run the same command with --resume.

    **Example:** hubctl flash --port /dev/ttyUSB0 --image bridge-micropython-v1.28.0.bin
    --bundle build/bundles/bridge-0.1.0-94373b7a1eba --config bridge.json
    """
    from hubctl import deploy

    if resume and image_path is not None:
        raise typer.BadParameter("--resume keeps the image on the bridge: pass one of --image "
                                 "and --resume", param_hint="'--image'")
    if not resume and image_path is None:
        raise typer.BadParameter("pass the bridge's MicroPython .bin (or --resume to finish "
                                 "a cut flash)", param_hint="'--image'")
    try:
        built = bundle.Bundle.load(bundle_dir)
    except bundle.BundleError as e:
        raise Failed(str(e)) from None
    config_bytes = _load_config(config)
    m = built.manifest
    out.print(f"bundle {built.path.name}: firmware {m.firmware_version}, link protocol "
              f"{m.protocol}")
    try:
        if image_path is not None:
            data = image.read_image(image_path)
            out.print(f"1/3 MicroPython image {image_path.name} ({len(data)} bytes) "
                      f"to {port} with esptool")
            image.flash_image(image.EsptoolFlasher(), port, data, baud)
        summary = _put_bundle(port, built, config_bytes, soft_reset, mpy_files,
                              wait_s=BOOT_WAIT_S if image_path else 0)
    except deploy.CableLost as e:
        raise Failed(f"{e}, then run the same hubctl flash with --resume instead of --image: it "
                     "keeps the image and writes only what the bridge lacks") from None
    except (image.ImageError, deploy.DeviceError) as e:
        raise Failed(str(e)) from None
    out.print(f"3/3 bridge on {port} rebooted into firmware {m.firmware_version}: {summary}")
    out.print(f"next: {_after_flash(config)}", markup=False)


def _after_flash(bridge_json: Path) -> str:
    """What to run after a flash: start hubd again (it was stopped: both use the port), on the
    configuration beside this bridge.json when hubd.toml is there, then doctor."""
    from hubctl import service

    etc = bridge_json.absolute().parent
    if not (etc / "hubd.toml").exists():
        return ("start hubd again (systemctl start hubd, or hubd --config ... --env-file ... by "
                "hand), then hubctl doctor")
    return f"{service.run_hubd(etc, 'start')}; {service.doctor_command(etc)}"


# Why a bridge without ROMFS is refused, and what to do (one line).
NO_ROMFS = ("has no ROMFS (stock ESP32 builds of MicroPython leave MICROPY_VFS_ROM off, and "
            "without it the firmware's modules go to the heap, which they fill with an alarm "
            "unit and LTE): flash the bridge build of MicroPython made from deploy/esp32 "
            "(docs/technician-guide.md, \"The bridge's MicroPython\") with --image")


def _put_bundle(port: str, built: bundle.Bundle, config: bytes, soft_reset: bool,
                mpy_files: bool, wait_s: float) -> str:
    """Step 2 on either route, then the reboot; the summary of step 3."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from hubctl import deploy
    from hubctl.copy_bars import Bars

    fs = _open_bridge(port, soft_reset, wait_s)
    try:
        deploy.check_mpy(fs, built)
        partition = None if mpy_files else fs.romfs_partition()
        if not mpy_files and partition is None:
            raise deploy.DeviceError(f"the bridge's MicroPython on {port} {NO_ROMFS}")
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=out, transient=False) as progress:
            if partition is None:
                files = deploy.plan(built, config)
                progress.console.print(
                    f"2/3 {len(files)} files to {port} with mpremote (--mpy-files: for the "
                    "bench only: on a chip the firmware then fills the heap with an alarm unit "
                    "and LTE)")
                report = deploy.copy(fs, files, Bars(progress))
                summary = (f"{len(report.copied)} files copied, {len(report.skipped)} already "
                           f"there, all {len(files)} verified")
            else:
                rom = built.manifest.romfs
                progress.console.print(
                    f"2/3 ROMFS image {rom.path} ({rom.size} bytes) to the romfs partition "
                    f"({partition} bytes) on {port}, then "
                    f"{len(deploy.plan_romfs(built, config))} files, with mpremote")
                romfs = deploy.flash_romfs(fs, built, config, partition, Bars(progress))
                copied = romfs.files
                summary = (f"ROMFS image {'written' if romfs.image_written else 'already there'}"
                           f" and verified, {len(copied.copied)} files copied, "
                           f"{len(copied.skipped)} already there, all "
                           f"{len(copied.copied) + len(copied.skipped)} verified")
                if romfs.removed:
                    summary += f", {len(romfs.removed)} old .mpy files removed"
        fs.reboot()
    finally:
        fs.close()
    return summary


class _Usage(typer.BadParameter):
    """A wrong command line whose message stands alone (exit status 2)."""

    def format_message(self) -> str:
        return self.message


@app.command()
def provision(
    hub_id: Annotated[str | None, typer.Option(
        help="The hub's id: its MQTT topics, and its broker username or certificate CN.")] = None,
    broker: Annotated[str | None, typer.Option(
        help="mqtts://HOST:PORT (TLS; port 8883 when left out) or mqtt://HOST:PORT (1883).")] = None,
    username: Annotated[str | None, typer.Option(
        help="Broker username, with --password-file; it must be the hub id, which is the "
             "default.")] = None,
    password_file: Annotated[Path | None, typer.Option(
        help="A file holding the broker password on one line; it goes to hubd.env (0600).")] = None,
    client_cert: Annotated[Path | None, typer.Option(
        help="The hub's client certificate (PEM, CN = the hub id), instead of a password.")] = None,
    client_key: Annotated[Path | None, typer.Option(
        help="Its unencrypted private key (PEM); copied to tls/client.key, 0600.")] = None,
    ca: Annotated[Path | None, typer.Option(
        help="The CA that signed the broker's certificate (PEM); without it, the system's CAs.")] = None,
    backend_key: Annotated[list[str] | None, typer.Option(
        help="KID=PATH: a backend's Ed25519 public key (PEM or raw base64url) under its key id. "
             "Repeat for more; given, they replace the hub's keys.")] = None,
    alarm_account: Annotated[str | None, typer.Option(
        help="The hub's DC-09 account at the alarm centre: 3-16 hex digits.")] = None,
    alarm_unit_serial: Annotated[str | None, typer.Option(
        help="The safety alarm unit's serial, the 8 hex digits on its label: the bridge then takes "
             "frames from that unit only.")] = None,
    dc09_receiver: Annotated[str | None, typer.Option(
        help="HOST:PORT of the alarm centre's DC-09 receiver (the second path, over LTE).")] = None,
    dc09_key_file: Annotated[Path | None, typer.Option(
        help="A file holding the receiver's AES key (16, 24 or 32 characters, as the receiver "
             "shows it); goes to bridge.json (0600). Without it: plain frames.")] = None,
    dc09_receiver_number: Annotated[str | None, typer.Option(
        help="DC-09 receiver number (R field), 1-6 hex digits, if the centre gave one.")] = None,
    dc09_line: Annotated[str | None, typer.Option(
        help="DC-09 line number (L field), 1-6 hex digits.", show_default="1")] = None,
    apn: Annotated[str | None, typer.Option(
        help="The LTE modem's APN, e.g. internet.m2m.")] = None,
    uplink: Annotated[str | None, typer.Option(
        help="How hubd reaches its broker: broadband (the home's network), lte (the bridge's "
             "modem: a home without broadband) or auto (broadband, LTE while it fails).",
        show_default="kept; auto on a first provision (the bridge has its LTE modem)")] = None,
    visit_route: Annotated[str | None, typer.Option(
        help="The doors a visitor passes, in order, as the lock ids paired (e.g. "
             "entrance,front-door): when one opens for a visit, hubd holds the connection to the "
             "next for the visit's command. none removes it.",
        show_default="kept; none on a first provision")] = None,
    resident: Annotated[str | None, typer.Option(
        help="Who the alarm centre sends help to, as the centre knows the resident.")] = None,
    serial: Annotated[str | None, typer.Option(
        help="The bridge's serial port.", show_default=hubfiles.DEFAULT_SERIAL)] = None,
    etc_dir: Annotated[Path, typer.Option(
        help="Where hubd's configuration goes.")] = hubfiles.DEFAULT_ETC,
    state_dir: Annotated[Path | None, typer.Option(
        help="hubd's state (SQLite).", show_default=str(hubfiles.DEFAULT_STATE))] = None,
    bridge_config: Annotated[Path | None, typer.Option(
        help="Where the bridge's bridge.json goes.", show_default="<etc-dir>/bridge.json")] = None,
    service_user: Annotated[str, typer.Option(
        help="The user hubd runs as (hubd.service); run as root, provision gives it the client "
             "key.")] = hubfiles.SERVICE_USER,
) -> None:
    """Write the hub's configuration: hubd.toml, hubd.env (secrets), tls/, bridge.json.

    Everything is checked by hubd's and the bridge firmware's own parsers before anything is
    written; each file is replaced atomically with its mode set first (hubd.toml 0644, hubd.env
    0600, tls/client.key 0600, bridge.json 0600). Run again, it keeps what is there (the locks
    hubctl pair added) and changes only what is given. Secrets are never printed.

    **Example:** hubctl provision --hub-id hub-0042
    --broker mqtts://broker.kommune.example:8883 --password-file hub-0042.pw --ca broker-ca.pem
    --backend-key backend-2025=backend-2025.pub --alarm-account 12AB --alarm-unit-serial 5A0000AB
    --dc09-receiver dc09.alarmsentral.example:12000 --dc09-key-file dc09.key --apn internet.m2m
    --resident resident-208 (a home without broadband: add --uplink lte)
    """
    from hubctl import provision as provisioning

    flags = provisioning.Flags(
        etc_dir=etc_dir, bridge_config=bridge_config, hub_id=hub_id, broker=broker,
        username=username, password_file=password_file, client_cert=client_cert,
        client_key=client_key, ca=ca, backend_keys=tuple(backend_key or ()),
        alarm_account=alarm_account, alarm_unit_serial=alarm_unit_serial, dc09_receiver=dc09_receiver, dc09_key_file=dc09_key_file,
        dc09_receiver_number=dc09_receiver_number, dc09_line=dc09_line, apn=apn,
        uplink=uplink, visit_route=visit_route, resident=resident, serial=serial, state_dir=state_dir, service_user=service_user)
    fw = bundle.firmware_config()
    try:
        plan = provisioning.plan(flags, fw)
        provisioning.write(plan, fw)
    except provisioning.BadFlag as e:
        raise typer.BadParameter(str(e), param_hint=f"'{e.flag}'") from None
    except provisioning.Missing as e:
        raise _Usage(str(e)) from None
    except hubfiles.FilesError as e:  # provisioning.ProvisionError, or a file it cannot read
        raise Failed(str(e)) from None
    for line in plan.summary:
        out.print(line, markup=False)


def _status_or_fail(hubd: reach.Hubd) -> HubStatus:
    from hubctl import reach

    try:
        return reach.status(hubd)
    except reach.ReachError as e:
        raise Failed(str(e)) from None


# The --config and --socket of every command that talks to hubd: the socket from hubd.toml.
_CONFIG_HELP = "hubd's configuration: hubctl finds hubd's socket by its status_socket."
_SOCKET_HELP = "hubd's local socket, instead of status_socket in hubd.toml."


@app.command()
def status(
    config: Annotated[Path, typer.Option(help=_CONFIG_HELP)] = hubfiles.DEFAULT_CONFIG,
    socket_path: Annotated[Path | None, typer.Option(
        "--socket", help=_SOCKET_HELP, show_default="status_socket in hubd.toml")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print hubd's snapshot as it is (one JSON object, hubapi HubStatus).")] = False,
) -> None:
    """Show the hub's state as hubd sees it: hubd, the broker and its path, the bridge, every device,
    the queues.

    Read from hubd's local status socket; run as root or a member of group hubd.

    **Example:** sudo hubctl status (or hubctl status --json | jq .devices)
    """
    from hubctl import doctor as diagnosis, reach

    snap = _status_or_fail(reach.find(socket_path, config))
    if as_json:
        sys.stdout.write(snap.model_dump_json() + "\n")
        return
    from rich.table import Table

    now = time.time()
    b = snap.bridge
    out.print(f"hub {snap.hub}: hubd {snap.hubd_version}, up {diagnosis._age(now, now - snap.hubd_up_s)}, "
              f"broker {'connected' if snap.broker_connected else 'NOT connected'}", markup=False)
    if b.link_up:
        line = f"bridge: link up, firmware {b.firmware}, link protocol {b.protocol}"
        if b.clock_offset_s is not None:
            line += f", clock {b.clock_offset_s:+.0f} s"
        out.print(line, markup=False)
    else:
        out.print(f"bridge: link DOWN for {diagnosis._age(now, b.since)}", markup=False)
    h = b.health
    if h is not None:
        out.print(f"  up {diagnosis._age(now, now - h.up_s)}, last reset {h.reset}, heap {h.heap_free} B free "
                  f"(least since boot {h.heap_min} B, largest block least {h.heap_blk} B), "
                  f"BLE restarts {h.ble.restarts}, journals: {h.journals.commands} commands, "
                  f"{h.journals.alarms} alarms", markup=False)
        if h.lte is not None:
            out.print(f"  LTE {h.lte.registered or 'no answer'}"
                      f"{f', {h.lte.rssi} dBm' if h.lte.rssi is not None else ''}", markup=False)
        if h.unit is not None:
            out.print(f"  alarm unit link {'up' if h.unit.up else 'DOWN'}"
                      f"{f', heard {h.unit.last_heard_s} s ago' if h.unit.last_heard_s is not None else ''}",
                      markup=False)
    table = Table("device", "kind", "available", "battery", "signal", "last seen", title=None,
                  box=None, pad_edge=False)
    for d in snap.devices:
        battery = f"{d.battery.percent}% {d.battery.state}" if d.battery else ("mains" if d.mains else "-")
        table.add_row(d.device, str(d.kind), "yes" if d.available else f"NO: {d.why or ''}", battery,
                      f"{d.rssi} dBm" if d.rssi is not None else "-",
                      f"{diagnosis._age(now, d.last_seen)} ago" if d.last_seen else "never")
    out.print(table)
    if snap.uplink is not None:
        out.print(f"broker path: {diagnosis.uplink_summary(snap.uplink, now)}", markup=False)
    out.print(f"outbox: {snap.outbox.depth} waiting"
              f"{f', oldest {diagnosis._age(now, snap.outbox.oldest_at)}' if snap.outbox.oldest_at else ''}; "
              f"alarms: {snap.alarms.depth} unhandled ({snap.alarms_overdue} overdue)", markup=False)
    refused = {surface: {r: n for r, n in counts.items() if r != "seen" and n}
               for surface, counts in snap.inputs.items()}
    shown = [f"{surface} {sum(r.values())} ({', '.join(f'{k} {n}' for k, n in sorted(r.items()))})"
             for surface, r in refused.items() if r]
    out.print(f"refused since hubd started: {'; '.join(shown) or 'nothing'}", markup=False)
    if snap.task_restarts:
        out.print("tasks restarted: " + ", ".join(f"{k} {n}" for k, n in snap.task_restarts.items()), markup=False)


@app.command("doctor")
def doctor_cmd(
    config: Annotated[Path, typer.Option(
        help="hubd's configuration; hubd.env (its secrets) is read from the same directory.")] =
        hubfiles.DEFAULT_CONFIG,
    socket_path: Annotated[Path | None, typer.Option(
        "--socket", help="hubd's status socket.", show_default="status_socket in hubd.toml")] = None,
    bridge_config: Annotated[Path | None, typer.Option(
        help="The hub's copy of bridge.json: what the bridge was provisioned with.",
        show_default="bridge.json beside --config")] = None,
) -> None:
    """Check every hop and print a checklist, with the fix for each failure.

    The configuration loads (hubd.toml, hubd.env, the hub's bridge.json); the broker is
    reachable and takes hubd's login (TLS, password or certificate); hubd runs and is
    connected; the clock (the bridge's where it keeps one: with an alarm unit); the bridge's
    link and firmware; each lock of hubd.toml's [locks] paired, known to hubd and in reach with
    its signal and battery; the alarm unit and the LTE modem bridge.json provisions (one missing
    fails, one not provisioned and not there passes); the outbox backlog; the broker's path
    (hubd.toml's [uplink]) and, where hubd may use LTE for it (uplink lte or auto), a broker
    login through the bridge's modem. Exit status 0 when all pass (a warning, !, is no
    failure), 1 when any fails.

    **Example:** sudo hubctl doctor --config /etc/hubd/hubd.toml
    """
    from hubctl import doctor as diagnosis

    checks = diagnosis.run(config, socket_path, bridge_config)
    marks = {diagnosis.OK: "[green]✓[/]", diagnosis.FAILED: "[red]✗[/]", diagnosis.SKIPPED: "[dim]-[/]",
             diagnosis.WARNED: "[yellow]![/]"}
    from rich.markup import escape

    for c in checks:
        line = f"{marks[c.result]} {escape(c.name)}: {escape(c.detail)}"
        if c.result in (diagnosis.FAILED, diagnosis.WARNED) and c.fix:
            line += f"\n    [bold]fix:[/] {escape(c.fix)}"
        out.print(line)
    failed = sum(c.result == diagnosis.FAILED for c in checks)
    counted = sum(c.result != diagnosis.SKIPPED for c in checks)
    warned = sum(c.result == diagnosis.WARNED for c in checks)
    warnings = f" ({warned} with a warning)" if warned else ""
    if failed:
        out.print(f"{failed} of {counted} checks failed{warnings}", markup=False)
        raise typer.Exit(1)
    out.print(f"all {counted} checks passed{warnings}", markup=False)


@app.command("test-alarm")
def test_alarm(
    second_path: Annotated[bool, typer.Option(
        "--second-path", help="Also send it over LTE (SIA DC-09) at once and wait for the "
                              "receiver's acknowledgement.")] = False,
    config: Annotated[Path, typer.Option(help=_CONFIG_HELP)] = hubfiles.DEFAULT_CONFIG,
    socket_path: Annotated[Path | None, typer.Option(
        "--socket", help=_SOCKET_HELP, show_default="status_socket in hubd.toml")] = None,
    timeout: Annotated[int, typer.Option(
        min=limits.TEST_ALARM_WAIT_RANGE_S[0], max=limits.TEST_ALARM_WAIT_RANGE_S[1],
        help="How long hubd waits for the alarm centre (and the LTE receiver), in seconds.")] =
        limits.TEST_ALARM_WAIT_S,
) -> None:
    """Send a test alarm end to end: bridge, hubd's outbox, MQTT, the alarm centre's "handled".

    The bridge journals an alarm marked as a test and carries it like any alarm; the alarm
    centre sees it marked test. With --second-path the bridge also sends it over LTE to the
    centre's DC-09 receiver (Contact ID 601, a manual test). Each hop is printed as it happens;
    exit status 0 when the centre handled it (and the receiver acknowledged it), 1 otherwise.
    Run as root or a member of group hubd.

    **Example:** sudo hubctl test-alarm --second-path
    """
    from hubctl import reach
    from hubd.technician import control

    request = control.TestAlarmRequest(second_path=second_path, timeout_s=timeout)
    hubd = reach.find(socket_path, config)
    out.print(f"test alarm{' (primary path and LTE)' if second_path else ''}: asking hubd on "
              f"{hubd.socket}", markup=False)
    # Each line waits at most hubd's own bound plus a margin: hubd answers first.
    done = _ask(hubd, request, timeout=timeout + 30)
    result = control.TestAlarmResult.model_validate(done)
    summary = f"test alarm {result.alarm_id}: handled by the alarm centre after {result.primary_s:.1f} s"
    if result.second_path is not None:
        summary += f"; second path (LTE): {result.second_path} after {result.second_path_s:.1f} s"
    out.print(summary, markup=False)


@audit_app.command("export")
def audit_export(
    db: Annotated[Path, typer.Option(
        help="hubd's state database: <state_dir>/hubd.sqlite3.")] = hubfiles.DEFAULT_DB,
    from_seq: Annotated[int, typer.Option("--from", min=1, help="The first seq to export.")] = 1,
    to_seq: Annotated[int | None, typer.Option(
        "--to", min=1, help="The last seq to export.", show_default="the newest")] = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write the JSON lines here (mode 0600) instead of to standard output.")] = None,
) -> None:
    """Export a range of the audit trail as JSON lines, after checking its hash chain.

    The chain is checked over the range and its link to the entry before it (hubd's own check,
    as hubd-audit verify does it); a gap or an edited entry refuses the export and names the
    first one. One line sums up: entries, first and last seq, chain intact.

    **Example:** hubctl audit export --db /var/lib/hubd/hubd.sqlite3 --from 1 --to 500
    --out audit.jsonl
    """
    from hubctl import audit as audit_trail

    if to_seq is not None and to_seq < from_seq:
        raise typer.BadParameter(f"{to_seq} is before --from {from_seq}", param_hint="'--to'")
    try:
        done = audit_trail.export(db, from_seq, to_seq)
        if out_file is not None:
            audit_trail.write(out_file, done.lines)
        else:
            sys.stdout.writelines(line + "\n" for line in done.lines)
            sys.stdout.flush()
    except audit_trail.AuditError as e:
        raise Failed(str(e)) from None
    upto = "" if to_seq is None or to_seq <= done.last_seq else \
        f" (asked up to {to_seq}: the log ends at seq {done.newest})"
    where = f" to {out_file}" if out_file is not None else ""
    summary = (f"exported {len(done.lines)} entries, seq {done.first_seq}..{done.last_seq}"
               f"{upto}, chain intact{where}")
    (out if out_file is not None else err).print(summary, markup=False)


def _ask(hubd: reach.Hubd, request: Any, timeout: float) -> dict[str, Any]:
    """One request to hubd on its local socket, each progress line printed as it comes."""
    from hubctl import reach

    try:
        return reach.ask(hubd, request, timeout, _progress_line)
    except reach.ReachError as e:
        raise Failed(str(e)) from None


@app.command()
def pair(
    scan: Annotated[bool, typer.Option(
        "--scan", help="Only list the locks in reach (name, kind, protocol, signal, battery, "
                       "pairing mode).")] = False,
    addr: Annotated[str | None, typer.Option(
        help="The lock's Bluetooth address, as --scan lists it, e.g. C0:FF:EE:00:00:07.")] = None,
    name: Annotated[str | None, typer.Option(
        help="What the hub calls the lock: front-door, entrance, key-box... (letters, digits, - and _).")] = None,
    setup_key: Annotated[str | None, typer.Option(
        help="A reference lock's setup key: the 64 hex digits printed on it (its QR code).")] = None,
    activation_code: Annotated[str | None, typer.Option(
        help="A dKey's activation code: the 8 characters on its card or leaflet, e.g. BCDF-2345.")] = None,
    seconds: Annotated[int, typer.Option(
        min=1, max=limits.MAX_SCAN_S,
        help="How long to listen for locks (pairing: at most; it stops once --addr is heard "
             "ready).")] = limits.SCAN_S,
    etc_dir: Annotated[Path, typer.Option(
        help="hubd's configuration: its hubd.toml records the lock, and its status_socket is where "
             "hubctl finds hubd.")] = hubfiles.DEFAULT_ETC,
    socket_path: Annotated[Path | None, typer.Option(
        "--socket", help=_SOCKET_HELP, show_default="status_socket in <etc-dir>/hubd.toml")] = None,
) -> None:
    """Find a lock, pair it with the hub under a name, and prove it with a lock/unlock cycle.

    A reference lock (--setup-key): put it in pairing mode first (hold its pairing button until
    it signals). hubd gives it a new random secret, sealed with the lock's setup key; the lock
    proves it holds it.

    A dormakaba dKey (--activation-code): open its activation window first (the owner's button
    on the lock; pair within the time the lock keeps it open). hubd bonds with it and
    associates with the activation code from its card or leaflet; the lock proves the
    association by authenticating hubd with it. --scan shows "?" for a dKey's pairing mode: its
    advert does not say.

    The scan says which protocol the lock at --addr speaks: the other secret input is refused
    before hubd is asked anything. hubd keeps the secret (a dKey's association data) in its
    state database and drives the lock at once, through the bridge's Bluetooth proxy or the
    hub's own adapter, and unlocks and locks it once (an entrance door: unlatches once),
    audited as the technician's. The lock's name and kind go to hubd.toml's [locks]. The
    secret is never printed, and no file of hubctl's or the bridge's holds it.

    **Example:** sudo hubctl pair --scan, then sudo hubctl pair --addr C0:FF:EE:00:00:07
    --name front-door --setup-key 3f1c...e2 (64 hex digits), or for a dKey sudo hubctl pair
    --addr F0:94:0A:00:00:01 --name front-door --activation-code BCDF-2345
    """
    from hubctl import pairing, reach
    from wire import lockkinds

    progress = _progress_line
    files = hubfiles.HubFiles.at(etc_dir)
    hubd = reach.find(socket_path, files.hubd_toml, "--etc-dir")
    if scan:
        try:
            heard = pairing.scan(hubd, seconds, progress)
        except reach.ReachError as e:
            raise Failed(str(e)) from None
        if not heard.locks:
            raise Failed(f"no lock heard in {seconds} s: bring the hub closer, check the locks' "
                         "batteries, or listen longer (--seconds)")
        for row in pairing.scan_rows(heard):
            out.print(row, markup=False)
        return
    missing = [flag for flag, value in (("--addr", addr), ("--name", name)) if value is None]
    if setup_key is None and activation_code is None:
        missing.append("--setup-key (a reference lock) or --activation-code (a dKey)")
    if missing:
        raise _Usage(f"give {', '.join(missing)} (or --scan to list the locks in reach)")
    assert addr is not None and name is not None
    try:
        done = pairing.pair(hubd, files, addr, name, setup_key, seconds,
                            lambda line: out.print(line, markup=False), progress,
                            activation_code=activation_code)
    except pairing.BadValue as e:
        raise typer.BadParameter(str(e), param_hint=f"'{e.flag}'") from None
    except (pairing.PairingError, reach.ReachError) as e:
        raise Failed(str(e)) from None
    what = "dKey" if done.lock.protocol == lockkinds.DKEY else done.lock.kind.replace('_', ' ')
    held = "its association data" if done.lock.protocol == lockkinds.DKEY else "its secret"
    out.print(f"{name}: {what} at {done.lock.addr} paired; recorded in "
              f"{done.files.hubd_toml} ({held} in hubd's state only)", markup=False)
    s = done.failed
    if s is not None:
        raise Failed(f"{name} is paired but did not {s.action}: {s.status}"
                     f"{f' ({s.reason})' if s.reason else ''}: check the lock's mechanism and "
                     "batteries (hubctl doctor), then test it from the backend")
    out.print(f"proved: {', '.join(s.action + ' ' + (s.state or 'ok') for s in done.result.cycle)}",
              markup=False)


def _progress_line(line: str) -> None:
    out.print(f"  {line}", markup=False)


@app.command()
def decommission(
    yes: Annotated[bool, typer.Option(
        "--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option(
        help="Go on although alarms still wait for the alarm centre.")] = False,
    etc_dir: Annotated[Path, typer.Option(
        help="hubd's configuration, whose secrets are removed.")] = hubfiles.DEFAULT_ETC,
    bridge_config: Annotated[Path | None, typer.Option(
        help="The hub's copy of bridge.json.", show_default="<etc-dir>/bridge.json")] = None,
    socket_path: Annotated[Path | None, typer.Option(
        "--socket", help=_SOCKET_HELP, show_default="status_socket in <etc-dir>/hubd.toml")] = None,
) -> None:
    """Remove the municipality's access: locks forget their secrets, the backend is told, the hub's
    credentials and keys are removed.

    Each paired lock is told to forget the hub's secret (it keeps working by hand for the
    resident, and can be paired again) and hubd deletes its pairing from its state. A dKey
    cannot be told (its protocol has no command for it): hubd deletes its association data and
    the radio its bond, so the hub opens nothing any more, and the lock keeps the hub as a key
    holder until its owner removes it in the dKey app (reported as forgotten_by_hub); the bridge
    forgets its bonds and LTE credentials; the backend gets a retained notice on
    hubs/<hub>/v1/decommissioned; then hubd.env (broker password), the client certificate and
    key, the backend keys and the locks in hubd.toml and the LTE key in bridge.json are
    removed. The audit trail stays in hubd's state directory: export it first (hubctl audit
    export). hubd must be running.

    **Example:** sudo hubctl audit export --from 1 --to 100000 --out audit.jsonl, then
    sudo hubctl decommission --yes, then sudo systemctl disable --now hubd
    """
    from hubctl import access, reach, service
    from hubd.technician import control

    files = hubfiles.HubFiles.at(etc_dir, bridge_config)
    try:
        files.check_writable()
    except hubfiles.FilesError as e:
        raise Failed(str(e)) from None
    if not yes and not _confirmed("Remove the municipality's access to this home (locks, keys, "
                                  "credentials)?", "decommission"):
        out.print("nothing changed: the hub keeps its access (locks, keys, credentials)",
                  markup=False)
        return
    hubd = reach.find(socket_path, files.hubd_toml, "--etc-dir")
    done = _ask(hubd, control.DecommissionRequest(force=force), timeout=control.COMMISSIONING_WAIT_S)
    result = control.DecommissionResult.model_validate(done)
    try:
        removed = access.remove_secrets(files)
    except hubfiles.FilesError as e:
        raise Failed(f"the locks and the bridge forgot their secrets, but {e}") from None
    for lock, outcome in result.locks.items():
        if outcome == "ok":
            line = "forgot its secret"
        elif outcome == control.FORGOTTEN_BY_HUB:  # a dKey: its owner has a step left
            line = f"{outcome}: {control.unpaired_text(outcome)}"
        else:
            line = f"{outcome} (the hub forgot it)"
        out.print(f"{lock}: {line}", markup=False)
    out.print(f"backend {'told' if result.backend_told else 'NOT told: tell the operators'}", markup=False)
    for path in removed.deleted:
        out.print(f"removed {path}", markup=False)
    for path in removed.rewritten:
        out.print(f"rewritten without keys and secrets: {path}", markup=False)
    out.print(f"next: {service.stop_hubd(etc_dir)}", markup=False)
    if not result.backend_told:
        raise Failed("the backend was not told (the broker did not acknowledge): tell the "
                     "municipality's operators this hub is decommissioned")


def _confirmed(question: str, command: str) -> bool:
    """The technician's yes or no (no by default); Unanswered when there is none."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:  # Ctrl-C or the end of input at the prompt, which click does not tell apart
        raise Unanswered(f"no answer (Ctrl-C, or no more input): nothing changed; answer y, or pass "
                         f"--yes to {command} without the question") from None


def main(argv: list[str] | None = None) -> None:
    """The console script: run a command; turn every failure into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="hubctl", standalone_mode=False)
    except Failed as e:
        err.print(f"hubctl: error: {e}", soft_wrap=True, markup=False)
        sys.exit(1)
    except Unanswered as e:
        err.print(f"hubctl: {e}", soft_wrap=True, markup=False)
        sys.exit(INTERRUPTED)
    except typer.TyperException as e:  # the command line itself is wrong (exit status 2)
        ctx = getattr(e, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "hubctl"
        if e.format_message():  # empty when the help was shown for want of arguments
            err.print(f"{cmd}: {e.format_message()} (see {cmd} --help)", soft_wrap=True,
                      markup=False)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("HUBCTL_DEBUG"):
            raise
        err.print(f"hubctl: internal error: {type(e).__name__}: {e} (a bug in hubctl: report "
                  "it with this line; HUBCTL_DEBUG=1 shows the traceback)", soft_wrap=True,
                  markup=False)
        sys.exit(70)
    if code == INTERRUPTED:  # typer turns Ctrl-C into this status and returns it
        again = " (hubctl flash --resume finishes a cut copy)" if args[:1] == ["flash"] else ""
        err.print(f"hubctl: interrupted: run the same command again{again}", markup=False)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
