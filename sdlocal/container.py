"""The Docker image's entry point: always ``--listen --api`` behind a login, then the normal launcher.

A container's port is published to the network, so the image never serves without a login. The logins come,
in this order, from ``SDLOCAL_GRADIO_AUTH`` (``user:password[,user2:password2]``), a Docker secret file (default
``/run/secrets/sdlocal_auth``, one ``user:password`` per line; ``SDLOCAL_AUTH_SECRET`` names another path), or
``--gradio-auth``/``--gradio-auth-path`` in the command; with none of them the app generates a password and prints
it once at start, as ``--listen`` does everywhere. ``--no-auth`` is refused here with the reason.

The launcher then runs as it does from ``webui.sh`` but with ``--skip-install``: the image already holds the
lock's packages (and the container's user cannot change them), so it checks them and the machine, and says what
differs, without touching pip. Standard library only, like ``launch.py``: this runs before the packages are checked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRET = Path("/run/secrets/sdlocal_auth")
SECRET_VARIABLE = "SDLOCAL_AUTH_SECRET"
ALWAYS = ("--skip-install", "--listen", "--api")
AUTH_FLAGS = ("--gradio-auth", "--gradio-auth-path")
TRUE_WORDS = {"1", "true", "yes", "on"}


class ContainerError(ValueError):
    """A start the container refuses: the message names the setting and what to do instead."""


def launch_command(argv: Sequence[str], env: Mapping[str, str],
                   python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The launcher's command line and environment for a container started with ``argv`` under ``env``.

    Empty ``SDLOCAL_*`` variables are dropped: compose writes ``${VAR:-}`` as an empty string for a variable the
    user did not set, and an empty value means "not given", not "an empty login".
    """
    child = {key: value for key, value in env.items() if not (key.startswith("SDLOCAL_") and value == "")}
    if "--no-auth" in argv or child.get("SDLOCAL_NO_AUTH", "").strip().lower() in TRUE_WORDS:
        raise ContainerError(
            "--no-auth / SDLOCAL_NO_AUTH: the container serves on the network, so it always asks for a login. "
            "Fix: set SDLOCAL_GRADIO_AUTH=user:password (or mount a Docker secret at /run/secrets/sdlocal_auth), "
            "or leave both unset to get a generated password in the log.")
    secret_named = SECRET_VARIABLE in child
    secret = Path(child.pop(SECRET_VARIABLE, str(DEFAULT_SECRET)))
    has_login = "SDLOCAL_GRADIO_AUTH" in child or "SDLOCAL_GRADIO_AUTH_PATH" in child or \
        any(arg == flag or arg.startswith(flag + "=") for arg in argv for flag in AUTH_FLAGS)
    if secret.is_file():
        if not has_login:
            child["SDLOCAL_GRADIO_AUTH_PATH"] = str(secret)
    elif secret_named:
        raise ContainerError(f"{SECRET_VARIABLE}={secret}: no such file in the container. Fix: mount the secret "
                             "there (compose: secrets:), or unset the variable to use SDLOCAL_GRADIO_AUTH.")
    command = [python, str(ROOT / "launch.py"), *ALWAYS, *(arg for arg in argv if arg not in ALWAYS)]
    return command, child


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with the launcher (so signals from ``docker stop`` reach the server directly)."""
    try:
        command, env = launch_command(list(sys.argv[1:] if argv is None else argv), os.environ)
    except ContainerError as exc:
        print(f"[sdlocal] FAILURE: {exc}", file=sys.stderr, flush=True)
        return 2
    sys.stdout.flush()
    os.execve(command[0], command, env)
    return 0  # not reached: execve replaces the process


if __name__ == "__main__":
    sys.exit(main())
