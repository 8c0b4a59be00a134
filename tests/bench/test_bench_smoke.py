"""Every benchmark script still runs: its ``--tiny`` mode in a subprocess, and the JSON it writes has its fields.

Only the shape of the results is checked (and a few facts that are behaviour, not speed, such as the engine's
image equalling plain diffusers' for the same seed); timings are never judged here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, list[str]] = {
    "overhead": [], "startup": [], "switching": [], "gallery": [], "gpu": ["--families", "sd15", "--runs", "1"],
    "cpu": [], "memory": [], "img2img": [], "loras": [], "hires": [], "vae_tiling": [], "upscalers": [],
    "scripts": [], "cluster": [],
}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str, Path]]:
    """All scripts' --tiny runs at once (each is mostly importing torch; together they share the cores).

    One torch thread each: six processes with two OpenMP threads on a small machine would spin against
    each other, and tiny-mode timings mean nothing anyway.
    """
    base = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
           "SDLOCAL_BENCH_CACHE": str(base / "cache")}
    started = {}
    for name, extra in SCRIPTS.items():
        folder = base / name
        folder.mkdir()
        with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
            command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--tiny", "--results-dir", str(folder),
                       *extra]
            started[name] = (subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err), folder)
    finished = {}
    for name, (process, folder) in started.items():
        try:
            code = process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            code = -9
        finished[name] = (code, (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text(), folder)
    return finished


def results(tiny_runs: dict[str, tuple[int, str, str, Path]], script: str) -> dict[str, Any]:
    code, stdout, stderr, folder = tiny_runs[script]
    assert code == 0, f"bench/{script}.py --tiny failed ({code}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "-----" in stdout, f"no table printed:\n{stdout[-2000:]}"
    data = json.loads((folder / f"{script}.json").read_text(encoding="utf-8"))
    assert data["benchmark"] == script and data["tiny"] is True
    assert {"date", "cpu", "cpu_native_bf16", "torch", "diffusers"} <= set(data["machine"])
    return data


def assert_stats(stats: dict[str, Any]) -> None:
    assert {"median", "min", "max", "runs"} <= set(stats)
    assert stats["runs"] and stats["min"] <= stats["median"] <= stats["max"]


def test_overhead(tiny_runs: dict) -> None:
    data = results(tiny_runs, "overhead")
    assert set(data["seconds"]) == {"diffusers", "engine", "engine+progress", "queue", "api"}
    for stats in data["seconds"].values():
        assert_stats(stats)
    assert data["ratios_vs_diffusers"]["diffusers"]["median"] == 1.0
    assert {"engine_vs_diffusers_median", "api_vs_diffusers_median"} == set(data["targets"])
    assert data["image_difference"]["max"] == 0  # the same seed gives the same image through both paths
    assert {c["piece"] for c in data["components_ms"]} >= {"infotext", "latent preview (4x3 map, no VAE)"}


def test_startup(tiny_runs: dict) -> None:
    data = results(tiny_runs, "startup")
    assert set(data["seconds"]) == {"import_gradio_s", "bare_gradio_http_200_s", "http_200_s", "model_ready_s",
                                    "first_image_s"}
    for stats in data["seconds"].values():
        assert_stats(stats)
    assert data["seconds"]["http_200_s"]["median"] <= data["seconds"]["first_image_s"]["median"]
    assert {"page_up_minus_import_gradio_s", "target_s", "page_up_over_bare_gradio"} == set(data["target"])


def test_switching(tiny_runs: dict) -> None:
    data = results(tiny_runs, "switching")
    for scenario in ("cache1", "cache2"):
        run = data["runs"][scenario][0]
        assert [t["step"] for t in run["timings"]] == ["first load A", "switch to B", "back to A", "back to B"]
        assert run["peak_rss_mib"] > 0
    cached = data["runs"]["cache2"][0]["timings"]
    assert [len(t["loaded"]) for t in cached] == [1, 2, 2, 2]  # behaviour: two models stay loaded
    single = data["runs"]["cache1"][0]["timings"]
    assert [len(t["loaded"]) for t in single] == [1, 1, 1, 1]  # and one when the cache holds one
    assert {"one_model_mib", "after_switch_over_one_model", "left_after_unload_mib"} <= set(data["memory_released"])
    assert "back_switch_over_first_load" in data["target"]


def test_gallery(tiny_runs: dict) -> None:
    data = results(tiny_runs, "gallery")
    assert set(data["ms"]) == {"cold", "restart", "warm", "after a save", "read_parameters"}
    for stats in data["ms"].values():
        assert_stats(stats)
    assert data["setup"]["images"] == 300 and data["setup"]["thumbnails_per_page"] == data["setup"]["per_page"]


def test_gpu_reduced_on_the_cpu(tiny_runs: dict) -> None:
    data = results(tiny_runs, "gpu")
    sides = {(r["family"], r["variant"], r["side"]) for r in data["results"]}
    assert {("sd15", "sdpa", "diffusers"), ("sd15", "sdpa", "sdlocal"), ("sd15", "fast", "sdlocal")} <= sides
    for result in data["results"]:
        assert_stats(result["seconds_per_image"])
        assert result["steps_per_s"]["median"] > 0
        assert result["image_vs_other_side"]["max"] == 0  # both sides make the same image from the same seed
    assert "sd15/compile" in data["skipped"]  # the CPU run leaves compiling out
    assert "sd15/sdpa" in data["sdlocal_over_diffusers"]


def test_cpu(tiny_runs: dict) -> None:
    data = results(tiny_runs, "cpu")
    configurations = data["configurations"]
    assert {"diffusers fp32", "sdlocal auto", "sdlocal auto + ToMe 0.5"} <= set(configurations)
    for figures in configurations.values():
        assert_stats(figures["seconds"]["64"])
        assert figures["peak_rss_mib"] > 0
        assert figures["vs_diffusers"]["64"]["median"] is not None
    assert configurations["sdlocal auto"]["precision"] == ("bf16" if data["cpu_native_bf16"] else "fp32")
    assert configurations["sdlocal auto + ToMe 0.5"]["token_merging_ratio"] == 0.5


def test_memory(tiny_runs: dict) -> None:
    data = results(tiny_runs, "memory")
    cases = (("sd15", "fp32"), ("sd15", "fp16"), ("sd15-folder", "fp16"), ("sdxl", "fp16"))
    loads = {(r["model"], r["precision"], r["loader"]) for r in data["results"]}
    assert loads == {(model, precision, loader) for model, precision in cases for loader in ("sdlocal", "diffusers")}
    for result in data["results"]:
        assert result["peak_above_mib"] >= result["after_above_mib"] - 1  # a peak is never below what stays
        assert result["model_mib"] > 0 and result["peak_over_model"] is not None
    by_load = {(r["model"], r["precision"], r["loader"]): r for r in data["results"]}
    for model, precision in cases:  # both load the same model; sdlocal upcasts SDXL's fp16 VAE (force_upcast)
        ours, theirs = by_load[(model, precision, "sdlocal")], by_load[(model, precision, "diffusers")]
        if ours["vae_dtype"] == theirs["vae_dtype"]:
            assert ours["model_mib"] == theirs["model_mib"], model
        else:
            assert (model, ours["vae_dtype"], theirs["vae_dtype"]) == ("sdxl", "float32", "float16")
            assert ours["model_mib"] > theirs["model_mib"]
    assert by_load[("sd15", "fp16", "sdlocal")]["model_mib"] < by_load[("sd15", "fp32", "sdlocal")]["model_mib"]
    assert data["target"] == 1.25 and data["skipped"] == []


def test_img2img(tiny_runs: dict) -> None:
    data = results(tiny_runs, "img2img")
    paths = ("diffusers", "engine", "api")
    assert set(data["seconds"]) == {f"{path} {mode}" for path in paths for mode in ("img2img", "inpaint")}
    for stats in data["seconds"].values():
        assert_stats(stats)
    assert data["ratios_vs_diffusers"]["diffusers img2img"]["median"] == 1.0
    assert data["setup"]["denoising_steps"] == 3 and data["setup"]["strength"] == 0.75  # int(4 x 0.75)
    assert data["image_difference"]["img2img"]["max"] == 0  # the engine's img2img is diffusers' for one seed
    rss = data["memory"]["rss_mib"]
    assert list(rss) == ["after txt2img", "after txt2img, img2img", "after txt2img, img2img, inpaint",
                         "after 3 more rounds"] and all(value > 0 for value in rss.values())
    assert set(data["memory"]["seconds"]) == {"first img2img", "later img2img", "first inpaint", "later inpaint"}
    assert [len(data["memory"]["runs"][f"later {mode}"]) for mode in ("img2img", "inpaint")] == [3, 3]
    assert len(data["memory"]["models_loaded"]) == 1  # img2img and inpaint loaded no second model
    assert set(data["first_run_extra_s"]) == {"img2img", "inpaint"}
    assert {"engine_vs_diffusers_img2img_median", "api_vs_diffusers_inpaint_median", "rss_all_three_vs_txt2img",
            "first_img2img_extra_s"} <= set(data["targets"])


def test_loras(tiny_runs: dict) -> None:
    data = results(tiny_runs, "loras")
    assert data["identical_after_changes"] is True  # behaviour, not speed: the restore is exact
    for stats in (data["generation"]["without"], data["generation"]["with"], data["changes"]):
        assert_stats(stats)
    assert list(data["apply_seconds"]) == ["restore to none", "first apply (1 LoRA)", "change weight", "swap LoRA",
                                           "add a second", "back to none"]
    assert len(data["changes"]["runs"]) == data["settings"]["changes"] == 6
    assert all(size > 0 for size in data["lora_file_mib"]) and data["rss_mib"]["with"] > 0


def test_hires(tiny_runs: dict) -> None:
    data = results(tiny_runs, "hires")
    assert set(data["seconds"]) == {"diffusers", "engine"}
    for stats in data["seconds"].values():
        assert_stats(stats)
    assert data["setup"]["final_size"] == 2 * data["setup"]["first_size"]
    assert data["image_difference"]["max"] == 0  # the engine's hires fix is the two diffusers calls
    assert data["targets"] == {"engine_vs_diffusers_median": 1.03}


def test_vae_tiling(tiny_runs: dict) -> None:
    data = results(tiny_runs, "vae_tiling")
    cases = data["cases"]
    assert [(c["side"], c["tiled"]) for c in cases] == [(64, False), (64, True), (128, False), (128, True)]
    assert all(c["peak_bytes"] >= 0 and c["shape"] == [1, 3, c["side"], c["side"]] for c in cases)
    assert data["untiled_bytes_per_pixel_max"] == max(c["bytes_per_pixel"] for c in cases if not c["tiled"])


def test_upscalers(tiny_runs: dict) -> None:
    data = results(tiny_runs, "upscalers")
    assert [r["input"] for r in data["results"]] == ["32x32", "64x64"]
    assert [r["output"] for r in data["results"]] == ["128x128", "256x256"]  # behaviour: 4x
    for row in data["results"]:
        assert row["seconds"] > 0 and row["model_mib"] > 0 and "peak_rss_above_mib" in row
    assert data["seam"]["tiles"] == 4 and data["seam"]["max_levels"] <= 1  # tiled equals untiled


def test_scripts(tiny_runs: dict) -> None:
    data = results(tiny_runs, "scripts")
    assert set(data["seconds"]) == {"grid", "singles", "grid drawing", "grid run beyond its cells and drawing"}
    for stats in data["seconds"].values():
        assert_stats(stats)
    assert data["setup"]["cells"] == 9 and data["ratios_vs_singles"]["grid"] is not None
    assert data["image_difference"]["max"] == 0  # behaviour: each cell is exactly its single run
    assert data["draw_10x10_512"]["size"][0] > 10 * 512 and data["draw_10x10_512"]["size"][1] > 10 * 512
    assert_stats(data["draw_10x10_512"]["seconds"])


def test_cluster(tiny_runs: dict) -> None:
    data = results(tiny_runs, "cluster")
    for name in ("single", "cluster", "single hit", "cluster hit"):
        assert_stats(data[name])
    assert isinstance(data["overhead_ms"], float) and data["redis"] is True  # CI installs redis-server
