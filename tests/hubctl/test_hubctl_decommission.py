"""hubctl decommission's question: "no" changes nothing and says so (exit status 0); no answer at
all (Ctrl-C, the end of input) changes nothing either, in one line. Before anything, so no hubd
is needed: hubd is asked only after a "yes" (the whole decommissioning: test_hubctl_pair.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.hubctl_cli import hubctl_in_process, one_error_line


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A provisioned hub's files, as far as decommission checks them before its question."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hubd.toml").write_text('hub_id = "hub-1"\n[locks]\nfront-door = "inside_turner"\n')
    (etc / "bridge.json").write_text('{"link": {"uart": 1}}\n')
    (etc / "hubd.env").write_text('HUBD_MQTT__PASSWORD="secret"\n')
    return etc


def files(etc: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(etc.iterdir())}


def test_no_to_the_question_changes_nothing_says_so_and_exits_0(
        etc: Path, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = files(etc)
    # The socket nobody serves: had hubctl asked hubd anything, it would fail "not running".
    args = ("decommission", "--etc-dir", etc, "--socket", short_dir / "status.sock")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    proc = hubctl_in_process(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # The prompt and its answer share a line when the answer is not typed at a terminal.
    assert proc.stdout.strip().splitlines()[-1].endswith(
        "? [y/N]: nothing changed: the hub keeps its access (locks, keys, credentials)")
    assert files(etc) == before

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no answer: the end of input
    proc = hubctl_in_process(*args)
    assert proc.returncode == 130
    assert one_error_line(proc) == ("hubctl: no answer (Ctrl-C, or no more input): nothing "
                                     "changed; answer y, or pass --yes to decommission without "
                                     "the question")
    assert files(etc) == before
