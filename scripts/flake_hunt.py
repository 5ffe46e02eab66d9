"""Hunt flaky tests: run chosen tests many times on a loaded machine and tally every failure.

CI shares 2 cores, so a race that never shows on a quiet laptop fails a submission there. This
runs pytest on the given tests ``--runs`` times in a row while ``--hog`` processes spin on the
CPU beside them (one per core by default), and prints, per test, how often it failed, with each
failure's first line, the seed to replay it (a scenario that draws random numbers records its seed
as a ``seed`` property: see hil_tests/conftest.py) and the log of that run.

    scripts/flake-hunt hil_tests/test_alarms.py hil_tests/test_at_most_once.py --runs 20
    scripts/flake-hunt 'hil_tests/test_alarms.py::test_with_hubd_killed_the_press_still_reaches_the_centre_over_lte' -n 50
    scripts/flake-hunt tests/wire/test_link.py --hog 0 -- -x      # no load; after --: more pytest options

Every run's output and JUnit XML go to ``build/flake-hunt/``, and the tally to
``build/flake-hunt/tally.json``. Exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOG = "while True:\n    pass\n"


@dataclass
class Failure:
    run: int
    message: str
    seed: str | None
    log: str


@dataclass
class Tally:
    test: str
    runs: int = 0
    failures: list[Failure] = field(default_factory=list)


def _parse(xml_path: Path, run: int, log: Path, tallies: dict[str, Tally]) -> tuple[int, int]:
    """Add one run's JUnit XML to the tallies; returns (passed, failed) of that run."""
    passed = failed = 0
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        tally = tallies.setdefault(test, Tally(test))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            continue
        tally.runs += 1
        if problem is None:
            passed += 1
            continue
        failed += 1
        seed = next((p.get("value") for p in case.iter("property") if p.get("name") == "seed"), None)
        text = problem.get("message") or (problem.text or "").strip()
        tally.failures.append(Failure(run, text.splitlines()[0][:300] if text else problem.tag,
                                      seed, str(log)))
    return passed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/flake-hunt", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to pytest. Replay a failure with its seed: "
               "FAULT_SEED=<seed> ./scripts/test <test>.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", nargs="+", help="test files or node ids, as pytest takes them")
    parser.add_argument("-n", "--runs", type=int, default=20, help="how many times (default 20)")
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 2,
                        help="CPU-spinning processes beside the tests (default: one per core; 0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "flake-hunt",
                        help="where run logs and the tally go (default build/flake-hunt)")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop after the first failing run")
    own = list(argv if argv is not None else sys.argv[1:])
    extra: list[str] = []
    if "--" in own:
        cut = own.index("--")
        own, extra = own[:cut], own[cut + 1:]
    args = parser.parse_args(own)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    def shown(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    # A hunt stopped with SIGTERM (kill, a CI timeout) still stops its hogs (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tallies: dict[str, Tally] = {}
    failed_runs = 0
    started = time.monotonic()
    print(f"flake hunt: {args.runs} runs of {' '.join(args.tests)} with {max(0, args.hog)} CPU "
          f"hog(s) on {os.cpu_count()} cores; logs in {shown(args.out)}/", flush=True)
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        hogs.extend(subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(max(0, args.hog)))
        for run in range(1, args.runs + 1):
            log = args.out / f"run-{run:03d}.log"
            xml = args.out / f"run-{run:03d}.xml"
            t0 = time.monotonic()
            with log.open("wb") as out:
                code = subprocess.call(
                    [sys.executable, "-m", "pytest", *args.tests, "-q", "-p", "no:cacheprovider",
                     "-o", "junit_logging=system-out", f"--junitxml={xml}",
                     f"--hil-report={args.out / f'run-{run:03d}-hil.json'}", *extra],
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if not xml.exists():
                print(f"FAIL run {run}/{args.runs}: pytest exited {code} without a report; see {shown(log)}")
                failed_runs += 1
                if args.stop_on_failure:
                    break
                continue
            passed, failed = _parse(xml, run, log, tallies)
            failed_runs += bool(failed or code not in (0, 5))
            mark = "ok  " if not failed and code == 0 else "FAIL"
            print(f"{mark} run {run}/{args.runs}: {passed} passed, {failed} failed "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
            for test, tally in tallies.items():
                for f in tally.failures:
                    if f.run == run:
                        seed = f" [seed {f.seed}: FAULT_SEED={f.seed}]" if f.seed else ""
                        print(f"       {test}{seed}\n         {f.message}", flush=True)
            if failed and args.stop_on_failure:
                break
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    print(f"\ntally after {time.monotonic() - started:.0f} s ({len(hogs)} hog(s)):")
    width = max((len(t) for t in tallies), default=10)
    for test, tally in sorted(tallies.items()):
        print(f"  {len(tally.failures):3d} failed of {tally.runs:3d}  {test:<{width}}")
    (args.out / "tally.json").write_text(json.dumps(
        {"tests": args.tests, "runs": args.runs, "hogs": len(hogs), "cores": os.cpu_count(),
         "failed_runs": failed_runs, "tally": [asdict(t) for t in tallies.values()]}, indent=1) + "\n")
    print(f"{failed_runs} of {args.runs} runs failed; tally in {shown(args.out / 'tally.json')}")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
