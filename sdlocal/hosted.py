"""sdlocal as a hosted predictor (Cog): set up one engine from the environment, turn inputs into PNG files.

The root ``predict.py`` is Cog's thin adapter over this module; nothing here imports ``cog`` or ``coglet``, so the
logic is tested in-process without them and the app never depends on them.

Why it is shaped this way:

* Settings come from the same place as the app's (``sdlocal.settings.resolve``): ``SDLOCAL_DATA_DIR`` for the data
  dir, ``SDLOCAL_MODELS_DIRS`` for mounted model folders (an A1111/ComfyUI install or a plain folder of
  checkpoints), ``SDLOCAL_DEVICE``/``SDLOCAL_PRECISION`` and the rest. A container has no flags to give.
* Weights are not baked into the image (a 4 GB layer per model version is what makes such images fail to push and
  start). When no model is found, setup downloads the starter model with ``sdlocal.starter`` (resume and sha256
  check) into ``<data dir>/models/Stable-diffusion``; offline or on a bad download setup fails with the starter's
  message, so Cog reports a failed setup instead of hanging.
* A prediction builds the engine's ``GenerationRequest`` and checks it with ``Engine.validate``, the rules the UI
  and the API use; a bad value becomes ``HostedInputError`` naming the field and the fix (Cog then fails that one
  prediction and keeps serving).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlocal.engine import Engine, EngineError, GenerationRequest, ModelNotFoundError, RequestError
from sdlocal.settings import Settings, SettingsError, resolve
from sdlocal.starter import STARTER_MODELS, StarterDownloadError, StarterModel, download_starter

OUTPUT_PREFIX = "sdlocal-cog-"
Log = Callable[[str], None]


class HostedSetupError(RuntimeError):
    """Setup could not give the predictor a model: the message says why and what to do."""


class HostedInputError(ValueError):
    """One prediction's inputs break a request rule (or name no model): the message names the input and the fix."""


class HostedRunError(RuntimeError):
    """A prediction with good inputs that the engine could not finish (out of memory...): its message and hint."""


@dataclass
class TextToImage:
    """The inputs of one prediction, named as the predictor's inputs (and so as people type them)."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    schedule_type: str = "Automatic"
    seed: int = -1
    num_outputs: int = 1
    model: str = ""

    def to_request(self) -> GenerationRequest:
        """The engine's request: one batch of ``num_outputs`` images (seeds seed, seed + 1, ...)."""
        return GenerationRequest(
            prompt=self.prompt, negative_prompt=self.negative_prompt, model=self.model, sampler=self.sampler,
            schedule=self.schedule_type, steps=self.steps, cfg_scale=self.cfg_scale, width=self.width,
            height=self.height, seed=self.seed, batch_size=self.num_outputs, batch_count=1,
        )


# Request fields whose names differ from the predictor's inputs: errors name what the person typed.
_INPUT_NAMES = {"schedule": "schedule_type", "batch_size": "num_outputs"}


def input_error(error: RequestError) -> HostedInputError:
    """A ``RequestError`` as the predictor's message: the input's name, the value, what is allowed."""
    name = _INPUT_NAMES.get(error.field, error.field)
    return HostedInputError(f"{name}: {error.value!r} is not allowed; {error.allowed}")


@dataclass
class Hosted:
    """One engine with a model loaded, and the folder of the last prediction's files."""

    settings: Settings
    engine: Engine
    log: Log = print
    _last_output: Path | None = field(default=None, repr=False)

    def generate(self, inputs: TextToImage) -> list[Path]:
        """Run one prediction; the PNGs (each with its A1111 ``parameters`` chunk) in a fresh temp folder.

        The previous prediction's folder is removed before this one's is made: by then Cog has sent its files, and a
        long-running server must not fill its disk with every image it ever made.
        """
        request = inputs.to_request()
        try:
            self.engine.validate(request)
        except RequestError as error:
            raise input_error(error) from None
        try:
            result = self.engine.generate(request)
        except RequestError as error:
            raise input_error(error) from None
        except ModelNotFoundError as error:  # names the model input and lists the known ones
            raise HostedInputError(str(error)) from None
        except EngineError as error:  # out of memory, NaN images...: the message and its hint, never a traceback
            raise HostedRunError(str(error)) from None
        for warning in result.warnings:
            self.log(f"warning: {warning}")
        self._forget_last_output()
        folder = Path(tempfile.mkdtemp(prefix=OUTPUT_PREFIX))
        self._last_output = folder
        return [write_png(folder / f"{index:02d}-{item.seed}.png", item.image, item.infotext)
                for index, item in enumerate(result.images)]

    def _forget_last_output(self) -> None:
        if self._last_output is not None:
            shutil.rmtree(self._last_output, ignore_errors=True)
            self._last_output = None


def write_png(path: Path, image: Any, parameters: str) -> Path:
    """``image`` as a PNG with the ``parameters`` text chunk (the infotext the app's output store writes)."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if parameters:
        meta.add_text("parameters", parameters)
    image.save(path, format="PNG", pnginfo=meta)
    return path


def setup(env: Mapping[str, str] | None = None, starter: StarterModel | str = "sd15", log: Log = print,
          endpoint: str | None = None) -> Hosted:
    """Build the engine from the environment's settings, download the starter model if there is none, load it.

    ``endpoint`` is the Hub (or a mirror); None means ``HF_ENDPOINT`` or huggingface.co, as ``sdlocal.starter``
    reads it. Every failure is a ``HostedSetupError`` whose message says what to do.
    """
    env = os.environ if env is None else env
    try:
        settings = resolve(env=env)
    except SettingsError as error:
        raise HostedSetupError(f"sdlocal's settings: {error}") from None
    for note in settings.notes:
        log(f"note: {note}")
    engine = Engine(settings.to_engine_config())
    if not _supported(engine):
        destination = settings.models_dir / "Stable-diffusion"
        spec = STARTER_MODELS[starter] if isinstance(starter, str) else starter
        log(f"No model in {_folders(engine)}: downloading {spec.label} into {destination} "
            "(mount a models folder and name it in SDLOCAL_MODELS_DIRS to skip this).")
        try:
            download_starter(destination, spec, endpoint=endpoint, progress=_progress_printer(log))
        except StarterDownloadError as error:
            raise HostedSetupError(f"No model to load, and the starter model could not be downloaded: {error}") \
                from None
        if not _supported(engine, refresh=True):
            raise HostedSetupError(f"{spec.filename} was downloaded into {destination} but is not a model sdlocal "
                                   "can load; delete it and run setup again.")
    try:
        entry = engine.load(on_status=log)
    except EngineError as error:
        raise HostedSetupError(f"The model did not load: {error}") from None
    log(f"Ready: {entry.name} on {engine.capabilities().device}")
    return Hosted(settings=settings, engine=engine, log=log)


def _supported(engine: Engine, refresh: bool = False) -> bool:
    return any(entry.supported for entry in engine.models(refresh=refresh))


def _folders(engine: Engine) -> str:
    return ", ".join(str(folder) for folder in engine.scan_roots()) or "the models folders"


def _progress_printer(log: Log) -> Callable[[int, int], None]:
    """A download progress callback that logs every 5% (Cog shows setup's output as its logs)."""
    shown = [-1]

    def report(done: int, total: int) -> None:
        percent = int(done * 100 / total) if total else 0
        if percent // 5 > shown[0]:
            shown[0] = percent // 5
            log(f"downloaded {done / 1e6:,.0f} of {total / 1e6:,.0f} MB ({percent}%)")

    return report


__all__ = ["Hosted", "HostedInputError", "HostedRunError", "HostedSetupError", "TextToImage", "setup"]
