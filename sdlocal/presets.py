"""Presets: good starting settings per model family, as small JSON files chosen by name.

Built-in presets live in the repository's ``presets/`` folder, the user's own in the data dir
(``settings.presets_dir``). Each file is checked against ``PRESET_SCHEMA`` (the same JSON Schema is shipped as
``presets/schema.json`` for editors; a test keeps the two equal). The validator here is a small hand-written
subset of JSON Schema so that sdlocal needs no extra dependency. A bad file never stops the app: it is skipped
and reported by file and field, and the UI shows the report.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("sd1", "sd2", "sdxl")
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}

# Sizes each family was trained on (about one megapixel for SDXL); the UI offers them as buttons.
FAMILY_SIZES: dict[str, list[tuple[int, int]]] = {
    "sd1": [(512, 512), (512, 768), (768, 512), (640, 448), (448, 640)],
    "sd2": [(768, 768), (768, 1024), (1024, 768), (512, 512)],
    "sdxl": [(1024, 1024), (896, 1152), (1152, 896), (832, 1216), (1216, 832), (768, 1344), (1344, 768)],
}

# The values a preset sets; names match GenerationRequest fields so a preset applies to a request directly.
PRESET_FIELDS = (
    "width", "height", "steps", "sampler", "schedule", "cfg_scale", "negative_prompt", "token_merging_ratio",
)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,63}$"

PRESET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sdlocal.invalid/presets/schema.json",
    "title": "sdlocal preset",
    "description": "Starting settings for one model family. Names of values match the txt2img request fields.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "family", "width", "height", "steps", "sampler", "schedule", "cfg_scale"],
    "properties": {
        "name": {"type": "string", "pattern": _NAME_PATTERN, "description": "Shown in the preset picker; unique."},
        "description": {"type": "string", "maxLength": 300},
        "family": {"type": "string", "enum": list(FAMILIES), "description": "Model family the preset suits."},
        "default": {"type": "boolean", "description": "Applied when a model of this family is picked."},
        "width": {"type": "integer", "minimum": 64, "maximum": 4096, "multipleOf": 8},
        "height": {"type": "integer", "minimum": 64, "maximum": 4096, "multipleOf": 8},
        "steps": {"type": "integer", "minimum": 1, "maximum": 150},
        "sampler": {"type": "string", "minLength": 1, "maxLength": 40},
        "schedule": {"type": "string", "minLength": 1, "maxLength": 40},
        "cfg_scale": {"type": "number", "minimum": 0, "maximum": 30},
        "negative_prompt": {"type": "string", "maxLength": 20000},
        "token_merging_ratio": {"type": "number", "minimum": 0, "maximum": 0.9},
    },
}


class PresetError(ValueError):
    """A preset that cannot be saved (bad or taken name, bad value); the message names the field and the fix."""


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    width: int
    height: int
    steps: int
    sampler: str
    schedule: str
    cfg_scale: float
    negative_prompt: str = ""
    token_merging_ratio: float = 0.0
    description: str = ""
    default: bool = False
    source: str = "builtin"  # "builtin" or "user"
    path: Path | None = None

    def values(self) -> dict[str, Any]:
        """The request fields this preset sets."""
        return {name: getattr(self, name) for name in PRESET_FIELDS}

    @property
    def label(self) -> str:
        return self.name if self.source == "builtin" else f"{self.name} (mine)"


@dataclass(frozen=True)
class PresetProblem:
    """One bad preset file: which file, which field, what is wrong (shown in the UI and the doctor report)."""

    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        where = f" field '{self.field}'" if self.field else ""
        return f"{self.file}:{where} {self.message}"


def validate(data: Any, schema: dict[str, Any] = PRESET_SCHEMA, path: str = "") -> list[tuple[str, str]]:
    """Check ``data`` against the JSON Schema subset used here; return (field, message) pairs, empty when valid."""
    problems: list[tuple[str, str]] = []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(data, dict):
            return [(path, f"must be a JSON object, not {type(data).__name__}")]
        for name in schema.get("required", []):
            if name not in data:
                problems.append((_join(path, name), "is required"))
        properties = schema.get("properties", {})
        for name, value in data.items():
            if name in properties:
                problems.extend(validate(value, properties[name], _join(path, name)))
            elif schema.get("additionalProperties", True) is False:
                problems.append((_join(path, name), f"is not a preset field; known fields: {', '.join(properties)}"))
        return problems
    if kind == "string" and not isinstance(data, str):
        return [(path, f"must be text, not {data!r}")]
    if kind == "boolean" and not isinstance(data, bool):
        return [(path, f"must be true or false, not {data!r}")]
    if kind == "integer" and (isinstance(data, bool) or not isinstance(data, int)):
        return [(path, f"must be a whole number, not {data!r}")]
    if kind == "number" and (isinstance(data, bool) or not isinstance(data, (int, float))):
        return [(path, f"must be a number, not {data!r}")]
    if "enum" in schema and data not in schema["enum"]:
        problems.append((path, f"{data!r} is not one of {', '.join(map(str, schema['enum']))}"))
    if isinstance(data, str):
        if len(data) < schema.get("minLength", 0):
            problems.append((path, "must not be empty"))
        if len(data) > schema.get("maxLength", len(data)):
            problems.append((path, f"is longer than {schema['maxLength']} characters"))
        if "pattern" in schema and not re.match(schema["pattern"], data):
            problems.append((path, f"{data!r} must start with a letter or digit and use only letters, digits, "
                                   "spaces and . _ ( ) + - (at most 64 characters)"))
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            problems.append((path, f"{data!r} is below the minimum {schema['minimum']}"))
        if "maximum" in schema and data > schema["maximum"]:
            problems.append((path, f"{data!r} is above the maximum {schema['maximum']}"))
        if "multipleOf" in schema and data % schema["multipleOf"]:
            step = schema["multipleOf"]
            problems.append((path, f"{data!r} must be a multiple of {step} (try {data // step * step})"))
    return problems


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def builtin_presets_dir() -> Path:
    """The shipped ``presets/`` folder: next to the package in a checkout, or installed inside it."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "presets", package / "presets"):
        if candidate.is_dir():
            return candidate
    return package.parent / "presets"


class PresetStore:
    """All presets (built-in, then the user's), the problems found while reading them, and saving new ones."""

    def __init__(
        self,
        user_dir: Path | None,
        builtin_dir: Path | None = None,
        samplers: list[str] | None = None,
        schedules: list[str] | None = None,
    ) -> None:
        self.builtin_dir = builtin_dir or builtin_presets_dir()
        self.user_dir = user_dir
        self.samplers = samplers
        self.schedules = schedules
        self.presets: dict[str, Preset] = {}
        self.problems: list[PresetProblem] = []
        self.reload()

    def reload(self) -> None:
        """Read every preset file again; bad ones are skipped and listed in ``problems``."""
        presets: dict[str, Preset] = {}
        problems: list[PresetProblem] = []
        for source, folder in (("builtin", self.builtin_dir), ("user", self.user_dir)):
            if folder is None or not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.json")):
                if file.name == "schema.json":
                    continue
                preset, found = self._read(file, source)
                if preset is not None and preset.name.casefold() in {name.casefold() for name in presets}:
                    found = [PresetProblem(file, "name", f"{preset.name!r} is already used by another preset; "
                                                        "rename this one")]
                    preset = None
                problems.extend(found)
                if preset is not None:
                    presets[preset.name] = preset
        self.presets, self.problems = presets, problems

    def _read(self, file: Path, source: str) -> tuple[Preset | None, list[PresetProblem]]:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            return None, [PresetProblem(file, "", "is not UTF-8 text")]
        except json.JSONDecodeError as error:
            return None, [PresetProblem(file, "", f"is not valid JSON (line {error.lineno}: {error.msg})")]
        except OSError as error:
            return None, [PresetProblem(file, "", f"cannot be read ({error.strerror})")]
        found = [PresetProblem(file, name, message) for name, message in validate(data) or self._check_names(data)]
        if found:
            return None, found
        return Preset(source=source, path=file, **data), []

    def _check_names(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """Samplers and schedules are checked against what the engine offers, when the caller knows it."""
        problems = []
        if self.samplers and data.get("sampler") not in self.samplers:
            problems.append(("sampler", f"{data.get('sampler')!r} is not a sampler; use one of "
                                        f"{', '.join(self.samplers)}"))
        if self.schedules and data.get("schedule") not in self.schedules:
            problems.append(("schedule", f"{data.get('schedule')!r} is not a schedule type; use one of "
                                         f"{', '.join(self.schedules)}"))
        return problems

    # ----------------------------------------------------------------- queries
    def names(self) -> list[str]:
        return list(self.presets)

    def get(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            raise PresetError(f"preset: {name!r} is not a preset; presets are {', '.join(self.presets)}") from None

    def for_family(self, family: str | None) -> Preset | None:
        """The family's default preset (the first built-in one marked ``default``), or None."""
        candidates = [preset for preset in self.presets.values() if preset.family == family]
        for preset in candidates:
            if preset.default:
                return preset
        return candidates[0] if candidates else None

    # ------------------------------------------------------------------ saving
    def save(self, name: str, family: str, values: dict[str, Any], description: str = "") -> Preset:
        """Save the user's current settings as a new preset in the data dir; refuses bad and taken names."""
        if self.user_dir is None:
            raise PresetError("presets: no user presets folder is configured")
        name = (name or "").strip()
        if not re.match(_NAME_PATTERN, name):
            raise PresetError(f"name: {name!r} is not a usable preset name; start with a letter or digit and use only "
                              "letters, digits, spaces and . _ ( ) + - (at most 64 characters)")
        if name.casefold() in {existing.casefold() for existing in self.presets}:
            raise PresetError(f"name: a preset called {name!r} already exists; choose another name")
        data: dict[str, Any] = {"name": name, "family": family}
        if description:
            data["description"] = description
        data.update({key: values[key] for key in PRESET_FIELDS if key in values})
        for key in ("cfg_scale", "token_merging_ratio"):
            if isinstance(data.get(key), float) and data[key].is_integer():
                data[key] = int(data[key])
        for key in ("width", "height", "steps"):
            if isinstance(data.get(key), float) and data[key].is_integer():
                data[key] = int(data[key])
        problems = validate(data) or self._check_names(data)
        if problems:
            raise PresetError("; ".join(f"{key}: {message}" for key, message in problems))
        self.user_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "preset"
        target = self.user_dir / f"{slug}.json"
        if target.exists():
            raise PresetError(f"name: the file {target} already exists; choose another name")
        temp = self.user_dir / f".{secrets.token_hex(6)}.tmp"
        try:
            with open(temp, "x", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, target)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system
                if target.exists():
                    raise FileExistsError(target) from None
                os.replace(temp, target)
        except FileExistsError:
            raise PresetError(f"name: the file {target} already exists; choose another name") from None
        finally:
            temp.unlink(missing_ok=True)
        self.reload()
        return self.presets[name]

    def delete(self, name: str) -> None:
        """Delete one of the user's presets; built-in ones cannot be deleted."""
        preset = self.get(name)
        if preset.source != "user" or preset.path is None:
            raise PresetError(f"preset: {name!r} is built in and cannot be deleted")
        preset.path.unlink(missing_ok=True)
        self.reload()
