"""One owner of sdlocal's paths and options.

Precedence, lowest to highest (each later source overrides the earlier ones, field by field):

1. the defaults written in :class:`Settings`;
2. the saved settings file ``<data dir>/settings.json`` (a JSON object of field names to values);
3. environment variables ``SDLOCAL_<FIELD>`` (e.g. ``SDLOCAL_PORT=7861``, ``SDLOCAL_LISTEN=1``; list fields take
   several values separated by ``os.pathsep`` for paths or ``,`` for the rest);
4. command-line flags (``sdlocal.cli``).

The data dir itself cannot come from the settings file (the file lives in it): it is ``--data-dir``, else
``SDLOCAL_DATA_DIR``, else platformdirs' ``user_data_dir("sdlocal")``.

Everything else reads these values from a ``Settings`` object handed to it; nothing below reads argv or the
environment on its own. The engine gets only :meth:`Settings.to_engine_config`.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sdlocal.engine.config import ATTENTIONS, DEVICES, PRECISIONS, SD2_PREDICTIONS, EngineConfig
from sdlocal.engine.request import EMPHASIS_MODES

APP_NAME = "sdlocal"
SETTINGS_FILE = "settings.json"
STATE_FILE = "state.json"
ENV_PREFIX = "SDLOCAL_"
DEFAULT_PORT = 7860
GENERATED_USER = "sdlocal"
THEMES: tuple[str, ...] = ("system", "light", "dark")


class SettingsError(ValueError):
    """A bad value in a flag, environment variable or the settings file: says which, the value and the fix."""

    def __init__(self, source: str, value: Any, fix: str) -> None:
        self.source = source
        self.value = value
        self.fix = fix
        super().__init__(f"{source}: {value!r} is not valid. {fix}")


def default_data_dir() -> Path:
    """platformdirs' per-user data folder (``~/.local/share/sdlocal`` on Linux, ``%LOCALAPPDATA%`` on Windows)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


@dataclass
class Settings:
    """Every option of a running sdlocal, already merged from all sources (see the module docstring)."""

    data_dir: Path = field(default_factory=default_data_dir)
    models_dirs: list[Path] = field(default_factory=list)
    extra_model_paths: list[Path] = field(default_factory=list)
    device: str = "auto"
    precision: str = "auto"
    no_half_vae: bool = False
    attention: str = "auto"
    attention_slicing: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    medvram: bool = False
    lowvram: bool = False
    token_merging_ratio: float = 0.0
    emphasis: str = "Original"  # A1111's option: how (word:1.2) weights act (EMPHASIS_MODES)
    max_loaded_models: int = 1
    fast: bool = False
    sd2_prediction: str = "v_prediction"  # SD 2.x single files without a sidecar: 2.1 768-v (the base 512 is epsilon)
    listen: bool = False
    port: int = DEFAULT_PORT
    share: bool = False
    gradio_auth: list[tuple[str, str]] = field(default_factory=list)
    gradio_auth_path: Path | None = None
    no_auth: bool = False
    api: bool = False
    api_auth: list[tuple[str, str]] = field(default_factory=list)
    api_tokens: Path | None = None  # a file of hashed API tokens (sdlocal.api.tokens)
    api_rate_limit: str = ""  # limits' notation; "" = off locally, 60/minute with --listen/--share; "off"
    api_rate_limit_storage: str = "memory://"  # a limits storage URI (redis://host:port/db in the cluster)
    api_cache_mb: int = 256  # the result cache's size on one machine; 0 turns it off
    nowebui: bool = False
    preset: str | None = None
    offline: bool = False
    require_gpu: bool = False
    queue_size: int = 64
    theme: str = "system"
    tls_keyfile: Path | None = None
    tls_certfile: Path | None = None
    # Set by secure_sharing() when --share/--listen come without credentials: printed once, never saved.
    generated_password: str | None = field(default=None, compare=False, repr=False)
    # Things worth telling the user about how the settings were read (e.g. an ignored, misspelt variable).
    notes: list[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        self.models_dirs = [Path(p).expanduser() for p in self.models_dirs]
        self.extra_model_paths = [Path(p).expanduser() for p in self.extra_model_paths]
        if self.gradio_auth_path is not None:
            self.gradio_auth_path = Path(self.gradio_auth_path).expanduser()
        for name in ("tls_keyfile", "tls_certfile", "api_tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser())
        self.validate()

    # ----- checks -------------------------------------------------------------------------------------------
    def validate(self) -> Settings:
        """Refuse values no part of sdlocal could use, naming the option and the allowed values."""
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("theme", self.theme, THEMES)
        _choice("sd2_prediction", self.sd2_prediction, SD2_PREDICTIONS)
        self.emphasis = emphasis_mode(self.emphasis)
        if not 1 <= int(self.port) <= 65535:
            raise SettingsError("port", self.port, "Use a port number from 1 to 65535 (the default is 7860).")
        if not 0.0 <= float(self.token_merging_ratio) <= 0.9:
            raise SettingsError("token_merging_ratio", self.token_merging_ratio,
                                "Use a ratio from 0 (off) to 0.9; 0.3-0.5 is a common choice.")
        if int(self.max_loaded_models) < 1:
            raise SettingsError("max_loaded_models", self.max_loaded_models, "Keep at least 1 model loaded.")
        if (self.tls_keyfile is None) != (self.tls_certfile is None):
            given = "tls_keyfile" if self.tls_keyfile is not None else "tls_certfile"
            raise SettingsError(given, str(getattr(self, given)),
                                "HTTPS needs both --tls-keyfile and --tls-certfile (a PEM key and its certificate).")
        if int(self.api_cache_mb) < 0:
            raise SettingsError("api_cache_mb", self.api_cache_mb, "Use a size in MB, or 0 to turn the cache off.")
        if self.api_rate_limit and self.api_rate_limit.strip().lower() != "off":
            from limits import parse_many

            try:
                parse_many(self.api_rate_limit)
            except ValueError:
                raise SettingsError("api_rate_limit", self.api_rate_limit,
                                    "Write e.g. 30/minute or 10/minute;200/hour, or off.") from None
        if int(self.queue_size) < 1:
            raise SettingsError("queue_size", self.queue_size, "The queue must hold at least 1 job.")
        return self

    # ----- derived values -----------------------------------------------------------------------------------
    @property
    def xformers(self) -> bool:
        """A1111's ``--xformers`` is ``attention == "xformers"`` here."""
        return self.attention == "xformers"

    @property
    def host(self) -> str:
        """The address to bind: every interface with ``--listen``, else this computer only."""
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def models_dir(self) -> Path:
        """sdlocal's own model folders (``Stable-diffusion``, ``Lora``, ``VAE``, ...)."""
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def presets_dir(self) -> Path:
        """User presets; the shipped ones stay in the package's ``presets/`` folder."""
        return self.data_dir / "presets"

    @property
    def settings_file(self) -> Path:
        return self.data_dir / SETTINGS_FILE

    @property
    def state_file(self) -> Path:
        """Last model and UI form values (the UI keeps them under the ``"ui"`` key)."""
        return self.data_dir / STATE_FILE

    @property
    def hash_cache(self) -> Path:
        return self.data_dir / "cache" / "hashes.json"

    @property
    def auth(self) -> list[tuple[str, str]]:
        """Every login for the web UI: ``--gradio-auth`` pairs, the auth file's, and a generated one."""
        pairs = list(self.gradio_auth)
        if self.gradio_auth_path is not None:
            pairs += read_auth_file(self.gradio_auth_path)
        if self.generated_password:
            pairs.append((GENERATED_USER, self.generated_password))
        return pairs

    @property
    def auth_file(self) -> Path | None:
        return self.gradio_auth_path

    def to_engine_config(self) -> EngineConfig:
        """The engine's one input: folders and how to run models, nothing about serving."""
        return EngineConfig(
            data_dir=self.data_dir,
            models_dirs=list(self.models_dirs),
            extra_model_paths=list(self.extra_model_paths),
            device=self.device,  # type: ignore[arg-type]
            precision=self.precision,  # type: ignore[arg-type]
            no_half_vae=self.no_half_vae,
            attention=self.attention,  # type: ignore[arg-type]
            attention_slicing=self.attention_slicing,
            vae_slicing=self.vae_slicing,
            cpu_offload=self.cpu_offload,
            medvram=self.medvram,
            lowvram=self.lowvram,
            max_loaded_models=self.max_loaded_models,
            token_merging_ratio=self.token_merging_ratio,
            sd2_prediction=self.sd2_prediction,  # type: ignore[arg-type]
            fast=self.fast,
        )

    # ----- sharing ------------------------------------------------------------------------------------------
    def secure_sharing(self) -> str | None:
        """Make ``--share``/``--listen`` safe by default; returns the one message to print, if any.

        Without credentials a random password is generated (for user ``sdlocal``) and required; the caller prints
        the message once. ``--no-auth`` opts out and gets a warning instead.
        """
        if not (self.share or self.listen):
            return None
        if self.no_auth:
            return ("WARNING: --no-auth: this UI is reachable from other machines without a login. "
                    "Anyone who can reach it can use this computer.")
        if self.auth:
            return None
        self.generated_password = secrets.token_urlsafe(12)
        where = "a public share link" if self.share else "the network"
        return (f"Login required: the UI is open to {where}, so a password was generated for this run.\n"
                f"  user: {GENERATED_USER}\n  password: {self.generated_password}\n"
                "Set your own with --gradio-auth user:password, or --no-auth to turn the login off.")

    # ----- saved files --------------------------------------------------------------------------------------
    def load_saved(self) -> dict[str, Any]:
        """The saved settings file as a dict (empty when absent); a damaged file is an error naming it."""
        return read_settings_file(self.settings_file)

    def save_settings(self, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into the saved settings file (atomically) so they apply at the next start."""
        current = self.load_saved()
        for key, value in changes.items():
            _check_key(key, f"{self.settings_file}")
            current[key] = _to_json(value)
        # Validate the merged file the way the next start will read it.
        _coerce_mapping(current, str(self.settings_file))
        atomic_write_json(self.settings_file, current)

    def load_ui_state(self) -> dict[str, Any]:
        """The UI's saved state (last model, form values); a missing or damaged file gives ``{}``."""
        data = _read_json_or_empty(self.state_file)
        ui = data.get("ui")
        return ui if isinstance(ui, dict) else {}

    def save_ui_state(self, ui: Mapping[str, Any]) -> None:
        """Replace the ``"ui"`` key of the state file atomically, keeping the file's other keys."""
        data = _read_json_or_empty(self.state_file)
        data["ui"] = dict(ui)
        atomic_write_json(self.state_file, data)

    def public_dict(self) -> dict[str, Any]:
        """The options as plain JSON values, passwords hidden (for the System tab, the API and the doctor)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("generated_password", "notes"):
                continue
            value = getattr(self, f.name)
            if f.name in ("gradio_auth", "api_auth"):
                value = [f"{user}:***" for user, _ in value]
            out[f.name] = _to_json(value)
        return out


# ----- building Settings from the sources --------------------------------------------------------------------

_PATH_LISTS = {"models_dirs", "extra_model_paths"}
_AUTH_LISTS = {"gradio_auth", "api_auth"}
_BOOLS = {"no_half_vae", "attention_slicing", "vae_slicing", "cpu_offload", "medvram", "lowvram", "listen", "share",
          "no_auth", "api", "nowebui", "offline", "require_gpu", "fast"}
_INTS = {"port", "max_loaded_models", "queue_size", "api_cache_mb"}
_FLOATS = {"token_merging_ratio"}
_PATHS = {"data_dir", "gradio_auth_path", "tls_keyfile", "tls_certfile", "api_tokens"}
_OPTIONAL_TEXT = {"preset"}
_TEXT = {"device", "precision", "attention", "theme", "sd2_prediction", "emphasis", "api_rate_limit",
         "api_rate_limit_storage"}
FIELD_NAMES: tuple[str, ...] = tuple(sorted(_PATH_LISTS | _AUTH_LISTS | _BOOLS | _INTS | _FLOATS | _PATHS
                                            | _OPTIONAL_TEXT | _TEXT))
# Fields that only the command line or the environment may set.
_NOT_IN_FILE = {"data_dir"}


def resolve(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Merge defaults < settings file < ``SDLOCAL_*`` environment < ``cli`` into one validated ``Settings``.

    ``cli`` holds only the options the user actually gave (absent keys fall through to the lower sources).
    """
    cli = dict(cli or {})
    env = os.environ if env is None else env
    notes: list[str] = []
    from_env = env_values(env, notes)
    for key in cli:
        _check_key(key, "command line")
    data_dir_value = cli.get("data_dir") or from_env.get("data_dir")
    data_dir = Path(data_dir_value).expanduser() if data_dir_value else default_data_dir()
    merged: dict[str, Any] = {}
    merged.update(read_settings_file(data_dir / SETTINGS_FILE))
    merged.update(from_env)
    merged.update({k: v for k, v in cli.items() if v is not None})
    merged["data_dir"] = data_dir
    if merged.pop("xformers", False):
        merged["attention"] = "xformers"
    settings = Settings(**merged)
    settings.notes = notes
    return settings


def env_values(env: Mapping[str, str], notes: list[str] | None = None) -> dict[str, Any]:
    """The ``SDLOCAL_*`` variables that name a setting, as typed field values.

    Other ``SDLOCAL_*`` names are left alone (tests and tools use a few of their own), but one that looks like a
    misspelt setting gets a note in ``notes`` suggesting the closest name.
    """
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key == "xformers":
            if _as_bool(name, value):
                raw["attention"] = "xformers"
            continue
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.7)
            if close and notes is not None:
                notes.append(f"{name} is not a setting and was ignored; did you mean {ENV_PREFIX}{close[0].upper()}?")
            continue
        raw[key] = _from_text(key, value, name)
    return raw


def read_settings_file(path: Path) -> dict[str, Any]:
    """The saved settings as typed values; absent -> ``{}``; unreadable or bad -> ``SettingsError`` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(str(path), "", f"The settings file cannot be read ({exc}). Fix its permissions.") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(str(path), text[:60], f"The settings file is not valid JSON ({exc}). Fix it or delete it "
                            "to go back to the defaults.") from exc
    if not isinstance(data, dict):
        raise SettingsError(str(path), data, "The settings file must hold a JSON object of option names to values.")
    return _coerce_mapping(data, str(path))


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """``user:pass`` pairs, separated by commas or new lines (A1111's ``--gradio-auth-path`` format)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError("--gradio-auth-path", str(path), f"The file cannot be read ({exc}).") from exc
    pairs = parse_auth(text.replace("\n", ","), f"--gradio-auth-path {path}")
    if not pairs:
        raise SettingsError("--gradio-auth-path", str(path), "The file holds no user:password pairs.")
    return pairs


def parse_auth(text: str, source: str = "--gradio-auth") -> list[tuple[str, str]]:
    """``user:pass[,user2:pass2]`` -> pairs; a pair without ``:`` or with an empty part is an error."""
    pairs: list[tuple[str, str]] = []
    for chunk in text.split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        user, sep, password = chunk.partition(":")
        if not sep or not user or not password:
            raise SettingsError(source, chunk.split(":", 1)[0] + (":***" if sep else ""),
                                "Write each login as user:password, several separated by commas.")
        pairs.append((user, password))
    return pairs


def atomic_write_json(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def with_changes(settings: Settings, **changes: Any) -> Settings:
    """A validated copy with some options changed (e.g. the next free port found by the doctor)."""
    return replace(settings, **changes)


# ----- helpers ------------------------------------------------------------------------------------------------

def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SettingsError(name, value, f"Choose one of: {', '.join(allowed)}.")


def emphasis_mode(value: Any, where: str = "emphasis") -> str:
    """A1111's emphasis mode by name in any case ("no norm" -> "No norm"); SettingsError naming the choices."""
    for mode in EMPHASIS_MODES:
        if isinstance(value, str) and value.strip().casefold() == mode.casefold():
            return mode
    raise SettingsError(where, value, f"Choose one of: {', '.join(EMPHASIS_MODES)}.")


def _check_key(key: str, source: str) -> None:
    if key == "xformers":
        return
    if key not in FIELD_NAMES:
        close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SettingsError(source, key, f"No such setting.{hint}")


def _coerce_mapping(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        _check_key(key, source)
        if key in _NOT_IN_FILE:
            raise SettingsError(f"{source}: {key}", value, "The data dir is chosen with --data-dir or "
                                "SDLOCAL_DATA_DIR, not inside the data dir's own settings file.")
        where = f"{source}: {key}"
        if key == "xformers":
            if _as_bool(where, value):
                out["attention"] = "xformers"
        elif isinstance(value, str):
            out[key] = _from_text(key, value, where)
        elif key in _BOOLS:
            out[key] = _as_bool(where, value)
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingsError(where, value, "Use a whole number.")
            out[key] = value
        elif key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(where, value, "Use a number.")
            out[key] = float(value)
        elif key in _PATH_LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(where, value, "Use a list of folder paths.")
            out[key] = [Path(v) for v in value]
        elif key in _AUTH_LISTS:
            if not isinstance(value, list):
                raise SettingsError(where, value, 'Use a list of "user:password" strings.')
            out[key] = parse_auth(",".join(str(v) for v in value), where)
        elif value is None and key in (_OPTIONAL_TEXT | _PATHS) - {"data_dir"}:
            out[key] = None
        else:
            raise SettingsError(where, value, "Use a text value.")
    return out


def _from_text(key: str, value: str, where: str) -> Any:
    if key in _BOOLS:
        return _as_bool(where, value)
    if key in _INTS:
        try:
            return int(value)
        except ValueError:
            raise SettingsError(where, value, "Use a whole number.") from None
    if key in _FLOATS:
        try:
            return float(value)
        except ValueError:
            raise SettingsError(where, value, "Use a number, e.g. 0.5.") from None
    if key in _PATH_LISTS:
        return [Path(p) for p in value.split(os.pathsep) if p]
    if key in _AUTH_LISTS:
        return parse_auth(value, where)
    if key in _PATHS:
        return Path(value) if value else None
    if key in _OPTIONAL_TEXT:
        return value or None
    if key == "emphasis":
        return emphasis_mode(value, where)
    return value


def _as_bool(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(where, value, "Use true or false (1/0, yes/no, on/off).")


def _to_json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return [f"{u}:{p}" for u, p in value]
        return [_to_json(v) for v in value]
    return value


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
