"""What sdlocal adds to a generation: the engine and the HTTP API against a plain diffusers pipeline call.

The same tiny random SD 1.5-shaped single file (with its sidecar config folder) and the same request: a plain
prompt of about 20 tokens, 256x256, 20 steps, Euler, CFG 7, seed 1234, fp32 on the CPU. Interleaved, all torch
work on the job queue's worker thread (torch keeps one OpenMP pool per calling thread; two pools on two cores
would blur the comparison):

- diffusers: ``StableDiffusionPipeline.from_single_file(file, config=<sidecar>)`` called directly
  (``EulerDiscreteScheduler`` from the file's scheduler config, a seeded CPU generator, PIL output);
- engine: ``Engine.generate(request)`` with no progress listener;
- engine+progress: the same with a listener, as the queue calls it (a latent preview every 0.5 s);
- queue: ``JobQueue.submit(request, save=False).wait()``, timed from the submitting thread;
- api: POST /sdapi/v1/txt2img to the real server (uvicorn in a thread of this process), with JSON, the queue,
  PNG encoding with the parameters chunk and base64.

Targets: engine / diffusers <= 1.03, api / diffusers <= 1.10 (ratio of medians). The engine's own pieces are
then timed one by one (previews, infotext, the NaN and black checks, PNG encoding) and a cProfile of one engine
call splits its time, so a gap can be traced to what costs it. Last, the prompt encoding alone (A1111's parser,
chunker and encoder, ``conditioning.PromptEncoder``): a 3-chunk prompt against the 1-chunk one, median of many,
on the tiny model and (without ``--tiny``) through a real-size SD 1.x text encoder.

    python bench/overhead.py [--runs 9] [--size 256] [--steps 20] [--tiny]
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import interleave, machine, parser, ratio, setup, summary, table, write_json

SEED = 1234
PROMPT = "a lighthouse on a cliff at dusk, dramatic sky, crashing waves, warm light in the window"  # 19 tokens
# Three chunks of a long civitai-style prompt: the tokens run past 150, so the encoder runs three times.
LONG_PROMPT = ", ".join([PROMPT, "(masterpiece:1.2), best quality, ((detailed))"] * 6
                        + ["[blurry]", "highly detailed background with mountains and a starry night sky"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if args.tiny:
        args.runs, args.size, args.steps = 2, 64, 3
    setup()

    import httpx
    import numpy as np
    import torch
    import uvicorn
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from sdlocal.engine import GenerationRequest
    from sdlocal.engine.loader import sidecar_config_dir
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    size, steps = args.size, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        model = save_tiny_model(data / "models" / "Stable-diffusion" / "tiny-sd15.safetensors", "sd1", "safetensors")
        port = free_port()
        settings = Settings(data_dir=data, port=port, device="cpu", precision="fp32", api=True, nowebui=True)
        services = build_services(settings)
        app = create_app(services, settings)
        services.start_background_load().wait(300)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)

        pipe = StableDiffusionPipeline.from_single_file(
            str(model), config=str(sidecar_config_dir(model)), dtype=torch.float32, local_files_only=True,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

        def on_worker(fn: Any) -> Any:
            return services.queue.submit_call(fn, source="bench").wait(600)

        def request() -> Any:
            return GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=SEED, sampler="Euler",
                                     cfg_scale=7.0)

        images: dict[str, Any] = {}
        previews = {"count": 0, "runs": 0}

        def diffusers_call() -> float:
            def timed() -> float:
                generator = torch.Generator("cpu").manual_seed(SEED)
                started = time.perf_counter()
                image = pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=steps, guidance_scale=7.0,
                             height=size, width=size, generator=generator).images[0]
                elapsed = time.perf_counter() - started
                images["diffusers"] = image
                return elapsed
            return on_worker(timed)

        def engine_call() -> float:
            def timed() -> float:
                started = time.perf_counter()
                result = services.engine.generate(request())
                elapsed = time.perf_counter() - started
                images["engine"] = result.images[0].image
                return elapsed
            return on_worker(timed)

        def listener(update: Any) -> None:
            if update.preview is not None:
                previews["count"] += 1

        def engine_progress_call() -> float:
            def timed() -> float:
                started = time.perf_counter()
                services.engine.generate(request(), on_progress=listener)
                previews["runs"] += 1
                return time.perf_counter() - started
            return on_worker(timed)

        def queue_call() -> float:
            started = time.perf_counter()
            services.queue.submit(request(), save=False, source="bench").wait(600)
            return time.perf_counter() - started

        body = {"prompt": PROMPT, "negative_prompt": "", "steps": steps, "width": size, "height": size, "seed": SEED,
                "sampler_name": "Euler", "cfg_scale": 7}
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

        def api_call() -> float:
            started = time.perf_counter()
            response = http.post("/sdapi/v1/txt2img", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if len(response.json()["images"]) != 1:
                raise RuntimeError("the API returned no image")
            return elapsed

        calls = {"diffusers": diffusers_call, "engine": engine_call, "engine+progress": engine_progress_call,
                 "queue": queue_call, "api": api_call}
        times = interleave(calls, args.runs, warmup=1 if args.tiny else 2)
        previews["count"] = previews["runs"] = 0
        engine_progress_call()
        previews_per_run = previews["count"]

        same = np.abs(np.asarray(images["engine"], dtype=np.int16) - np.asarray(images["diffusers"], dtype=np.int16))
        components = time_components(services, size, steps, pipe, previews_per_run)
        encoding = on_worker(lambda: time_encoding(services, 5 if args.tiny else 25))
        real_encoding = None if args.tiny else on_worker(lambda: time_real_encoding(25))
        profile = None if args.tiny else profile_engine(on_worker, services, request, listener)
        http.close()
        server.should_exit = True
        services.close()

    stats = {name: summary(values) for name, values in times.items()}
    base = stats["diffusers"]
    ratios = {name: {"median": ratio(s["median"], base["median"]), "min": ratio(s["min"], base["min"])}
              for name, s in stats.items()}
    print(f"tiny SD 1.5 single file, {size}x{size}, {steps} steps, Euler, CFG 7, fp32 CPU; {args.runs} interleaved "
          "runs each (seconds)")
    rows = [[n, s["median"], s["min"], s["max"], ratios[n]["median"], ratios[n]["min"]] for n, s in stats.items()]
    print(table(["path", "median", "min", "max", "median/diffusers", "min/diffusers"], rows))
    print(f"\nengine image vs diffusers image: max pixel difference {int(same.max())}, mean {float(same.mean()):.4f}")
    print(f"previews per {steps}-step run with a listener: {previews_per_run}")
    print("\nthe engine's own pieces, each timed alone (ms per call; calls per generation):")
    print(table(["piece", "ms per call", "calls per run", "ms per run"],
                [[c["piece"], c["ms_per_call"], c["calls_per_run"], c["ms_per_run"]] for c in components]))
    if profile:
        print("\none engine+progress call under cProfile (cumulative ms; profiling inflates Python-heavy parts):")
        rows = [[p["function"], p["cum_ms"], p["calls"]] for p in profile]
        print(table(["function", "cumulative ms", "calls"], rows))
    print(f"\nprompt encoding alone (parse, chunk, encode; a new encoder each time, as each request has; "
          f"median of {encoding['samples']}):")
    rows = [[name, e["chunks"], e["tokens"], e["median_ms"], e["min_ms"]] for name, e in encoding["prompts"].items()]
    print(table(["prompt", "chunks", "tokens", "median ms", "min ms"], rows))
    print(f"3-chunk / 1-chunk encoding time: {encoding['three_over_one']}")
    if real_encoding:
        print(f"\nthe same through a real-size SD 1.x text encoder (CLIP ViT-L/14, fp32 CPU; median of "
              f"{real_encoding['samples']}):")
        rows = [[name, e["chunks"], e["median_ms"], e["min_ms"]] for name, e in real_encoding["prompts"].items()]
        print(table(["prompt", "chunks", "median ms", "min ms"], rows))
        print(f"3-chunk / 1-chunk encoding time: {real_encoding['three_over_one']}")
    targets = {"engine_vs_diffusers_median": {"value": ratios["engine"]["median"], "target": 1.03},
               "api_vs_diffusers_median": {"value": ratios["api"]["median"], "target": 1.10}}
    for name, target in targets.items():
        verdict = "meets" if target["value"] is not None and target["value"] <= target["target"] else "misses"
        print(f"{name}: {target['value']} ({verdict} the target <= {target['target']})")
    write_json("overhead", {
        "benchmark": "overhead", "tiny": args.tiny, "machine": machine(),
        "setup": {"size": size, "steps": steps, "sampler": "Euler", "cfg": 7.0, "seed": SEED, "precision": "fp32",
                  "device": "cpu", "runs": args.runs, "model": "tiny random SD 1.5-shaped single file"},
        "seconds": stats, "ratios_vs_diffusers": ratios, "targets": targets,
        "image_difference": {"max": int(same.max()), "mean": round(float(same.mean()), 4)},
        "previews_per_run": previews_per_run, "components_ms": components, "profile": profile,
        "encoding": encoding,
        "real_size_encoding": real_encoding,
    }, args.results_dir)
    return 0


def time_components(services: Any, size: int, steps: int, pipe: Any, previews_per_run: int) -> list[dict[str, Any]]:
    """The engine's additions to a diffusers call, each timed on its own (median of many calls, in ms)."""
    import statistics

    import torch

    from sdlocal.api.sdapi import png_base64
    from sdlocal.engine import GenerationRequest
    from sdlocal.engine.generate import _black, initial_noise, latent_preview
    from sdlocal.engine.infotext import format_infotext

    latents = torch.randn(1, 4, size // 8, size // 8)
    decoded = torch.rand(1, 3, size, size) * 2 - 1
    image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    request = GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=SEED, sampler="Euler")
    text = format_infotext(request, SEED, "tiny-sd15", "0123456789")
    engine = services.engine
    pieces = [
        ("latent preview (4x3 map, no VAE)", lambda: latent_preview(latents, "sd1"), previews_per_run),
        ("per-image seeded noise", lambda: initial_noise([SEED], (4, size // 8, size // 8)), 1),
        ("NaN checks (latents + image)",
         lambda: (bool(torch.isnan(latents).any()), bool(torch.isnan(decoded).any())), 1),
        ("all-black check", lambda: _black(image), 1),
        ("infotext", lambda: format_infotext(request, SEED, "tiny-sd15", "0123456789"), 1),
        ("validate + find model", lambda: (engine.validate(GenerationRequest(prompt="x", sampler="Euler")),
                                           engine.find_model("tiny-sd15")), 1),
        ("scheduler copy", lambda: engine._scheduler_cache().get("k", "Euler", "Automatic", pipe.scheduler.config),
         1),
        ("PNG + parameters + base64 (API only)", lambda: png_base64(image, text), 0),
    ]
    rows = []
    for name, fn, per_run in pieces:
        fn()
        samples = []
        for _ in range(25):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        ms = statistics.median(samples) * 1000
        rows.append({"piece": name, "ms_per_call": round(ms, 3), "calls_per_run": per_run,
                     "ms_per_run": round(ms * max(per_run, 0), 3)})
    return rows


def time_encoding(services: Any, samples: int) -> dict[str, Any]:
    """The prompt encoder's time for the 1-chunk and the 3-chunk prompt (ms; a fresh encoder per call, so no cache)."""
    import statistics

    from sdlocal.engine.conditioning import PromptEncoder

    engine = services.engine
    loaded, _ = engine._load_entry(engine.find_model("tiny-sd15"))
    prompts: dict[str, Any] = {}
    for name, text in (("1 chunk (20 tokens)", PROMPT), ("3 chunks", LONG_PROMPT)):
        conditioning = PromptEncoder(loaded, 1, "Original").encode(text)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            PromptEncoder(loaded, 1, "Original").encode(text)
            times.append(time.perf_counter() - started)
        tokens = len(loaded.pipe.tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
        prompts[name] = {"chunks": conditioning.chunks, "tokens": tokens,
                         "median_ms": round(statistics.median(times) * 1000, 3), "min_ms": round(min(times) * 1000, 3)}
    one, three = prompts["1 chunk (20 tokens)"], prompts["3 chunks"]
    if one["chunks"] != 1 or three["chunks"] != 3:
        raise RuntimeError(f"the bench prompts are {one['chunks']} and {three['chunks']} chunks, not 1 and 3")
    return {"samples": samples, "prompts": prompts, "three_over_one": ratio(three["median_ms"], one["median_ms"])}


def time_real_encoding(samples: int) -> dict[str, Any]:
    """The same two prompts through a real-size SD 1.x text encoder (CLIP ViT-L/14, random weights: the time does
    not depend on them), so the figure is the one a real model pays and not the tiny model's."""
    import statistics
    from types import SimpleNamespace

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sdlocal.engine.conditioning import PromptEncoder
    from sdlocal.engine.loader import BUNDLED_CONFIGS

    folder = BUNDLED_CONFIGS / "sd1"
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")).eval()
    pipe = SimpleNamespace(tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"), text_encoder=encoder,
                           _execution_device=torch.device("cpu"), config={})
    loaded = SimpleNamespace(pipe=pipe, family="sd1")
    prompts: dict[str, Any] = {}
    for name, text in (("1 chunk (20 tokens)", PROMPT), ("3 chunks", LONG_PROMPT)):
        chunks = PromptEncoder(loaded, 1, "Original").encode(text).chunks
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            PromptEncoder(loaded, 1, "Original").encode(text)
            times.append(time.perf_counter() - started)
        prompts[name] = {"chunks": chunks, "median_ms": round(statistics.median(times) * 1000, 3),
                         "min_ms": round(min(times) * 1000, 3)}
    one, three = prompts["1 chunk (20 tokens)"], prompts["3 chunks"]
    return {"samples": samples, "prompts": prompts, "three_over_one": ratio(three["median_ms"], one["median_ms"])}


def profile_engine(on_worker: Any, services: Any, request: Any, listener: Any) -> list[dict[str, Any]]:
    """cProfile one engine call and pick out the functions that tell the engine's time from the pipeline's."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()

    def run() -> None:
        profiler.enable()
        try:
            services.engine.generate(request(), on_progress=listener)
        finally:
            profiler.disable()

    on_worker(run)
    wanted = [("engine.py", "generate", "Engine.generate"), ("generate.py", "run_generation", "run_generation"),
              ("pipeline_stable_diffusion.py", "__call__", "diffusers pipeline __call__ (latents out)"),
              ("unet_2d_condition.py", "forward", "  UNet forward"),
              ("pipeline_stable_diffusion.py", "encode_prompt", "  encode_prompt"),
              ("conditioning.py", "__init__", "sdlocal prompt plan (parse, chunk, encode)"),
              ("conditioning.py", "encode_chunks", "  text encoder"),
              ("generate.py", "on_step_end", "  sdlocal step callback"),
              ("generate.py", "latent_preview", "    latent preview"),
              ("generate.py", "decode", "sdlocal decode (VAE + postprocess)"),
              ("autoencoder_kl.py", "decode", "  VAE decode"), ("image_processor.py", "postprocess", "  postprocess"),
              ("generate.py", "initial_noise", "initial noise"), ("generate.py", "_black", "black check"),
              ("infotext.py", "format_infotext", "infotext")]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for filename, function, label in wanted:
        hits = [(cc, nc, tt, ct) for (file, _line, func), (cc, nc, tt, ct, _callers) in stats.items()
                if Path(file).name == filename and func == function]
        if hits:
            rows.append({"function": label, "cum_ms": round(max(h[3] for h in hits) * 1000, 2),
                         "calls": sum(h[1] for h in hits)})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())

