#!/usr/bin/env bash
# Start sdlocal: find a supported Python, make the venv, then launch.py installs what the lock says and serves.
# Usage: ./webui.sh [flags]   (./webui.sh --help lists them; put your usual flags in webui-user.sh)
# Keep step-for-step alike with webui.bat.

# 1. Work from this script's own folder (double-click, or run from anywhere).
cd "$(dirname "$0")" || exit 1

# 2. Optional user settings: COMMANDLINE_ARGS, VENV_DIR, PYTHON, TORCH_INDEX_URL.
if [ -f webui-user.sh ]; then
    # shellcheck disable=SC1091
    . ./webui-user.sh
fi
# launch.py reads TORCH_INDEX_URL from the environment, so a plain assignment in webui-user.sh must reach it too.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    export TORCH_INDEX_URL
fi
VENV_DIR="${VENV_DIR:-venv}"
SUPPORTED="3.10, 3.11 or 3.12"

say() { echo "[sdlocal] $*"; }
fail() { echo "[sdlocal] ERROR: $*" >&2; exit 1; }

# Prints "3.11" when $1 runs and is a supported version; nothing otherwise.
supported_version() {
    local v
    v="$("$1" -c 'import sys; v = sys.version_info[:2]; print("%d.%d" % v) if (3, 10) <= v <= (3, 12) else None' \
        2>/dev/null)"
    case "$v" in 3.10|3.11|3.12) echo "$v" ;; esac
}

VENV_PY="$VENV_DIR/bin/python"
# 3. Second start: the venv exists and works, so no probing and no venv creation.
if [ -x "$VENV_PY" ] && [ -n "$(supported_version "$VENV_PY")" ]; then
    :
else
    # 4. Find supported Pythons, newest first: 3.12, 3.11, 3.10, then python3 (or $PYTHON if set).
    CANDIDATES=()
    FOUND_OTHER=""
    for cmd in ${PYTHON:-python3.12 python3.11 python3.10 python3}; do
        command -v "$cmd" >/dev/null 2>&1 || continue
        if [ -n "$(supported_version "$cmd")" ]; then
            CANDIDATES+=("$(command -v "$cmd")")
        else
            other="$("$cmd" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"
            [ -n "$other" ] && FOUND_OTHER="$FOUND_OTHER $cmd=$other"
        fi
    done
    if [ ${#CANDIDATES[@]} -eq 0 ]; then
        [ -n "$FOUND_OTHER" ] && say "found unsupported Python:$FOUND_OTHER"
        fail "sdlocal needs Python $SUPPORTED. Install one (e.g. from python.org or your package manager) and run ./webui.sh again."
    fi
    # 5. Choose among them: without a GPU torch has a build for (NVIDIA; AMD with ROCm on Linux) prefer one that gets
    #    torch's CPU build (see launch.py --pick-python).
    PY="${CANDIDATES[0]}"
    if [ ${#CANDIDATES[@]} -gt 1 ]; then
        PY="$("$PY" launch.py --pick-python "${CANDIDATES[@]}")" || fail "could not choose a Python"
    fi
    # 6. Create the venv.
    say "creating the virtual environment in $VENV_DIR with $("$PY" --version 2>&1)"
    rm -rf "$VENV_DIR"
    "$PY" -m venv "$VENV_DIR" || fail "could not create $VENV_DIR. On Debian/Ubuntu: sudo apt install python3-venv"
fi

# 7. launch.py checks the pinned packages (installing what differs), runs the doctor, then serves.
# shellcheck disable=SC2086
exec "$VENV_PY" launch.py "$@" $COMMANDLINE_ARGS
