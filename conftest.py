"""Root conftest: puts the repository on sys.path and shares fixtures with tests/ and hil_tests/."""

import pytest

pytest_plugins = ["tests.fixtures", "tests.local_hub", "hil_tests.report", "pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop target")
    group.addoption("--target", default="sim",
                    help="'sim' (default: the simulated bridge) or a serial port with a real "
                         "bridge, e.g. /dev/ttyUSB0")
    group.addoption("--bench-locks", default="front-door",
                    help="comma-separated lock ids of the bench, each paired with hubd "
                         "(only with a serial --target)")
    group.addoption("--bench-state", default=None,
                    help="a hubd state directory holding the bench locks' pairings, made by "
                         "hubctl pair against this bench (only with a serial --target)")
    group.addoption("--bluetooth", default="bridge", choices=("bridge", "adapter"),
                    help="how hubd reaches the locks in every scenario: 'bridge' (default: the "
                         "bridge's Bluetooth proxy) or 'adapter' (direct mode: the hub's own "
                         "adapter, on the simulator the simulated air; docs/direct-mode.md)")
    group.addoption("--bench-link-key", default=None,
                    help="the bench bridge's serial link key: link.key in its bridge.json, 64 hex "
                         "digits (only with a serial --target)")



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked ``long`` first, the longest of them (``long(seconds)``) ahead, the rest
    in their order: pytest-xdist hands tests out in this order, so the longest start at once on
    every worker instead of one of them, drawn last, running alone while the others are idle."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        long = item.get_closest_marker("long")
        return long is None, -float(long.args[0]) if long is not None and long.args else 0.0

    items.sort(key=order)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared_home: the module's hil scenarios share one hub, reset and checked before "
                   "each (hil_tests/conftest.py SharedHub); its home marker is the module's")
    target = config.getoption("--target")
    workers = config.getoption("numprocesses", default=None)
    if target != "sim" and workers not in (None, 0):
        raise pytest.UsageError(f"--target {target} is one bridge on one serial port: its "
                                f"scenarios cannot run on {workers} workers at once; add -n 0")
