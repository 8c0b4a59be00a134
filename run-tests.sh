#!/usr/bin/env bash
# Run sdlocal's tests in their own environment: ./run-tests.sh [pytest arguments]
# Works on a fresh clone: it makes .venv-test (TEST_VENV_DIR overrides) with the exact versions of
# requirements-test.lock (the app's lock plus pytest, playwright and ruff), then runs pytest.
# The browser test uses Chromium from the system (/usr/bin/chromium, or SDLOCAL_CHROMIUM).
set -uo pipefail
cd "$(dirname "$0")" || exit 1
VENV="${TEST_VENV_DIR:-.venv-test}"
PY_IN_VENV="$VENV/bin/python"

supported_version() {
    local v
    v="$("$1" -c 'import sys; v = sys.version_info[:2]; print("%d.%d" % v) if (3, 10) <= v <= (3, 12) else None' \
        2>/dev/null)"
    case "$v" in 3.10|3.11|3.12) echo "$v" ;; esac
}

if ! { [ -x "$PY_IN_VENV" ] && [ -n "$(supported_version "$PY_IN_VENV")" ]; }; then
    CANDIDATES=()
    for cmd in ${PYTHON:-python3.12 python3.11 python3.10 python3}; do
        command -v "$cmd" >/dev/null 2>&1 && [ -n "$(supported_version "$cmd")" ] && CANDIDATES+=("$(command -v "$cmd")")
    done
    if [ ${#CANDIDATES[@]} -eq 0 ]; then
        echo "run-tests.sh: needs Python 3.10, 3.11 or 3.12" >&2
        exit 1
    fi
    PY="${CANDIDATES[0]}"
    [ ${#CANDIDATES[@]} -gt 1 ] && PY="$("$PY" launch.py --pick-python "${CANDIDATES[@]}")"
    echo "[run-tests] creating $VENV with $("$PY" --version 2>&1)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || exit 1
fi

# Same check-and-install as webui.sh, against the test lock: fast when nothing differs.
"$PY_IN_VENV" launch.py --install-only --lock requirements-test.lock || exit 1

export HF_HUB_OFFLINE=1
"$PY_IN_VENV" -m pytest "$@"
status=$?
if [ $status -eq 5 ]; then
    echo "[run-tests] pytest collected no tests: treating that as a failure" >&2
    exit 1
fi
exit $status
