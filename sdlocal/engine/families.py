"""SD 1.x / SD 2.x / SDXL: recognising a model from what it declares, never from its file name or size.

A single file is recognised from its tensors' names and shapes alone (``headers`` reads them without loading
any weights). In the original (A1111/LDM) layout the cross-attention width tells the families apart: the
last dimension of ``input_blocks.2.1...attn2.to_k.weight`` is 768 for SD 1.x and 1024 for SD 2.x, and of
``input_blocks.4.1...attn2.to_k.weight`` 2048 for SDXL base and 1280 for the SDXL refiner; the first
convolution's input channels are 4, or 9 for inpainting models. Other kinds of file that people drop into a
checkpoints folder (LoRAs, VAEs, embeddings, SD3, Flux, ControlNets) are named, with where they belong.

A diffusers folder (or a single file's ``<stem>.config/`` sidecar) is recognised from its own configs:
``model_index.json``'s pipeline class, then ``unet/config.json``'s ``cross_attention_dim`` and ``in_channels``.

Whether an SD 2.x model predicts noise or v cannot be read from shapes (the 512 base and the 768-v model have
the same ones); ``prediction_from_sidecars`` reads it from the A1111-style ``<stem>.yaml`` or a ``<stem>.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlocal.engine.headers import HeaderError, read_ckpt_shapes, read_safetensors_header, shapes_of_header

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sdxl")
SIDECAR_SUFFIX = ".config"  # "<file stem>.config/": a single file's own diffusers config folder

UNET = "model.diffusion_model."
SD_CONTEXT_KEY = UNET + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
XL_CONTEXT_KEY = UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
CONV_IN_KEY = UNET + "input_blocks.0.0.weight"
SD_CONTEXT = {768: "sd1", 1024: "sd2"}
XL_CONTEXT = {2048: "sdxl"}
REFINER_CONTEXT = 1280
INPAINT_CHANNELS = 9

_LORA_PREFIXES = ("lora_unet_", "lora_te")
_LORA_PARTS = (".lora_down.", ".lora_up.", "lora_A", "lora_B", ".hada_w1", ".lokr_w1")
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")
_EMBEDDING_KEYS = {"emb_params", "clip_l", "clip_g", "string_to_param", "string_to_token", "name", "step",
                   "sd_checkpoint", "sd_checkpoint_name"}
UNKNOWN_HINT = "if it is a Stable Diffusion variant, put its diffusers config folder next to it as <name>.config/"


@dataclass(frozen=True)
class Detection:
    """What a file or folder is: its family (None when unknown), whether it inpaints, and why it is unsupported.

    ``kind`` says what it is when it is not a usable checkpoint ("lora", "vae", "refiner", "unreadable", ...),
    so discovery can tell "another kind of model" from "a checkpoint whose shapes no family matches".
    """

    family: str | None
    inpainting: bool = False
    supported: bool = True
    reason: str = ""
    kind: str = "checkpoint"


def _refused(kind: str, reason: str, family: str | None = None, inpainting: bool = False) -> Detection:
    return Detection(family=family, inpainting=inpainting, supported=False, reason=reason, kind=kind)


# ------------------------------------------------------------------------------------------ single files
def detect_from_header(header: Mapping[str, Any]) -> Detection:
    """Recognise a safetensors header (``{name: {"dtype", "shape", "data_offsets"}}``; ``__metadata__`` ignored)."""
    return detect_from_shapes(shapes_of_header(header))


def detect_from_shapes(shapes: Mapping[str, Sequence[int]]) -> Detection:
    """Recognise a checkpoint from its tensors' names and shapes (see the module docstring for the rules)."""
    keys = list(shapes)
    if not keys:
        return _refused("unknown", "the file holds no tensors: it is not a model")
    # One string of every name, each after a newline: substring tests over it cost microseconds for an SDXL
    # header's 2,500 names, where a Python loop per name and rule would cost milliseconds per file.
    text = "\n" + "\n".join(keys)

    def starts(*prefixes: str) -> bool:
        return any("\n" + prefix in text for prefix in prefixes)

    if starts(*_LORA_PREFIXES) or any(part in text for part in _LORA_PARTS):
        return _refused("lora", "a LoRA, not a checkpoint: it belongs in models/Lora")
    if starts("joint_blocks.", UNET + "joint_blocks."):
        return _refused("sd3", "Stable Diffusion 3 is not supported (sdlocal runs SD 1.x, SD 2.x and SDXL)")
    if starts("double_blocks.", "single_blocks.", UNET + "double_blocks.", UNET + "single_blocks."):
        return _refused("flux", "Flux is not supported (sdlocal runs SD 1.x, SD 2.x and SDXL)")
    if starts("control_model.") or "input_hint_block." in text:
        return _refused("controlnet", "a ControlNet, not a checkpoint: it belongs in models/ControlNet")
    if starts(UNET):
        return _detect_ldm_unet(shapes)
    if "conv_in.weight" in shapes and starts("down_blocks."):
        return _refused("unet-only", "a UNet alone in diffusers layout, not a full checkpoint: use the whole "
                                     "model (a diffusers folder with model_index.json, or a single-file checkpoint)")
    if all(k.startswith(_VAE_PREFIXES) for k in keys):
        return _refused("vae", "a VAE on its own, not a checkpoint: it belongs in models/VAE")
    if set(keys) <= _EMBEDDING_KEYS or (len(keys) <= 2 and all(len(s) == 2 for s in shapes.values())):
        return _refused("embedding", "a textual-inversion embedding, not a checkpoint: it belongs in embeddings/")
    return _refused("unknown", "not a Stable Diffusion checkpoint (it has no UNet weights)")


def _detect_ldm_unet(shapes: Mapping[str, Sequence[int]]) -> Detection:
    conv_in = list(shapes.get(CONV_IN_KEY, []))
    channels = int(conv_in[1]) if len(conv_in) >= 2 else 4
    inpainting = channels == INPAINT_CHANNELS
    family = None
    if SD_CONTEXT_KEY in shapes and shapes[SD_CONTEXT_KEY]:
        width = int(shapes[SD_CONTEXT_KEY][-1])
        family = SD_CONTEXT.get(width)
    elif XL_CONTEXT_KEY in shapes and shapes[XL_CONTEXT_KEY]:
        width = int(shapes[XL_CONTEXT_KEY][-1])
        if width == REFINER_CONTEXT:
            return _refused("refiner", "the SDXL refiner is not supported on its own (it refines an SDXL base "
                                       "model's output): use an SDXL base model", inpainting=inpainting)
        family = XL_CONTEXT.get(width)
    else:
        width = None
    if family is None:
        detail = f"cross-attention width {width}" if width else "no cross-attention layer where SD has one"
        return _refused("unknown", f"a UNet checkpoint of an unknown architecture ({detail}); {UNKNOWN_HINT}",
                        inpainting=inpainting)
    if channels not in (4, INPAINT_CHANNELS):
        return _refused("channels", f"a {family} model whose UNet takes {channels} input channels (4 or 9 are "
                                    "supported; 8 is InstructPix2Pix)", family=family)
    return Detection(family=family, inpainting=inpainting)


def detect_file(path: Path) -> Detection:
    """Recognise a ``.safetensors`` or ``.ckpt`` from its header; never raises (a failure is the reason)."""
    try:
        if path.suffix.lower() == ".safetensors":
            return detect_from_header(read_safetensors_header(path))
        return detect_from_shapes(read_ckpt_shapes(path))
    except HeaderError as exc:
        return _refused("unreadable", str(exc))
    except PermissionError:
        return _refused("unreadable", "cannot be read (permission denied): check the file's permissions")
    except OSError as exc:
        return _refused("unreadable", f"cannot be read ({exc.strerror or type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - discovery lists every file; a surprise becomes its reason
        log.warning("detecting %s failed", path, exc_info=True)
        return _refused("unreadable", f"cannot be read as a checkpoint ({type(exc).__name__})")


# ------------------------------------------------------------------------------------------ folders
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def family_of_folder(folder: Path) -> str | None:
    """sd1/sd2/sdxl from a diffusers folder's own configs (a diffusers model, or a single file's sidecar)."""
    index = _read_json(folder / "model_index.json")
    if index is None:
        return None
    if "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    unet = _read_json(folder / "unet" / "config.json")
    if unet is None:
        return "sd1"
    return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"


def unet_in_channels(folder: Path) -> int:
    """The UNet's input channels from ``unet/config.json`` (9 for inpainting); 4 when it does not say."""
    try:
        return int((_read_json(folder / "unet" / "config.json") or {}).get("in_channels", 4))
    except (TypeError, ValueError):
        return 4


def unet_weights_file(folder: Path) -> Path | None:
    """The UNet's weights in a diffusers folder (safetensors first, full precision first), or None."""
    unet = folder / "unet"
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                 "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"):
        if (unet / name).is_file():
            return unet / name
    try:
        shards = sorted(p for p in unet.iterdir() if p.name.startswith("diffusion_pytorch_model")
                        and p.suffix in (".safetensors", ".bin"))
    except OSError:
        return None
    return shards[0] if shards else None


def detect_folder(folder: Path, need_weights: bool = True) -> Detection:
    """Recognise a diffusers folder from its configs; a folder without UNet weights is listed as incomplete."""
    index = _read_json(folder / "model_index.json")
    if index is None:
        return _refused("unreadable", "model_index.json cannot be read: the folder is damaged, download it again")
    pipeline = str(index.get("_class_name", ""))
    if "StableDiffusion3" in pipeline or "Flux" in pipeline:
        name = "Stable Diffusion 3" if "3" in pipeline else "Flux"
        return _refused("sd3" if "3" in pipeline else "flux",
                        f"{name} is not supported (sdlocal runs SD 1.x, SD 2.x and SDXL)")
    if pipeline and not pipeline.startswith(("StableDiffusion", "LatentConsistency")):
        return _refused("unknown", f"a {pipeline} pipeline, which sdlocal does not run "
                                   "(SD 1.x, SD 2.x and SDXL are supported)")
    family = family_of_folder(folder)
    inpainting = unet_in_channels(folder) == INPAINT_CHANNELS
    unet = _read_json(folder / "unet" / "config.json") or {}
    if family == "sdxl" and unet.get("cross_attention_dim") == REFINER_CONTEXT:
        return _refused("refiner", "the SDXL refiner is not supported on its own (it refines an SDXL base "
                                   "model's output): use an SDXL base model")
    if need_weights and unet_weights_file(folder) is None:
        return _refused("incomplete", "the folder has no UNet weights (unet/diffusion_pytorch_model.safetensors):"
                                      " the download is incomplete", family=family, inpainting=inpainting)
    return Detection(family=family, inpainting=inpainting)


def sidecar_config_dir(path: Path) -> Path:
    """A single file's own config folder: ``model.safetensors`` -> ``model.config/``."""
    return path.with_name(path.stem + SIDECAR_SUFFIX)


# ------------------------------------------------------------------------------------------ prediction type
def prediction_from_sidecars(path: Path) -> str | None:
    """"v_prediction"/"epsilon" from ``<stem>.yaml`` (A1111: ``model.params.parameterization: "v"``) or
    ``<stem>.json`` (``{"prediction_type": ...}``); None when neither says.

    A ``<stem>.json`` without ``prediction_type`` is someone else's metadata (A1111 keeps user notes there) and
    says nothing; a ``.yaml`` without ``parameterization`` is an epsilon model, as in A1111.
    """
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        try:
            import yaml

            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, OSError, UnicodeDecodeError
            log.warning("%s: cannot be read as YAML (%s); ignoring it", yaml_path, exc)
        else:
            params = ((data or {}).get("model") or {}).get("params") if isinstance(data, dict) else None
            value = params.get("parameterization") if isinstance(params, dict) else None
            return "v_prediction" if str(value).strip().lower() == "v" else "epsilon"
    data = _read_json(path.with_suffix(".json"))
    if data and "prediction_type" in data:
        value = str(data["prediction_type"]).strip().lower()
        if value in ("v", "v_prediction"):
            return "v_prediction"
        if value in ("epsilon", "eps"):
            return "epsilon"
        log.warning("%s: prediction_type %r is not epsilon or v_prediction; ignoring it",
                    path.with_suffix(".json"), data["prediction_type"])
    return None
