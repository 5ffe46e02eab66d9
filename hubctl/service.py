"""How hubd runs on a configuration directory, and so what the technician is told to run: for
/etc/hubd, hubd.service under systemd (the paths its unit names: deploy/systemd/hubd.service);
for any other directory (a bench, docs/technician-guide.md section 10), hubd by hand on that
directory's files, its hubd.env read as the unit's EnvironmentFile= reads it.

hubd's own lines and hubctl doctor's fixes are written for hubd.service; :func:`for_etc` says each
for a bench, sentence by sentence (tests/hubctl/test_hubctl_provision.py pins every sentence that
names systemctl or journalctl). Here, apart from provision, so that every command that reaches
hubd (hubctl.reach) has it without loading provision's checks.
"""

from __future__ import annotations

from pathlib import Path

from hubctl.hubfiles import DEFAULT_ETC


def run_hubd(etc: Path, verb: str = "restart") -> str:
    """How hubd is (re)started on the configuration in ``etc``: hubd.service for /etc/hubd (the
    paths its unit names); for any other directory (a bench) hubd by hand on that directory's
    files, hubd.env read as the unit's EnvironmentFile= reads it. ``verb``: restart, start."""
    etc = etc.absolute()
    if etc == DEFAULT_ETC:
        return f"systemctl {verb} hubd"
    run = f"hubd --config {etc / 'hubd.toml'} --env-file {etc / 'hubd.env'}"
    return f"{run} (stop the one running on them first)" if verb == "restart" else run


def for_etc(text: str, etc: Path) -> str:
    """``text`` (a line or a fix that names hubd.service, as for /etc/hubd) said for the
    configuration in ``etc``: elsewhere (a bench) hubd runs by hand on that directory's files, so
    a ``systemctl`` or ``journalctl`` step that cannot help there becomes what can."""
    if etc.absolute() == DEFAULT_ETC:
        return text
    by_hand = run_hubd(etc, "start")
    for unit, bench in (("systemctl start hubd (journalctl -u hubd says why it stopped)",
                         f"{by_hand} (its output says why it stopped)"),
                        ("systemctl restart hubd", run_hubd(etc)),
                        ("systemctl start hubd", by_hand),
                        ("systemctl stop hubd", "stop hubd (Ctrl-C where it runs)"),
                        ("systemctl status hubd", "hubd's output"),
                        ("journalctl -u hubd", "hubd's output")):
        text = text.replace(unit, bench)
    return text


def doctor_command(etc: Path) -> str:
    """hubctl doctor on the configuration in ``etc``."""
    etc = etc.absolute()
    return "hubctl doctor" if etc == DEFAULT_ETC else f"hubctl doctor --config {etc / 'hubd.toml'}"


def stop_hubd(etc: Path) -> str:
    """How hubd on the configuration in ``etc`` is stopped for good (after decommissioning)."""
    etc = etc.absolute()
    if etc == DEFAULT_ETC:
        return "systemctl disable --now hubd"
    return f"stop hubd (Ctrl-C where hubd --config {etc / 'hubd.toml'} runs)"
