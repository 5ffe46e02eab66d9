"""`hubctl flash`: the esptool step through its seam, the copy-and-verify step for real.

These tests take the .mpy-file route (`--mpy-files`, a stock MicroPython); the ROMFS route, the
one a real bridge takes, is test_hubctl_flash_romfs.py's, on the same bench with a romfs
partition.

The bridge on the bench is MicroPython's unix port at its REPL on a pty, its working directory
standing for the ESP32's flash filesystem; hubctl reaches it through a second pty (the "USB serial
port") and a relay thread between the two (the cable, which a test can pull). mpremote talks to it
exactly as to an ESP32, except that the unix port has no soft reset (`--no-soft-reset`). Only
esptool's side (the chip's ROM bootloader) is a fake, through the `Flasher` seam.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from hubctl import __main__ as cli
from hubctl import bundle, deploy, image
from simulator.bridge_device import SHIMS
from tests.micropython import micropython_binary
from tests.terminal import interruptible
from tests.hubctl_cli import HUBCTL, hubctl, hubctl_in_process, one_error_line

CONFIG = {  # as hubctl provision writes it: no lock (hubd drives them through the proxy)
    "link": {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "key": "4b" * 32},
    "log": "info",
}
IMAGE = bytes([image.IMAGE_MAGIC]) + bytes(range(256)) * 64  # shaped like an ESP32 image


class BenchBridge:
    """A bridge on the bench: MicroPython's REPL on one pty, the port hubctl opens on another,
    a relay thread between them as the cable. `pull_cable` also cuts the power, as pulling a
    USB-powered ESP32's cable does; `power_on` boots it again on the same flash.

    `flash` is its filesystem. With `romfs` it runs what the bridge's own MicroPython build
    (deploy/esp32) has and a stock one lacks: a ``romfs`` partition of that build's size
    (`partition`, a file beside the filesystem) and ``vfs.rom_ioctl``, mounted at /rom at
    every boot (simulator/shims/romfs_partition.py); without it, a stock MicroPython."""

    def __init__(self, flash: Path, romfs: bool = False) -> None:
        self.flash = flash
        self.romfs = romfs
        self.partition = flash.with_name(flash.name + ".romfs-partition")
        self.proc: subprocess.Popen[bytes] | None = None
        self._fds: list[int] = []
        self._relay: threading.Thread | None = None
        self._stop = threading.Event()
        self.cut_after: int | None = None  # pull the cable after this many bytes to the bridge
        # Stall the cable after this many bytes to the bridge: nothing more reaches it (a hung
        # USB hub), so hubctl waits, and `stalled` is set.
        self.stall_after: int | None = None
        self.stalled = threading.Event()

    def power_on(self) -> str:
        """Boot MicroPython at its REPL and return the serial port to open."""
        self.pull_cable()
        dev_master, dev_slave = pty.openpty()
        # Raw on the interpreter's side: with the tty's output processing on, "\r\n" arrives
        # as "\r\r\n" and mpremote never sees "raw REPL; CTRL-B to exit\r\n".
        tty.setraw(dev_slave)
        env = {"MICROPYPATH": f"{SHIMS}:.frozen", "PATH": "/usr/bin:/bin"}  # shims: machine.reset
        argv = [micropython_binary()]
        if self.romfs:  # boot as the bridge build does, then its REPL
            argv += ["-i", "-c", f"import romfs_partition\nromfs_partition.boot("
                                 f"{str(self.partition)!r}, {image.romfs_partition_size()}, "
                                 f"{bundle.ROM_MOUNT!r}, {list(bundle.ROM_PATHS)!r})"]
        self.proc = subprocess.Popen(argv, stdin=dev_slave, stdout=dev_slave,
                                     stderr=dev_slave, cwd=self.flash, env=env,
                                     start_new_session=True)
        os.close(dev_slave)
        self._await_prompt(dev_master)
        host_master, host_slave = pty.openpty()
        tty.setraw(host_slave)
        # host_slave stays open here: with no slave open, the master reads EIO and the relay ends.
        self._fds = [dev_master, host_master, host_slave]
        self._stop.clear()
        self._relay = threading.Thread(target=self._run_relay, args=(dev_master, host_master),
                                       daemon=True)
        self._relay.start()
        return os.ttyname(host_slave)

    @staticmethod
    def _await_prompt(fd: int) -> None:
        # Input sent before the REPL is up could be flushed when it puts the tty in raw mode.
        seen = b""
        deadline = time.monotonic() + 10
        while not seen.endswith(b">>> "):
            assert time.monotonic() < deadline, f"MicroPython did not start: {seen!r}"
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 1024)

    def _run_relay(self, dev: int, host: int) -> None:
        to_bridge = 0
        while not self._stop.is_set():
            for fd in select.select([dev, host], [], [], 0.02)[0]:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if fd == host:
                    to_bridge += len(data)
                    if self.cut_after is not None and to_bridge > self.cut_after:
                        self._cut()
                        return
                    if self.stall_after is not None and to_bridge > self.stall_after:
                        self.stalled.set()
                        continue
                os.write(host if fd == dev else dev, data)

    def _cut(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def pull_cable(self) -> None:
        """The cable out (and with it the power): the port goes away mid-whatever."""
        if self._relay is not None and self._relay is not threading.current_thread():
            self._stop.set()
            self._relay.join()
        self._relay = None
        self._cut()

    def wait_exit(self, timeout: float = 10) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    return bundle.build(tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps(CONFIG, indent=1))
    return path


@pytest.fixture
def bench(tmp_path: Path) -> Any:
    flash = tmp_path / "flash"
    flash.mkdir()
    b = BenchBridge(flash)
    yield b
    b.pull_cable()




def assert_flashed(flash: Path, files: list[deploy.Planned], complete: bool = True) -> None:
    """Every planned file on the bridge's flash with its exact content; when `complete`, no
    temporary file left either."""
    for f in files:
        on_flash = flash / f.path
        assert on_flash.is_file(), f"{f.path} is missing"
        assert hashlib.sha256(on_flash.read_bytes()).digest() == f.sha256, f.path
    if complete:
        assert list(flash.rglob("*" + deploy.PART)) == []


class Recorder:
    """The esptool seam as a test sees it: every call, in order, with its arguments."""

    def __init__(self, chip: str = "ESP32") -> None:
        self.chip = chip
        self.calls: list[tuple[Any, ...]] = []

    def connect(self, port: str, baud: int) -> str:
        self.calls.append(("connect", port, baud))
        return self.chip

    def erase(self) -> None:
        self.calls.append(("erase",))

    def write(self, offset: int, image: bytes) -> None:
        self.calls.append(("write", offset, hashlib.sha256(image).hexdigest()))

    def verify(self, offset: int, image: bytes) -> None:
        self.calls.append(("verify", offset, hashlib.sha256(image).hexdigest()))

    def hard_reset(self) -> None:
        self.calls.append(("hard_reset",))

    def close(self) -> None:
        self.calls.append(("close",))


# --- the esptool step -------------------------------------------------------------------------


def test_the_image_step_erases_writes_at_0x1000_verifies_and_resets_in_that_order() -> None:
    rec = Recorder()
    assert image.flash_image(rec, "/dev/ttyUSB0", IMAGE, 460800) == "ESP32"
    digest = hashlib.sha256(IMAGE).hexdigest()
    assert rec.calls == [("connect", "/dev/ttyUSB0", 460800), ("erase",),
                         ("write", 0x1000, digest), ("verify", 0x1000, digest),
                         ("hard_reset",), ("close",)]


def test_a_chip_that_is_not_an_esp32_is_left_unerased() -> None:
    rec = Recorder(chip="ESP32-S3")
    with pytest.raises(image.ImageError, match="ESP32-S3, a bridge is an ESP32"):
        image.flash_image(rec, "/dev/ttyACM0", IMAGE)
    assert rec.calls == [("connect", "/dev/ttyACM0", image.DEFAULT_BAUD), ("close",)]


def test_the_real_seam_calls_esptools_public_api_with_arguments_it_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import esptool.cmds

    calls: list[str] = []

    class Port:
        def close(self) -> None:
            calls.append("port.close")

    class Esp:
        CHIP_NAME = "ESP32"
        ESP_ROM_BAUD = 115200
        _port = Port()

        def change_baud(self, baud: int) -> None:
            calls.append(f"change_baud {baud}")

    esp = Esp()

    def fake(name: str, result: Any = None) -> Any:
        real = getattr(esptool.cmds, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            inspect.signature(real).bind(*args, **kwargs)  # esptool's own signature takes them
            shown = [a if not isinstance(a, Esp) else "esp" for a in args]
            shown = [[(hex(o), hashlib.sha256(d).hexdigest()[:8]) for o, d in a]
                     if isinstance(a, list) else a for a in shown]
            calls.append(f"{name} {shown}")
            return result

        monkeypatch.setattr(esptool.cmds, name, call)

    fake("detect_chip", esp)
    fake("run_stub", esp)
    for name in ("attach_flash", "erase_flash", "write_flash", "verify_flash", "reset_chip"):
        fake(name)
    image.flash_image(image.EsptoolFlasher(), "/dev/ttyUSB0", IMAGE, 460800)
    d = hashlib.sha256(IMAGE).hexdigest()[:8]
    assert calls == [
        "detect_chip ['/dev/ttyUSB0']", "run_stub ['esp']", "change_baud 460800",
        "attach_flash ['esp']", "erase_flash ['esp']",
        f"write_flash ['esp', [('0x1000', '{d}')]]", f"verify_flash ['esp', [('0x1000', '{d}')]]",
        "reset_chip ['esp', 'hard-reset']", "port.close"]


# --- the whole flash, and the copy-and-verify step --------------------------------------------


def test_flash_writes_the_image_then_copies_and_verifies_every_file_then_reboots(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder()
    monkeypatch.setattr(image, "EsptoolFlasher", lambda: rec)
    image_file = tmp_path / "ESP32_GENERIC.bin"
    image_file.write_bytes(IMAGE)
    (tmp_path / "hubd.toml").write_text('hub_id = "hub-1"\n')  # a bench's configuration
    port = bench.power_on()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["flash", "--port", port, "--image", str(image_file), "--bundle",
                  str(built.path), "--config", str(config_file), "--no-soft-reset",
                  "--mpy-files"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    assert "--mpy-files: for the bench only: on a chip the firmware then fills the heap" in out
    assert [c[0] for c in rec.calls] == ["connect", "erase", "write", "verify", "hard_reset",
                                         "close"]
    files = deploy.plan(built, config_file.read_bytes())
    assert_flashed(bench.flash, files)
    assert json.loads((bench.flash / "bridge.json").read_text()) == CONFIG
    assert f"{len(files)} files copied, 0 already there, all {len(files)} verified" in out
    # hubd on the configuration beside this bridge.json, by hand: it is not /etc/hubd.
    assert out.strip().splitlines()[-1] == (
        f"next: hubd --config {tmp_path}/hubd.toml --env-file {tmp_path}/hubd.env; hubctl doctor "
        f"--config {tmp_path}/hubd.toml")
    # machine.reset() (the simulator's shim exits with status 3) is the last thing asked.
    assert bench.wait_exit() == 3


def test_a_copy_cut_by_a_cable_pull_resumes_with_only_what_is_missing_or_wrong(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path) -> None:
    files = deploy.plan(built, config_file.read_bytes())
    # Cut in the middle of a file bigger than two chunks, well into the copy.
    n = next(i for i, f in enumerate(files) if i >= 5 and len(f.data) > 2 * deploy.CHUNK)
    cut_in = files[n]

    class CableOut(deploy.CopyProgress):
        def file_advance(self, path: str, done: int, size: int) -> None:
            if path == cut_in.path and done >= deploy.CHUNK:
                bench.pull_cable()

    fs = deploy.BridgeFS.open(bench.power_on(), soft_reset=False)
    with pytest.raises(deploy.CableLost, match="lost the bridge on"):
        deploy.copy(fs, files, CableOut())
    fs.close()

    flash = bench.flash
    assert_flashed(flash, files[:n], complete=False)
    assert not (flash / cut_in.path).exists(), "a cut never leaves half a file under its name"
    part = flash / (cut_in.path + deploy.PART)
    assert 0 < part.stat().st_size < len(cut_in.data)
    assert not [f.path for f in files[n + 1:] if (flash / f.path).exists()]
    assert not (flash / "main.py").exists(), "the cut bridge boots to the REPL, not half a firmware"

    damaged = files[1]  # and a file damaged on the flash meanwhile is written again
    (flash / damaged.path).write_bytes(b"\x00" * 10)

    proc = hubctl("flash", "--port", bench.power_on(), "--bundle", built.path,
                  "--config", config_file, "--resume", "--no-soft-reset", "--mpy-files")
    assert proc.returncode == 0, proc.stderr
    copied, skipped = len(files) - n + 1, n - 1
    assert f"{copied} files copied, {skipped} already there, all {len(files)} verified" \
        in proc.stdout
    assert f"{damaged.path}: copied, verified" in proc.stdout
    assert f"{files[0].path}: already there" in proc.stdout
    assert_flashed(flash, files)
    assert bench.wait_exit() == 3


def test_a_cable_pull_during_flash_fails_in_one_line_that_says_to_resume(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path) -> None:
    files = deploy.plan(built, config_file.read_bytes())
    bench.cut_after = 40_000  # bytes towards the bridge: well inside the copy
    proc = hubctl("flash", "--port", bench.power_on(), "--bundle", built.path,
                  "--config", config_file, "--resume", "--no-soft-reset", "--mpy-files")
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert "lost the bridge on" in line and "--resume" in line

    bench.cut_after = None
    proc = hubctl("flash", "--port", bench.power_on(), "--bundle", built.path,
                  "--config", config_file, "--resume", "--no-soft-reset", "--mpy-files")
    assert proc.returncode == 0, proc.stderr
    assert "0 already there" not in proc.stdout
    assert_flashed(bench.flash, files)


def test_a_bridge_whose_micropython_cannot_load_the_bundle_is_refused_before_copying(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path, tmp_path: Path) -> None:
    older = tmp_path / "older-bundle"
    shutil.copytree(built.path, older)
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["mpy"]["version"] = 5
    (older / "manifest.json").write_text(json.dumps(manifest))
    line = one_error_line(hubctl("flash", "--port", bench.power_on(), "--bundle", older,
                                 "--config", config_file, "--resume", "--no-soft-reset"))
    assert "loads .mpy version 6, the bundle is version 5" in line
    assert list(bench.flash.iterdir()) == []


# --- the command line -------------------------------------------------------------------------


def test_flash_help_shows_an_example() -> None:
    proc = hubctl("flash", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example:" in proc.stdout and "hubctl flash --port /dev/ttyUSB0" in proc.stdout


@pytest.mark.parametrize("bad, expected", [
    ({"link": CONFIG["link"], "log": "deafening"}, "log must be one of debug, info, warn, error"),
    ({"log": "info"}, "link.key is missing: provision the bridge with its hub's link key"),
    ("{not json", "is not valid JSON"),
])
def test_a_bad_configuration_fails_in_one_line_before_the_bridge_is_touched(
        tmp_path: Path, built: bundle.Bundle, bad: Any, expected: str) -> None:
    path = tmp_path / "bridge.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    line = one_error_line(hubctl("flash", "--port", "/dev/nonexistent", "--bundle", built.path,
                                 "--config", path, "--resume"))
    assert expected in line


def test_a_missing_port_fails_in_one_line(built: bundle.Bundle, config_file: Path) -> None:
    line = one_error_line(hubctl("flash", "--port", "/dev/ttyUSB-nonexistent", "--bundle",
                                 built.path, "--config", config_file, "--resume"))
    assert "cannot open /dev/ttyUSB-nonexistent: is the bridge plugged in" in line


def test_a_file_that_is_no_esp32_image_fails_in_one_line(
        tmp_path: Path, built: bundle.Bundle, config_file: Path) -> None:
    not_an_image = tmp_path / "firmware.bin"
    not_an_image.write_text("<html>404 not found</html>" * 200)
    line = one_error_line(hubctl("flash", "--port", "/dev/ttyUSB-nonexistent", "--image",
                                 not_an_image, "--bundle", built.path, "--config", config_file))
    assert "is not an ESP32 firmware image" in line


def test_a_directory_that_is_no_bundle_fails_in_one_line(tmp_path: Path,
                                                         config_file: Path) -> None:
    line = one_error_line(hubctl("flash", "--port", "/dev/ttyUSB0", "--bundle", tmp_path,
                                 "--config", config_file, "--resume"))
    assert "is not a bundle" in line


def test_image_and_resume_together_is_a_usage_error(built: bundle.Bundle,
                                                    config_file: Path) -> None:
    proc = hubctl("flash", "--port", "/dev/ttyUSB0", "--bundle", built.path, "--config",
                  config_file, "--resume", "--image", config_file)
    assert proc.returncode == 2
    assert "pass one of --image and --resume" in one_error_line(proc)


def test_an_interrupt_is_one_line_too(bench: BenchBridge, built: bundle.Bundle,
                                      config_file: Path) -> None:
    bench.stall_after = 40_000  # bytes towards the bridge: well inside the copy, which then waits
    proc = subprocess.Popen([str(HUBCTL), "flash", "--port", bench.power_on(), "--bundle",
                             str(built.path), "--config", str(config_file), "--resume",
                             "--no-soft-reset", "--mpy-files"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    assert bench.stalled.wait(60), "the copy never got 40 kB into the cable"
    proc.send_signal(signal.SIGINT)  # Ctrl-C while hubctl waits for the bridge
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "hubctl: interrupted: run the same command again (hubctl flash --resume finishes a cut "
        "copy)"]


class NotARepl:
    """A serial port where no MicroPython REPL answers, on a real pty: silent (a bridge without
    power, a dead adapter) or talking on its own, whatever it is sent (the bridge's firmware link
    as hub-sim's port carries it, a modem), as `chatter` every 20 ms."""

    def __init__(self, chatter: bytes = b"") -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.heard = b""
        self._chatter = chatter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if select.select([self._master], [], [], 0.02)[0]:
                self.heard += os.read(self._master, 1024)
            if self._chatter:
                os.write(self._master, self._chatter)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._master)
        os.close(self._slave)


@pytest.mark.timeout(120)  # before the bound, the talking port held hubctl for ever
def test_flash_resume_on_a_port_without_a_repl_ends_in_one_line_saying_what_answered(
        built: bundle.Bundle, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "REPL_ANSWER_S", 1.0)  # the bound itself, shorter: the same path
    for chatter, expected in ((b"", "nothing answered on {port} within 1 s (Ctrl-C, Ctrl-A): is "
                                    "the bridge powered, and is that its USB port"),
                              (b"\x7e\x01\x07frame\x00", "{port} answered but not as MicroPython's "
                                                          "REPL (")):
        port = NotARepl(chatter)
        try:
            proc = hubctl_in_process("flash", "--port", port.port, "--bundle", built.path,
                                     "--config", config_file, "--resume", "--no-soft-reset")
        finally:
            port.close()
        line = one_error_line(proc)
        assert proc.returncode == 1
        assert expected.format(port=port.port) in line, line
        assert port.heard.startswith(b"\r\x03\x03\r\x01")  # Ctrl-C, then the raw REPL asked for
    assert "beginning '~\\x01\\x07frame\\x00" in line and "serial link (hubd's, or hub-sim's" in line
