"""A1111 sampler and schedule names: each valid pair builds from the model's own config and runs; others are refused."""

from __future__ import annotations

import importlib.util

import pytest

from sdlocal.engine import RequestError
from sdlocal.engine import samplers as S

SD1_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                 "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
SDXL_SCHEDULER = {**SD1_SCHEDULER, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading",
                  "interpolation_type": "linear", "use_karras_sigmas": False}

ALL_PAIRS = [(name, schedule) for name in S.sampler_names() for schedule in S.supported_schedules(name)]


def test_a1111_names_in_order() -> None:
    names = S.sampler_names()
    expected = ["Euler a", "Euler", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM",
                "PLMS", "UniPC", "LCM"]
    assert [n for n in names if n != "LMS"] == expected
    assert ("LMS" in names) == (importlib.util.find_spec("scipy") is not None)
    assert S.schedule_names() == ["Automatic", "Karras", "Exponential", "SGM Uniform"]


def test_lms_without_scipy_says_what_to_install() -> None:
    if importlib.util.find_spec("scipy") is not None:
        assert S.check("LMS", "Automatic") == ("LMS", "Automatic")
        return
    with pytest.raises(RequestError, match="scipy"):
        S.check("LMS", "Automatic")


@pytest.mark.parametrize(("sampler", "schedule"), ALL_PAIRS)
@pytest.mark.parametrize("base", [SD1_SCHEDULER, SDXL_SCHEDULER], ids=["sd1", "sdxl"])
def test_every_pair_builds_with_the_models_prediction_type(sampler: str, schedule: str, base: dict) -> None:
    scheduler = S.build_scheduler(sampler, schedule, {**base, "prediction_type": "v_prediction"})
    assert scheduler.config.prediction_type == "v_prediction"
    for key, value in S.SCHEDULES[schedule].items():
        assert scheduler.config[key] == value
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) >= 4


def test_model_config_flags_do_not_leak_between_schedules() -> None:
    karras = S.build_scheduler("Euler", "Karras", SD1_SCHEDULER)
    automatic = S.build_scheduler("Euler", "Automatic", dict(karras.config))
    assert automatic.config.use_karras_sigmas is False


@pytest.mark.parametrize(("sampler", "schedule"), [("DDIM", "Karras"), ("Euler a", "Exponential"),
                                                   ("PLMS", "Karras"), ("LCM", "Exponential"),
                                                   ("DPM++ SDE", "SGM Uniform")])
def test_unsupported_pair_names_schedule_and_the_valid_ones(sampler: str, schedule: str) -> None:
    with pytest.raises(RequestError) as caught:
        S.check(sampler, schedule)
    assert caught.value.field == "schedule"
    assert caught.value.allowed.startswith(f"{sampler} supports: Automatic")


def test_unknown_names() -> None:
    with pytest.raises(RequestError) as caught:
        S.check("Euler b", "Automatic")
    assert caught.value.field == "sampler" and "DPM++ 2M" in caught.value.allowed
    with pytest.raises(RequestError) as caught:
        S.check("Euler", "Polyexponential")
    assert caught.value.field == "schedule" and "SGM Uniform" in caught.value.allowed


def test_legacy_and_case_insensitive_names() -> None:
    assert S.check("DPM++ 2M Karras", "Automatic") == ("DPM++ 2M", "Karras")
    assert S.check("euler A", "automatic") == ("Euler a", "Automatic")
    assert S.check("dpm++ 2m", "sgm uniform") == ("DPM++ 2M", "SGM Uniform")


def test_cache_hands_out_fresh_copies() -> None:
    cache = S.SchedulerCache()
    first = cache.get("m", "DPM++ 2M", "Karras", SD1_SCHEDULER)
    second = cache.get("m", "DPM++ 2M", "Karras", SD1_SCHEDULER)
    assert first is not second and dict(first.config) == dict(second.config)
    cache.forget("m")
    assert cache.get("m", "Euler", "Automatic", SD1_SCHEDULER).config.use_karras_sigmas is False


@pytest.mark.parametrize(("sampler", "schedule"), ALL_PAIRS)
def test_every_pair_runs_two_steps_on_the_tiny_model(engine, request_for, sampler: str, schedule: str) -> None:
    result = engine.generate(request_for(sampler=sampler, schedule=schedule, steps=2))
    assert len(result.images) == 1 and result.images[0].image.size == (64, 64)
    assert f"Sampler: {sampler}," in result.images[0].infotext
    assert not [w for w in result.warnings if "NaN" in w]


@pytest.mark.parametrize(("sampler", "karras", "exponential"), [
    ("DPM++ 2M", True, False), ("DPM++ SDE", True, False), ("DPM++ 2M SDE", False, True),
    ("Euler", False, False), ("UniPC", False, False), ("Heun", False, False),
])
def test_automatic_is_the_a1111_19_default_schedule(sampler: str, karras: bool, exponential: bool) -> None:
    scheduler = S.build_scheduler(sampler, "Automatic", SDXL_SCHEDULER)
    assert bool(scheduler.config.get("use_karras_sigmas")) is karras
    assert bool(scheduler.config.get("use_exponential_sigmas")) is exponential
    expected = "Karras" if karras else "Exponential" if exponential else "Automatic"
    assert S.effective_schedule(sampler, "Automatic") == expected
    assert S.effective_schedule(sampler, "SGM Uniform") == "SGM Uniform"  # an explicit choice is kept


def test_the_cache_builds_automatic_and_its_schedule_once() -> None:
    cache = S.SchedulerCache()
    automatic = cache.get("m", "DPM++ 2M", "Automatic", SD1_SCHEDULER)
    assert automatic.config.use_karras_sigmas is True
    assert list(cache._built) == [("m", "DPM++ 2M", "Karras")]
    cache.get("m", "DPM++ 2M", "Karras", SD1_SCHEDULER)
    assert len(cache._built) == 1


def test_aliases_are_one_table_with_the_names() -> None:
    assert list(S.SAMPLER_ALIASES) == [spec.name for spec in S.SAMPLERS]
    assert S.SAMPLER_ALIASES["Euler a"] == ["k_euler_a", "k_euler_ancestral"] and S.SAMPLER_ALIASES["DDIM"] == []
    assert S.resolve_alias("k_dpmpp_2m") == "DPM++ 2M" and S.resolve_alias("K_EULER") == "Euler"
    assert S.resolve_alias("DPM++ 2M") == "DPM++ 2M" and S.resolve_alias("no such") == "no such"
    assert S.check("k_dpmpp_2m_sde", "Automatic") == ("DPM++ 2M SDE", "Automatic")


def test_the_api_lists_the_engine_table() -> None:
    from sdlocal.api import sdapi

    assert sdapi.SAMPLER_ALIASES is S.SAMPLER_ALIASES


def test_sampler_names_import_neither_torch_nor_diffusers() -> None:
    import subprocess
    import sys

    code = ("import sys; from sdlocal.engine import samplers; names = samplers.sampler_names(); "
            "samplers.resolve_alias('k_euler'); samplers.effective_schedule('DPM++ 2M', 'Automatic'); "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules), len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "[]", out.stdout


def test_automatic_runs_and_writes_the_schedule_that_ran(engine, request_for) -> None:
    automatic = engine.generate(request_for(sampler="DPM++ 2M", schedule="Automatic", seed=3))
    pipe = engine._cache._models[str(engine.current_model.path)].pipe
    assert pipe.scheduler.config.use_karras_sigmas is True
    karras = engine.generate(request_for(sampler="DPM++ 2M", schedule="Karras", seed=3))
    assert "Sampler: DPM++ 2M, Schedule type: Karras, " in automatic.images[0].infotext
    assert automatic.images[0].image.tobytes() == karras.images[0].image.tobytes()
    sde = engine.generate(request_for(sampler="DPM++ 2M SDE", seed=3))
    assert "Schedule type: Exponential" in sde.images[0].infotext
    assert pipe.scheduler.config.use_exponential_sigmas is True
    euler = engine.generate(request_for(sampler="Euler", seed=3))
    assert "Schedule type" not in euler.images[0].infotext
