"""img2img and inpainting: the engine and the HTTP API against plain diffusers, and what going there costs.

One SD 1.5-shaped single file: the tiny random model (default) or, with ``--realsize``, the real-size file
(2.1 GB of random fp16 weights, built once into the bench cache); fp32 on the CPU. One init image (256x256, a
gradient with shapes), one mask (a white ellipse), Euler, CFG 7, seed 1234, denoising strength 0.75, so a run
takes int(steps x 0.75) denoising steps on every path. Inpainting is "Whole picture" with the masked content
"original" and A1111's default mask blur (4): what diffusers' inpaint pipeline does with a 4-channel model.
Interleaved, all torch work on the job queue's worker thread (as bench/overhead.py):

- diffusers img2img / inpaint: ``StableDiffusionImg2ImgPipeline`` / ``StableDiffusionInpaintPipeline``
  made with ``from_pipe`` from ``StableDiffusionPipeline.from_single_file(file, config=...)``, called directly;
- engine img2img / inpaint: ``Engine.generate(request)`` with the request's ``source`` (and ``mask``);
- api img2img / inpaint: POST /sdapi/v1/img2img to the real server (uvicorn in a thread of this process) with
  A1111's fields: base64 images in, the queue, PNG with parameters and base64 out.

Targets: engine / diffusers <= 1.03 and api / diffusers <= 1.10 (ratios of medians, per mode).

Then, in a fresh process (its memory is its own) with the engine alone: txt2img, then img2img, then inpaint,
resident memory (after ``gc.collect()``) after each; target: after all three <= 1.05x after txt2img alone (no
second copy of the weights). And the first img2img (and inpaint) run after a txt2img run against later ones
(the median of three, each also right after a txt2img run), all with 4 steps; target: the first spends
< 0.5 s more (nothing is loaded).

    python bench/img2img.py [--realsize] [--runs 9] [--steps 20] [--tiny]
"""

from __future__ import annotations

import base64
import gc
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    interleave,
    machine,
    parser,
    prepare_sd15,
    ratio,
    rss_mib,
    setup,
    summary,
    table,
    write_json,
)

MARK = "IMG2IMG-BENCH-RESULT "
SEED = 1234
PROMPT = "a lighthouse on a cliff at dusk"
STRENGTH = 0.75
MASK_BLUR = 4
MODES = ("img2img", "inpaint")
PATHS = ("diffusers", "engine", "api")
CHILD_STEPS = 4  # the memory process's runs: int(4 x 0.75) = 3 denoising steps
LATER_RUNS = 3


def init_image(size: int) -> Any:
    """A deterministic picture: a colour gradient with a disc and a bar (img2img starts from real structure)."""
    from PIL import Image, ImageDraw

    image = Image.merge("RGB", (Image.linear_gradient("L").resize((size, size)),
                                Image.linear_gradient("L").rotate(90).resize((size, size)),
                                Image.new("L", (size, size), 96)))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(230, 200, 40))
    draw.rectangle((size // 2, size * 5 // 8, size * 7 // 8, size * 3 // 4), fill=(30, 60, 160))
    return image


def mask_image(size: int) -> Any:
    """White (repaint) ellipse in the middle, black elsewhere."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=255)
    return mask


def b64png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def engine_request(mode: str, size: int, steps: int, model: str) -> Any:
    """The typed request the engine gets; inpainting as diffusers does it (Whole picture, original content)."""
    from sdlocal.engine.request import GenerationRequest, ImageSource, MaskSpec

    mask = MaskSpec(image=mask_image(size), blur_x=MASK_BLUR, blur_y=MASK_BLUR, area="Whole picture",
                    content="original") if mode == "inpaint" else None
    source = None if mode == "txt2img" else ImageSource(images=[init_image(size)], denoising_strength=STRENGTH,
                                                        resize_mode="Just resize", mask=mask)
    return GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=SEED, sampler="Euler",
                             cfg_scale=7.0, model=model, source=source)


def api_body(mode: str, size: int, steps: int, model: str) -> dict[str, Any]:
    """The same request as an A1111 client sends it (inpaint_full_res false = Whole picture, fill 1 = original)."""
    body: dict[str, Any] = {
        "prompt": PROMPT, "negative_prompt": "", "steps": steps, "width": size, "height": size, "seed": SEED,
        "sampler_name": "Euler", "cfg_scale": 7, "init_images": [b64png(init_image(size))],
        "denoising_strength": STRENGTH, "resize_mode": 0, "override_settings": {"sd_model_checkpoint": model}}
    if mode == "inpaint":
        body.update(mask=b64png(mask_image(size)), mask_blur=MASK_BLUR, inpainting_fill=1, inpaint_full_res=False)
    return body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]



def wait_for_hashes(engine: Any) -> None:
    catalog = engine._get_catalog()
    if hasattr(catalog, "wait_for_hashes"):
        catalog.wait_for_hashes(1800)  # background hashing reads the whole file: not while timing


# ------------------------------------------------------------------------------------------ speed (this process)
def speed(model: Path, config: Path, data_dir: Path, size: int, steps: int, runs: int, warmup: int) -> dict:
    """Interleaved diffusers / engine / api runs of img2img and inpaint; seconds per path and mode."""
    import httpx
    import torch
    import uvicorn
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    from sdlocal.server import create_app
    from sdlocal.services import build_services
    from sdlocal.settings import Settings

    port = free_port()
    settings = Settings(data_dir=data_dir, models_dirs=[model.parent], port=port, device="cpu", precision="fp32",
                        api=True, nowebui=True)
    services = build_services(settings)
    app = create_app(services, settings)
    wait_for_hashes(services.engine)

    def on_worker(fn: Any) -> Any:
        return services.queue.submit_call(fn, source="bench").wait(3600)

    on_worker(lambda: services.engine.load(model.stem))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    base = StableDiffusionPipeline.from_single_file(
        str(model), config=str(config), dtype=torch.float32, local_files_only=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    base.scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
    plain = {"img2img": StableDiffusionImg2ImgPipeline.from_pipe(base),
             "inpaint": StableDiffusionInpaintPipeline.from_pipe(base)}
    for pipe in plain.values():
        pipe.set_progress_bar_config(disable=True)
    init, mask = init_image(size), mask_image(size)
    images: dict[str, Any] = {}

    def diffusers_call(mode: str) -> Any:
        def timed() -> float:
            extra = {"mask_image": mask, "height": size, "width": size} if mode == "inpaint" else {}
            generator = torch.Generator("cpu").manual_seed(SEED)
            started = time.perf_counter()
            out = plain[mode](prompt=PROMPT, negative_prompt="", image=init, strength=STRENGTH,
                              num_inference_steps=steps, guidance_scale=7.0, generator=generator, **extra)
            elapsed = time.perf_counter() - started
            images[f"diffusers {mode}"] = out.images[0]
            return elapsed
        return lambda: on_worker(timed)

    def engine_call(mode: str) -> Any:
        def timed() -> float:
            request = engine_request(mode, size, steps, model.stem)  # built outside the clock: the API decodes
            started = time.perf_counter()
            result = services.engine.generate(request)
            elapsed = time.perf_counter() - started
            images[f"engine {mode}"] = result.images[0].image
            return elapsed
        return lambda: on_worker(timed)

    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600)

    def api_call(mode: str) -> Any:
        body = api_body(mode, size, steps, model.stem)

        def timed() -> float:
            started = time.perf_counter()
            response = http.post("/sdapi/v1/img2img", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if len(response.json()["images"]) != 1:
                raise RuntimeError(f"the API returned no image for {mode}")
            return elapsed
        return timed

    makers = {"diffusers": diffusers_call, "engine": engine_call, "api": api_call}
    calls = {f"{path} {mode}": makers[path](mode) for mode in MODES for path in PATHS}
    try:
        times = interleave(calls, runs, warmup=warmup)
    finally:
        http.close()
        server.should_exit = True
        services.close()
    import numpy as np

    differences = {}
    for mode in MODES:
        a = np.asarray(images[f"engine {mode}"], dtype=np.int16)
        b = np.asarray(images[f"diffusers {mode}"], dtype=np.int16)
        differences[mode] = {"max": int(np.abs(a - b).max()), "mean": round(float(np.abs(a - b).mean()), 3)} \
            if a.shape == b.shape else {"shape": [list(a.shape), list(b.shape)]}
    return {"times": times, "image_difference": differences}


# ------------------------------------------------------------------------------------------ memory (a child)
def memory_child(model: Path, data_dir: Path, size: int, steps: int) -> dict[str, Any]:
    """The engine alone: RSS after txt2img, img2img, inpaint; first vs later img2img runs after a txt2img run.

    The runs here are short (``CHILD_STEPS``): what a first run may add (building the pipeline, loading) does
    not grow with steps, and short runs keep the machine's noise out of a difference of two runs.
    """
    setup()
    import statistics

    from sdlocal.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(data_dir=data_dir, models_dirs=[model.parent], device="cpu", precision="fp32"))
    wait_for_hashes(engine)
    engine.load(model.stem)
    memory: dict[str, float] = {}
    runs: dict[str, list[float]] = {f"{order} {mode}": [] for mode in MODES for order in ("first", "later")}

    def run(mode: str, label: str | None = None) -> None:
        request = engine_request(mode, size, min(steps, CHILD_STEPS), model.stem)
        started = time.perf_counter()
        engine.generate(request)
        if label:
            runs[label].append(round(time.perf_counter() - started, 4))
        gc.collect()

    run("txt2img")
    run("txt2img")  # the second: one-time kernel set-up of the first generation is not counted anywhere
    memory["after txt2img"] = round(rss_mib(), 1)
    run("img2img", "first img2img")
    memory["after txt2img, img2img"] = round(rss_mib(), 1)
    run("txt2img")
    run("inpaint", "first inpaint")
    memory["after txt2img, img2img, inpaint"] = round(rss_mib(), 1)
    for _ in range(LATER_RUNS):
        for mode in MODES:
            run("txt2img")
            run(mode, f"later {mode}")
    memory[f"after {LATER_RUNS} more rounds"] = round(rss_mib(), 1)
    seconds = {label: values[0] if label.startswith("first") else round(statistics.median(values), 4)
               for label, values in runs.items()}
    loaded = list(engine._cache.keys()) if engine._cache is not None else []
    return {"rss_mib": memory, "seconds": seconds, "runs": runs, "steps": min(steps, CHILD_STEPS),
            "models_loaded": loaded}


def run_memory_child(model: Path, data_dir: Path, size: int, steps: int) -> dict[str, Any]:
    spec = {"model": str(model), "data_dir": str(data_dir), "size": size, "steps": steps}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          timeout=7200)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"the memory run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


# ------------------------------------------------------------------------------------------ report
def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--realsize", action="store_true", help="the real-size SD 1.5 file (2.1 GB, built once)")
    ap.add_argument("--runs", type=int, default=None, help="interleaved rounds (default 9; 3 with --realsize)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="steps; int(steps x 0.75) of them run")
    ap.add_argument("--child", help=argparse_hidden())
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(MARK + json.dumps(memory_child(Path(spec["model"]), Path(spec["data_dir"]), spec["size"],
                                             spec["steps"])), flush=True)
        return 0
    runs = args.runs or (3 if args.realsize else 9)
    if args.tiny:
        runs, args.size, args.steps = 2, 64, 4
    with tempfile.TemporaryDirectory() as scratch:
        model, config, data_dir = prepare_sd15(args.realsize, Path(scratch))
        measured = speed(model, config, data_dir, args.size, args.steps, runs, warmup=1)
        memory = run_memory_child(model, data_dir, args.size, args.steps)
    report(args, runs, measured, memory)
    return 0


def report(args: Any, runs: int, measured: dict[str, Any], memory: dict[str, Any]) -> None:
    stats = {name: summary(values) for name, values in measured["times"].items()}
    ratios = {name: {"median": ratio(s["median"], stats[f"diffusers {name.split()[1]}"]["median"]),
                     "min": ratio(s["min"], stats[f"diffusers {name.split()[1]}"]["min"])} for name, s in stats.items()}
    what = "real-size SD 1.5 single file (random weights)" if args.realsize else "tiny SD 1.5 single file"
    denoise = int(args.steps * STRENGTH)
    print(f"{what}, {args.size}x{args.size}, {args.steps} steps at strength {STRENGTH} ({denoise} run), Euler, "
          f"CFG 7, fp32 CPU; {runs} interleaved runs each (seconds)")
    print(table(["path", "median", "min", "max", "median/diffusers", "min/diffusers"],
                [[n, s["median"], s["min"], s["max"], ratios[n]["median"], ratios[n]["min"]]
                 for n, s in stats.items()]))
    rss = memory["rss_mib"]
    first = memory["seconds"]
    memory_ratio = ratio(rss["after txt2img, img2img, inpaint"], rss["after txt2img"])
    extra = {mode: round(first[f"first {mode}"] - first[f"later {mode}"], 3) for mode in MODES}
    print("\nthe engine alone, a fresh process: resident memory (MiB, after gc.collect())")
    print(table(["after", "RSS MiB", "/ after txt2img"], [[k, v, ratio(v, rss["after txt2img"])]
                                                          for k, v in rss.items()]))
    print(table([f"run, {memory['steps']} steps (each right after a txt2img run)", "seconds"],
                [[k if k.startswith("first") else f"{k} (median of {LATER_RUNS})", v] for k, v in first.items()]))
    targets = {
        "engine_vs_diffusers_img2img_median": {"value": ratios["engine img2img"]["median"], "target": 1.03},
        "engine_vs_diffusers_inpaint_median": {"value": ratios["engine inpaint"]["median"], "target": 1.03},
        "api_vs_diffusers_img2img_median": {"value": ratios["api img2img"]["median"], "target": 1.10},
        "api_vs_diffusers_inpaint_median": {"value": ratios["api inpaint"]["median"], "target": 1.10},
        "rss_all_three_vs_txt2img": {"value": memory_ratio, "target": 1.05},
        "first_img2img_extra_s": {"value": extra["img2img"], "target": 0.5},
        "first_inpaint_extra_s": {"value": extra["inpaint"], "target": 0.5},
    }
    print()
    for name, target in targets.items():
        limit = f"< {target['target']} s" if name.endswith("_s") else f"<= {target['target']}"
        verdict = "meets" if target["value"] is not None and target["value"] <= target["target"] else "misses"
        print(f"{name}: {target['value']} ({verdict} the target {limit})")
    print(f"engine image vs diffusers image: {measured['image_difference']}")
    write_json("img2img", {
        "benchmark": "img2img", "tiny": args.tiny, "realsize": args.realsize, "machine": machine(),
        "setup": {"size": args.size, "steps": args.steps, "denoising_steps": denoise, "strength": STRENGTH,
                  "sampler": "Euler", "cfg": 7.0, "seed": SEED, "precision": "fp32", "device": "cpu", "runs": runs,
                  "mask_blur": MASK_BLUR, "inpaint_area": "Whole picture", "masked_content": "original",
                  "model": what},
        "seconds": stats, "ratios_vs_diffusers": ratios, "memory": memory, "first_run_extra_s": extra,
        "targets": targets, "image_difference": measured["image_difference"],
    }, args.results_dir)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
