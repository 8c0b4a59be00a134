"""``sdlocal generate``'s hires fix flags: A1111's controls into the request's ``hires``, errors naming the flag."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sdlocal import cli
from sdlocal.cli_hires import hires_part
from sdlocal.engine.request import RequestError
from sdlocal.settings import Settings

BASE = ["generate", "--model", "m", "--prompt", "p", "--out", "o"]


def options(argv: list[str], tmp_path: Path) -> dict:
    return cli.parse_command([*BASE, *argv, "--data-dir", str(tmp_path)], env={}).options


def test_no_hires_flag_means_no_hires_part(tmp_path: Path) -> None:
    assert hires_part(options([], tmp_path)) is None


def test_the_flags_fill_the_hires_part_and_the_rest_keeps_a1111s_ui_defaults(tmp_path: Path) -> None:
    spec = hires_part(options(["--hires-scale", "1.5", "--hr-upscaler", "Latent (bicubic)", "--hr-steps", "6",
                               "--denoising-strength", "0.45", "--hr-prompt", "sharp"], tmp_path))
    assert spec is not None
    assert (spec.scale, spec.upscaler, spec.steps, spec.denoising_strength, spec.prompt) == \
        (1.5, "Latent (bicubic)", 6, 0.45, "sharp")
    plain = hires_part(options(["--hires"], tmp_path))
    assert plain is not None and (plain.scale, plain.upscaler, plain.denoising_strength) == (2.0, "Latent", 0.7)


def test_hires_with_an_init_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError) as caught:
        hires_part(options(["--hr-scale", "2", "--init-image", str(tmp_path / "x.png")], tmp_path))
    assert caught.value.field == "enable_hr"


@pytest.mark.parametrize(("argv", "flag"), [(["--hr-scale", "20"], "--hr-scale"),
                                            (["--hr-resize-x", "9000"], "--hr-resize-x"),
                                            (["--hires", "--hr-steps", "-2"], "--hr-steps")])
def test_a_bad_hires_value_exits_2_naming_the_flag(tmp_path: Path, argv: list[str], flag: str) -> None:
    err = io.StringIO()
    given = options(["--width", "64", "--height", "64", *argv], tmp_path)
    code = cli.run_generate(Settings(data_dir=tmp_path), given, out=io.StringIO(), err=err)
    assert code == 2 and f"(set with {flag})" in err.getvalue(), err.getvalue()
