"""Plain diffusers against sdlocal on a GPU, at the real shapes: SD 1.5 (512x512, 20 steps) and SDXL (1024x1024,
30 steps), fp16, with PyTorch SDPA, xformers (when it imports and works), torch.compile, and sdlocal's fast mode.

Nothing is downloaded: each model is built on the meta device from the bundled configs
(``sdlocal/engine/configs/{sd1,sdxl}``) and its parameters are then made on the GPU with random values (scaled
normal weights, zero biases, unit norms: activations stay finite in fp16), which times the same as the real
weights. The two sides share the UNet and text encoders; each has its own VAE, because sdlocal may keep its
VAE in another precision. Per side and variant, interleaved, after a warm-up run:

- diffusers: ``pipe(prompt, ...)`` (Euler, CFG 7, PIL output);
- sdlocal: the engine's generation path, ``generate.run_generation`` with its progress listener (previews,
  NaN checks, its own decode), on a pipeline placed by ``loader._place`` as the engine places it. Loading is
  not part of it: both sides time one image from prompt to PIL.

Figures: steps/s (between the first and last step callbacks, synchronised), seconds per image end to end, peak
GPU memory (``torch.cuda.max_memory_allocated``) and the first run's time (compilation). Variants run in the
order sdpa, xformers, compile, fast; fast is applied last because it cannot be undone.

Without CUDA (and with ``--tiny``) it runs a reduced version so CI keeps it working: tiny random models,
64x64, 3 steps, fp32 on the CPU; torch.compile only with ``--cpu-compile`` (slow to compile on a CPU).

    python bench/gpu.py [--families sd15 sdxl] [--variants sdpa xformers compile fast] [--runs 3] [--tiny]
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import interleave, machine, parser, ratio, setup, summary, table, write_json

PROMPT = "a photograph of an astronaut riding a horse on mars, detailed, 8k"
SEED = 1234
REAL = {"sd15": {"config": "sd1", "size": 512, "steps": 20}, "sdxl": {"config": "sdxl", "size": 1024, "steps": 30}}
REDUCED = {"sd15": {"config": "sd1", "size": 64, "steps": 3}, "sdxl": {"config": "sdxl", "size": 64, "steps": 3}}
VARIANTS = ("sdpa", "xformers", "compile", "fast")


# ------------------------------------------------------------------------------------------------ models
def random_value(name: str, shape: tuple[int, ...], dtype: Any, device: str, generator: Any) -> Any:
    """Plausible random values for one parameter: normal / sqrt(fan-in) weights, zero biases, unit norms."""
    import torch

    if len(shape) <= 1:
        if name.endswith("bias"):
            return torch.zeros(shape, dtype=dtype, device=device)
        return torch.ones(shape, dtype=dtype, device=device)
    fan_in = math.prod(shape[1:])
    value = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) / math.sqrt(fan_in)
    return value.to(dtype)


def materialise(module: Any, dtype: Any, device: str, seed: int) -> Any:
    """Give a meta-device module random parameters on ``device``; its buffers (position ids) keep real values."""
    import torch
    from accelerate.utils import set_module_tensor_to_device

    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in list(module.named_parameters()):
        value = random_value(name, tuple(param.shape), dtype, device, generator)
        set_module_tensor_to_device(module, name, device, value=value, dtype=dtype)
    return module.to(device).eval()


def build_realshape(family: str, device: str, dtype: Any) -> Any:
    """An SD 1.5 or SDXL pipeline at the real shapes with random weights, made directly on ``device``."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sdlocal.engine.loader import BUNDLED_CONFIGS

    config = BUNDLED_CONFIGS / REAL[family]["config"]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(config / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config / "vae")))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder")))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(
            str(config / "text_encoder_2"))) if family == "sdxl" else None
    parts: dict[str, Any] = {"unet": materialise(unet, dtype, device, 1), "vae": materialise(vae, dtype, device, 2),
                             "text_encoder": materialise(text_encoder, dtype, device, 3),
                             "tokenizer": CLIPTokenizer.from_pretrained(str(config / "tokenizer"))}
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    parts["scheduler"] = diffusers.EulerDiscreteScheduler.from_config(scheduler_config)
    if family == "sdxl":
        parts["text_encoder_2"] = materialise(text_encoder_2, dtype, device, 4)
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(config / "tokenizer_2"))
        return diffusers.StableDiffusionXLPipeline(**parts)
    return diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


def build_reduced(family: str) -> Any:
    from diffusers import EulerDiscreteScheduler

    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1" if family == "sd15" else "sdxl", seed=0)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return pipe


def sdlocal_side(pipe: Any, family: str, device: str, precision: str, data_dir: Path) -> tuple[Any, Any]:
    """A second pipeline sharing ``pipe``'s UNet and text encoders with its own VAE, placed the engine's way."""
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.devices import resolve_runtime
    from sdlocal.engine.loader import LoadedModel, _place, runtime_key
    from sdlocal.engine.models import ModelEntry

    components = dict(pipe.components)
    components["vae"] = copy.deepcopy(pipe.vae)
    own = type(pipe)(**components)
    own.set_progress_bar_config(disable=True)
    runtime = resolve_runtime(EngineConfig(data_dir=data_dir, device=device, precision=precision))  # type: ignore
    _place(own, runtime)
    short = "sd1" if family == "sd15" else "sdxl"
    entry = ModelEntry(name=f"random-{family}", path=data_dir / f"random-{family}", format="diffusers", family=short,
                       inpainting=False, supported=True, reason="", size=0, mtime=0.0)
    loaded = LoadedModel(entry=entry, pipe=own, family=short, load_seconds=0.0, runtime_key=runtime_key(runtime),
                         scheduler_config=dict(own.scheduler.config))
    return loaded, runtime


# ------------------------------------------------------------------------------------------------ variants
def xformers_problem(pipes: list[Any]) -> str:
    """'' when xformers imports and runs here (and is now enabled on the pipes), else why not."""
    try:
        import xformers  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken build
        return f"xformers does not import ({type(exc).__name__}: {str(exc)[:120]})"
    try:
        for pipe in pipes:
            pipe.enable_xformers_memory_efficient_attention()
    except Exception as exc:  # noqa: BLE001 - "torch.cuda.is_available() should be True" and friends
        return f"xformers does not run here ({str(exc).splitlines()[0][:160]})"
    return ""


def back_to_sdpa(pipes: list[Any]) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    for pipe in pipes:
        for name in ("unet", "vae"):
            getattr(pipe, name).set_attn_processor(AttnProcessor2_0())


def uncompile(pipe: Any) -> None:
    import torch

    pipe.unet._compiled_call_impl = None  # what nn.Module.compile() set; the module itself was never replaced
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------ timing
class Clock:
    """Wall time of one image and the times of its step callbacks, synchronised with the GPU when there is one."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.steps: list[float] = []

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def step(self, *_args: Any) -> None:
        self.sync()
        self.steps.append(time.perf_counter())

    @property
    def steps_per_s(self) -> float | None:
        if len(self.steps) < 2:
            return None
        return (len(self.steps) - 1) / (self.steps[-1] - self.steps[0])


def measure(run: Any, cuda: bool) -> dict[str, Any]:
    import torch

    clock = Clock(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock.sync()
    started = time.perf_counter()
    image = run(clock)
    clock.sync()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"seconds": seconds, "steps_per_s": clock.steps_per_s, "peak_gib": peak, "image": image}


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--families", nargs="+", default=list(REAL), choices=list(REAL))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu-compile", action="store_true", help="include torch.compile in the reduced CPU run")
    ap.add_argument("--real-shapes", action="store_true",
                    help="build the real-shape models even without CUDA (fp32 on the CPU: checks the build path)")
    ap.add_argument("--size", type=int, help="override the image side of every family")
    ap.add_argument("--steps", type=int, help="override the steps of every family")
    args = ap.parse_args()
    setup()
    import numpy as np
    import torch

    from sdlocal.engine import GenerationRequest
    from sdlocal.engine.fast import apply_fast_mode
    from sdlocal.engine.generate import RunControl, run_generation
    from sdlocal.engine.loader import quiet_libraries
    from sdlocal.engine.samplers import SchedulerCache

    quiet_libraries()
    cuda = torch.cuda.is_available() and not args.tiny
    device, precision = ("cuda", "fp16") if cuda else ("cpu", "fp32")
    real_shapes = cuda or args.real_shapes
    shapes = {name: {**shape, **({"size": args.size} if args.size else {}), **({"steps": args.steps} if args.steps
                                                                                else {})}
              for name, shape in (REAL if real_shapes else REDUCED).items()}
    runs = args.runs if cuda else min(args.runs, 2)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            size, steps = shapes[family]["size"], shapes[family]["steps"]
            started = time.perf_counter()
            if real_shapes:
                pipe = build_realshape(family, device, torch.float16 if cuda else torch.float32)
            else:
                pipe = build_reduced(family)
            pipe.set_progress_bar_config(disable=True)
            loaded, runtime = sdlocal_side(pipe, family, device, precision, Path(tmp))
            build_seconds = time.perf_counter() - started
            schedulers = SchedulerCache()
            request = GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=SEED,
                                        sampler="Euler", cfg_scale=7.0).validate()

            def diffusers_run(clock: Clock, pipe: Any = pipe, size: int = size, steps: int = steps) -> Any:
                return pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=steps, guidance_scale=7.0,
                            height=size, width=size, generator=torch.Generator("cpu").manual_seed(SEED),
                            callback_on_step_end=lambda p, i, t, kw: (clock.step(), kw)[1]).images[0]

            def sdlocal_run(clock: Clock, loaded: Any = loaded, request: Any = request,
                            schedulers: Any = schedulers) -> Any:
                scheduler = schedulers.get(loaded.key, "Euler", "Automatic", loaded.scheduler_config)
                output = run_generation(loaded, request, scheduler, RunControl(), loaded.entry.name, None,
                                        on_progress=clock.step)
                return output.images[0].image

            for variant in args.variants:
                key = f"{family}/{variant}"
                if variant == "xformers":
                    problem = xformers_problem([pipe, loaded.pipe])
                    if problem:
                        skipped[key] = problem
                        continue
                elif variant == "compile":
                    if not cuda and not args.cpu_compile:
                        skipped[key] = "on the CPU compiling takes minutes (add --cpu-compile)"
                        continue
                    pipe.unet.compile(fullgraph=False)
                applied: list[str] = []
                if variant == "fast":
                    applied = apply_fast_mode(pipe, device)
                    applied += [f"sdlocal VAE: {a}" for a in apply_fast_mode(loaded.pipe, device, only=[
                        o for o in ("channels_last", "fuse_qkv") if o in _fast_plan(device)])]
                figures: dict[str, list[dict[str, Any]]] = {"diffusers": [], "sdlocal": []}
                first: dict[str, float] = {}

                def call(side: str, fn: Any, figures: dict = figures, first: dict = first) -> float:
                    result = measure(fn, cuda)
                    if side not in first:
                        first[side] = result["seconds"]
                    else:
                        figures[side].append(result)
                    return result["seconds"]

                interleave({"diffusers": lambda call=call: call("diffusers", diffusers_run),
                            "sdlocal": lambda call=call: call("sdlocal", sdlocal_run)}, runs, warmup=1)
                images = {side: np.asarray(figs[-1]["image"], dtype=np.int16) for side, figs in figures.items()}
                difference = np.abs(images["diffusers"] - images["sdlocal"])
                for side, figs in figures.items():
                    results.append({
                        "family": family, "variant": variant, "side": side, "size": size, "steps": steps,
                        "precision": precision, "device": device, "applied": applied,
                        "vae_precision": runtime.vae_precision if side == "sdlocal" else str(pipe.vae.dtype)[6:],
                        "seconds_per_image": summary([f["seconds"] for f in figs]),
                        "steps_per_s": summary([f["steps_per_s"] for f in figs if f["steps_per_s"]], 2),
                        "peak_gib": max((f["peak_gib"] for f in figs if f["peak_gib"] is not None), default=None),
                        "first_run_s": round(first[side], 3),
                        "image_vs_other_side": {"max": int(difference.max()),
                                                "mean": round(float(difference.mean()), 3)},
                        "build_s": round(build_seconds, 1),
                    })
                if variant == "xformers":
                    back_to_sdpa([pipe, loaded.pipe])
                elif variant == "compile":
                    uncompile(pipe)
            del pipe, loaded
            if cuda:
                torch.cuda.empty_cache()

    rows = []
    base = {(r["family"], r["side"]): r for r in results if r["variant"] == "sdpa"}
    for r in results:
        ref = base.get((r["family"], r["side"]))
        speedup = ratio(ref["seconds_per_image"]["median"], r["seconds_per_image"]["median"]) if ref else None
        rows.append([f"{r['family']} {r['size']}px {r['steps']} st", r["variant"], r["side"],
                     r["steps_per_s"]["median"],
                     r["seconds_per_image"]["median"], r["seconds_per_image"]["min"], speedup,
                     None if r["peak_gib"] is None else round(r["peak_gib"], 2), r["first_run_s"]])
    where = torch.cuda.get_device_name(0) if cuda else (
        "CPU (real shapes, fp32)" if real_shapes else "CPU (reduced: tiny models, fp32)")
    print(f"{where}, {precision}, {runs} timed runs per side after a warm-up, interleaved")
    print(table(["model", "variant", "side", "steps/s", "s/image", "min s", "x vs sdpa", "peak GiB", "first run s"],
                rows))
    pairs = {}
    for r in results:
        if r["side"] == "sdlocal":
            other = next(o for o in results if o["family"] == r["family"] and o["variant"] == r["variant"]
                         and o["side"] == "diffusers")
            pairs[f"{r['family']}/{r['variant']}"] = ratio(r["seconds_per_image"]["median"],
                                                          other["seconds_per_image"]["median"])
    print("\nsdlocal / diffusers, s/image medians: " + ", ".join(f"{k} {v}" for k, v in pairs.items()))
    for key, why in skipped.items():
        print(f"skipped {key}: {why}")
    write_json("gpu", {"benchmark": "gpu", "tiny": not real_shapes, "machine": machine(), "device": where,
                       "results": results, "sdlocal_over_diffusers": pairs, "skipped": skipped}, args.results_dir)
    return 0


def _fast_plan(device: str) -> tuple[str, ...]:
    from sdlocal.engine.fast import plan_for

    return plan_for(device)


if __name__ == "__main__":
    raise SystemExit(main())
