"""The upscalers sdlocal can use: Pillow's resamplers and the ESRGAN-family files in the upscaler folders.

Names are A1111's ("None", "Lanczos", "Nearest", then each file's name without its suffix), so an infotext's
"Hires upscaler: 4x-UltraSharp" or an API client's ``upscaler_1`` finds the same one here. Discovery never
raises: a file that cannot be used is listed with the reason. A model is loaded at its first use and kept (the
last one used) for the next picture, on the device and in the dtype the engine asks for.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.request import RequestError, RunControl
from sdlocal.engine.upscalers import BUILTIN_UPSCALERS
from sdlocal.engine.upscalers.detect import SUFFIXES, Detected, NotAnUpscaler

log = logging.getLogger(__name__)

BUILTIN_SCALE = 4  # A1111 lists its resamplers with scale 4
MAX_PASSES = 3  # A1111 runs a model at most three times to reach the size asked for
CPU_TILE, GPU_TILE, OVERLAP = 192, 512, 32  # input pixels; see tiling.py and bench/upscalers.py


class UpscaleInterrupted(Exception):
    """Interrupt was pressed while an upscaler model was running; the picture is not finished."""


@dataclass
class UpscalerInfo:
    """One upscaler as the lists show it; ``reason`` says why one that is not ``usable`` cannot be used."""

    name: str
    kind: str  # "builtin" | "model"
    path: Path | None
    scale: float
    architecture: str
    usable: bool
    reason: str = ""


@dataclass
class _Known:
    stamp: tuple[int, int]
    info: UpscalerInfo
    detected: Detected | None


class UpscalerSet:
    """The upscaler list (scanned at first use and on ``scan``) and the runner of the last model used."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._known: dict[Path, _Known] = {}
        self._entries: list[UpscalerInfo] | None = None
        self._detected: dict[str, Detected] = {}
        self._model: tuple[tuple[Any, ...], Any] | None = None

    # ------------------------------------------------------------------------------------------ listing
    def folders(self) -> list[Path]:
        from sdlocal.engine.networks.folders import upscaler_dirs

        return upscaler_dirs(self.config)

    def scan(self) -> list[UpscalerInfo]:
        """Look in the folders again (only new or changed files are read) -> builtins first, then the files."""
        from sdlocal.engine.networks.folders import walk

        entries = [UpscalerInfo(name, "builtin", None, BUILTIN_SCALE, "", True) for name in BUILTIN_UPSCALERS]
        taken = {name.lower(): None for name in BUILTIN_UPSCALERS}
        detected: dict[str, Detected] = {}
        known: dict[Path, _Known] = {}
        with self._lock:
            for folder in self.folders():
                for listing in walk(folder, SUFFIXES):
                    if listing.error:
                        continue
                    item = self._read(listing.path, known)
                    info = item.info
                    if info.name.lower() in taken:
                        first = taken[info.name.lower()]
                        info = replace(info, usable=False, reason=f"has the same name as {first or 'a built-in'}; "
                                                                  "rename one of them")
                    else:
                        taken[info.name.lower()] = str(listing.path)
                        if item.detected is not None:
                            detected[info.name.lower()] = item.detected
                    entries.append(info)
            self._known, self._entries, self._detected = known, entries, detected
        return list(entries)

    def _read(self, path: Path, known: dict[Path, _Known]) -> _Known:
        from sdlocal.engine.networks.library import stamp_of

        try:
            stamp = stamp_of(path)
        except OSError as exc:
            info = UpscalerInfo(path.stem, "model", path, 0, "", False, f"cannot be read ({exc.strerror or exc})")
            return _Known((0, 0), info, None)
        previous = self._known.get(path)
        if previous is not None and previous.stamp == stamp:
            known[path] = previous
            return previous
        try:
            found = _detect_file(path)
            info = UpscalerInfo(path.stem, "model", path, found.scale, found.description, True)
            item = _Known(stamp, info, found)
        except NotAnUpscaler as exc:
            item = _Known(stamp, UpscalerInfo(path.stem, "model", path, 0, "", False, str(exc)), None)
        known[path] = item
        return item

    def entries(self) -> list[UpscalerInfo]:
        """The last scan's list (the folders are scanned at the first call)."""
        with self._lock:
            if self._entries is None:
                return self.scan()
            return list(self._entries)

    def find(self, name: str, field: str = "upscaler_1") -> UpscalerInfo:
        """The usable upscaler called ``name`` (any case); a RequestError on ``field`` names the choices."""
        wanted = (name or "").strip().lower()
        entries = self.entries()
        found = next((info for info in entries if info.name.lower() == wanted and info.usable), None)
        if found is None and wanted:
            entries = self.scan()  # a file dropped into the folder since the last look
            found = next((info for info in entries if info.name.lower() == wanted and info.usable), None)
        if found is not None:
            return found
        unusable = next((info for info in entries if info.name.lower() == wanted), None)
        if unusable is not None:
            raise RequestError(field, name, f"cannot be used: {unusable.reason}")
        names = [info.name for info in entries if info.usable]
        close = difflib.get_close_matches(name or "", names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise RequestError(field, name, f"is not an upscaler here; {hint}choose one of {', '.join(names)} "
                                        "(GET /sdapi/v1/upscalers lists them)")

    # ------------------------------------------------------------------------------------------ running
    def upscale(self, image: Any, name: str, width: int, height: int, *, device: str = "cpu", dtype: Any = None,
                control: RunControl | None = None, on_progress: Callable[[int, int], None] | None = None,
                field: str = "upscaler_1") -> Any:
        """``image`` made ``width`` x ``height`` with the upscaler ``name``, as A1111 does it.

        "None" and "Lanczos" resize with Lanczos, "Nearest" with nearest-neighbour. A model runs on the picture
        (again, at most three times) until it covers the size, then a Lanczos resize gives exactly that size;
        a picture already as large is only resized. An alpha channel is resized with Lanczos and put back.
        """
        from PIL import Image

        info = self.find(name, field)
        if info.kind == "builtin":
            method = Image.Resampling.NEAREST if info.name == "Nearest" else Image.Resampling.LANCZOS
            return image.resize((width, height), method)
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        picture = image.convert("RGB")
        for _ in range(MAX_PASSES):
            if picture.width >= width and picture.height >= height:
                break
            before = picture.size
            picture = self._run_model(info, picture, device, dtype, control, on_progress)
            if picture.size == before:  # a 1x model: running it again would not get any closer
                break
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        if alpha is not None:
            picture.putalpha(alpha.resize((width, height), Image.Resampling.LANCZOS))
        return picture

    def _run_model(self, info: UpscalerInfo, picture: Any, device: str, dtype: Any, control: RunControl | None,
                   on_progress: Callable[[int, int], None] | None) -> Any:
        import numpy as np
        import torch
        from PIL import Image

        from sdlocal.engine.upscalers.tiling import TilingInterrupted, run_tiled

        dtype = dtype or torch.float32
        model, scale = self._load(info, device, dtype)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

        def run(tile: Any) -> Any:
            return model(tile.to(device=device, dtype=dtype))

        tile = GPU_TILE if str(device).startswith("cuda") else CPU_TILE
        try:
            out = run_tiled(run, pixels, scale, tile, OVERLAP,
                            should_stop=(lambda: control.interrupted) if control is not None else None,
                            on_progress=on_progress)
        except TilingInterrupted:
            raise UpscaleInterrupted(f"{info.name} was interrupted") from None
        array = (out[0].clamp_(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(array, "RGB")

    def _load(self, info: UpscalerInfo, device: str, dtype: Any) -> tuple[Any, int]:
        """The module for ``info`` on ``device``/``dtype``, loaded once and kept until another one is asked for."""
        from sdlocal.engine.networks.library import stamp_of
        from sdlocal.engine.upscalers.detect import read_state

        assert info.path is not None
        key = (str(info.path), stamp_of(info.path), str(device), str(dtype))
        with self._lock:
            if self._model is not None and self._model[0] == key:
                return self._model[1]
            self._model = None  # the previous model goes before the next one is read
            detected = self._detected.get(info.name.lower())
            if detected is None:
                raise RequestError("upscaler", info.name, "is no longer in the upscaler folders; refresh the list")
            try:
                state = detected.convert(read_state(info.path))
            except NotAnUpscaler as exc:
                raise RequestError("upscaler", info.name, f"cannot be used: {exc}") from None
            module = detected.build()
            missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or unexpected:
                shown = ", ".join((missing or unexpected)[:3])
                raise RequestError("upscaler", info.name, f"its weights do not fit {detected.architecture} "
                                                          f"({len(missing)} missing, {len(unexpected)} unexpected: "
                                                          f"{shown}); it may be damaged")
            module.eval().requires_grad_(False).to(device=device, dtype=dtype)
            loaded = (module, int(round(detected.scale)))
            self._model = (key, loaded)
            log.info("loaded the upscaler %s (%s) on %s", info.name, detected.description, device)
            return loaded


def _detect_file(path: Path) -> Detected:
    """The network in ``path``, from its header alone where the format allows (safetensors)."""
    from sdlocal.engine.upscalers.detect import detect, read_state, shapes_of, unwrap

    if path.suffix.lower() == ".safetensors":
        from sdlocal.engine.headers import HeaderError, read_safetensors_header, shapes_of_header

        try:
            shapes = unwrap(shapes_of_header(read_safetensors_header(path)))
        except HeaderError as exc:
            raise NotAnUpscaler(str(exc)) from None
        return detect(shapes)
    return detect(shapes_of(read_state(path)))
