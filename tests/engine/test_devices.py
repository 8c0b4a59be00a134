"""Device, precision and attention choices, with CPU bf16 detection tested on other machines' flag sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.devices import choose_cpu_precision, cpu_native_bf16, read_cpu_flags, resolve_runtime

SKYLAKE_X = {"sse4_2", "avx2", "avx512f", "avx512bw", "avx512vl"}
COOPER_LAKE = SKYLAKE_X | {"avx512_bf16"}
SAPPHIRE_RAPIDS = SKYLAKE_X | {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
ZEN4 = SKYLAKE_X | {"avx512_bf16"}
OLD_LAPTOP = {"sse4_2", "avx", "avx2", "fma"}
GRAVITON3 = {"fp", "asimd", "sve", "bf16", "i8mm"}
GRAVITON2 = {"fp", "asimd", "atomics"}


@pytest.mark.parametrize(
    ("flags", "machine", "native"),
    [
        (SKYLAKE_X, "x86_64", False),
        (COOPER_LAKE, "x86_64", True),
        (SAPPHIRE_RAPIDS, "x86_64", True),
        (ZEN4, "AMD64", True),
        (OLD_LAPTOP, "x86_64", False),
        (set(), "x86_64", False),
        (GRAVITON3, "aarch64", True),
        (GRAVITON2, "aarch64", False),
        ({"bf16"}, "arm64", True),  # Apple M2+: sysctl hw.optional.arm.FEAT_BF16 -> "bf16"
        ({"avx512_bf16"}, "arm64", False),  # x86 names mean nothing on ARM
    ],
)
def test_native_bf16_detection(flags: set[str], machine: str, native: bool) -> None:
    result, reason = cpu_native_bf16(flags, machine)
    assert result is native
    assert reason


def test_auto_picks_bf16_only_where_native_and_says_why() -> None:
    precision, reason, warnings = choose_cpu_precision("auto", SAPPHIRE_RAPIDS, "x86_64")
    assert precision == "bf16" and "amx_bf16" in reason and not warnings
    precision, reason, warnings = choose_cpu_precision("auto", OLD_LAPTOP, "x86_64")
    assert precision == "fp32" and "no native bf16" in reason and not warnings


def test_explicit_choices_are_honoured_with_warnings() -> None:
    assert choose_cpu_precision("fp32", SAPPHIRE_RAPIDS, "x86_64")[0] == "fp32"
    precision, _reason, warnings = choose_cpu_precision("fp16", SAPPHIRE_RAPIDS, "x86_64")
    assert precision == "fp16" and any("slow" in w for w in warnings)
    precision, _reason, warnings = choose_cpu_precision("bf16", OLD_LAPTOP, "x86_64")
    assert precision == "bf16" and any("emulated" in w for w in warnings)


def test_cpu_flags_are_read_from_the_os() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this OS")
    line = next((ln for ln in cpuinfo.read_text().splitlines() if ln.split(":")[0].strip() in ("flags", "Features")),
                "")
    assert read_cpu_flags() == set(line.partition(":")[2].split())


def _config(tmp_path: Path, **options: object) -> EngineConfig:
    return EngineConfig(data_dir=tmp_path, device="cpu", **options)  # type: ignore[arg-type]


def test_runtime_on_cpu_follows_the_flags(tmp_path: Path) -> None:
    runtime = resolve_runtime(_config(tmp_path), cpu_flags=SAPPHIRE_RAPIDS)
    assert (runtime.device, runtime.precision, runtime.vae_precision) == ("cpu", "bf16", "bf16")
    caps = runtime.capabilities
    assert caps.precision == "bf16" and caps.precision_reason and caps.device_name
    assert set(caps.precisions) == {"fp32", "fp16", "bf16"}
    runtime = resolve_runtime(_config(tmp_path), cpu_flags=OLD_LAPTOP)
    assert runtime.precision == "fp32"


def test_no_half_vae_keeps_the_vae_in_fp32(tmp_path: Path) -> None:
    runtime = resolve_runtime(_config(tmp_path, no_half_vae=True), cpu_flags=SAPPHIRE_RAPIDS)
    assert (runtime.precision, runtime.vae_precision) == ("bf16", "fp32")


def test_xformers_and_offload_are_refused_on_cpu_with_reasons(tmp_path: Path) -> None:
    runtime = resolve_runtime(_config(tmp_path, attention="xformers", cpu_offload=True), cpu_flags=OLD_LAPTOP)
    caps = runtime.capabilities
    assert runtime.attention == "sdpa" and caps.attentions["sdpa"] == ""
    assert "NVIDIA" in caps.attentions["xformers"]
    assert runtime.cpu_offload is False
    assert any("offload" in w for w in caps.warnings) and any("xformers" in w for w in caps.warnings)


@pytest.mark.parametrize(("mode", "attention_slicing", "what"), [
    ("medvram", False, "model CPU offload"), ("lowvram", True, "sequential CPU offload"),
])
def test_memory_modes_on_cpu_keep_the_slicing_and_say_why_offload_is_off(tmp_path: Path, mode: str,
                                                                         attention_slicing: bool, what: str) -> None:
    runtime = resolve_runtime(_config(tmp_path, **{mode: True}), cpu_flags=OLD_LAPTOP)
    assert runtime.vae_slicing is True and runtime.attention_slicing is attention_slicing
    assert runtime.cpu_offload is False and runtime.sequential_offload is False
    caps = runtime.capabilities
    assert caps.memory_mode == mode and f"no {what}" in caps.memory_reason and "NVIDIA" in caps.memory_reason
    assert [w for w in caps.warnings if w.startswith(f"--{mode}: {what} needs an NVIDIA GPU")]


@pytest.mark.parametrize(("options", "offload", "attention_slicing", "vae_slicing"), [
    ({}, "none", False, False),
    ({"medvram": True}, "model", False, True),
    ({"lowvram": True}, "sequential", True, True),
    ({"lowvram": True, "medvram": True, "cpu_offload": True}, "sequential", True, True),  # the lowest wins
    ({"cpu_offload": True, "attention_slicing": True}, "model", True, False),
    ({"vae_slicing": True}, "none", False, True),
])
def test_memory_modes_on_an_nvidia_gpu(tmp_path: Path, options: dict, offload: str, attention_slicing: bool,
                                       vae_slicing: bool) -> None:
    from sdlocal.engine.devices import resolve_memory

    plan = resolve_memory(_config(tmp_path, **options), "cuda")
    assert (plan.offload, plan.attention_slicing, plan.vae_slicing) == (offload, attention_slicing, vae_slicing)
    assert plan.warnings == [] and plan.reason
    assert resolve_memory(_config(tmp_path, lowvram=True), "cuda", attention="xformers").attention_slicing is False


def test_memory_options_are_part_of_the_runtime_key(tmp_path: Path) -> None:
    from dataclasses import replace

    from sdlocal.engine.loader import runtime_key

    base = resolve_runtime(_config(tmp_path), cpu_flags=OLD_LAPTOP)
    keys = {runtime_key(base), runtime_key(replace(base, sequential_offload=True)),
            runtime_key(replace(base, cpu_offload=True)), runtime_key(replace(base, attention_slicing=True)),
            runtime_key(replace(base, vae_slicing=True))}
    assert len(keys) == 5


def test_asking_for_cuda_without_one_falls_back_with_a_warning(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    runtime = resolve_runtime(EngineConfig(data_dir=tmp_path, device="cuda"), cpu_flags=OLD_LAPTOP)
    assert runtime.device == "cpu"
    assert any("cuda" in w for w in runtime.capabilities.warnings)


def test_engine_capabilities_and_memory_without_a_model(tmp_path: Path) -> None:
    from sdlocal.engine import Engine

    engine = Engine(_config(tmp_path))
    caps = engine.capabilities()
    assert caps.device == "cpu" and caps.precision in ("bf16", "fp32")
    assert engine.memory()


# ------------------------------------------------------------------------- timing where the OS lists no flags
@pytest.mark.parametrize(("fp32", "bf16", "native"), [(1.0, 0.45, True), (1.0, 0.8, True), (1.0, 0.95, False),
                                                       (1.0, 3.0, False), (0.0, 1.0, False)])
def test_bf16_judged_by_timing(fp32: float, bf16: float, native: bool) -> None:
    from sdlocal.engine.devices import bf16_by_timing

    result, reason = bf16_by_timing(fp32, bf16)
    assert result is native and "timed" in reason


def test_timing_is_used_only_without_flags_and_cached_per_torch(tmp_path: Path) -> None:
    import json

    from sdlocal.engine.devices import timed_native_bf16

    calls: list[int] = []

    def fast_bf16() -> tuple[float, float]:
        calls.append(1)
        return 1.0, 0.5

    cache = tmp_path / "cache" / "cpu-bf16.json"
    assert timed_native_bf16(cache, fast_bf16)[0] is True
    assert timed_native_bf16(cache, fast_bf16)[0] is True
    assert len(calls) == 1, "the second start must reuse the cached timing"
    stored = json.loads(cache.read_text())
    stored["torch"] = "0.0-another-build"
    cache.write_text(json.dumps(stored))
    assert timed_native_bf16(cache, lambda: (1.0, 2.0))[0] is False, "a new torch is timed again"
    cache.write_text("{not json")
    assert timed_native_bf16(cache, fast_bf16)[0] is True  # a damaged cache is measured again, not fatal

    timed = (True, "bf16 matmuls ran 2.0x faster (timed)")
    assert choose_cpu_precision("auto", set(), "x86_64", timed)[0] == "bf16"
    assert choose_cpu_precision("auto", OLD_LAPTOP, "x86_64", timed)[0] == "fp32", "known flags win over timing"
    assert choose_cpu_precision("fp32", set(), "x86_64", timed)[0] == "fp32", "an explicit choice still wins"


def test_resolve_runtime_times_the_cpu_when_flags_are_unknown(tmp_path: Path, monkeypatch) -> None:
    from sdlocal.engine import devices

    monkeypatch.setattr(devices, "measure_bf16_speed", lambda: (1.0, 2.5))
    monkeypatch.setattr(devices.timed_native_bf16, "__defaults__", (devices.measure_bf16_speed,))
    runtime = resolve_runtime(_config(tmp_path), cpu_flags=set())
    assert runtime.precision == "fp32" and "timed" in runtime.capabilities.precision_reason
    assert (tmp_path / "cache" / "cpu-bf16.json").is_file()


# ------------------------------------------------------------------ auto on a native-bf16 CPU is exactly bf16
def _without_reason(runtime) -> dict:
    from dataclasses import asdict

    fields = asdict(runtime)
    fields["capabilities"].pop("precision_reason")
    return fields


class _RecordingPipe:
    """Records what ``loader._place`` does to a pipeline, so two runtimes can be compared without a model."""

    def __init__(self) -> None:
        import torch

        self.calls: list[tuple] = []
        pipe = self

        class _Vae:
            dtype = torch.float32
            config = type("Config", (), {"force_upcast": False})()

            def to(self, dtype=None):
                pipe.calls.append(("vae.to", dtype))

            def enable_slicing(self):
                pipe.calls.append(("vae.enable_slicing",))

        self.vae = _Vae()

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args, tuple(sorted(kwargs.items()))))


@pytest.mark.parametrize(("flags", "machine"), [(SAPPHIRE_RAPIDS, "x86_64"), (COOPER_LAKE, "x86_64"),
                                                (GRAVITON3, "aarch64")])
def test_auto_on_a_native_bf16_cpu_is_exactly_the_bf16_runtime(tmp_path: Path, monkeypatch, flags: set[str],
                                                               machine: str) -> None:
    """Issue 12 measured auto slower than bf16 on such a CPU: it is the same configuration, so that was noise.

    Every field of the Runtime (dtype, VAE precision, attention, slicing, offload, fast) matches apart from the
    reason text, no timing probe runs (the OS listed the flags), the loaded-model cache key is the same, and the
    loader places a pipeline identically.
    """
    from sdlocal.engine import devices
    from sdlocal.engine.loader import _place, runtime_key

    monkeypatch.setattr(devices.platform, "machine", lambda: machine)

    def no_probe(*_args, **_kwargs):
        raise AssertionError("auto must not time the CPU when the OS lists its flags")

    monkeypatch.setattr(devices, "timed_native_bf16", no_probe)
    auto = resolve_runtime(_config(tmp_path, precision="auto"), cpu_flags=flags)
    bf16 = resolve_runtime(_config(tmp_path, precision="bf16"), cpu_flags=flags)
    assert auto.precision == "bf16" and auto.vae_precision == "bf16"
    assert _without_reason(auto) == _without_reason(bf16)
    assert runtime_key(auto) == runtime_key(bf16)
    placed = []
    for runtime in (auto, bf16):
        pipe = _RecordingPipe()
        _place(pipe, runtime)
        placed.append(pipe.calls)
    assert placed[0] == placed[1] and ("to", ("cpu",), ()) in placed[0]
