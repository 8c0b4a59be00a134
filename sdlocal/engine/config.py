"""How the engine is set up: folders to scan and how to run models.

The engine takes this one value and nothing else from above it; ``sdlocal.settings`` builds it from
flags, environment and saved settings, so the engine never reads argv, environment or files of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Device = Literal["auto", "cuda", "mps", "cpu"]
Precision = Literal["auto", "fp16", "bf16", "fp32"]
Attention = Literal["auto", "sdpa", "xformers"]
PredictionType = Literal["epsilon", "v_prediction"]

DEVICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
PRECISIONS: tuple[str, ...] = ("auto", "fp16", "bf16", "fp32")
ATTENTIONS: tuple[str, ...] = ("auto", "sdpa", "xformers")
SD2_PREDICTIONS: tuple[str, ...] = ("v_prediction", "epsilon")


@dataclass
class EngineConfig:
    """Everything the engine needs to find and run models.

    ``data_dir`` holds sdlocal's own ``models/`` folders and the hash cache. ``models_dirs`` are extra roots:
    an A1111/Forge or ComfyUI install root, or a folder of checkpoints. ``extra_model_paths`` is a ComfyUI
    ``extra_model_paths.yaml``. ``sd2_prediction`` is the default for SD 2.x files (768-v models are
    v-prediction, the 512 base is epsilon: the weights' shapes cannot tell them apart), overridden per file
    by a sidecar.
    """

    data_dir: Path
    models_dirs: list[Path] = field(default_factory=list)
    extra_model_paths: list[Path] = field(default_factory=list)
    device: Device = "auto"
    precision: Precision = "auto"
    no_half_vae: bool = False
    attention: Attention = "auto"
    attention_slicing: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    # A1111's memory modes: medvram moves whole models to the GPU only while they run (model CPU offload)
    # and slices the VAE; lowvram moves each layer (sequential offload) and slices attention too.
    medvram: bool = False
    lowvram: bool = False
    max_loaded_models: int = 1
    sd2_prediction: PredictionType = "v_prediction"
    token_merging_ratio: float = 0.0
    fast: bool = False  # fast mode (``engine.fast``): what the benchmarks showed helps on this device

    @property
    def own_models_dir(self) -> Path:
        return self.data_dir / "models"
