"""Discovery over the folders people already have: A1111/Forge and ComfyUI installs, extra_model_paths.yaml,
nested names, sidecars, duplicates, loops and broken files; header reads only (no torch, no hashing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.models import ModelCatalog, checkpoint_dirs, extra_model_paths_dirs
from tests.engine.stripped import HEADERS, write_diffusers_folder, write_safetensors

ROOT = Path(__file__).resolve().parents[2]


def catalog(tmp_path: Path, models_dirs: list[Path] | None = None, yamls: list[Path] | None = None,
            **options: object) -> ModelCatalog:
    config = EngineConfig(data_dir=tmp_path / "data", models_dirs=models_dirs or [], extra_model_paths=yamls or [],
                          **options)  # type: ignore[arg-type]
    return ModelCatalog(config, background_hashing=False)


def by_name(entries: list) -> dict:
    return {entry.name: entry for entry in entries}


# ------------------------------------------------------------------------------------------ folders
def test_own_folders_are_created_with_a1111_names(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    assert cat.scan() == []
    data = tmp_path / "data"
    assert cat.roots() == [data / "models" / "Stable-diffusion"]
    for folder in ("models/Stable-diffusion", "models/Lora", "models/VAE", "embeddings"):
        assert (data / folder).is_dir(), folder


def test_a1111_root_uses_its_stable_diffusion_folder(tmp_path: Path) -> None:
    webui = tmp_path / "stable-diffusion-webui"
    write_safetensors(webui / "models" / "Stable-diffusion" / "sd15" / "v1-5-pruned-emaonly.safetensors",
                      HEADERS["sd1"])
    write_safetensors(webui / "models" / "Lora" / "style.safetensors", HEADERS["lora-kohya"])
    write_safetensors(webui / "outputs" / "not-a-model.safetensors", HEADERS["sd1"])
    cat = catalog(tmp_path, [webui])
    assert webui / "models" / "Stable-diffusion" in cat.roots()
    entries = by_name(cat.scan())
    assert list(entries) == ["sd15/v1-5-pruned-emaonly"]
    entry = entries["sd15/v1-5-pruned-emaonly"]
    assert (entry.family, entry.format, entry.supported, entry.inpainting) == ("sd1", "safetensors", True, False)
    assert entry.size == entry.path.stat().st_size and entry.mtime == entry.path.stat().st_mtime


def test_comfyui_root_and_models_folder(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    write_safetensors(comfy / "models" / "checkpoints" / "sdxl_base.safetensors", HEADERS["sdxl"])
    fooocus_models = tmp_path / "Fooocus" / "models"
    write_safetensors(fooocus_models / "checkpoints" / "juggernaut.safetensors", HEADERS["sdxl-inpainting"])
    assert checkpoint_dirs(comfy) == [comfy / "models" / "checkpoints"]
    assert checkpoint_dirs(fooocus_models) == [fooocus_models / "checkpoints"]
    entries = by_name(catalog(tmp_path, [comfy, fooocus_models]).scan())
    assert entries["sdxl_base"].family == "sdxl" and not entries["sdxl_base"].inpainting
    assert entries["juggernaut"].family == "sdxl" and entries["juggernaut"].inpainting


def test_a_plain_folder_is_a_folder_of_checkpoints(tmp_path: Path) -> None:
    folder = tmp_path / "my-models"
    write_safetensors(folder / "a.safetensors", HEADERS["sd2"])
    write_safetensors(folder / "deep" / "er" / "b.safetensors", HEADERS["sd1"])
    assert checkpoint_dirs(folder) == [folder]
    assert [e.name for e in catalog(tmp_path, [folder]).scan()] == ["a", "deep/er/b"]


def test_extra_model_paths_yaml(tmp_path: Path) -> None:
    webui = tmp_path / "webui"
    write_safetensors(webui / "models" / "Stable-diffusion" / "one.safetensors", HEADERS["sd1"])
    write_safetensors(webui / "more" / "two.safetensors", HEADERS["sd2"])
    comfy = tmp_path / "comfy"
    write_safetensors(comfy / "models" / "checkpoints" / "three.safetensors", HEADERS["sdxl"])
    yaml_file = tmp_path / "config" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        f"a111:\n"
        f"    base_path: {webui}\n"
        f"    checkpoints: |\n"
        f"        models/Stable-diffusion\n"
        f"        more\n"
        f"    vae: models/VAE\n"
        f"comfy:\n"
        f"    base_path: ../comfy/\n"  # relative to the yaml's folder
        f"    checkpoints: models/checkpoints/\n"
        f"    loras: models/loras\n"
        f"other:\n"
        f"    base_path: /nowhere\n",
        encoding="utf-8",
    )
    assert extra_model_paths_dirs(yaml_file) == [webui / "models/Stable-diffusion", webui / "more",
                                                 yaml_file.parent / "../comfy" / "models/checkpoints"]
    entries = by_name(catalog(tmp_path, yamls=[yaml_file]).scan())
    assert {n: e.family for n, e in entries.items()} == {"one": "sd1", "two": "sd2", "three": "sdxl"}


def test_bad_extra_model_paths_yaml_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "extra_model_paths.yaml"
    bad.write_text("a111:\n  base_path: [unclosed\n", encoding="utf-8")
    missing = tmp_path / "nope.yaml"
    cat = catalog(tmp_path, yamls=[bad, missing])
    assert cat.scan() == []
    assert "extra_model_paths.yaml" in caplog.text and "nope.yaml" in caplog.text


def test_missing_models_dir_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cat = catalog(tmp_path, [tmp_path / "gone"])
    assert cat.scan() == [] and tmp_path / "gone" not in cat.roots()
    assert "does not exist" in caplog.text


# ------------------------------------------------------------------------------------------ what is listed
def test_diffusers_folders_and_their_insides(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_diffusers_folder(folder / "sd15-diffusers")
    # a diffusers folder holds .safetensors files of its own: they are not separate models
    write_safetensors(folder / "sd15-diffusers" / "vae" / "diffusion_pytorch_model.safetensors", HEADERS["vae"])
    write_diffusers_folder(folder / "xl" / "inpaint", "StableDiffusionXLInpaintPipeline", 2048, 9)
    entries = by_name(catalog(tmp_path, [folder]).scan())
    assert list(entries) == ["sd15-diffusers", "xl/inpaint"]
    assert entries["sd15-diffusers"].format == "diffusers" and entries["sd15-diffusers"].family == "sd1"
    assert entries["sd15-diffusers"].prediction_type is None  # its scheduler config decides
    assert entries["xl/inpaint"].inpainting and entries["xl/inpaint"].family == "sdxl"
    assert entries["sd15-diffusers"].size > 0


def test_config_sidecar_folder_gives_the_family_and_is_not_listed(tmp_path: Path) -> None:
    """A tiny single file matches no real family; its <stem>.config/ folder says what it is."""
    folder = tmp_path / "models"
    tiny = write_safetensors(folder / "tiny.safetensors", HEADERS["unknown-unet"])
    write_diffusers_folder(folder / "tiny.config", "StableDiffusionXLPipeline", 64, weights=None)
    write_safetensors(folder / "alone.safetensors", HEADERS["unknown-unet"])
    entries = by_name(catalog(tmp_path, [folder]).scan())
    assert sorted(entries) == ["alone", "tiny"]
    assert (entries["tiny"].family, entries["tiny"].supported) == ("sdxl", True)
    assert entries["tiny"].config_dir == folder / "tiny.config" and entries["tiny"].path == tiny
    assert not entries["alone"].supported and "<name>.config/" in entries["alone"].reason


def test_a_lora_with_a_config_folder_is_still_a_lora(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_safetensors(folder / "style.safetensors", HEADERS["lora-kohya"])
    write_diffusers_folder(folder / "style.config", weights=None)
    entry = by_name(catalog(tmp_path, [folder]).scan())["style"]
    assert not entry.supported and "models/Lora" in entry.reason


def test_hidden_folders_and_files_and_other_extensions_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_safetensors(folder / ".trash" / "old.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "._mac-resource-fork.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "model.safetensors.partial", HEADERS["sd1"])
    write_safetensors(folder / "upscaler.pth", HEADERS["sd1"])
    write_safetensors(folder / "embedding.pt", HEADERS["sd1"])
    write_safetensors(folder / "real.SAFETENSORS", HEADERS["sd1"])
    assert [e.name for e in catalog(tmp_path, [folder]).scan()] == ["real"]


def test_symlink_loops_are_safe_and_a_file_reached_twice_is_listed_once(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_safetensors(folder / "sub" / "a.safetensors", HEADERS["sd1"])
    os.symlink(folder, folder / "sub" / "loop")  # sub/loop -> models -> sub -> loop ...
    os.symlink(folder / "sub" / "a.safetensors", folder / "alias.safetensors")
    entries = catalog(tmp_path, [folder, folder / "sub"]).scan()
    assert [e.name for e in entries] == ["alias"]  # the first path in (root, path) order names it


def test_same_name_from_two_roots_keeps_both_deterministically(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_safetensors(first / "model.safetensors", HEADERS["sd1"])
    write_safetensors(second / "model.safetensors", HEADERS["sd2"])
    write_safetensors(second / "model.ckpt", HEADERS["sd2"])  # not a real ckpt: listed with a reason
    for _ in range(2):
        entries = by_name(catalog(tmp_path, [first, second]).scan())
        assert list(entries) == ["model", "model (2)", "model (3)"]
        assert entries["model"].path == first / "model.safetensors"
        assert entries["model (2)"].path == second / "model.safetensors"
        assert entries["model (3)"].path == second / "model.ckpt"


def test_sorted_by_name_case_insensitively(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    for name in ("b", "A", "c/z", "C/a"):
        write_safetensors(folder / f"{name}.safetensors", HEADERS["sd1"])
    assert [e.name for e in catalog(tmp_path, [folder]).scan()] == ["A", "b", "C/a", "c/z"]


def test_unsupported_files_are_listed_with_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_safetensors(folder / "refiner.safetensors", HEADERS["refiner"])
    write_safetensors(folder / "flux.safetensors", HEADERS["flux"])
    write_safetensors(folder / "cut.safetensors", HEADERS["sd1"], header_only=True)
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "junk.ckpt").write_bytes(b"not a checkpoint")
    write_diffusers_folder(folder / "half-download", weights=None)
    entries = by_name(catalog(tmp_path, [folder]).scan())
    expected = {"refiner": "refiner", "flux": "Flux", "cut": "truncated", "empty": "empty",
                "junk": "not a PyTorch checkpoint", "half-download": "incomplete"}
    for name, words in expected.items():
        entry = entries[name]
        assert not entry.supported and entry.family is None and words in entry.reason, (name, entry.reason)
    assert entries["cut"].size == (folder / "cut.safetensors").stat().st_size and entries["cut"].mtime > 0


def test_unreadable_file_and_folder_do_not_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission errors (simulated: the tests may run as root, where chmod 0 does not stop reads)."""
    import builtins

    folder = tmp_path / "models"
    locked = write_safetensors(folder / "locked.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "closed" / "x.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "fine.safetensors", HEADERS["sd1"])
    real_open, real_scandir = builtins.open, os.scandir

    def deny_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    def deny_scandir(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "closed":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(builtins, "open", deny_open)
    monkeypatch.setattr(os, "scandir", deny_scandir)
    entries = by_name(catalog(tmp_path, [folder]).scan())
    assert sorted(entries) == ["fine", "locked"]
    assert not entries["locked"].supported and "permission denied" in entries["locked"].reason
    assert entries["fine"].supported


def test_a_surprise_while_examining_one_file_becomes_its_reason(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine import models

    folder = tmp_path / "models"
    write_safetensors(folder / "a.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "b.safetensors", HEADERS["sd1"])
    real = models.detect_file

    def flaky(path: Path):  # type: ignore[no-untyped-def]
        if path.name == "a.safetensors":
            raise RuntimeError("boom")
        return real(path)

    monkeypatch.setattr(models, "detect_file", flaky)
    entries = by_name(catalog(tmp_path, [folder]).scan())
    assert not entries["a"].supported and "boom" in entries["a"].reason and entries["b"].supported
    assert entries["a"].size == (folder / "a.safetensors").stat().st_size


# ------------------------------------------------------------------------------------------ SD 2.x prediction
def test_sd2_prediction_type_from_sidecars_and_the_default(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    for stem in ("v768", "base512", "plain", "json-eps"):
        write_safetensors(folder / f"{stem}.safetensors", HEADERS["sd2"])
    write_safetensors(folder / "sd15.safetensors", HEADERS["sd1"])
    (folder / "v768.yaml").write_text('model:\n  params:\n    parameterization: "v"\n', encoding="utf-8")
    (folder / "base512.yaml").write_text("model:\n  params:\n    timesteps: 1000\n", encoding="utf-8")
    (folder / "json-eps.json").write_text(json.dumps({"prediction_type": "epsilon"}), encoding="utf-8")
    entries = by_name(catalog(tmp_path, [folder]).scan())
    assert entries["v768"].prediction_type == "v_prediction"
    assert entries["base512"].prediction_type == "epsilon"
    assert entries["json-eps"].prediction_type == "epsilon"
    assert entries["plain"].prediction_type == "v_prediction"  # the documented default: SD 2.1 768-v
    assert entries["sd15"].prediction_type is None
    again = by_name(catalog(tmp_path, [folder], sd2_prediction="epsilon").scan())
    assert again["plain"].prediction_type == "epsilon" and again["v768"].prediction_type == "v_prediction"


# ------------------------------------------------------------------------------------------ cheap and safe
def test_scan_never_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlocal.engine import hashing

    def forbidden(path: Path) -> str:
        raise AssertionError(f"scan hashed {path}")

    monkeypatch.setattr(hashing, "sha256_file", forbidden)
    folder = tmp_path / "models"
    for i in range(100):
        write_safetensors(folder / f"m{i:03d}.safetensors", HEADERS["sdxl" if i % 2 else "sd1"])
    entries = catalog(tmp_path, [folder]).scan()
    assert len(entries) == 100 and all(e.supported and e.short_hash is None for e in entries)


def test_scan_imports_no_torch(tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "models"
    write_safetensors(folder / "a.safetensors", HEADERS["sd1"])
    torch.save({"state_dict": {k: torch.zeros(v, dtype=torch.float16) for k, v in HEADERS["sd2"].items()
                               if "to_k" in k}}, folder / "b.ckpt")
    write_diffusers_folder(folder / "c")
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from sdlocal.engine.config import EngineConfig\n"
        "from sdlocal.engine.models import ModelCatalog\n"
        f"config = EngineConfig(data_dir=Path({str(tmp_path / 'data')!r}), models_dirs=[Path({str(folder)!r})])\n"
        "entries = ModelCatalog(config, background_hashing=False).scan()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'safetensors',"
        " 'transformers', 'numpy'))\n"
        "print(json.dumps({'families': [e.family for e in entries], 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"families": ["sd1", "sd2", "sd1"], "heavy": []}


def count_header_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files whose headers discovery reads from now on."""
    from sdlocal.engine import models

    read: list[str] = []
    real = models.detect_file

    def counting(path: Path):  # type: ignore[no-untyped-def]
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(models, "detect_file", counting)
    return read


def test_a_rescan_reads_only_changed_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    folder = tmp_path / "models"
    write_safetensors(folder / "a.safetensors", HEADERS["sd1"])
    changing = write_safetensors(folder / "b.safetensors", HEADERS["sd1"])
    cat = catalog(tmp_path, [folder])
    cat.scan()
    read = count_header_reads(monkeypatch)
    write_safetensors(changing, HEADERS["sdxl"])
    stat = changing.stat()
    os.utime(changing, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    entries = by_name(cat.scan())
    assert read == ["b.safetensors"] and entries["b"].family == "sdxl" and entries["a"].family == "sd1"


def test_a_restart_reuses_the_headers_read_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new catalog (the next start) lists unchanged files from the detection cache, without reading them."""

    folder = tmp_path / "models"
    write_safetensors(folder / "a.safetensors", HEADERS["sd1"])
    write_safetensors(folder / "b.safetensors", HEADERS["sdxl"])
    first = by_name(catalog(tmp_path, [folder]).scan())
    read = count_header_reads(monkeypatch)
    again = by_name(catalog(tmp_path, [folder]).scan())
    assert read == [] and {k: (e.family, e.supported) for k, e in again.items()} == \
        {k: (e.family, e.supported) for k, e in first.items()}
    (tmp_path / "data" / "cache" / "detections.json").write_text("{damaged")
    assert by_name(catalog(tmp_path, [folder]).scan())["b"].family == "sdxl"
    assert read == ["a.safetensors", "b.safetensors"], "a damaged cache means reading the headers again"
