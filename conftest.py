"""Root conftest: puts the repository on sys.path and shares fixtures with tests/ and hil_tests/."""

pytest_plugins = ["tests.fixtures"]
