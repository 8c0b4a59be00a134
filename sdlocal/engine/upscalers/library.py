"""The upscalers A1111 lists: the builtin resamplers and every model file in the upscaler folders.

``UpscalerSet`` finds the files (``folders.upscaler_dirs``), reads each one's architecture from its tensors' names
and shapes (again only when the file changed), and upscales a picture by A1111's rule: a model runs on the
picture, again if needed (at most 3 times), until it covers the target, then Lanczos gives exactly the target
size. Models run tiled (``tiling``) so memory stays bounded; the last model used stays loaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.networks.folders import UPSCALER_SUFFIXES, Listing, upscaler_dirs, walk
from sdlocal.engine.networks.library import FileLibrary, read_or_reason
from sdlocal.engine.request import RequestError, RunControl
from sdlocal.engine.upscalers import BUILTIN_UPSCALERS, tiling
from sdlocal.engine.upscalers.detection import NotAnUpscaler, detect, read_shapes

log = logging.getLogger(__name__)
MAX_PASSES = 3  # A1111 runs a model at most three times to reach the target size


class UpscaleInterrupted(Exception):
    """Interrupt was pressed while an upscaler model ran (between two tiles); nothing was produced."""


@dataclass
class UpscalerInfo:
    """One upscaler as the lists show it. ``name`` is A1111's (a builtin, or the model file's stem); ``scale``
    is the native scale (4 for builtins, as A1111 lists them); ``reason`` says why it cannot be used."""

    name: str
    kind: str  # "builtin" | "model"
    path: Path | None
    scale: int = 4
    architecture: str = ""
    reason: str = ""

    @property
    def usable(self) -> bool:
        return not self.reason


def builtins() -> list[UpscalerInfo]:
    return [UpscalerInfo(name, "builtin", None) for name in BUILTIN_UPSCALERS]


def read_upscaler(path: Path, name: str) -> UpscalerInfo:
    """A model file as the list shows it; raises ``NotAnUpscaler``/``OSError`` (``read_or_reason`` lists them)."""
    architecture = detect(read_shapes(path))
    return UpscalerInfo(name, "model", path, architecture.scale, architecture.label)


class UpscalerSet(FileLibrary[UpscalerInfo]):
    """The builtins and the model files of every upscaler folder; runs them (see the module's docstring)."""

    clash_kind = "upscaler"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._model_lock = threading.Lock()
        self._model: tuple[Any, Any, Any] | None = None  # (key, network, architecture)

    # ------------------------------------------------------------------------------------ discovery hooks
    def folders(self) -> list[Path]:
        return upscaler_dirs(self.config)

    def candidates(self, folder: Path) -> Iterable[Listing]:
        return walk(folder, UPSCALER_SUFFIXES)

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        return path, path.stem

    def read(self, path: Path, name: str) -> UpscalerInfo:
        return read_or_reason(read_upscaler, path, name, "upscaler", NotAnUpscaler,
                              lambda n, p, reason: UpscalerInfo(n, "model", p, 0, "", reason), log)

    def unlisted(self, folder: Path, path: Path, reason: str) -> UpscalerInfo:
        return UpscalerInfo(path.name, "model", path, 0, "", reason)

    def scan(self) -> list[UpscalerInfo]:
        """The builtins, then every model file found (usable or not, with the reason); never raises."""
        with self._lock:
            return self._scan_with_builtins()

    def _scan_with_builtins(self) -> list[UpscalerInfo]:
        files = super().scan()
        builtin = {name.casefold() for name in BUILTIN_UPSCALERS}
        files = [f if f.name.casefold() not in builtin else
                 UpscalerInfo(f.name, f.kind, f.path, f.scale, f.architecture,
                              "a builtin upscaler has this name: rename the file") for f in files]
        self._entries = [*builtins(), *files]
        return list(self._entries)

    # ------------------------------------------------------------------------------------ choosing
    def find(self, name: str, field: str = "upscaler_1") -> UpscalerInfo:
        """The upscaler called ``name`` (any case); ``RequestError(field, ...)`` when none is, or it is unusable.
        Latent modes are not upscalers here: hires fix checks ``latent_mode`` first."""
        wanted = (name or "").strip().casefold()
        entries = self.entries()
        match = next((e for e in entries if e.name.casefold() == wanted and e.usable), None)
        match = match or next((e for e in entries if e.name.casefold() == wanted), None)
        if match is None:
            known = ", ".join(e.name for e in entries if e.usable)
            raise RequestError(field, name, f"the upscalers are: {known} (model files go in models/ESRGAN)")
        if not match.usable:
            raise RequestError(field, name, f"this upscaler cannot be used: {match.path}: {match.reason}")
        return match

    # ------------------------------------------------------------------------------------ running
    def upscale(self, image: Any, name: str, width: int, height: int, *, device: str = "cpu", dtype: Any = None,
                control: RunControl | None = None, on_progress: Callable[[int, int], None] | None = None,
                tile: int | None = None, overlap: int = tiling.DEFAULT_OVERLAP) -> Any:
        """``image`` upscaled by ``name`` to exactly ``width`` x ``height`` (A1111's rule, see the module);
        ``UpscaleInterrupted`` when ``control`` is interrupted between tiles."""
        from PIL import Image

        info = self.find(name)
        if info.kind == "builtin":
            resample = Image.Resampling.NEAREST if info.name == "Nearest" else Image.Resampling.LANCZOS
            return image if image.size == (width, height) else image.resize((width, height), resample)
        picture = image.convert("RGB")
        for _ in range(MAX_PASSES):
            if picture.width >= width and picture.height >= height:
                break
            before = picture.size
            picture = self.run_model(info, picture, device=device, dtype=dtype, control=control,
                                     on_progress=on_progress, tile=tile, overlap=overlap)
            if picture.size == before:
                break
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        return picture

    def run_model(self, info: UpscalerInfo, picture: Any, *, device: str = "cpu", dtype: Any = None,
                  control: RunControl | None = None, on_progress: Callable[[int, int], None] | None = None,
                  tile: int | None = None, overlap: int = tiling.DEFAULT_OVERLAP) -> Any:
        """One pass of the model ``info`` over an RGB picture, tiled (``tile``: the device's by default) -> the
        picture at the model's scale."""
        import numpy as np
        import torch
        from PIL import Image

        network, architecture = self._network(info, device, dtype)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        multiple = getattr(architecture.config, "unshuffle", 1)
        pad_y, pad_x = -picture.height % multiple, -picture.width % multiple
        if pad_y or pad_x:
            pixels = torch.nn.functional.pad(pixels, (0, pad_x, 0, pad_y), mode="replicate")
        param = next(network.parameters())
        pixels = pixels.to(param.device, param.dtype)

        def before_tile(done: int, total: int) -> None:
            if control is not None and control.interrupted:
                raise UpscaleInterrupted(f"interrupted while {info.name} ran ({done} of {total} tiles done)")
            if on_progress is not None:
                on_progress(done, total)

        tile = tile or tiling.tile_for(device)
        out = tiling.run_tiled(network, pixels, architecture.scale, tile, overlap, before_tile)
        scale = architecture.scale
        out = out[0, :, : picture.height * scale, : picture.width * scale]
        out.clamp_(0, 1).mul_(255.0).round_()  # in place, as the 4x float picture is the largest tensor
        array = out.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        return Image.fromarray(array, "RGB")

    def _network(self, info: UpscalerInfo, device: str, dtype: Any) -> tuple[Any, Any]:
        """The network of ``info`` on ``device`` in ``dtype`` (fp32 on the CPU); the last one used is kept."""
        import torch

        from sdlocal.engine.networks.library import stamp_of
        from sdlocal.engine.upscalers.detection import build_network, load_tensors

        if dtype is None or device == "cpu":
            dtype = torch.float32
        assert info.path is not None
        key = (str(info.path), stamp_of(info.path), device, str(dtype))
        with self._model_lock:
            if self._model is not None and self._model[0] == key:
                return self._model[1], self._model[2]
            self._model = None  # the old one is freed before the new one loads
            try:
                tensors = load_tensors(info.path)
                architecture = detect({k: list(v.shape) for k, v in tensors.items()})
                network = build_network(architecture, tensors).to(device=device, dtype=dtype)
            except NotAnUpscaler as exc:
                raise RequestError("upscaler", info.name, f"{info.path}: {exc}") from None
            self._model = (key, network, architecture)
            return network, architecture

    def unload(self) -> None:
        """Drop the kept model (frees its memory)."""
        with self._model_lock:
            self._model = None
