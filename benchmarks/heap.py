"""Where the bridge firmware's live heap goes (issue 15): what each module costs at import, and
what the running bridge holds at rest, with four proxy connections up and at the soak's low
point.

Two parts, both on the firmware as the simulator runs it (booted from its ROMFS image with the
simulator's boot code, simulator/bridge_device.py, so the chip's own modules, the shims, cost
nothing; docs/architecture.md, "Heap"):

- **imports**: a fresh interpreter imports the firmware's modules one by one in the order the
  bridge's boot imports them (what each brings that the ones before did not), ``gc.mem_alloc()``
  after a collection around each; ``config`` and ``startup`` are boot-only (main.py drops them,
  their qstrs stay); the qstr pool (``micropython.qstr_info``) is shown on its own, because it
  grows by doubling and the module that crosses a pool's end pays for the next one. On the 64-bit
  unix port (the simulator's) and, when one is given or found (``--micropython32``, default
  /tmp/mpsrc/ports/unix/build-32/micropython), a 32-bit build as the chip is. Then how many new
  names fit before the next qstr pool is made, and its size (new names interned one by one).
- **runtime**: the soak's home (benchmarks/soak.py: four locks driven by hubd through the bridge
  as Bluetooth proxy, the alarm unit, LTE, link cuts) for ``--ops`` operations, with the bridge's
  health report tapped inside the firmware: at each report (every 5 s) the bridge prints its
  live heap after a collection, what its parts hold (the host link's queues, proxy connections,
  the alarm journal, the modem's buffers) and the heap's block map (``micropython.mem_info(1)``),
  from which this prints what kinds of object the live heap is made of at rest (no connection,
  the proxy made: the link's first report comes before it), with four connections, and at the
  lowest report; and health's own heap samples (every 5 s, link up or down: its heap_min) with
  the moment's link state, queues and connections. The tap is a function and a few names in the
  firmware's heap (its own cost is printed: "tap").

No assertions on numbers: it measures. ``--out`` writes the JSON (default
benchmarks/results/heap.json).

    .venv/bin/python benchmarks/heap.py                 # imports on both builds, a 200-op soak
    .venv/bin/python benchmarks/heap.py --imports-only
    .venv/bin/python benchmarks/heap.py --ops 600 --out /tmp/heap.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import soak as soak_bench  # noqa: E402
from hubctl import bundle  # noqa: E402
from simulator import bridge_device  # noqa: E402

MICROPYTHON32 = Path("/tmp/mpsrc/ports/unix/build-32/micropython")

#: The bridge's boot imports, in order (main, startup and what each imports, the alarm unit's and
#: LTE's parts, then the proxy's at hubd's first ble_* request, then the uplink's at hubd's first
#: uplink_* message), each listed after what it imports so that its figure is its own.
BOOT_ORDER = (
    # asyncio's core is imported by the boot code (it counts, but before this table starts); its
    # parts load at first use: Event, Lock, the streams.
    "asyncio.event", "asyncio.lock", "asyncio.stream",
    "log", "heap", "vital", "timed", "version", "wire", "wire.crc", "wire.cobs", "wire.hmac_sha256",
    "wire.frame", "wire.link", "wire.messages", "bridge", "devices", "health", "hostlink",
    "config", "ble_central", "wire.alarms", "wire.alarmunit", "flashlog", "alarm_journal",
    "alarm_unit", "alarms", "lte", "wire.dc09", "second_path", "startup", "ble_proxy",
    "ble_bonds", "wire.uplink", "uplink",
)
BOOT_ONLY = ("config", "startup")

#: mem_info(1)'s block map: a letter per 16-byte (32-bit) or 32-byte (64-bit) block, the head of
#: an allocation naming its type where MicroPython knows it.
BLOCK_KINDS = {"T": "tuple", "L": "list", "D": "dict", "S": "str/bytes", "A": "bytearray/array",
               "F": "float", "B": "function", "M": "module",
               "h": "other"}  # instances, coroutines and tasks, maps' tables, code, qstr pools

# What the firmware prints at each health report (the tap): a line of figures, then its block map.
_TAP = '''
import health as _tap_health
def _tap(self, _message=_tap_health.Health.message):
    import gc, micropython
    gc.collect()
    host = self._host
    link = host.link
    flow = self._flow
    modem = self._modem
    conns = self._central._conns
    notes = 0
    for c in conns.values():
        notes += len(c._notes)
    print("HEAPTAP", gc.mem_alloc(), gc.mem_free(), len(conns), link.state,
          len(link._queue), len(link._unacked), len(host._overflow),
          sum(len(p) for p in link._queue) + sum(len(p[1]) for p in link._unacked),
          notes, 0 if flow is None else len(flow.journal),
          0 if modem is None else len(modem._buf) + len(modem.rx))
    micropython.mem_info(1)
    print("HEAPTAP-END")
    return _message(self)
_tap_health.Health.message = _tap
def _tap_sample(self, _heap_free=_tap_health.Health._heap_free):
    # Health's own sample (every 5 s, link up or not, and at each report): what it saw, when.
    free = _heap_free(self)
    link = self._host.link
    central = self._central
    import health
    bridge = getattr(health, "_tap_bridge", None)
    proxy = None if bridge is None else bridge.proxy
    queued = connecting = busy = 0
    if proxy is not None:
        connecting = proxy._connecting
        for rec in proxy._conns.values():
            queued += len(rec[3])
            busy += 1 if rec[5] else 0
    notes = 0
    for c in central._conns.values():
        notes += len(c._notes)
    print("HEAPSAMPLE", free, len(central._conns), link.state, len(link._queue),
          len(link._unacked), len(self._host._overflow),
          sum(len(p) for p in link._queue) + sum(len(p[1]) for p in link._unacked)
          + sum(len(p) for p in self._host._overflow),
          queued, busy, connecting, 1 if central._ticking else 0,
          1 if central._pending is not None else 0, notes)
    return free
_tap_health.Health._heap_free = _tap_sample
import bridge as _tap_bridge_mod
def _tap_bridge_init(self, *a, _init=_tap_bridge_mod.Bridge.__init__, **k):
    _init(self, *a, **k)
    import health
    health._tap_bridge = self  # the proxy, once made, for the samples
_tap_bridge_mod.Bridge.__init__ = _tap_bridge_init
del _tap, _tap_sample, _tap_bridge_init, _tap_bridge_mod
def _tap_wrap(owner, name, label):
    # What one constructor (or the proxy's start) leaves live, after a collection each side.
    inner = getattr(owner, name)
    def wrapped(*a, **k):
        import gc
        gc.collect()
        before = gc.mem_alloc()
        r = inner(*a, **k)
        gc.collect()
        print("HEAPTAP-PART", label, gc.mem_alloc() - before)
        return r
    setattr(owner, name, wrapped)
import alarm_journal, alarm_unit, alarms, ble_central, bridge, devices, health, hostlink, lte
import second_path
for _o, _n, _l in ((ble_central.Central, "__init__",
                    "BLE central (and the bluetooth shim's BLE object, C on the chip)"),
                   (hostlink.HostLink, "__init__", "host link (engine, queues)"),
                   (devices.Devices, "__init__", "device reports"),
                   (alarm_journal.AlarmJournal, "__init__", "alarm journal"),
                   (alarms.AlarmFlow, "__init__", "alarm flow"),
                   (alarm_unit.UnitLink, "__init__", "alarm unit link"),
                   (lte.Lte, "__init__", "LTE modem"),
                   (lte.Lte, "start", "LTE modem's reader task"),
                   (second_path.SecondPath, "__init__", "second path (DC-09)"),
                   (bridge.Bridge, "__init__", "bridge (routing)"),
                   (health.Health, "__init__", "health"),
                   (bridge.Bridge, "_start_proxy", "Bluetooth proxy (imports, its tasks)")):
    _tap_wrap(_o, _n, _l)
del _o, _n, _l, _tap_wrap, alarm_journal, alarm_unit, alarms, ble_central, bridge, devices
del health, hostlink, lte, second_path
import gc, micropython
gc.collect()
print("HEAPTAP-BASE")
micropython.mem_info(1)
print("HEAPTAP-END")
del gc, micropython
'''
#: Health's sample line (every 5 s and at each report): free heap, then what was in flight.
_SAMPLE_FIELDS = ("free", "connections", "link_state", "link_queue", "link_unacked", "overflow",
                  "queued_bytes", "proxy_queued", "proxy_busy", "proxy_connecting", "clock_ticking",
                  "gap_connect_pending", "notifications")
PROXY_PART = "Bluetooth proxy"  # the tap's label for the proxy's start
_TAP_FIELDS = ("alloc", "free", "connections", "link_state", "link_queue", "link_unacked",
               "overflow", "queued_bytes", "notifications", "alarm_journal", "modem_bytes")


def boot_code(image: Path, size: int) -> str:
    """The simulator's boot code without ``import main`` (the firmware's heap begins there)."""
    code = bridge_device._boot_code(image, size)
    assert code.endswith("import main\n"), "simulator/bridge_device.py's boot code changed shape"
    return code[:-len("import main\n")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(bridge_device.SHIMS), ".frozen"])
    return env


def measure_imports(binary: str, flashed: bundle.Bundle) -> dict[str, Any]:
    """Each module's import cost (bytes live after a collection) in BOOT_ORDER, and the qstr
    pool's bytes after each."""
    image = flashed.manifest.romfs
    code = boot_code(flashed.image, image.size)
    code += ("import gc, micropython\ngc.collect()\n_base = _prev = gc.mem_alloc()\n"
             "micropython.qstr_info()\n")
    present = {f.path[:-len(".mpy")].replace("/", ".") for f in flashed.manifest.files
               if f.path.endswith(".mpy")}
    for name in BOOT_ORDER:
        if name != "wire" and not name.startswith("asyncio.") and name not in present:
            continue  # an older firmware's (a before/after): it has no such module
        code += (f"import {name}\ngc.collect()\n_a = gc.mem_alloc()\n"
                 f"print('IMPORT', {name!r}, _a - _prev, _a - _base)\n_prev = _a\n"
                 f"micropython.qstr_info()\n")
    # The qstr pools' headroom: new names interned one by one (getattr interns its name and
    # stores nothing) until the heap jumps by a new pool's size (docs/architecture.md, "Heap").
    code += ("_o = object()\ngc.collect()\n_prev = gc.mem_alloc()\n"
             "for _i in range(4000):\n"
             "    getattr(_o, 'zq_probe_%d' % _i, None)\n"
             "    gc.collect()\n"
             "    _a = gc.mem_alloc()\n"
             "    if _a - _prev > 1024:\n"
             "        print('QSTR_HEADROOM', _i, _a - _prev)\n"
             "        break\n"
             "    _prev = _a\n")
    heap = bridge_device.DEFAULT_HEAP + image.size + bridge_device.IMAGE_OVERHEAD \
        + bridge_device.HARDWARE_ALLOWANCE + 64 * 1024
    # In a directory of its own, as the simulator's bridge runs in its flash's: '' comes first
    # in sys.path, and this checkout's wire/ would be imported from source instead of the image.
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as cwd:
        proc = subprocess.run([binary, "-X", f"heapsize={heap}", "-c", code], env=_env(), cwd=cwd,
                              capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary}: {proc.stdout[-500:]}{proc.stderr[-500:]}")
    modules: list[dict[str, Any]] = []
    qstr_bytes = None
    headroom: dict[str, int] | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("QSTR_HEADROOM "):
            _, names, pool = line.split()
            headroom = {"names": int(names), "next_pool_bytes": int(pool)}
            continue
        m = re.match(r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), "
                     r"n_total_bytes=(\d+)", line)
        if m:
            if modules:
                modules[-1]["qstrs"] = int(m.group(2))
                modules[-1]["qstr_pool_bytes"] = int(m.group(4)) - qstr_bytes
            qstr_bytes = int(m.group(4))
            continue
        if line.startswith("IMPORT "):
            _, name, own, total = line.split()
            modules.append({"module": name, "bytes": int(own), "cumulative": int(total),
                            "boot_only": name in BOOT_ONLY})
    return {"binary": binary, "modules": modules, "qstr_headroom": headroom,
            "total": modules[-1]["cumulative"] if modules else None,
            "kept": sum(m["bytes"] - (m.get("qstr_pool_bytes", 0) if m["boot_only"] else 0)
                     for m in modules)}


def _flat(block_map: list[str]) -> str:
    return "".join(m.group(1) for line in block_map
                   for m in [re.match(r"^[0-9a-f]+: (.*)$", line)] if m)


def block_size(block_map: list[str]) -> int:
    """Bytes per GC block (16 on 32-bit, 32 on 64-bit): the map's rows are 64 blocks apart."""
    addrs = [int(m.group(1), 16) for line in block_map
             for m in [re.match(r"^([0-9a-f]+): ", line)] if m]
    return min(b - a for a, b in zip(addrs, addrs[1:])) // 64 if len(addrs) > 1 else 32


def census(block_map: list[str], block: int, base: list[str]) -> dict[str, Any]:
    """What mem_info(1)'s block map says the firmware's live heap is made of: bytes by kind, and
    the ten largest allocations (kind, bytes). Allocations that were there before main.py (the
    same blocks in ``base``: the image's buffer, the shims' share) are left out."""
    flat = _flat(block_map)
    before = _flat(base)
    by_kind: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    largest: list[tuple[int, str]] = []
    i = 0
    while i < len(flat):
        kind = flat[i]
        if kind in ".=":
            i += 1
            continue
        j = i + 1
        while j < len(flat) and flat[j] == "=":
            j += 1
        if before[i:j] == flat[i:j] and before[j:j + 1] != "=":
            i = j
            continue
        n = (j - i) * block
        name = BLOCK_KINDS.get(kind, kind)
        by_kind[name] += n
        sizes[f"{name} {'1 block' if j - i == 1 else '2-7 blocks' if j - i < 8 else '8+ blocks'}"] += n
        largest.append((n, name))
        i = j
    largest.sort(reverse=True)
    return {"bytes_by_kind": dict(by_kind.most_common()), "bytes_by_size": dict(sizes.most_common()),
            "largest": largest[:10]}


class TapLog(soak_bench.BridgeLog):
    """The bridge's log, keeping the tap's reports (figures and block map) out of the file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reports: list[dict[str, Any]] = []
        self.base: list[str] = []
        self.parts: list[tuple[str, int]] = []  # (part, bytes its constructor left live)
        # How many reports came before the proxy was made (at hubd's first ble_* request, just
        # after the link's first report): "at rest" is a report after it.
        self.proxy_made: int | None = None
        self.samples: list[dict[str, Any]] = []  # health's heap samples (every 5 s)
        self._map: list[str] | None = None
        self._figures: dict[str, Any] | None = None

    def __call__(self, line: str) -> None:
        if line.startswith("HEAPTAP-BASE"):
            self._figures = {"base": True}
            self._map = []
            return
        if line.startswith("HEAPTAP-END"):
            assert self._figures is not None and self._map is not None
            if self._figures.get("base"):
                self.base = self._map  # the boot's before main.py: the image, the shims
                self._map = self._figures = None
                return
            self._figures["map"] = self._map
            self.reports.append(self._figures)
            self._map = self._figures = None
            return
        if line.startswith("HEAPSAMPLE "):
            values = line.split()[1:]
            self.samples.append({**{k: (v if k == "link_state" else int(v))
                                    for k, v in zip(_SAMPLE_FIELDS, values)}, "t": time.time()})
            return
        if line.startswith("HEAPTAP-PART "):
            _, rest = line.split(" ", 1)
            label, n = rest.rsplit(" ", 1)
            self.parts.append((label, int(n)))
            if label.startswith(PROXY_PART) and self.proxy_made is None:
                self.proxy_made = len(self.reports)
            return
        if line.startswith("HEAPTAP "):
            values = line.split()[1:]
            self._figures = {k: (v if k == "link_state" else int(v))
                             for k, v in zip(_TAP_FIELDS, values)}
            self._figures["t"] = time.time()
            self._map = []
            return
        if self._map is not None:
            self._map.append(line)
            return
        super().__call__(line)


def measure_runtime(ops: int, seed: int, keep: bool, uplink: str = "broadband") -> dict[str, Any]:
    """A soak of ``ops`` operations with the tap in the firmware: the reports, and the census at
    rest, with four connections and at the lowest report. ``uplink`` "lte": hubd's broker
    through the bridge's modem (the soak's ``--uplink lte``)."""
    original = bridge_device._boot_code
    bridge_device._boot_code = lambda image, size: original(image, size).replace(
        "import main\n", _TAP + "import main\n")
    work = Path(tempfile.mkdtemp(prefix="bench-heap-"))
    try:
        signal.signal(signal.SIGTERM, soak_bench._terminated)
        key = soak_bench.BackendKey("heap", soak_bench.signing.generate_private_key())
        broker = soak_bench.Mosquitto(work / "mosquitto")
        broker.start()
        soak = soak_bench.Soak(ops, seed, work, broker=broker if uplink == "lte" else None)
        tap = TapLog(work / "bridge.log")
        soak.bridge_log.close()
        soak.bridge_log = tap
        soak.home.home.bridge._on_log = tap  # the home was made with the soak's own log
        cut_every = max(60, ops // 25)
        with soak_bench.running(soak, broker, key, work):  # closes soak.bridge_log: the tap
            result = asyncio.run(soak_bench.run(soak, broker, key, cut_every))
    finally:
        bridge_device._boot_code = original
    reports = tap.reports
    block = block_size(tap.base)
    rows = [{k: v for k, v in r.items() if k != "map"} for r in reports]
    lowest_sample = min(tap.samples, key=lambda x: x["free"]) if tap.samples else None
    out: dict[str, Any] = {"ops": ops, "seed": seed, "uplink": uplink, "reports": rows, "parts": tap.parts,
                           "samples": tap.samples, "lowest_sample": lowest_sample,
                           "soak": {k: result[k] for k in ("heap", "bridge", "ok", "violations")}}
    if reports:
        lowest = min(reports, key=lambda r: r["free"])
        # At rest: no connection, link up, the proxy made (the link's first report comes before
        # hubd's first ble_* request makes it: that one lacks the proxy's ~4 KB).
        made = len(reports) if tap.proxy_made is None else tap.proxy_made
        rest = [r for r in reports[made:] if r["connections"] == 0 and r["link_state"] == "up"]
        four = [r for r in reports if r["connections"] == 4]
        out["lowest"] = {**{k: v for k, v in lowest.items() if k != "map"},
                         "census": census(lowest["map"], block, tap.base)}
        if rest:
            r = max(rest, key=lambda r: r["free"])
            out["at_rest"] = {**{k: v for k, v in r.items() if k != "map"},
                              "census": census(r["map"], block, tap.base)}
        if four:
            r = sorted(four, key=lambda r: r["free"])[len(four) // 2]
            out["four_connections"] = {**{k: v for k, v in r.items() if k != "map"},
                                       "census": census(r["map"], block, tap.base)}
            out["four_connections"]["median_free"] = statistics.median(r["free"] for r in four)
    # The logs are kept when something went wrong, not for the heap's verdict: that is measured.
    wrong = [v for v in result["violations"] if not v.startswith(soak_bench.HEAP_SHORT)]
    if not wrong and not keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        out["work"] = str(work)
    return out


def report(result: dict[str, Any]) -> None:
    for build, imp in result["imports"].items():
        print(f"imports ({build}: {imp['binary']}), live bytes after a collection, boot order:")
        print(f"  {'module':<18} {'bytes':>7} {'qstr pool':>9} {'cumulative':>10}")
        for m in imp["modules"]:
            print(f"  {m['module']:<18} {m['bytes']:>7} {m.get('qstr_pool_bytes', 0):>9} "
                  f"{m['cumulative']:>10}" + ("  (boot only: dropped, qstrs stay)"
                                              if m["boot_only"] else ""))
        print(f"  all {imp['total']} B; kept after boot (boot-only modules' own figures but their qstr pools left out) "
              f"{imp['kept']} B")
        room = imp.get("qstr_headroom")
        if room is not None:
            print(f"  qstr pools: {room['names']} new names fit; the next one makes a pool of "
                  f"{room['next_pool_bytes']} B at once")
    rt = result.get("runtime")
    if not rt:
        return
    print(f"runtime: soak of {rt['ops']} operations, seed {rt['seed']}, {len(rt['reports'])} "
          f"tapped health reports; soak ok: {rt['soak']['ok']}")
    low = rt.get("lowest_sample")
    if low is not None:
        print(f"  health's lowest sample ({len(rt['samples'])} samples, every 5 s and at each "
              f"report): free {low['free']} B; {low['connections']} connection(s), link "
              f"{low['link_state']}, link queue {low['link_queue']} + {low['link_unacked']} in "
              f"flight, overflow {low['overflow']} ({low['queued_bytes']} B of payloads); proxy "
              f"requests queued {low['proxy_queued']} ({low['proxy_busy']} waiting for their "
              f"event), connecting {low['proxy_connecting']}, the GATT clock "
              f"{'ticking' if low['clock_ticking'] else 'stopped'}, a gap_connect "
              f"{'pending' if low['gap_connect_pending'] else 'not pending'}, notifications "
              f"queued {low['notifications']}")
        print("  the ten lowest samples: " + "; ".join(
            f"{x['free']} B ({x['connections']} conn, link {x['link_state']} "
            f"{x['link_queue']}+{x['link_unacked']}+{x['overflow']} {x['queued_bytes']} B, proxy "
            f"{x['proxy_queued']}q {x['proxy_busy']}b {x['proxy_connecting']}c, clock "
            f"{x['clock_ticking']}, notes {x['notifications']})"
            for x in sorted(rt["samples"], key=lambda x: x["free"])[:10]))
        by_state: dict[str, list[int]] = {}
        for x in rt["samples"]:
            by_state.setdefault(f"link {x['link_state']}, {x['connections']} connection(s)",
                                []).append(x["free"])
        for k, v in sorted(by_state.items()):
            print(f"    {k}: {len(v)} samples, free median {statistics.median(v):.0f} B, "
                  f"least {min(v)} B")
    print("  what each part's constructor left live (bytes, first boot):")
    seen = set()
    for label, n in rt["parts"]:
        if label not in seen:
            seen.add(label)
            print(f"    {n:>7}  {label}")
    for label in ("at_rest", "four_connections", "lowest"):
        r = rt.get(label)
        if r is None:
            continue
        print(f"  {label.replace('_', ' ')}: live {r['alloc']} B, free {r['free']} B; "
              f"{r['connections']} connection(s), link {r['link_state']}, link queue "
              f"{r['link_queue']} + {r['link_unacked']} in flight ({r['queued_bytes']} B), "
              f"overflow {r['overflow']}, notifications {r['notifications']}, alarm journal "
              f"{r['alarm_journal']}, modem buffers "
              f"{r['modem_bytes']} B")
        for kind, n in r["census"]["bytes_by_kind"].items():
            print(f"      {n:>7} B  {kind}")
        print("      largest: " + ", ".join(f"{n} B {k}" for n, k in r["census"]["largest"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200, help="the soak's operations (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--imports-only", action="store_true", help="no soak")
    parser.add_argument("--runtime-only", action="store_true", help="the soak only, no imports")
    parser.add_argument("--micropython32", type=Path, default=MICROPYTHON32,
                        help="a 32-bit MicroPython for the imports' second column (skipped when "
                             "absent)")
    parser.add_argument("--keep", action="store_true", help="keep the soak's logs")
    parser.add_argument("--uplink", choices=("broadband", "lte"), default="broadband",
                        help="lte: hubd's broker through the bridge's LTE modem, as soak.py's")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/heap.json")
    args = parser.parse_args(argv)
    flashed = bundle.Bundle.load(bridge_device.compiled_firmware())
    result: dict[str, Any] = {
        "benchmark": "heap: the bridge firmware's live heap by module and by part",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": flashed.manifest.bundle_id,
        "imports": {} if args.runtime_only else {
            "64-bit": measure_imports(bridge_device.micropython_binary(), flashed)},
    }
    if args.runtime_only:
        pass
    elif args.micropython32.is_file() and os.access(args.micropython32, os.X_OK):
        result["imports"]["32-bit"] = measure_imports(str(args.micropython32), flashed)
    else:
        print(f"NO 32-bit column: {args.micropython32} is not an executable MicroPython (build "
              "one as docs/architecture.md, \"Heap\", says, and pass --micropython32)", flush=True)
    if not args.imports_only:
        result["runtime"] = measure_runtime(args.ops, args.seed, args.keep, args.uplink)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
