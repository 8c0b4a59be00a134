"""Where embeddings, LoRAs and VAEs are: sdlocal's own folders, the A1111/Forge and ComfyUI/Fooocus installs the
user points at with ``--models-dir``, and the matching sections of ComfyUI ``extra_model_paths.yaml`` files.

The same conventions as the checkpoint folders (``engine.models``): a configured root may be the install folder or
its ``models`` folder; every folder is looked in once, however many ways it is reached.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.models import MAX_DEPTH, extra_model_paths_dirs, list_once

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
# Folder names per kind: sdlocal's own (under <data dir>/models, A1111's names), then those of an install root's
# ``models`` folder (A1111/Forge first, then ComfyUI/Fooocus), and the ``extra_model_paths.yaml`` key.
OWN_LORAS = "Lora"
ROOT_LORA_DIRS = ("Lora", "LyCORIS", "loras")
OWN_VAES = "VAE"
ROOT_VAE_DIRS = ("VAE", "vae")
OWN_UPSCALERS = "ESRGAN"
ROOT_UPSCALER_DIRS = ("ESRGAN", "RealESRGAN", "upscale_models")  # A1111/Forge, then ComfyUI
OWN_EMBEDDINGS = "embeddings"  # <data dir>/embeddings, as A1111's <install>/embeddings
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}


def embedding_dirs_of_root(folder: Path) -> list[Path]:
    """The embedding folders a ``--models-dir`` root stands for, whether it is the install folder or its ``models``.

    A1111/Forge keep embeddings beside ``models`` (``<install>/embeddings``), ComfyUI/Fooocus inside it
    (``<install>/models/embeddings``). Given an A1111 ``models`` folder (it holds ``Stable-diffusion``), its
    install's ``embeddings`` is the one beside it.
    """
    folder = Path(os.path.expandvars(str(folder))).expanduser()
    candidates = [folder / OWN_EMBEDDINGS, folder / "models" / OWN_EMBEDDINGS]
    if (folder / "Stable-diffusion").is_dir():
        candidates.append(folder.parent / OWN_EMBEDDINGS)
    return [path for path in candidates if path.is_dir()]


def embedding_dirs(config: EngineConfig) -> list[Path]:
    """Every existing embedding folder, sdlocal's own first, then the roots and the YAML files in their order;
    each folder once (by its real path), so the first one found wins a name clash, the same one every scan."""
    return _kind_dirs(config, config.data_dir / OWN_EMBEDDINGS, embedding_dirs_of_root, "embeddings")


def model_subdirs_of_root(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The ``names`` folders of a ``--models-dir`` root, given as the install folder or as its ``models`` folder."""
    folder = Path(os.path.expandvars(str(folder))).expanduser()
    return [base / name for base in (folder / "models", folder) for name in names if (base / name).is_dir()]


def lora_dirs(config: EngineConfig) -> list[Path]:
    """Every existing LoRA/LyCORIS folder: ``<data dir>/models/Lora``, each root's ``models/Lora``,
    ``models/LyCORIS`` (A1111/Forge) and ``models/loras`` (ComfyUI), then ``loras:`` of the YAML files."""
    return _kind_dirs(config, config.own_models_dir / OWN_LORAS,
                      lambda root: model_subdirs_of_root(root, ROOT_LORA_DIRS), "loras")


def vae_dirs(config: EngineConfig) -> list[Path]:
    """Every existing VAE folder: ``<data dir>/models/VAE``, each root's ``models/VAE`` (A1111/Forge) and
    ``models/vae`` (ComfyUI), then ``vae:`` of the YAML files."""
    return _kind_dirs(config, config.own_models_dir / OWN_VAES,
                      lambda root: model_subdirs_of_root(root, ROOT_VAE_DIRS), "vae")


def upscaler_dirs(config: EngineConfig) -> list[Path]:
    """Every existing upscaler folder: ``<data dir>/models/ESRGAN`` and ``models/RealESRGAN``, each root's
    ``models/ESRGAN``, ``models/RealESRGAN`` (A1111/Forge) and ``models/upscale_models`` (ComfyUI), then
    ``upscale_models:`` of the YAML files."""
    own = config.own_models_dir
    found = _kind_dirs(config, own / OWN_UPSCALERS, lambda root: model_subdirs_of_root(root, ROOT_UPSCALER_DIRS),
                       "upscale_models")
    return _existing_once([own / OWN_UPSCALERS, own / "RealESRGAN", *found])


def _kind_dirs(config: EngineConfig, own: Path, of_root: Callable[[Path], list[Path]], yaml_key: str) -> list[Path]:
    """sdlocal's own folder of a kind, then each root's (``of_root``), then the ``yaml_key:`` sections of the
    YAML files: the order every kind's folders share, each existing folder once."""
    candidates = [own]
    for root in config.models_dirs:
        candidates += of_root(root)
    for yaml_file in config.extra_model_paths:
        candidates += extra_model_paths_dirs(yaml_file, yaml_key)
    return _existing_once(candidates)


def _existing_once(candidates: list[Path]) -> list[Path]:
    found: list[Path] = []
    seen: set[str] = set()
    for folder in candidates:
        key = os.path.realpath(folder)
        if key in seen or not folder.is_dir():
            continue
        seen.add(key)
        found.append(folder)
    return found


@dataclass(frozen=True)
class Listing:
    """One thing a walk found: an embedding candidate file, or a folder that could not be listed (``error``)."""

    path: Path
    error: str = ""


def walk(root: Path, suffixes: tuple[str, ...] = EMBEDDING_SUFFIXES) -> Iterator[Listing]:
    """Candidate files (``suffixes``) under ``root`` and its subfolders, sorted within each folder so the order is
    stable.

    Hidden entries are skipped; a folder reached twice (a symlink loop) is listed once; a folder that cannot be
    listed is yielded with its error, so the user sees why its files are missing instead of a silent gap.
    """
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            listed = list_once(folder, visited)
        except OSError as exc:
            log.warning("cannot list the folder %s (%s); skipping it", folder, exc)
            yield Listing(folder, f"{type(exc).__name__}: {exc.strerror or exc}")
            continue
        if listed is None:
            continue
        children = sorted(listed, key=lambda child: child.name)
        subfolders: list[Path] = []
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                is_dir = child.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if child.name not in _SKIP_DIRS and depth < MAX_DEPTH:
                    subfolders.append(Path(child.path))
            elif Path(child.name).suffix.lower() in suffixes:
                yield Listing(Path(child.path))  # a broken link too: reading it says what is wrong
        stack.extend((path, depth + 1) for path in reversed(subfolders))
