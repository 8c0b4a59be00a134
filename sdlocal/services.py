"""The one container the UI and the API receive: settings, engine, job queue, output store, presets.

Both front ends get the same ``Services`` so they share one queue (one GPU job at a time) and one output
folder. ``build_services`` imports no torch: the engine is cheap to construct, and the first model is loaded
by ``start_background_load`` on the queue's worker, so the page and the API answer before the model is ready.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdlocal.engine import Engine
from sdlocal.jobs import Job, JobQueue
from sdlocal.outputs import OutputStore
from sdlocal.settings import Settings
from sdlocal.styles import StyleLibrary

if TYPE_CHECKING:
    from sdlocal.engine.networks.lora import LoraFile

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the front ends share. ``load_error`` holds why the background load failed (None otherwise)."""

    settings: Settings
    engine: Engine
    queue: JobQueue
    store: OutputStore
    presets: Any  # sdlocal.presets.PresetStore
    styles: StyleLibrary | None = None  # made from the settings' folders when not given
    result_cache: Any = None  # sdlocal.result_cache: the API's answers to seeded requests (None: off)
    started_at: float = field(default_factory=time.time)
    load_error: str | None = None
    _status: str = ""
    _load_job: Job | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.styles is None:
            self.styles = StyleLibrary(self.settings.data_dir, self.settings.models_dirs)

    def token_count(self, text: str, steps: int = 20) -> str:
        """A1111's counter for a prompt box: "23/75", past 75 tokens "80/150" (the limit grows by chunks).

        Only the tokenizer runs (``sdlocal.engine.prompts.counting_chunker``, imported here, not on the UI's
        import path). Embedding triggers count their vectors once the engine can list them without loading
        anything (see ``embedding_vectors``).
        """
        from sdlocal.engine.networks.extra_networks import strip_networks
        from sdlocal.engine.prompts import counting_chunker

        # <lora:...> tags are not read by the text encoder, so they are not counted (as in A1111).
        used, limit = counting_chunker(self.embedding_vectors()).count(strip_networks(text or ""),
                                                                       max(int(steps or 1), 1))
        return f"{used}/{limit}"

    def embedding_vectors(self) -> dict[str, int]:
        """Trigger name -> vector count of the loaded model's embeddings, or {} while that would cost a load.

        The engine lists embeddings by reading their files with torch; the counter never pays for importing
        torch or for a first scan before any model (a page opened then would wait), so until a model is loaded
        it counts without them.
        """
        embeddings = getattr(self.engine, "embeddings", None)
        if not callable(embeddings) or "torch" not in sys.modules or self.engine.current_model is None:
            return {}
        try:
            loaded, _skipped = embeddings()
        except Exception:  # noqa: BLE001 - a counter never fails because an embedding folder is odd
            return {}
        return {name: int(getattr(emb, "vectors", 1) or 1) for name, emb in dict(loaded).items()}

    def loras(self, refresh: bool = False) -> list[LoraFile]:
        """Every file in the LoRA folders, usable or not (``reason`` says why not), as the engine discovered them.

        ``refresh`` rescans the folders (the panel's ↻ button); otherwise the engine's last scan is reused.
        """
        return list(self.engine.loras(refresh=refresh))

    def loaded_family(self) -> str | None:
        """The family of the model loaded now ("sd1", "sd2", "sdxl"), or None before the first load: the LoRA panel
        shows the LoRAs of this family (all of them while it is None)."""
        return getattr(self.engine.current_model, "family", None)

    def vaes(self, refresh: bool = False) -> list[Any]:
        """The VAEs found (``VaeFile``, usable or not), for the UI's VAE list; [] when they cannot be listed."""
        vaes = getattr(self.engine, "vaes", None)
        if not callable(vaes):
            return []
        try:
            return list(vaes(refresh=refresh))
        except Exception:  # noqa: BLE001 - a list for a dropdown never fails because a VAE folder is odd
            log.warning("could not list the VAEs", exc_info=True)
            return []

    def capabilities(self) -> Any:
        """The engine's device/precision report (it probes the hardware, importing torch).

        Not cached here: the engine keeps it until ``configure`` changes how models run and then works it out
        again, so the System tab and the status line show the choice in force, not the one at start.
        """
        return self.engine.capabilities()

    def load_status(self) -> str:
        """One line about the background load: what it is doing, why it failed, or "" once a model is loaded."""
        if self.engine.current_model is not None:
            return ""
        return self._status

    def _set_status(self, text: str) -> None:
        self._status = text

    def start_background_load(self) -> Job | None:
        """Queue the start-up load of the last used model (else the first supported one); at most once.

        Returns the job (None when there is no model to load: the status says so and how to add one).
        """
        with self._lock:
            if self._load_job is not None:
                return self._load_job
            self._set_status("Looking for models…")
            self._load_job = self.queue.submit_call(self._initial_load, label="Loading model", force=True)
            return self._load_job

    def _initial_load(self) -> Any:
        engine = self.engine
        try:
            supported = [entry for entry in engine.models() if entry.supported]
            if not supported:
                self._set_status("No model found yet: put a .safetensors file in "
                                 f"{self.settings.models_dir / 'Stable-diffusion'} and press Refresh.")
                return None
            wanted = self._last_model_name()
            self._set_status(f"Loading {wanted or supported[0].name}…")
            try:
                return engine.load(wanted or None, on_status=self._set_status)
            except Exception as exc:  # noqa: BLE001 - the last model may be gone; fall back to the first
                if not wanted:
                    raise
                log.warning("could not load the last used model %r (%s); loading %s", wanted, exc, supported[0].name)
                return engine.load(supported[0].name, on_status=self._set_status)
        except Exception as exc:
            self.load_error = str(exc)
            self._set_status(f"⚠ The model did not load: {exc}")
            raise

    def _last_model_name(self) -> str:
        try:
            name = self.settings.load_ui_state().get("model") or ""
        except (OSError, ValueError):
            return ""
        return name if isinstance(name, str) else ""

    def cpu_banner(self) -> str:
        """The CPU banner's line for the current model: measured time per image here, and few-step presets."""
        model = self.engine.current_model
        name = getattr(model, "name", "") or ""
        family = getattr(model, "family", None) or "sd1"
        runs = getattr(self.queue, "recent_runs", lambda: [])()
        return cpu_speed_text([run for run in runs if run.model_name == name], family,
                              getattr(self.presets, "presets", {}).values())

    def close(self) -> None:
        """Stop the worker (tests and a clean shutdown)."""
        self.queue.close()


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    """Construct everything the UI and the API need, without importing torch or touching a model."""
    from sdlocal.presets import PresetStore

    engine = engine or Engine(settings.to_engine_config())
    store = OutputStore(settings.outputs_dir)
    queue = JobQueue(engine, store, max_queue=settings.queue_size)
    presets = PresetStore(settings.presets_dir, samplers=engine.samplers(), schedules=engine.schedules())
    cache = None
    if (settings.api or settings.nowebui) and int(settings.api_cache_mb) > 0:
        from sdlocal.result_cache import MemoryResultCache

        cache = MemoryResultCache(int(settings.api_cache_mb) * 2**20)
    return Services(settings=settings, engine=engine, queue=queue, store=store, presets=presets, result_cache=cache)


# The image the CPU estimate is given for: the family's native size at A1111's default 20 steps.
REFERENCE_STEPS = 20
FEW_STEPS = 8  # presets at or under this many steps are the few-step ones (LCM, Turbo, Lightning)


def reference_side(family: str | None) -> int:
    return 1024 if family == "sdxl" else 512


def estimate_seconds_per_image(runs: Any, family: str | None) -> float | None:
    """Seconds for one reference image (``reference_side`` square, 20 steps) from measured runs, or None.

    Each run gives seconds per step per megapixel per image; the median of them resists one slow run (a first
    image that compiled kernels, another program busy). The UNet's cost grows with steps and pixels, so that
    rate scales to the reference; the VAE decode, once per image, makes few-step runs read a little high.
    """
    rates = sorted(run.seconds / (run.steps * run.width * run.height / 1e6 * run.images)
                   for run in runs if run.steps > 0 and run.width * run.height > 0 and run.images > 0)
    if not rates:
        return None
    middle = len(rates) // 2
    rate = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
    side = reference_side(family)
    return rate * REFERENCE_STEPS * side * side / 1e6


def few_step_presets(presets: Any, family: str | None) -> list[Any]:
    """The presets of this family that need few steps (LCM, Turbo...), fewest steps first."""
    return sorted((preset for preset in presets if preset.family == family and preset.steps <= FEW_STEPS),
                  key=lambda preset: (preset.steps, preset.name))


def cpu_speed_text(runs: Any, family: str | None, presets: Any) -> str:
    """The CPU banner's text: a measured time per image (never a made-up constant) and a few-step preset."""
    runs = list(runs)
    side = reference_side(family)
    seconds = estimate_seconds_per_image(runs, family)
    if seconds is None:
        text = "Running on the CPU: the first image will tell how long one takes here."
    else:
        images = sum(run.images for run in runs)
        text = (f"Running on the CPU: about {_duration(seconds)} per {side}x{side} image at {REFERENCE_STEPS} steps "
                f"here (measured from {'your last image' if images == 1 else f'your last {images} images'}).")
    fast = few_step_presets(presets, family)
    if fast:
        names = " or ".join(f"'{preset.name}' ({preset.steps} steps)" for preset in fast)
        text += f" For faster results try the preset {names}."
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{seconds / 3600:.1f} h"


RUNTIME_OPTIONS = ("device", "precision", "attention", "fast", "attention_slicing", "vae_slicing", "cpu_offload",
                   "medvram", "lowvram")


def apply_runtime_options(services: Services, **changes: Any) -> str:
    """Reload the model with other runtime options (``RUNTIME_OPTIONS``), through the queue so it never races a run.

    Every front end that changes how models run calls this (the Generate tab now, an img2img tab next), so a
    change always waits for the job in progress and reloads the current model once. ``None`` values are left
    out. Returns the message shown: what the engine really chose (it may fall back, e.g. xformers -> SDPA, and
    says why), and any new warning.
    """
    engine, queue = services.engine, services.queue
    changes = {key: value for key, value in changes.items() if value is not None}
    unknown = sorted(set(changes) - set(RUNTIME_OPTIONS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a runtime option; use {', '.join(RUNTIME_OPTIONS)}")
    configure = getattr(engine, "configure", None)
    if configure is None:
        raise RuntimeError("this engine cannot change how models run while running; restart with the flag")
    before = _capabilities_or_none(services)

    def reload() -> bool:
        configure(**changes)
        if engine.current_model is None:
            return False
        engine.load(engine.current_model.name)
        return True

    submit_call = getattr(queue, "submit_call", None)
    if submit_call is None:
        reloaded = reload()
    else:
        reloaded = submit_call(reload, label="Reloading the model").wait(600)  # re-raises the reload's error
    after = _capabilities_or_none(services)
    return runtime_report(changes, before, after, reloaded=bool(reloaded))


def runtime_report(changes: dict[str, Any], before: Any, after: Any, reloaded: bool) -> str:
    """One Markdown line: the options changed, the engine's real choice with its reasons, new warnings."""
    parts = []
    if "fast" in changes:
        parts.append(f"Fast mode **{'on' if changes['fast'] else 'off'}**")
    if {"device", "precision", "attention"} & set(changes) and after is not None:
        parts.append(_choice_text(changes, after))
    memory = [(label, key) for label, key in (("Attention slicing", "attention_slicing"),
                                                ("VAE slicing", "vae_slicing"), ("CPU offload", "cpu_offload"))
              if key in changes]
    parts += [f"{label} **{'on' if changes[key] else 'off'}**" for label, key in memory]
    if "medvram" in changes or "lowvram" in changes:
        mode = "lowvram" if changes.get("lowvram") else "medvram" if changes.get("medvram") else "off"
        parts.append(f"low memory mode **{mode}**")
    text = ", ".join(parts) or "Nothing changed"
    text += "; the model was reloaded." if reloaded else "; it applies when a model loads."
    old = set(getattr(before, "warnings", None) or [])
    for warning in getattr(after, "warnings", None) or []:
        if warning not in old:
            text += f" ⚠ {warning}."
    return text


def _choice_text(changes: dict[str, Any], caps: Any) -> str:
    text = (f"Using precision **{caps.precision}** ({caps.precision_reason}) and attention **{caps.attention}** "
            f"on **{caps.device}**")
    asked = changes.get("attention")
    if asked not in (None, "auto", caps.attention):
        reason = (caps.attentions or {}).get(asked) or "it could not be used"
        text += f" ({asked} was asked but {reason})"
    return text


def _capabilities_or_none(services: Services) -> Any:
    try:
        return services.capabilities()
    except Exception:  # noqa: BLE001 - the change is still made; the report just says less
        return None
