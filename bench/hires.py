"""Hires fix through the engine against the same two plain diffusers calls made by hand.

By hand: ``StableDiffusionPipeline`` txt2img at the first size (latents out), a bilinear latent upscale to twice
the size (A1111's "Latent"), then ``StableDiffusionImg2ImgPipeline.from_pipe`` over those latents with the
schedule A1111's second pass uses (T = int(N / strength) steps, the last N of them), the same per-image CPU
generator going on from the first call, and a VAE decode. Engine: ``Engine.generate`` with ``hires`` (upscaler
"Latent", the same steps and strength). One SD 1.5-shaped single file: the tiny random model (default) or, with
``--realsize``, the real-size file (2.1 GB of random fp16 weights, built once into the bench cache). Euler, CFG 7,
seed 1234, interleaved; target engine / diffusers <= 1.03 (ratio of medians). The images of both paths are
compared too (the engine's hires fix is that pair of calls, so they should match).

    python bench/hires.py [--realsize] [--runs 5] [--steps 2] [--size 256] [--device cpu|cuda] [--tiny]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    interleave,
    machine,
    parser,
    prepare_sd15,
    ratio,
    summary,
    table,
    write_json,
)

SEED = 1234
PROMPT = "a lighthouse on a cliff at dusk"
STRENGTH = 0.7
TARGET = 1.03



def by_hand(base: Any, img2img: Any, size: int, steps: int) -> tuple[Any, float]:
    """The two diffusers calls and the latent upscale between them; (image, seconds)."""
    import torch
    import torch.nn.functional as functional

    from sdlocal.engine.hires import schedule_for

    total, strength = schedule_for(steps, STRENGTH)
    generator = torch.Generator("cpu").manual_seed(SEED)
    started = time.perf_counter()
    latents = base(prompt=PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                   guidance_scale=7.0, generator=generator, output_type="latent").images
    latents = functional.interpolate(latents, size=(size // 4, size // 4), mode="bilinear", align_corners=False)
    image = img2img(prompt=PROMPT, negative_prompt="", image=latents, num_inference_steps=total, strength=strength,
                    guidance_scale=7.0, generator=[generator]).images[0]
    if base.device.type == "cuda":
        torch.cuda.synchronize()
    return image, time.perf_counter() - started


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--realsize", action="store_true", help="the real-size SD 1.5 file instead of the tiny one")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="steps of each pass")
    ap.add_argument("--size", type=int, default=256, help="the first pass's side (the second is twice it)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    runs, size, steps = (1, 64, 2) if args.tiny else (args.runs, args.size, args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        model, config, data_dir = prepare_sd15(args.realsize and not args.tiny, Path(scratch))
        import numpy as np
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

        from sdlocal.engine import Engine, EngineConfig, GenerationRequest

        dtype = torch.float16 if args.device == "cuda" else torch.float32
        precision = "fp16" if args.device == "cuda" else "fp32"
        engine = Engine(EngineConfig(data_dir=data_dir, models_dirs=[model.parent], device=args.device,
                                     precision=precision))
        engine.load(model.stem)
        base = StableDiffusionPipeline.from_single_file(
            str(model), config=str(config), dtype=dtype, local_files_only=True, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False).to(args.device)
        base.scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
        img2img = StableDiffusionImg2ImgPipeline.from_pipe(base, dtype=dtype)
        for pipe in (base, img2img):
            pipe.set_progress_bar_config(disable=True)
        images: dict[str, Any] = {}

        def diffusers_call() -> float:
            images["diffusers"], seconds = by_hand(base, img2img, size, steps)
            return seconds

        def engine_call() -> float:
            request = GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=SEED,
                                        sampler="Euler", cfg_scale=7.0, model=model.stem,
                                        hires={"upscaler": "Latent", "scale": 2, "denoising_strength": STRENGTH})
            started = time.perf_counter()
            images["engine"] = engine.generate(request).images[0].image
            if args.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        times = interleave({"diffusers": diffusers_call, "engine": engine_call}, runs, warmup=1)
        difference = np.abs(np.asarray(images["engine"], np.int16) - np.asarray(images["diffusers"], np.int16))
    seconds = {name: summary(values) for name, values in times.items()}
    engine_ratio = ratio(seconds["engine"]["median"], seconds["diffusers"]["median"])
    print(table(["path", "median s", "min s", "max s"],
                [[name, s["median"], s["min"], s["max"]] for name, s in seconds.items()]))
    print(f"\nengine / diffusers (median): {engine_ratio} (target <= {TARGET}); "
          f"image difference max {int(difference.max())}, mean {float(difference.mean()):.3f}")
    write_json("hires", {
        "benchmark": "hires", "tiny": args.tiny, "machine": machine(),
        "setup": {"model": "real-size SD 1.5" if args.realsize and not args.tiny else "tiny", "first_size": size,
                  "final_size": size * 2, "steps_each_pass": steps, "strength": STRENGTH, "runs": runs,
                  "device": args.device, "dtype": str(dtype)},
        "seconds": seconds, "ratios_vs_diffusers": {"engine": engine_ratio},
        "image_difference": {"max": int(difference.max()), "mean": round(float(difference.mean()), 4)},
        "targets": {"engine_vs_diffusers_median": TARGET},
    }, args.results_dir)


if __name__ == "__main__":
    main()
