"""Finding VAEs: A1111's names (file name with suffix, subfolders in the name), a diffusers VAE folder as one VAE,
the family told from the file, and files that are not VAEs for these models listed with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.vae_files import CHECKPOINT, LORA, SIXTEEN_CHANNELS, write_diffusers_vae, write_tensors, write_vae

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_vae():
    from sdlocal.engine.synthetic import build_tiny_pipeline

    return build_tiny_pipeline("sd1").vae


def library_over(data_dir: Path):
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.networks.vaes import VaeLibrary

    return VaeLibrary(EngineConfig(data_dir=data_dir))


def test_vaes_are_named_as_a1111_names_them_and_a_diffusers_folder_is_one(tmp_path: Path, tiny_vae) -> None:
    folder = tmp_path / "models" / "VAE"
    write_vae(tiny_vae, folder / "vae-ft-mse-840000-ema-pruned.safetensors")
    write_vae(tiny_vae, folder / "anime" / "kl-f8-anime2.ckpt")
    write_diffusers_vae(tiny_vae, folder / "sd-vae-ft-ema")
    entries = {e.name: e for e in library_over(tmp_path).scan()}
    assert set(entries) == {"vae-ft-mse-840000-ema-pruned.safetensors", "anime/kl-f8-anime2.ckpt", "sd-vae-ft-ema"}
    assert all(e.usable for e in entries.values())
    assert entries["sd-vae-ft-ema"].format == "diffusers" and entries["sd-vae-ft-ema"].layout == "diffusers"
    assert entries["anime/kl-f8-anime2.ckpt"].layout == "ldm"


@pytest.mark.parametrize(("shapes", "reason"), [
    (SIXTEEN_CHANNELS, "made for a 16-channel model (SD3/Flux); this model is SD 1.x/SDXL"),
    (CHECKPOINT, "a whole checkpoint, not a VAE: put it in models/Stable-diffusion"),
    (LORA, "a LoRA, not a VAE: put it in models/Lora"),
    ({"emb_params": (2, 32)}, "not a VAE"),
])
def test_files_that_are_not_vaes_for_these_models_are_listed_with_the_reason(tmp_path: Path, shapes, reason) -> None:
    write_tensors(tmp_path / "models" / "VAE" / "x.safetensors", shapes)
    (entry,) = library_over(tmp_path).scan()
    assert not entry.usable and entry.reason.startswith(reason)


def test_a_truncated_file_is_listed_with_the_reason_and_discovery_goes_on(tmp_path: Path, tiny_vae) -> None:
    folder = tmp_path / "models" / "VAE"
    good = write_vae(tiny_vae, folder / "good.safetensors")
    (folder / "cut.safetensors").write_bytes(good.read_bytes()[:1000])
    entries = {e.name: e for e in library_over(tmp_path).scan()}
    assert entries["good.safetensors"].usable
    assert "truncated" in entries["cut.safetensors"].reason


@pytest.mark.parametrize(("name", "metadata", "family"), [
    ("sdxl_vae.safetensors", None, "sdxl"),
    ("sdxl-vae-fp16-fix.safetensors", None, "sdxl"),
    ("xlVAEC_c1.safetensors", None, "sdxl"),
    ("vae-ft-mse-840000-ema-pruned.safetensors", None, None),
    ("pixel.safetensors", {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}, "sdxl"),
    ("mine_xl.safetensors", {"modelspec.architecture": "stable-diffusion-v1/vae"}, "sd1"),
])
def test_the_family_comes_from_the_metadata_else_the_name(tmp_path: Path, tiny_vae, name, metadata, family) -> None:
    from sdlocal.engine.networks.vaes import read_vae

    entry = read_vae(write_vae(tiny_vae, tmp_path / name, metadata=metadata), name)
    assert entry.usable and entry.family == family
    assert entry.fits("sdxl") == (family in (None, "sdxl")) and entry.fits("sd1") == (family in (None, "sd1"))


def test_a_diffusers_folder_tells_its_family_by_its_scaling_factor(tmp_path: Path, tiny_vae) -> None:
    from sdlocal.engine.networks.vaes import read_vae

    tiny_vae.register_to_config(scaling_factor=0.13025)
    try:
        entry = read_vae(write_diffusers_vae(tiny_vae, tmp_path / "anything"), "anything")
    finally:
        tiny_vae.register_to_config(scaling_factor=0.18215)
    assert entry.family == "sdxl"


def test_find_takes_the_name_the_file_name_or_the_stem_without_case(tmp_path: Path, tiny_vae) -> None:
    write_vae(tiny_vae, tmp_path / "models" / "VAE" / "sub" / "Mine.safetensors")
    library = library_over(tmp_path)
    library.scan()
    for name in ("sub/Mine.safetensors", "mine.safetensors", "MINE"):
        assert library.find(name) is not None, name
    assert library.find("other") is None and library.closest("mein") == ["sub/Mine.safetensors"]


def test_automatic_prefers_the_file_beside_the_checkpoint_then_a_vae_folder_file_named_after_it(
        tmp_path: Path, tiny_vae) -> None:
    checkpoint = tmp_path / "ckpts" / "model.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    library = library_over(tmp_path)
    write_vae(tiny_vae, tmp_path / "models" / "VAE" / "model.safetensors")
    library.scan()
    assert library.automatic_for(checkpoint).name == "model.safetensors"
    write_vae(tiny_vae, checkpoint.parent / "model.vae.pt")
    assert library.automatic_for(checkpoint).path == checkpoint.parent / "model.vae.pt"
    assert library.automatic_for(tmp_path / "ckpts" / "other.safetensors") is None


def test_an_unlistable_folder_is_an_entry_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    from sdlocal.engine.networks import folders, vaes

    (tmp_path / "models" / "VAE").mkdir(parents=True)
    monkeypatch.setattr(vaes, "walk", lambda root, suffixes: iter([folders.Listing(root, "PermissionError: denied")]))
    (entry,) = library_over(tmp_path).scan()
    assert "cannot be listed" in entry.reason


def test_listing_vaes_imports_no_torch(tmp_path: Path, tiny_vae) -> None:
    """The page lists VAEs when it opens, before any model: reading headers must not cost a torch import."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "models" / "VAE"
    write_vae(tiny_vae, folder / "a.safetensors")
    write_vae(tiny_vae, folder / "b.pt")
    write_diffusers_vae(tiny_vae, folder / "c")
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from sdlocal.engine.config import EngineConfig\n"
        "from sdlocal.engine.networks.vaes import VaeLibrary\n"
        f"entries = VaeLibrary(EngineConfig(data_dir=Path({str(tmp_path)!r}))).scan()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'safetensors'))\n"
        "print(json.dumps({'usable': [e.usable for e in entries], 'heavy': heavy}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"usable": [True, True, True], "heavy": []}
