"""Start-up figures: process start to HTTP 200, to the model being ready, and to the first finished image.

Runs ``python -m sdlocal serve`` on a free port with a tiny random-weight model in a temporary data dir, and,
in the same run for comparison, ``python -c "import gradio"`` (process start to the import done) and a bare
Gradio Blocks app with a txt2img form and three tabs (the floor that any Gradio UI pays). Timings move with the
machine: compare them with each other, not the absolute numbers. Target: sdlocal's page is up (HTTP 200) within
1.5 s of the time ``import gradio`` takes in the same run (medians).

    python bench/startup.py [--runs 3] [--tiny] [--json PATH]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import ROOT, machine, parser, ratio, summary, table, write_json

MODEL = "tiny-sd15"
BARE_APP = textwrap.dedent(
    """
    import sys
    import gradio as gr
    with gr.Blocks() as demo:
        with gr.Tab("txt2img"):
            prompt = gr.Textbox(label="Prompt")
            steps = gr.Slider(1, 150, value=20, label="Steps")
            out = gr.Gallery()
            gr.Button("Generate").click(lambda p, s: [], [prompt, steps], out)
        with gr.Tab("Gallery"):
            gr.Gallery()
        with gr.Tab("Settings"):
            gr.Markdown("settings")
    demo.launch(server_port=int(sys.argv[1]), prevent_thread_lock=False)
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_200(url: str, process: subprocess.Popen, timeout: float = 300) -> float:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def run_sdlocal(data_dir: Path, env: dict[str, str]) -> dict[str, float]:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "sdlocal", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        http_200 = wait_200(url, process) - started
        client = Client(url, verbose=False)
        while not client.predict(api_name="/load_status").startswith("✔"):
            time.sleep(0.05)
        ready = time.monotonic() - started
        from sdlocal.ui.common import DEFAULTS, FORM_FIELDS

        client.predict(api_name="/page_state")  # what a browser's page load does: fills this session's model list

        values = {**DEFAULTS, "prompt": "a lighthouse", "negative_prompt": "", "sampler": "Euler",
                  "schedule": "Automatic", "steps": 4, "cfg_scale": 7, "width": 64, "height": 64, "seed": 1,
                  "batch_count": 1, "batch_size": 1, "clip_skip": 1, "token_merging_ratio": 0, "vae_tiling": False}
        result = client.predict(MODEL, *(values[name] for name in FORM_FIELDS), api_name="/generate")
        if result[1]:
            raise RuntimeError(f"generation failed: {result[1]}")
        first_image = time.monotonic() - started
        return {"http_200_s": http_200, "model_ready_s": ready, "first_image_s": first_image}
    finally:
        process.terminate()
        process.wait(30)


def run_import_gradio(env: dict[str, str]) -> float:
    """Process start to ``import gradio`` done, the way the servers below start (a fresh interpreter)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import gradio"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def run_bare(env: dict[str, str]) -> float:
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wait_200(f"http://127.0.0.1:{port}/", process) - started
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.tiny:
        args.runs = 1
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as temp:
        data_dir = Path(temp) / "data"
        sys.path.insert(0, str(ROOT))
        from sdlocal.engine.synthetic import save_tiny_model

        models = data_dir / "models" / "Stable-diffusion"
        models.mkdir(parents=True)
        save_tiny_model(models / f"{MODEL}.safetensors", family="sd1", fmt="safetensors")
        for _ in range(args.runs):  # interleaved: a slow moment hits all three alike
            figures.setdefault("import_gradio_s", []).append(run_import_gradio(env))
            figures.setdefault("bare_gradio_http_200_s", []).append(run_bare(env))
            for key, value in run_sdlocal(data_dir, env).items():
                figures.setdefault(key, []).append(value)
    stats = {key: summary(values, 3) for key, values in figures.items()}
    print(f"start-up, {args.runs} run(s) each, seconds from process start")
    print(table(["figure", "median", "min", "max"], [[k, v["median"], v["min"], v["max"]] for k, v in stats.items()]))
    gap = round(stats["http_200_s"]["median"] - stats["import_gradio_s"]["median"], 3)
    bare = ratio(stats["http_200_s"]["median"], stats["bare_gradio_http_200_s"]["median"])
    target = {"page_up_minus_import_gradio_s": gap, "target_s": 1.5, "page_up_over_bare_gradio": bare}
    print(f"\nsdlocal page up - import gradio: {gap:+.2f} s (target <= 1.5 s); first image "
          f"{stats['first_image_s']['median']:.2f} s after process start")
    payload = {"benchmark": "startup", "tiny": args.tiny, "machine": machine(), "runs": args.runs,
               "seconds": stats, "target": target}
    write_json("startup", payload, args.results_dir)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
