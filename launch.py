"""Start sdlocal: check the environment against the lock, install only what differs, then run the app.

Run by ``webui.sh`` / ``webui.bat`` inside the venv (or by hand: ``python launch.py [flags]``). Until the pinned
packages are verified this file uses only the standard library (and ``sdlocal.preflight``, which does too), so
it can report and repair a broken environment instead of failing on an import.

Launcher flags (all other flags go to the app; ``python launch.py --help`` lists every one):
  --skip-install           check the installed versions, change nothing
  --torch-index-url URL    install torch from URL (also TORCH_INDEX_URL); reinstalls torch if its build differs
  --pick-python PY...      (used by webui.sh/.bat) print the Python to build a new venv with
  --install-only           (used by run-tests.sh) make the environment match the lock, then exit
  --lock FILE              the lock to check against (default requirements.lock)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdlocal import preflight  # noqa: E402  (standard library only)


def say(message: str) -> None:
    print(f"[sdlocal] {message}", flush=True)


def take_option(argv: list[str], name: str) -> str | None:
    """Remove ``--name VALUE`` / ``--name=VALUE`` from argv and return VALUE (None if absent)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def wants_xformers(argv: list[str]) -> bool:
    if "--xformers" in argv:
        return True
    for i, arg in enumerate(argv):
        if arg == "--attention" and i + 1 < len(argv) and argv[i + 1] == "xformers":
            return True
        if arg == "--attention=xformers":
            return True
    return os.environ.get("SDLOCAL_ATTENTION") == "xformers"


def ensure_environment(skip_install: bool, torch_index: str | None, xformers: bool,
                       lock: Path = preflight.LOCK_FILE) -> bool:
    """Compare the installed packages with the lock and install what differs; False when it cannot be fixed."""
    started = time.monotonic()
    try:
        pins = preflight.read_lock(lock)
    except (OSError, ValueError) as exc:
        say(f"FAILURE: cannot read the lock file: {exc}")
        return False
    has_nvidia = preflight.has_nvidia_gpu()
    if xformers:
        if has_nvidia:
            name, _, version = preflight.XFORMERS_PIN.partition("==")
            pins[name] = version
        else:
            say("WARNING: --xformers needs an NVIDIA GPU; not installing xformers (PyTorch SDPA is used instead).")
    override = torch_index or os.environ.get("TORCH_INDEX_URL") or None
    mismatches = preflight.compare(pins)
    rebuild = plan_torch_rebuild(pins, mismatches, override)
    specs = [f"{m.name}=={m.pinned}" for m in mismatches] + ([rebuild.spec] if rebuild and rebuild.spec else [])
    if not specs:
        say(f"Environment: all {len(pins)} pinned packages match the lock ({time.monotonic() - started:.1f} s).")
        ensure_self_installed(skip_install)
        return True
    report_mismatches(mismatches)
    if skip_install:
        say(f"--skip-install: {len(specs)} package(s) differ from the lock or the asked torch build and were left "
            "as they are. Run without --skip-install to fix them.")
        return True
    index = override if rebuild and rebuild.spec else None
    if any(m.name == "torch" for m in mismatches):
        index = choose_index(pins["torch"], has_nvidia, override)
    if not install(specs, index, lock):
        return False
    if not verify(pins, rebuild):
        return False
    say(f"Environment ready: {len(specs)} package(s) installed in {time.monotonic() - started:.0f} s.")
    ensure_self_installed(skip_install)
    return True


def plan_torch_rebuild(pins: dict[str, str], mismatches: list[preflight.Mismatch],
                       override: str | None) -> preflight.TorchRebuild | None:
    """``--torch-index-url`` on a venv whose torch is already the pinned release: reinstall it if the build differs.

    Without this the flag was a silent no-op on an existing venv (the version matched, so nothing was installed).
    When torch is missing or at another release it is installed from the override anyway, so None then.
    """
    if not override or "torch" not in pins or any(m.name == "torch" for m in mismatches):
        return None
    installed = preflight.installed_version("torch")
    if installed is None:
        return None
    rebuild = preflight.torch_rebuild(installed, pins["torch"], override, sys.platform)
    say(f"--torch-index-url: {rebuild.message}.")
    return rebuild


def report_mismatches(mismatches: list[preflight.Mismatch]) -> None:
    missing = [m for m in mismatches if m.installed is None]
    if len(missing) > 10:  # a new venv: one line, not seventy
        say(f"New environment: {len(missing)} pinned packages to install (a few minutes, once).")
    for mismatch in mismatches:
        if len(missing) <= 10 or mismatch.installed is not None:
            say(f"  {mismatch.describe()}")


def choose_index(torch_pin: str, has_nvidia: bool, override: str | None) -> str | None:
    """The index to install torch from (None: pip's default), said to the user with the reason."""
    amd = None if has_nvidia or override else preflight.local_amd_gpu()
    index, why = preflight.choose_torch_index(sys.platform, has_nvidia, override,
                                              lambda: preflight.url_reachable(preflight.CPU_INDEX_URL), amd)
    say(f"torch {torch_pin}: {why}.")
    if index is None and not has_nvidia and not (amd and amd.usable) and not preflight.platform_is_mac():
        build = preflight.probe_torch_build(sys.executable)
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if build is True:
            say(f"The default index offers the CPU build of torch for Python {version}: using it.")
        elif build is False:
            say(f"WARNING: for Python {version} the reachable indexes offer only the CUDA build of torch (about "
                "3 GB of NVIDIA libraries this machine cannot use). Installing it anyway; to avoid it, delete the "
                "venv and rerun webui.sh with another Python 3.10-3.12, or set TORCH_INDEX_URL.")
        else:
            say(f"Could not tell which torch build the default index offers for Python {version}.")
    return index


def install(specs: list[str], index: str | None, lock: Path) -> bool:
    say(f"Installing {len(specs)} package(s) at their pinned versions...")
    cmd = preflight.pip_install_command(sys.executable, specs, index, lock)
    if subprocess.run(cmd, check=False).returncode != 0:
        say("FAILURE: pip could not install the pinned packages (see pip's message above). Fix: check your internet "
            "connection or proxy, then run webui.sh again; to start over, delete the venv folder.")
        return False
    return True


def verify(pins: dict[str, str], rebuild: preflight.TorchRebuild | None) -> bool:
    """After pip: every pin matches, and a reinstalled torch is the build that was asked for (said either way)."""
    left = preflight.compare(pins)
    if left:
        for mismatch in left:
            say(f"  still different: {mismatch.describe()}")
        say("FAILURE: the environment still differs from the lock. Fix: delete the venv folder and run webui.sh again.")
        return False
    if rebuild and rebuild.spec and rebuild.build:
        now = preflight.installed_version("torch") or "not installed"
        if preflight.installed_build(now, sys.platform) != rebuild.build:
            say(f"FAILURE: torch is {now} after pip, not the {preflight.describe_build(rebuild.build)} build asked "
                "for. Fix: delete the venv folder and run webui.sh again with the same --torch-index-url.")
            return False
        say(f"torch reinstalled: now {now} ({preflight.describe_build(rebuild.build)} build).")
    return True


def ensure_self_installed(skip_install: bool) -> None:
    """Install sdlocal itself (editable, no dependencies) so the ``sdlocal`` command exists in the venv."""
    if skip_install or preflight.installed_version("sdlocal") is not None:
        return
    if sys.prefix == sys.base_prefix:
        return  # not in a venv: never touch a system Python's site-packages
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-build-isolation", "-e", str(ROOT)]
    if subprocess.run(cmd, check=False, capture_output=True).returncode != 0:
        say("note: could not register the 'sdlocal' command in the venv; 'python launch.py' works the same.")


def has_rocm_gpu() -> bool:
    amd = preflight.local_amd_gpu()
    return amd is not None and amd.usable


def pick_python_main(paths: list[str]) -> int:
    """``launch.py --pick-python PY...``: print the interpreter webui.sh/.bat should build the venv with."""
    candidates = []
    for path in paths:
        try:
            done = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        version = done.stdout.strip()
        if done.returncode == 0 and preflight.python_supported(tuple(int(p) for p in version.split("."))):
            if all(c.version != version for c in candidates):
                candidates.append(preflight.Candidate(path, version))
    if not candidates:
        print(f"No supported Python found (sdlocal needs Python {preflight.supported_text()}).", file=sys.stderr)
        return 1
    chosen = preflight.pick_python(
        candidates, preflight.has_nvidia_gpu() or has_rocm_gpu(), os.environ.get("TORCH_INDEX_URL"),
        lambda: preflight.url_reachable(preflight.CPU_INDEX_URL),
        preflight.probe_torch_build, lambda message: print(f"[sdlocal] {message}", file=sys.stderr))
    print(chosen.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--pick-python"]:
        return pick_python_main(argv[1:])
    if not preflight.python_supported():
        say(f"FAILURE: Python {sys.version.split()[0]} is not supported. Fix: install Python "
            f"{preflight.supported_text()}, delete the venv folder, and run webui.sh again.")
        return 1
    skip_install = "--skip-install" in argv
    argv = [a for a in argv if a != "--skip-install"]
    torch_index = take_option(argv, "--torch-index-url")
    lock_arg = take_option(argv, "--lock")
    lock = Path(lock_arg).resolve() if lock_arg else preflight.LOCK_FILE
    if "--install-only" in argv:
        return 0 if ensure_environment(skip_install, torch_index, wants_xformers(argv), lock) else 1
    if "-h" not in argv and "--help" not in argv:
        if not ensure_environment(skip_install, torch_index, wants_xformers(argv)):
            return 1
    from sdlocal import cli  # the pinned packages are verified from here on

    return cli.main(argv, launched=True)


if __name__ == "__main__":
    sys.exit(main())
