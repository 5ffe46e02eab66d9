"""The technician's guide, walked: every command of docs/technician-guide.md's "Bench with
hub-sim" marked for the walk runs in order, as a technician would type it (bash, the checkout's
``.venv/bin`` on PATH, the bench in ``~/bench``), against hub-sim and a real Mosquitto with the
hub's password login; each output line the guide shows must be in what the command printed.

So the guide and the tools cannot drift apart: a flag renamed, a line reworded, a step that no
longer works fails this test, naming the command, the lines missing and what it printed.

The guide marks a fenced ``console`` block for the walk with an HTML comment before it:

- ``<!-- walk -->``: ``$ command`` lines (a trailing backslash continues one), each followed by
  the lines it prints; it must exit 0 and print them.
- ``<!-- walk: background -->``: one command that keeps running (hub-sim, hubd: "in another
  terminal"); the walk goes on once it printed every line shown, and stops it (SIGTERM, as
  Ctrl-C for hub-sim) at the end.
- ``<!-- walk: type into hub-sim -->``: the first line is typed into hub-sim's terminal, the
  rest is what hub-sim then prints.

A line of ``...`` stands for lines left out. Lines are compared after :func:`normalised`:
numbers, hex ids and durations differ from run to run, and the bench's ``$HOME`` is shown as
``/home/tech``. The test's broker listens on its own port where the guide says 18830.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto
from tests.terminal import interruptible

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "technician-guide.md"
SECTION = "## 10. Bench with hub-sim"
GUIDE_HOME = "/home/tech"
GUIDE_PORT = "18830"
HUB_ID, PASSWORD = "hub-bench", "bench-password"  # the guide's mosquitto_passwd line
_BLOCK = re.compile(r"<!-- walk(?:: ([a-z -]+))? -->\n```console\n(.*?)```", re.S)


@dataclass
class Step:
    kind: str  # "run", "background" or "type into hub-sim"
    command: str
    shown: list[str] = field(default_factory=list)


def steps(guide: str) -> list[Step]:
    """The walk's steps, in the guide's order, from its bench section."""
    start = guide.index(SECTION)
    end = guide.find("\n## ", start + 1)
    out: list[Step] = []
    for kind, body in _BLOCK.findall(guide[start:end if end > 0 else None]):
        kind = kind or "run"
        lines = body.rstrip("\n").split("\n")
        if kind == "type into hub-sim":
            out.append(Step(kind, lines[0], lines[1:]))
            continue
        while lines:
            line = lines.pop(0)
            assert line.startswith("$ "), f"a walked block's command starts with '$ ': {line!r}"
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + " " + lines.pop(0).strip()
            shown: list[str] = []
            while lines and not lines[0].startswith("$ "):
                shown.append(lines.pop(0))
            out.append(Step(kind, command, shown))
    return out


def normalised(line: str) -> str:
    """A line as compared: hex ids (6+ digits), numbers (with their sign), durations and spacing
    made alike."""
    line = re.sub(r"[0-9a-f]{6,}", "H", line)
    line = re.sub(r"[+-]?\d+(\.\d+)?", "N", line)
    line = re.sub(r"\bN (s|min|h)\b", "N T", line)
    return " ".join(line.split())


def missing(shown: list[str], printed: str) -> list[str]:
    """The guide's lines (but ``...``) not among the lines printed."""
    have = {normalised(line) for line in printed.splitlines()}
    return [line for line in shown if line.strip() != "..." and normalised(line) not in have]


class Background:
    """A command left running, its output collected as it comes."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path,
                 show: Callable[[str], str]) -> None:
        self.command = command
        self._show = show
        # Its own process group: stopped as a terminal's job is, whatever bash made of it.
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=interruptible, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        """What it printed so far, as the guide shows it."""
        return self._show("\n".join(self.lines))

    def wait_for(self, shown: list[str], what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while missing(shown, self.text):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(2)
                pytest.fail(f"{what}: `{self.command}` did not print, within {timeout:g} s "
                            f"(exit status {self.proc.poll()}):\n  "
                            + "\n  ".join(missing(shown, self.text))
                            + f"\nit printed:\n{self.text[-6000:]}", pytrace=False)
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self._reader.join(5)


@pytest.fixture
def bench_home() -> Iterator[Path]:
    """The technician's $HOME, short (hubd's socket path in it is at most 107 bytes)."""
    home = Path(tempfile.mkdtemp(prefix="tech-", dir="/tmp"))
    (home / "bench").mkdir()
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_the_technicians_guide_walks_on_hub_sim_from_provision_to_decommission(
        bench_home: Path, tmp_path: Path) -> None:
    walk = steps(GUIDE.read_text())
    assert [s for s in walk if s.command.startswith("hub-sim")], "the walk starts no hub-sim"
    broker = Mosquitto(tmp_path / "mosquitto", passwords={HUB_ID: PASSWORD})
    broker.start()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HUBD_")}
    env.update(HOME=str(bench_home), NO_COLOR="1", COLUMNS="100",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    cwd = bench_home / "bench"
    running: list[Background] = []

    def show(text: str) -> str:
        return text.replace(str(bench_home), GUIDE_HOME)

    try:
        for n, step in enumerate(walk, 1):
            command = step.command.replace(GUIDE_PORT, str(broker.port))
            where = f"step {n}"
            if step.kind == "background":
                running.append(Background(command, env, cwd, show))
                running[-1].wait_for(step.shown, where)
                continue
            if step.kind == "type into hub-sim":
                sim = next(b for b in running if b.command.startswith("hub-sim"))
                assert sim.proc.stdin is not None
                sim.proc.stdin.write(step.command + "\n")
                sim.proc.stdin.flush()
                sim.wait_for(step.shown, f"{where}, typed {step.command!r}")
                continue
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, text=True,
                                  capture_output=True, timeout=180, check=False)
            printed = show(done.stdout + done.stderr)
            lost = missing(step.shown, printed)
            assert done.returncode == 0 and not lost, (
                f"{where}: `{step.command}` exited {done.returncode}; the guide's lines it did "
                "not print:\n  " + "\n  ".join(lost) + f"\nit printed:\n{printed}"
                + "".join(f"\n--- {b.command} ---\n{b.text[-3000:]}" for b in running))
    finally:
        codes = [(b, b.stop()) for b in reversed(running)]
        broker.stop()
    sims = [b for b, _ in codes if b.command.startswith("hub-sim")]
    assert sims and all(code == 0 and b.lines and b.lines[-1].endswith("stopped")
                        for b, code in codes if b in sims), "hub-sim did not stop cleanly: " + "; ".join(
        f"exit {code}, its last lines:\n" + "\n".join(b.lines[-15:]) for b, code in codes if b in sims)
