"""cog.yaml and predict.py agree with the rest of the project: the lock, the pinned SDK, sdlocal's request limits.

``cog build`` is a Go tool with Docker behind it, neither of which is here; what it would read is checked instead.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sdlocal.engine import request as limits
from sdlocal.engine.samplers import sampler_names, schedule_names
from sdlocal.hosted import TextToImage

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line (names normalised as pip does)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def extra_pins(extra: str) -> dict[str, str]:
    """The pins of one optional-dependencies line of pyproject.toml (read by pattern: Python 3.10 has no tomllib)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(rf"^{extra} = \[(.*)\]$", text, re.MULTILINE)
    assert line, f"pyproject.toml has no one-line {extra!r} extra"
    return dict(PIN.match(spec).groups() for spec in re.findall(r'"([^"]+)"', line.group(1)))  # type: ignore[union-attr]


def load_runner_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdlocal_cog_predict", ROOT / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the inspector imports it by name
    spec.loader.exec_module(module)
    return module


def test_the_build_is_a_gpu_image_on_python_3_11(config: dict[str, Any]) -> None:
    assert config["build"]["gpu"] is True
    assert config["build"]["python_version"] == "3.11"


def test_the_cuda_version_is_the_one_the_locked_torch_was_built_for(config: dict[str, Any]) -> None:
    # PyPI's torch 2.13.0 Linux wheel is the CUDA 13.0 build; a change of torch must revisit build.cuda.
    assert pins(ROOT / "requirements.lock")["torch"] == "2.13.0"
    assert config["build"]["cuda"] == "13.0"


def test_the_sdk_version_is_the_pinned_cog_and_coglet(config: dict[str, Any]) -> None:
    extra = extra_pins("cog")
    assert config["build"]["sdk_version"] == extra["cog"] == extra["coglet"]
    locked = pins(ROOT / "requirements-test.lock")
    assert locked["cog"] == locked["coglet"] == extra["cog"]


def test_python_requirements_are_exactly_the_lock(config: dict[str, Any]) -> None:
    requirements = ROOT / config["build"]["python_requirements"]
    assert requirements.is_file()
    assert pins(requirements) == pins(ROOT / "requirements.lock")
    assert len(pins(requirements)) > 20  # the whole resolved set, not a hand-picked few
    assert "cog" not in pins(requirements) and "coglet" not in pins(requirements)  # cog build installs its own


def test_the_runner_entry_names_a_base_runner_in_predict_py(config: dict[str, Any]) -> None:
    from cog import BaseRunner

    assert "predict" not in config  # cog 0.23 spells it run:, predict: is its deprecated form
    file_name, _, class_name = config["run"].partition(":")
    assert file_name == "predict.py" and (ROOT / file_name).is_file()
    runner = getattr(load_runner_module(), class_name)
    assert isinstance(runner, type) and issubclass(runner, BaseRunner)
    assert "run" in vars(runner) and "predict" not in vars(runner)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    """The runner's inputs as Cog's own inspector reads them (name -> InputField)."""
    from cog._inspector import create_predictor

    module = load_runner_module()
    return create_predictor(module.__name__, "Runner").inputs


def test_the_inputs_are_the_hosted_request(inputs: dict[str, Any]) -> None:
    assert list(inputs) == [f.name for f in dataclasses.fields(TextToImage)]
    required = [name for name, field in inputs.items() if field.default is None]
    assert required == ["prompt"]
    defaults = {f.name: f.default for f in dataclasses.fields(TextToImage) if f.name != "prompt"}
    assert {name: field.default for name, field in inputs.items() if name != "prompt"} == defaults


def test_the_constraints_are_sdlocals_request_limits(inputs: dict[str, Any]) -> None:
    for side in ("width", "height"):
        assert (inputs[side].ge, inputs[side].le) == (limits.MIN_SIDE, limits.MAX_SIDE)
    assert (inputs["steps"].ge, inputs["steps"].le) == (1, limits.MAX_STEPS)
    assert (inputs["cfg_scale"].ge, inputs["cfg_scale"].le) == (0, limits.MAX_CFG)
    assert (inputs["seed"].ge, inputs["seed"].le) == (-1, limits.MAX_SEED)
    assert (inputs["num_outputs"].ge, inputs["num_outputs"].le) == (1, limits.MAX_BATCH_SIZE)


def test_the_choices_are_the_engines_sampler_and_schedule_names(inputs: dict[str, Any]) -> None:
    assert inputs["sampler"].choices == sampler_names()
    assert inputs["schedule_type"].choices == schedule_names()
    assert inputs["sampler"].default in sampler_names()
