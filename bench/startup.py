"""Start-up figures: process start to HTTP 200, to the model being ready, and to the first finished image.

Runs ``python -m sdlocal serve`` on a free port with a tiny random-weight model in a temporary data dir, and,
in the same run for comparison, a bare Gradio Blocks app with a txt2img form and three tabs (the floor that
any Gradio UI pays). Timings move with the machine: compare the two, not the absolute numbers.

    python bench/startup.py [--runs 3] [--json bench/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
        form = ["a lighthouse", "", "Euler", "Automatic", 4, 7, 64, 64, 1, 1, 1, 1, 0, False]
        result = client.predict("", *form, api_name="/generate")
        if result[1]:
            raise RuntimeError(f"generation failed: {result[1]}")
        first_image = time.monotonic() - started
        return {"http_200_s": http_200, "model_ready_s": ready, "first_image_s": first_image}
    finally:
        process.terminate()
        process.wait(30)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as temp:
        data_dir = Path(temp) / "data"
        sys.path.insert(0, str(ROOT))
        from sdlocal.engine.synthetic import save_tiny_model

        models = data_dir / "models" / "Stable-diffusion"
        models.mkdir(parents=True)
        save_tiny_model(models / "tiny-sd15.safetensors", family="sd1", fmt="safetensors")
        for _ in range(args.runs):
            figures.setdefault("bare_gradio_http_200_s", []).append(run_bare(env))
            for key, value in run_sdlocal(data_dir, env).items():
                figures.setdefault(key, []).append(value)
    summary = {key: {"median": statistics.median(values), "runs": values} for key, values in figures.items()}
    for key, value in summary.items():
        print(f"{key:28s} median {value['median']:.2f} s   runs {', '.join(f'{v:.2f}' for v in value['runs'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
