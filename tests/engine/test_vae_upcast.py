"""fp16 VAEs: ``force_upcast`` decodes in fp32 from the start; a VAE that overflows anyway is retried in fp32 once.

A tiny VAE whose first decoder conv has a bias of 65000 (fp16's largest value is 65504) overflows fp16 in its
activations (inf, then NaN through the GroupNorms) while fp32 stays finite: the same failure SDXL's VAE has,
at a size that runs on the CPU in milliseconds. The weights themselves stay representable in fp16, as real
ones are, so the fp32 retry starts from intact weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def _runtime(tmp_path: Path):
    from sdlocal.engine.config import EngineConfig
    from sdlocal.engine.devices import resolve_runtime

    runtime = resolve_runtime(EngineConfig(data_dir=tmp_path, device="cpu", precision="fp16"), cpu_flags=set())
    assert runtime.vae_precision == "fp16"
    return runtime


def _placed(tmp_path: Path, family: str, force_upcast: bool, overflow: bool = True):
    """A tiny pipeline placed as the loader places it, with decode calls recorded as their input dtypes."""
    from sdlocal.engine.loader import LoadedModel, _place
    from sdlocal.engine.synthetic import build_tiny_pipeline

    pipe = build_tiny_pipeline(family)
    pipe.vae.register_to_config(force_upcast=force_upcast)
    if overflow:
        with torch.no_grad():
            pipe.vae.decoder.conv_in.bias.fill_(65000.0)
    _place(pipe, _runtime(tmp_path))
    calls: list = []
    real = pipe.vae.decode

    def recording(latents, *args, **kwargs):
        calls.append(latents.dtype)
        return real(latents, *args, **kwargs)

    pipe.vae.decode = recording
    loaded = LoadedModel(entry=None, pipe=pipe, family=family, load_seconds=0.0, runtime_key=())
    return loaded, calls


def _latents():
    return torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))


def test_the_overflowing_vae_really_overflows_in_fp16_only(tmp_path: Path) -> None:
    loaded, _calls = _placed(tmp_path, "sdxl", force_upcast=False)
    vae = loaded.pipe.vae
    with torch.inference_mode():
        assert torch.isnan(vae.decode(_latents().half(), return_dict=False)[0]).any()
        vae.to(torch.float32)
        assert torch.isfinite(vae.decode(_latents(), return_dict=False)[0]).all()


def test_an_fp16_vae_that_overflows_is_retried_in_fp32_with_a_warning(tmp_path: Path) -> None:
    from sdlocal.engine.generate import decode

    loaded, calls = _placed(tmp_path, "sdxl", force_upcast=False)
    assert loaded.pipe.vae.dtype == torch.float16  # the config says fp16 is safe, so it stays fp16
    warnings: list[str] = []
    images = decode(loaded, _latents(), warnings)
    assert calls == [torch.float16, torch.float32]
    assert loaded.vae_upcast and loaded.pipe.vae.dtype == torch.float32
    assert len(warnings) == 1 and "--no-half-vae" in warnings[0]
    assert images[0].size == (64, 64)
    decode(loaded, _latents(), warnings)  # once upcast, it stays fp32: no second retry
    assert calls[2:] == [torch.float32] and len(warnings) == 1


def test_force_upcast_decodes_in_fp32_from_the_start_without_a_warning(tmp_path: Path) -> None:
    from sdlocal.engine.generate import decode

    loaded, calls = _placed(tmp_path, "sdxl", force_upcast=True)
    assert loaded.pipe.vae.dtype == torch.float32
    warnings: list[str] = []
    images = decode(loaded, _latents().half(), warnings)
    assert calls == [torch.float32] and warnings == [] and not loaded.vae_upcast
    assert images[0].size == (64, 64)


def test_force_upcast_is_honoured_only_where_diffusers_honours_it(tmp_path: Path) -> None:
    """SD 1.x pipelines ignore ``force_upcast`` in diffusers (their VAE is fine in fp16); so does sdlocal."""
    loaded, _calls = _placed(tmp_path, "sd1", force_upcast=True, overflow=False)
    assert loaded.pipe.vae.dtype == torch.float16
