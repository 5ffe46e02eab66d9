"""hubd under systemd (hubd/systemd.py): sd_notify readiness and watchdog, and native journal
logging, against real AF_UNIX datagram sockets standing where systemd's are; hubd itself as a
process with a real Mosquitto and a pty for the bridge's port."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tty
from pathlib import Path


from hil_tests.harness import write_hubd_config
from hubd import systemd

ROOT = Path(__file__).resolve().parents[2]


def datagram_socket(path: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    return sock


def parse_entry(data: bytes) -> dict[str, str]:
    """The native journal protocol, read back (both the line form and the binary form)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def test_notify_reaches_a_path_socket_and_an_abstract_one(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with datagram_socket(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1", "STATUS=serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    name = f"hubd-test-{os.getpid()}"
    with datagram_socket(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_outside_systemd_or_to_a_dead_socket_does_nothing_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("READY=1") is False


def test_the_watchdog_interval_is_half_of_systemds_and_only_for_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert systemd.watchdog_interval() is None


def test_journal_entries_carry_each_extra_field_and_survive_newlines(tmp_path):
    path = str(tmp_path / "journal")
    with datagram_socket(path) as sock:
        handler = systemd.JournalHandler(path, standard=frozenset(vars(logging.makeLogRecord({})))
                                         | {"message", "asctime", "taskName"})
        logger = logging.getLogger("hubd.test-journal")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("alarm %s stored", "au5a000001-7", extra={"alarm": "au5a000001-7", "hop-ms": 3})
            entry = parse_entry(sock.recv(65536))
            try:
                raise ValueError("two\nlines")
            except ValueError:
                logger.exception("it broke")
            broken = parse_entry(sock.recv(65536))
        finally:
            logger.removeHandler(handler)
            handler.close()
    assert entry["MESSAGE"] == "alarm au5a000001-7 stored"
    assert (entry["PRIORITY"], entry["SYSLOG_IDENTIFIER"], entry["LOGGER"]) == ("4", "hubd", "hubd.test-journal")
    assert (entry["ALARM"], entry["HOP_MS"]) == ("au5a000001-7", "3")
    assert "MSG" not in entry and "ARGS" not in entry, "only extra fields, not the record's own"
    assert broken["PRIORITY"] == "3" and "ValueError: two\nlines" in broken["EXCEPTION"]


def test_journal_stream_is_recognised_only_when_it_names_stderr(tmp_path, monkeypatch):
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert systemd.journal_is_stderr()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # a stream, not ours
    assert not systemd.journal_is_stderr()
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not systemd.journal_is_stderr()


def test_hubd_says_ready_pings_the_watchdog_and_says_stopping(tmp_path, mosquitto, backend_key):
    master, slave = os.openpty()  # the bridge's port; no bridge answers, hubd serves anyway
    tty.setraw(master)
    config = tmp_path / "hubd.toml"
    write_hubd_config(config, mosquitto, os.ttyname(slave), backend_key, ["front-door"], link_key=os.urandom(32))
    notify_path = str(tmp_path / "notify")
    with datagram_socket(notify_path) as sock:
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="400000")
        log = (tmp_path / "hubd.log").open("wb")
        hubd = subprocess.Popen([sys.executable, "-m", "hubd", "--config", str(config)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            received = []
            while not any(m.startswith(b"READY=1") for m in received):
                received.append(sock.recv(4096))
            ready = next(m for m in received if m.startswith(b"READY=1"))
            assert b"STATUS=serving hub hub-under-test" in ready
            pings = 0
            while pings < 3:
                pings += sock.recv(4096) == b"WATCHDOG=1"
            hubd.send_signal(signal.SIGTERM)
            messages = []
            while not any(m.startswith(b"STOPPING=1") for m in messages):
                messages.append(sock.recv(4096))
            assert hubd.wait(20) == 0
        finally:
            if hubd.poll() is None:
                hubd.kill()
                hubd.wait()
            log.close()
            os.close(master)
            os.close(slave)


def test_the_unit_file_runs_hubd_as_a_notify_service_with_a_watchdog():
    text = (ROOT / "deploy/systemd/hubd.service").read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify"
    assert int(settings["WatchdogSec"].rstrip("s")) > 0
    assert settings["Restart"] in ("always", "on-failure")
    assert settings["ExecStart"].split()[1:] == ["--config", "/etc/hubd/hubd.toml"]
    assert settings["StateDirectory"] == "hubd"
