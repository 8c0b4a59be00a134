"""Presets: the shipped ones are valid, bad files are reported by file and field and skipped, users save their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdlocal.presets import FAMILIES, PRESET_SCHEMA, PresetError, PresetStore, builtin_presets_dir, validate

SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "UniPC", "LCM"]
SCHEDULES = ["Automatic", "Karras", "Exponential", "SGM Uniform"]


def test_shipped_schema_file_matches_the_validator() -> None:
    shipped = json.loads((builtin_presets_dir() / "schema.json").read_text())
    assert shipped == json.loads(json.dumps(PRESET_SCHEMA))


def test_shipped_presets_are_valid_and_cover_every_family(tmp_path: Path) -> None:
    store = PresetStore(user_dir=tmp_path, samplers=SAMPLERS, schedules=SCHEDULES)
    assert store.problems == []
    for family in FAMILIES:
        preset = store.for_family(family)
        assert preset is not None and preset.default and preset.family == family
    assert store.for_family("sd1").width == 512
    assert store.for_family("sd2").width == 768
    assert store.for_family("sdxl").width == 1024
    few_steps = [preset for preset in store.presets.values() if preset.steps <= 8]
    assert few_steps, "a few-step Turbo/LCM preset ships"
    assert store.for_family("flux") is None


def _write(folder: Path, name: str, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


GOOD = {"name": "Mine", "family": "sd1", "width": 512, "height": 640, "steps": 12, "sampler": "Euler",
        "schedule": "Automatic", "cfg_scale": 5.5}


def test_bad_preset_files_are_reported_by_file_and_field_and_skipped(tmp_path: Path) -> None:
    user = tmp_path / "presets"
    _write(user, "good.json", GOOD)
    broken = _write(user, "broken.json", "{ not json")
    wide = _write(user, "wide.json", {**GOOD, "name": "Wide", "width": 513})
    missing = _write(user, "missing.json", {"name": "Missing", "family": "sd1"})
    odd = _write(user, "odd.json", {**GOOD, "name": "Odd", "colour": "blue", "steps": "many"})
    sampler = _write(user, "sampler.json", {**GOOD, "name": "Sampler", "sampler": "Warp drive"})
    dup = _write(user, "dup.json", {**GOOD, "name": "SD 1.5"})
    store = PresetStore(user_dir=user, samplers=SAMPLERS, schedules=SCHEDULES)
    assert "Mine" in store.presets and store.presets["Mine"].source == "user"
    for name in ("Wide", "Missing", "Odd", "Sampler"):
        assert name not in store.presets
    assert store.presets["SD 1.5"].source == "builtin"  # the duplicate did not replace the shipped one
    by_file: dict[Path, list[str]] = {}
    for problem in store.problems:
        by_file.setdefault(problem.file, []).append(problem.field)
        assert str(problem.file) in str(problem)
    assert by_file[broken] == [""]
    assert by_file[wide] == ["width"]
    assert sorted(by_file[missing]) == ["cfg_scale", "height", "sampler", "schedule", "steps", "width"]
    assert sorted(by_file[odd]) == ["colour", "steps"]
    assert by_file[sampler] == ["sampler"]
    assert by_file[dup] == ["name"]
    message = next(str(p) for p in store.problems if p.file == wide)
    assert "multiple of 8" in message and "513" in message


def test_validator_rules() -> None:
    assert validate(GOOD) == []
    assert validate([1, 2]) == [("", "must be a JSON object, not list")]
    assert validate({**GOOD, "cfg_scale": True})[0][0] == "cfg_scale"
    assert validate({**GOOD, "steps": 151})[0] == ("steps", "151 is above the maximum 150")
    assert validate({**GOOD, "family": "flux"})[0][0] == "family"
    assert validate({**GOOD, "name": "../etc"})[0][0] == "name"
    assert validate({**GOOD, "token_merging_ratio": 0.95})[0][0] == "token_merging_ratio"


def test_user_saves_a_preset_and_it_survives_a_restart(tmp_path: Path) -> None:
    user = tmp_path / "presets"
    store = PresetStore(user_dir=user, samplers=SAMPLERS, schedules=SCHEDULES)
    values = {"width": 640, "height": 448, "steps": 18.0, "sampler": "UniPC", "schedule": "Karras", "cfg_scale": 4.5,
              "negative_prompt": "grain", "token_merging_ratio": 0.3, "prompt": "not part of a preset"}
    saved = store.save("Landscape draft", "sd1", values)
    assert saved.source == "user" and saved.steps == 18 and saved.label == "Landscape draft (mine)"
    on_disk = json.loads((user / "Landscape-draft.json").read_text())
    assert "prompt" not in on_disk and on_disk["steps"] == 18 and isinstance(on_disk["steps"], int)
    again = PresetStore(user_dir=user, samplers=SAMPLERS, schedules=SCHEDULES)
    assert again.get("Landscape draft").values() == {k: v for k, v in values.items() if k != "prompt"} | {"steps": 18}
    assert again.problems == []
    assert [p.name for p in user.iterdir()] == ["Landscape-draft.json"]  # no temporary files left


@pytest.mark.parametrize(
    ("name", "match"),
    [("", "not a usable preset name"), ("../../etc/passwd", "not a usable"), ("x" * 65, "not a usable"),
     ("sd 1.5", "already exists"), ("SDXL", "already exists")],
)
def test_bad_and_taken_names_are_refused(tmp_path: Path, name: str, match: str) -> None:
    store = PresetStore(user_dir=tmp_path / "presets")
    with pytest.raises(PresetError, match=match):
        store.save(name, "sd1", GOOD)
    assert not (tmp_path / "presets").exists() or list((tmp_path / "presets").iterdir()) == []


def test_bad_values_are_refused_when_saving(tmp_path: Path) -> None:
    store = PresetStore(user_dir=tmp_path, samplers=SAMPLERS)
    with pytest.raises(PresetError, match="width"):
        store.save("Odd size", "sd1", {**GOOD, "width": 100})
    with pytest.raises(PresetError, match="sampler"):
        store.save("Odd sampler", "sd1", {**GOOD, "sampler": "Nope"})


def test_user_presets_can_be_deleted_builtin_cannot(tmp_path: Path) -> None:
    store = PresetStore(user_dir=tmp_path)
    store.save("Temp", "sdxl", GOOD)
    store.delete("Temp")
    assert "Temp" not in store.presets and list(tmp_path.glob("*.json")) == []
    with pytest.raises(PresetError, match="built in"):
        store.delete("SDXL")
