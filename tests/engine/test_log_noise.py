"""A plain run prints none of the library notes nobody can act on, and every other library warning still shows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION_NOTE = "requires torchvision (not installed)"
EMPTY_FP32_NOTE = "that should be kept in float32: []"

SCRIPT = """
import logging, sys
from pathlib import Path
from sdlocal.engine import Engine, EngineConfig, GenerationRequest

engine = Engine(EngineConfig(data_dir=Path(sys.argv[2]), models_dirs=[Path(sys.argv[1])], device="cpu",
                             precision="fp32"))
for model in ("tiny-sd1-safetensors", "tiny-sdxl-diffusers"):
    engine.generate(GenerationRequest.build(model=model, prompt="a cat", steps=1, width=64, height=64, seed=1))
logging.getLogger("transformers.utils.import_utils").warning("an unrelated transformers warning")
logging.getLogger("diffusers.models.modeling_utils").warning(
    "There are modules in UNet2DConditionModel that should be kept in float32: ['conv_norm_out']. Casting...")
print("generated", flush=True)
"""


def test_loading_and_generating_prints_no_library_notes(tiny_models_dir: Path, tmp_path: Path) -> None:
    """A fresh process, since transformers logs its note once per process (whichever test imports first)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_models_dir), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and "generated" in done.stdout, done.stderr[-3000:]
    assert TORCHVISION_NOTE not in done.stderr and EMPTY_FP32_NOTE not in done.stderr, done.stderr
    assert "an unrelated transformers warning" in done.stderr  # the same loggers still speak
    assert "should be kept in float32: ['conv_norm_out']" in done.stderr


@pytest.mark.parametrize(("logger_name", "dropped", "kept"), [
    ("transformers.utils.import_utils",
     "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for "
     "backward compatibility. Install torchvision to use the default backend.",
     "`CLIPImageProcessor` requires torchvision (not installed) and has no fallback."),
    ("diffusers.models.modeling_utils",
     "There are modules in AutoencoderKL that should be kept in float32: []. Casting directly with `to()`...",
     "There are modules in AutoencoderKL that should be kept in float32: ['quant_conv']. Casting directly..."),
])
def test_only_the_exact_notes_are_dropped(logger_name: str, dropped: str, kept: str) -> None:
    from sdlocal.engine.loader import silence_harmless_messages

    silence_harmless_messages()
    silence_harmless_messages()  # idempotent: one filter per logger
    logger = logging.getLogger(logger_name)
    assert len(logger.filters) == len({type(f) for f in logger.filters})
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning(dropped)
        logger.warning(kept)
        logger.warning("%s, with arguments", "a real warning")
    finally:
        logger.removeHandler(handler)
    assert seen == [kept, "a real warning, with arguments"]
