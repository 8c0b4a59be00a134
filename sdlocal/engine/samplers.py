"""A1111 sampler and schedule-type names mapped to diffusers schedulers.

Each scheduler is built from the loaded model's own scheduler config (beta schedule, prediction type,
timestep offset) plus the sampler's and schedule's overrides, so a v-prediction SD 2.x model stays
v-prediction whichever sampler is picked. Support is data: one row per sampler naming its class, its fixed
overrides, the schedule "Automatic" stands for, and the k-diffusion aliases older A1111 clients send; which
schedule types a class can honour is read from the class's own ``__init__`` options.

This module imports neither torch nor diffusers at import time: the UI lists sampler names before the model.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any

from sdlocal.engine.request import RequestError

SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    class_name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # a Python package the diffusers class imports, if any
    # What "Automatic" means for this sampler (A1111 1.9+): a named schedule, or "Automatic" for the
    # scheduler class's own default sigmas.
    automatic: str = AUTOMATIC
    aliases: tuple[str, ...] = ()  # A1111's k-diffusion names ("k_euler_a") that older clients still send


SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "k_euler_ancestral")),
    SamplerSpec("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", needs="scipy", aliases=("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",)),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",)),
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                automatic="Karras", aliases=("k_dpmpp_2m",)),
    # The single-step DPM-Solver++ in its SDE form. diffusers' DPMSolverSDEScheduler needs torchsde and draws
    # one Brownian tree per batch from a single seed, which would break "image i of a batch == seed + i";
    # this one takes its noise from each image's own generator.
    SamplerSpec("DPM++ SDE", "DPMSolverSinglestepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "lower_order_final": True},
                automatic="Karras", aliases=("k_dpmpp_sde",)),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                automatic="Exponential", aliases=("k_dpmpp_2m_sde",)),
    SamplerSpec("DDIM", "DDIMScheduler"),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    SamplerSpec("UniPC", "UniPCMultistepScheduler"),
    SamplerSpec("LCM", "LCMScheduler", aliases=("k_lcm",)),
)
_BY_NAME = {spec.name: spec for spec in SAMPLERS}
_BY_LOWER = {spec.name.lower(): spec for spec in SAMPLERS}
_BY_ALIAS = {alias.lower(): spec for spec in SAMPLERS for alias in spec.aliases}

# The one sampler-name table the HTTP API lists (``/sdapi/v1/samplers`` "aliases"), derived from SAMPLERS.
SAMPLER_ALIASES: dict[str, list[str]] = {spec.name: list(spec.aliases) for spec in SAMPLERS}


def resolve_alias(name: str) -> str:
    """The A1111 name for a k-diffusion alias ("k_dpmpp_2m" -> "DPM++ 2M"); any other name comes back unchanged."""
    spec = _BY_ALIAS.get(str(name).strip().lower())
    return spec.name if spec is not None else name


def _missing_dependency(spec: SamplerSpec) -> str:
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        return f"needs the {spec.needs} package (pip install {spec.needs})"
    return ""


def sampler_names() -> list[str]:
    """The samplers usable with the packages installed here, in A1111's order."""
    return [spec.name for spec in SAMPLERS if not _missing_dependency(spec)]


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def _scheduler_class(spec: SamplerSpec) -> type:
    import diffusers

    return getattr(diffusers, spec.class_name)


def supported_schedules(sampler: str) -> list[str]:
    """The schedule types this sampler's scheduler class can honour (from its constructor's options)."""
    spec = resolve_sampler(sampler)
    params = inspect.signature(inspect.unwrap(_scheduler_class(spec).__init__)).parameters
    return [name for name, overrides in SCHEDULES.items() if all(key in params for key in overrides)]


def resolve_sampler(name: str) -> SamplerSpec:
    """The spec for an A1111 sampler name (case-insensitive); RequestError listing the valid ones otherwise."""
    spec = _BY_NAME.get(name) or _BY_LOWER.get(str(name).strip().lower()) or _BY_ALIAS.get(str(name).strip().lower())
    if spec is None:
        raise RequestError("sampler", name, f"must be one of: {', '.join(sampler_names())}")
    missing = _missing_dependency(spec)
    if missing:
        raise RequestError("sampler", name, f"{name} {missing}; available here: {', '.join(sampler_names())}")
    return spec


def resolve_schedule(name: str) -> str:
    for known in SCHEDULES:
        if known.lower() == str(name).strip().lower():
            return known
    raise RequestError("schedule", name, f"must be one of: {', '.join(SCHEDULES)}")


def split_legacy_name(sampler: str, schedule: str) -> tuple[str, str]:
    """A1111 before 1.9 put the schedule in the sampler name ("DPM++ 2M Karras"); split such names."""
    if sampler in _BY_NAME or sampler.lower() in _BY_LOWER:
        return sampler, schedule
    for suffix in ("Karras", "Exponential"):
        base = sampler[: -len(suffix)].strip()
        if sampler.lower().endswith(" " + suffix.lower()) and base.lower() in _BY_LOWER and schedule == "Automatic":
            return _BY_LOWER[base.lower()].name, suffix
    return sampler, schedule


def effective_schedule(sampler: str, schedule: str) -> str:
    """The schedule that really runs: "Automatic" is the sampler's own choice (A1111 1.9+: Karras for DPM++ 2M
    and DPM++ SDE, Exponential for DPM++ 2M SDE, the scheduler's default sigmas elsewhere).

    Names it does not know come back unchanged, so the infotext of any request can be written.
    """
    if schedule != AUTOMATIC:
        return schedule
    spec = _BY_NAME.get(sampler) or _BY_LOWER.get(str(sampler).strip().lower())
    return spec.automatic if spec is not None else schedule


def check(sampler: str, schedule: str) -> tuple[str, str]:
    """Validate a sampler/schedule pair; returns their canonical names or raises RequestError."""
    sampler, schedule = split_legacy_name(sampler, schedule)
    spec = resolve_sampler(sampler)
    schedule = resolve_schedule(schedule)
    allowed = supported_schedules(spec.name)
    if schedule not in allowed:
        raise RequestError("schedule", schedule, f"{spec.name} supports: {', '.join(allowed)}")
    return spec.name, schedule


def build_scheduler(sampler: str, schedule: str, base_config: Any) -> Any:
    """A new scheduler for ``sampler`` + ``schedule`` on top of the model's own scheduler config."""
    name, schedule = check(sampler, schedule)
    spec = _BY_NAME[name]
    schedule = effective_schedule(name, schedule)
    overrides = {**spec.overrides, **SCHEDULES[schedule]}
    config = dict(base_config)
    # The model's config may already carry a sigma schedule flag from another sampler (a saved Karras
    # scheduler); only the one this schedule asks for may be on, or diffusers refuses the combination.
    for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if flag in config and flag not in overrides:
            config[flag] = False
    cls = _scheduler_class(spec)
    # Keys of the model's original scheduler that this class does not take (PNDM's skip_prk_steps for LCM)
    # would only produce "will be ignored" log noise on every build.
    params = inspect.signature(inspect.unwrap(cls.__init__)).parameters
    config = {key: value for key, value in config.items() if key in params or key.startswith("_")}
    return cls.from_config(config, **overrides)


class SchedulerCache:
    """Built schedulers per (model key, sampler, schedule); a fresh copy per run since schedulers hold state."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str, str], Any] = {}

    def get(self, model_key: str, sampler: str, schedule: str, base_config: Any) -> Any:
        key = (model_key, sampler, effective_schedule(sampler, schedule))
        template = self._built.get(key)
        if template is None:
            template = build_scheduler(sampler, schedule, base_config)
            self._built[key] = template
        # from_config on the template's frozen config is cheap and gives clean step state.
        return type(template).from_config(template.config)

    def forget(self, model_key: str) -> None:
        for key in [k for k in self._built if k[0] == model_key]:
            del self._built[key]
