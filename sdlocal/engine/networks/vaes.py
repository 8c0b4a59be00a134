"""VAE files: found in the VAE folders, recognised from their tensor names and shapes, chosen as A1111's ``sd_vae``.

A VAE's name is A1111's: the file name with its suffix, with the folders below the VAE folder before it
(``anime/kl-f8-anime2.safetensors``); a diffusers VAE folder (``config.json`` of an ``AutoencoderKL`` beside
``diffusion_pytorch_model.safetensors``) is one VAE named after the folder. Discovery (``VaeLibrary``) never raises:
a file that is not a VAE for these models is listed with the reason.

What the tensors tell: an SD-family VAE has a 4-channel latent space (``decoder.conv_in`` takes 4 channels); SD3
and Flux VAEs take 16. The SD 1.x/2.x VAE and the SDXL VAE have the same shapes (SDXL retrained the same
architecture), so between those two only the file can say: its ``modelspec.architecture`` metadata, a diffusers
folder's ``scaling_factor`` (0.13025 is SDXL's), or "xl" as a word or prefix of its name (``sdxl_vae``,
``sdxl-vae-fp16-fix``). When none says, the family is None: it may be used with any SD model.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdlocal.engine.networks.folders import VAE_SUFFIXES, Listing, vae_dirs, walk
from sdlocal.engine.networks.library import FileLibrary, stamp_of

log = logging.getLogger(__name__)

AUTOMATIC = "Automatic"
NONE = "None"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
LDM_PREFIX = "first_stage_model."
SDXL_SCALING = 0.13025
FAMILY_LABELS = {"sd1": "SD 1.x/2.x", "sd2": "SD 1.x/2.x", "sdxl": "SDXL"}
BESIDE_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")  # A1111's "Automatic": next to the checkpoint
_XL_NAME = re.compile(r"(?:^|[^a-z])(?:sd)?xl(?:[^a-z]|$)|^(?:sd)?xl")
_FP16_FIX = re.compile(r"fp16[-_]?fix")


@dataclass
class VaeFile:
    """One VAE found on disk. ``layout`` is "ldm" (``encoder.down.0.block.0...``) or "diffusers"
    (``encoder.down_blocks.0.resnets.0...``); ``prefix`` is what stands before those names in the file
    (``first_stage_model.`` or nothing). ``family`` is "sd1" (SD 1.x/2.x), "sdxl", or None when the file does
    not say; ``force_upcast`` is False for the fp16-fix VAEs (they run in fp16), None when the file does not say.
    ``reason`` says why it cannot be used ("" when it can)."""

    name: str
    path: Path
    format: str  # "safetensors", "ckpt" (.pt/.ckpt/.bin, read with weights_only) or "diffusers" (a folder)
    layout: str = ""
    prefix: str = ""
    family: str | None = None
    force_upcast: bool | None = None
    reason: str = ""
    size: int = 0
    mtime_ns: int = 0

    @property
    def usable(self) -> bool:
        return not self.reason

    @property
    def filename(self) -> str:
        """The file (or folder) name A1111 writes as ``VAE:`` in the infotext."""
        return self.path.name

    @property
    def weights(self) -> Path:
        """The file holding the tensors: the file itself, or a diffusers folder's weights file."""
        return self.path / DIFFUSERS_WEIGHTS if self.format == "diffusers" else self.path

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family or "", "any SD model")

    def fits(self, model_family: str) -> bool:
        """Whether it may decode for a model of ``model_family`` (a VAE of unknown family fits any)."""
        return self.family is None or (self.family == "sdxl") == (model_family == "sdxl")


def family_label(model_family: str) -> str:
    return FAMILY_LABELS.get(model_family, model_family)


# ------------------------------------------------------------------------------------------ detection
@dataclass(frozen=True)
class Detected:
    layout: str = ""
    prefix: str = ""
    reason: str = ""


def detect(shapes: Mapping[str, Sequence[int]]) -> Detected:
    """What a file's tensors are: an SD-family VAE (its layout and prefix), or why not (the fix in the reason)."""
    keys = list(shapes)
    if not keys:
        return Detected(reason="the file holds no tensors: it is not a VAE")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return Detected(reason="a whole checkpoint, not a VAE: put it in models/Stable-diffusion")
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or "lora_A" in k or ".hada_w1" in k
           or ".lokr_w1" in k for k in keys):
        return Detected(reason="a LoRA, not a VAE: put it in models/Lora")
    prefix = next((p for p in (LDM_PREFIX, "vae.", "") if p + "decoder.conv_in.weight" in shapes), None)
    if prefix is None:
        return Detected(reason="not a VAE (it has no decoder.conv_in weights)")
    channels = list(shapes[prefix + "decoder.conv_in.weight"])
    latent = int(channels[1]) if len(channels) == 4 else -1
    if latent == 16:
        return Detected(reason="made for a 16-channel model (SD3/Flux); this model is SD 1.x/SDXL")
    if latent != 4:
        return Detected(reason=f"made for a {latent}-channel latent space; SD 1.x/2.x and SDXL use 4")
    if prefix + "decoder.up_blocks.0.resnets.0.conv1.weight" in shapes:
        return Detected("diffusers", prefix)
    if prefix + "decoder.up.0.block.0.conv1.weight" in shapes:
        return Detected("ldm", prefix)
    return Detected(reason="a VAE in a layout sdlocal does not know (neither the original nor diffusers' names)")


def family_from(metadata: Mapping[str, Any], name: str, scaling_factor: float | None = None) -> str | None:
    """"sdxl", "sd1" or None from what the file says of itself: its modelspec, its config, its name."""
    architecture = str(metadata.get("modelspec.architecture", "")).lower()
    if architecture:
        if "xl" in architecture:
            return "sdxl"
        if "stable-diffusion-v1" in architecture or "stable-diffusion-v2" in architecture:
            return "sd1"
    if scaling_factor is not None:
        return "sdxl" if abs(scaling_factor - SDXL_SCALING) < 1e-6 else "sd1"
    return "sdxl" if _XL_NAME.search(Path(name).name.lower()) else None


def _fp16_fix(name: str) -> bool | None:
    return False if _FP16_FIX.search(name.lower()) else None


def read_vae(path: Path, name: str) -> VaeFile:
    """A VAE file or diffusers folder as discovery sees it; never raises (a problem is the entry's reason)."""
    path = Path(path)
    fmt = "diffusers" if path.is_dir() else "safetensors" if path.suffix.lower() == ".safetensors" else "ckpt"
    entry = VaeFile(name=name, path=path, format=fmt)
    try:
        entry.size, entry.mtime_ns = stamp_of(entry.weights)
        if fmt == "diffusers":
            return _read_folder(entry)
        if fmt == "safetensors":
            return _read_safetensors(entry)
        return _read_pickle(entry)
    except Exception as exc:  # noqa: BLE001 - discovery never raises: a broken link, a permission, a bad file
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return replace(entry, reason=f"cannot be read ({reason})")


def _read_safetensors(entry: VaeFile) -> VaeFile:
    from sdlocal.engine.headers import HeaderError, read_safetensors_header, shapes_of_header

    try:
        header = read_safetensors_header(entry.path)
    except HeaderError as exc:
        return replace(entry, reason=str(exc))
    metadata = header.get("__metadata__") or {}
    found = detect(shapes_of_header(header))
    return replace(entry, layout=found.layout, prefix=found.prefix, reason=found.reason,
                   family=family_from(metadata if isinstance(metadata, dict) else {}, entry.name),
                   force_upcast=_fp16_fix(entry.name))


def _read_pickle(entry: VaeFile) -> VaeFile:
    """Names and shapes of a ``.pt``/``.ckpt``, without running its pickle (``headers.read_ckpt_shapes``); a
    pickle that names code is refused when it is loaded (``torch.load(weights_only=True)``)."""
    from sdlocal.engine.headers import HeaderError, read_ckpt_shapes

    try:
        shapes = read_ckpt_shapes(entry.path)
    except HeaderError as exc:
        return replace(entry, reason=str(exc))
    found = detect(shapes)
    return replace(entry, layout=found.layout, prefix=found.prefix, reason=found.reason,
                   family=family_from({}, entry.name), force_upcast=_fp16_fix(entry.name))


def diffusers_vae_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` of a diffusers AutoencoderKL folder, or None when ``folder`` is not one."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("_class_name") != "AutoencoderKL":
        return None
    return config if (Path(folder) / DIFFUSERS_WEIGHTS).is_file() else None


def _read_folder(entry: VaeFile) -> VaeFile:
    config = diffusers_vae_config(entry.path) or {}
    checked = _read_safetensors(replace(entry, path=entry.weights))
    latent = config.get("latent_channels", 4)
    reason = checked.reason or ("" if latent == 4 else detect({"decoder.conv_in.weight": [1, latent, 3, 3]}).reason)
    scaling = config.get("scaling_factor")
    force = config.get("force_upcast")
    return replace(checked, path=entry.path, reason=reason,
                   family=family_from({}, entry.name, float(scaling) if isinstance(scaling, (int, float)) else None),
                   force_upcast=bool(force) if isinstance(force, bool) else _fp16_fix(entry.name))


# ------------------------------------------------------------------------------------------- library
class VaeLibrary(FileLibrary[VaeFile]):
    """The VAEs in every VAE folder (``folders.vae_dirs``), each file read again only when it changed."""

    def folders(self) -> list[Path]:
        return vae_dirs(self.config)

    def candidates(self, folder: Path) -> Iterator[Listing]:
        return walk(folder, VAE_SUFFIXES)

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        """A diffusers folder's weights file stands for the folder: one VAE, named after the folder."""
        if path.name == DIFFUSERS_WEIGHTS and diffusers_vae_config(path.parent) is not None:
            return path.parent, path.parent.relative_to(folder).as_posix() or folder.name
        return path, path.relative_to(folder).as_posix()

    def read(self, path: Path, name: str) -> VaeFile:
        return read_vae(path, name)

    def unlisted(self, folder: Path, path: Path, reason: str) -> VaeFile:
        return VaeFile(name=path.relative_to(folder).as_posix() or folder.name, path=path, format="", reason=reason)

    def stamp(self, path: Path) -> tuple[int, int]:
        """A diffusers folder changes when its weights file does."""
        return stamp_of(path / DIFFUSERS_WEIGHTS if path.is_dir() else path)

    def find(self, name: str) -> VaeFile | None:
        """By name, file name, or stem (``x.safetensors``, ``x.vae.pt`` -> ``x``), without case; None if none."""
        wanted = (name or "").strip().casefold()
        if not wanted:
            return None
        entries = self.entries()
        tests = (lambda e: e.name.casefold() == wanted, lambda e: e.filename.casefold() == wanted,
                 lambda e: _stem(e.filename) == wanted or _stem(e.name) == wanted)
        for test in tests:
            match = next((e for e in entries if test(e)), None)
            if match is not None:
                return match
        return None

    def closest(self, name: str, n: int = 3) -> list[str]:
        names = [e.name for e in self.entries() if e.usable]
        close = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
        return close or names[:n]

    def automatic_for(self, checkpoint: Path) -> VaeFile | None:
        """A1111's "Automatic": a VAE beside the checkpoint named after it (``<stem>.vae.safetensors``, ``.vae.pt``,
        ``.vae.ckpt``), else one in a VAE folder named ``<stem>.<suffix>``; None: the checkpoint's own."""
        checkpoint = Path(checkpoint)
        stem = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
        for suffix in BESIDE_SUFFIXES:
            beside = checkpoint.parent / f"{stem}{suffix}"
            if beside.is_file():
                return self.read_once(beside, beside.name)
        wanted = stem.casefold()
        return next((e for e in self.entries() if e.format != "diffusers" and Path(e.name).stem.casefold() == wanted
                     and e.path.suffix.lower() in VAE_SUFFIXES), None)


def _stem(name: str) -> str:
    stem = Path(name).name
    for suffix in (*BESIDE_SUFFIXES, *VAE_SUFFIXES):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)].casefold()
    return stem.casefold()
