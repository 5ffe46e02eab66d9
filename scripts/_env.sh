# Shared by scripts/demo, scripts/test and scripts/flake-hunt: make sure .venv exists and holds this project.
# Sourced, not run. Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))'; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 to 3.13 is needed; install python3.11 (apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    PY="$(pick_python)"
    echo "==> creating .venv with $("$PY" --version)"
    "$PY" -m venv .venv || {
        echo "error: could not create a virtual environment; on Debian: apt-get install python3-venv" >&2
        exit 1
    }
fi

STAMP=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$STAMP" ]; then
    echo "==> installing the project and its test and simulator extras into .venv (first run: about a minute)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    rm -f .venv/.installed-*
    touch "$STAMP"
fi

# The tests start their own private Mosquitto; install Debian's when it is absent (as root).
need_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Debian's mosquitto (the tests start their own private broker)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    else
        echo "error: the tests need the Mosquitto broker: sudo apt-get install mosquitto" >&2
        exit 1
    fi
}
