"""A1111's built-in scripts, above the engine: X/Y/Z plot, prompt matrix, prompts from file or textbox.

Each script module has ``NAME`` (A1111's API name), ``TITLE``, ``ARGS`` (its positional arguments in A1111's
order, with defaults), ``plan(base, args, ctx) -> ScriptPlan`` and ``describe(img2img, ctx) -> list[ScriptArg]``
(what ``/sdapi/v1/script-info`` and the UI show). The UI and the API both go through ``plan_script`` with the
same positional arguments, so a script behaves the same from either, and the job queue runs the plan
(``JobQueue.submit_script``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine.request import GenerationRequest, RequestError
from sdlocal.scripts.plan import ScriptContext, ScriptPlan, ScriptResult

# A1111's names (what script_name is), in the order /sdapi/v1/scripts lists them, and the module of each.
SCRIPT_MODULES: dict[str, str] = {
    "prompt matrix": "sdlocal.scripts.prompt_matrix",
    "prompts from file or textbox": "sdlocal.scripts.prompts_file",
    "x/y/z plot": "sdlocal.scripts.xyz",
}
NONE = "None"  # the UI's "no script" choice


@dataclass(frozen=True)
class ScriptArg:
    """One argument as ``/sdapi/v1/script-info`` describes it (A1111's fields)."""

    label: str
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": self.choices}


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    title: str
    is_img2img: bool
    args: list[ScriptArg] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "is_alwayson": False, "is_img2img": self.is_img2img,
                "args": [arg.to_dict() for arg in self.args]}


def _module(name: str) -> Any:
    return importlib.import_module(SCRIPT_MODULES[name])


def script_names() -> list[str]:
    """The scripts' A1111 names; every one works for txt2img and img2img."""
    return list(SCRIPT_MODULES)


def titles() -> dict[str, str]:
    """A1111 name -> title, for the UI's Script dropdown."""
    return {name: _module(name).TITLE for name in SCRIPT_MODULES}


def find_script(name: Any) -> str:
    """The A1111 name for ``name`` (the name or the title, any case); RequestError("script_name") otherwise."""
    if isinstance(name, str):
        wanted = name.strip().lower()
        for known in SCRIPT_MODULES:
            if wanted in (known, _module(known).TITLE.lower()):
                return known
    raise RequestError("script_name", name, f"must be one of {', '.join(SCRIPT_MODULES)} (see GET /sdapi/v1/scripts)")


def plan_script(name: str, base: GenerationRequest, args: list[Any] | None, ctx: ScriptContext) -> ScriptPlan:
    """Plan script ``name`` over ``base`` (validated here first) with A1111's positional ``args``."""
    script = find_script(name)
    validate = getattr(ctx.engine, "validate", None)
    if callable(validate):
        validate(base)
    else:
        base.validate()
    return _module(script).plan(base, list(args or []), ctx)


def script_info(ctx: ScriptContext) -> list[ScriptInfo]:
    """Every script for txt2img, then for img2img, with its arguments (``/sdapi/v1/script-info``)."""
    return [ScriptInfo(name=name, title=_module(name).TITLE, is_img2img=img2img,
                       args=_module(name).describe(img2img, ctx))
            for img2img in (False, True) for name in SCRIPT_MODULES]


__all__ = ["NONE", "SCRIPT_MODULES", "ScriptArg", "ScriptContext", "ScriptInfo", "ScriptPlan", "ScriptResult",
           "find_script", "plan_script", "script_info", "script_names", "titles"]
