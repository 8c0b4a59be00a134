"""The engine's one public object: find models, load them, generate, stop, report what the machine can do.

Constructing an ``Engine`` is free (no torch import, no disk scan), so the UI can be up before the model.
Generation and loading hold one lock (one run at a time, on the caller's thread: the job queue's worker);
``interrupt``, ``skip``, ``models``, ``capabilities`` and ``memory`` never take that lock, so another thread
can call them while a run is going.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdlocal.engine.config import ATTENTIONS, DEVICES, PRECISIONS, EngineConfig
from sdlocal.engine.engine_upscaling import UpscalingMethods
from sdlocal.engine.models import ModelEntry
from sdlocal.engine.request import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    ModelNotFoundError,
    Progress,
    RequestError,
    RunControl,
)


class Engine(UpscalingMethods):
    """Facade over discovery, loading, samplers and generation (see the brief's contract)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._run_lock = threading.RLock()  # loading and generating
        self._state_lock = threading.RLock()  # small shared state: entries, runtime, current model
        self._entries: list[ModelEntry] | None = None
        self._catalog: Any = None
        self._runtime: Any = None
        # Checkpoint loads from disk by outcome ("loaded", "failed"), for /metrics; a cache hit is not a load.
        self.load_counts: dict[str, int] = {"loaded": 0, "failed": 0}
        self._cache: Any = None
        self._schedulers: Any = None
        self._control: Any = None
        self._current: ModelEntry | None = None
        self._embedding_library: Any = None
        self._vae_library: Any = None
        self._encoder_widths: dict[str, tuple[int, ...]] = {}  # model path -> its text encoders' widths
        self._lora_activator: Any = None

    # ------------------------------------------------------------------------------------------ models
    def _get_catalog(self) -> Any:
        with self._state_lock:
            if self._catalog is None:
                from sdlocal.engine.models import ModelCatalog

                self._catalog = ModelCatalog(self.config)
            return self._catalog

    def models(self, refresh: bool = False) -> list[ModelEntry]:
        """Every model found, supported or not; scanned once and cached until ``refresh``."""
        with self._state_lock:
            if self._entries is None or refresh:
                self._entries = list(self._get_catalog().scan())
            return list(self._entries)

    def scan_roots(self) -> list[Path]:
        """The folders discovery looks in (for the UI's "put a model here" panel)."""
        catalog = self._get_catalog()
        roots = getattr(catalog, "roots", None)
        return list(roots() if callable(roots) else roots or [])

    def find_model(self, name: str, hash_missing: bool = True) -> ModelEntry:
        """By name, A1111 title "name [hash]", file name, path, or short hash; ModelNotFoundError lists the known.

        A hash-looking name makes this hash every model whose hash is not known yet, which reads whole files
        (seconds to minutes): call it off any event loop, or pass ``hash_missing=False`` to match only the
        hashes already known (never blocks on the disk).
        """
        entries = self.models()
        wanted = (name or "").strip()
        if not wanted:
            raise ModelNotFoundError(name, [e.name for e in entries])
        title_hash = None
        if wanted.endswith("]") and " [" in wanted:
            wanted, _, title_hash = wanted[:-1].rpartition(" [")
        lowered = wanted.lower()
        tests: list[Callable[[ModelEntry], bool]] = [
            lambda e: e.name == wanted,
            lambda e: e.name.lower() == lowered,
            lambda e: Path(e.path).name.lower() == lowered,
            lambda e: Path(e.path).stem.lower() == lowered or Path(e.name).name.lower() == lowered,
            lambda e: str(e.path) == wanted,
        ]
        for test in tests:
            found = [e for e in entries if test(e)]
            if found:
                return found[0]
        # A short hash (A1111 "Model hash: 6ce0161689", or the [hash] of a title), computed where missing.
        key = (title_hash or wanted).lower()
        if 8 <= len(key) <= 12 and all(c in "0123456789abcdef" for c in key):
            for entry in entries:
                if entry.short_hash is None and entry.supported and hash_missing:
                    self._ensure_hash(entry)
                if entry.short_hash and entry.short_hash.lower().startswith(key[:10]):
                    return entry
        raise ModelNotFoundError(name, [e.title for e in entries if e.supported])

    def _ensure_hash(self, entry: ModelEntry) -> str | None:
        if entry.short_hash:
            return entry.short_hash
        catalog = self._get_catalog()
        hasher = getattr(catalog, "short_hash", None)
        try:
            if callable(hasher):
                entry.short_hash = hasher(entry)
            else:
                from sdlocal.engine.hashing import short_hash

                entry.short_hash = short_hash(Path(entry.path))
        except (OSError, ImportError):
            return None
        return entry.short_hash

    @property
    def current_model(self) -> ModelEntry | None:
        return self._current

    # ------------------------------------------------------------------------------------------ runtime
    def _runtime_now(self) -> Any:
        with self._state_lock:
            if self._runtime is None:
                from sdlocal.engine.devices import resolve_runtime

                self._runtime = resolve_runtime(self.config)
            return self._runtime

    def capabilities(self) -> Any:
        """Device, chosen precision and why, and what else is usable here (cheap after the first call)."""
        return self._runtime_now().capabilities

    def memory(self) -> dict:
        from sdlocal.engine.devices import memory_figures

        figures = memory_figures(self._runtime.device if self._runtime else "cpu")
        if self._cache is not None:
            figures["Models loaded"] = str(len(self._cache.keys()))
        return figures

    def configure(self, **changes: Any) -> None:
        """Change how models run (precision, attention, device, slicing, offload...); loaded models reload lazily.

        Runs under the run lock, so it waits for a generation in progress instead of pulling a model from under it.
        """
        allowed = {"device": DEVICES, "precision": PRECISIONS, "attention": ATTENTIONS}
        flags = {"no_half_vae", "attention_slicing", "vae_slicing", "cpu_offload", "medvram", "lowvram", "fast"}
        for key, value in changes.items():
            if key in allowed and value not in allowed[key]:
                raise RequestError(key, value, f"must be one of: {', '.join(allowed[key])}")
            if key in flags and not isinstance(value, bool):
                raise RequestError(key, value, "must be true or false")
            if key not in allowed and key not in flags and key != "max_loaded_models":
                raise RequestError(key, value, "is not a runtime option")
        with self._run_lock:
            new_config = replace(self.config, **changes)
            with self._state_lock:
                self.config = new_config
                self._runtime = None
                self._schedulers = None
            if self._cache is not None:
                self._cache.clear()
                self._cache = None

    # ------------------------------------------------------------------------------------------ loading
    def _pipelines(self) -> Any:
        if self._cache is None:
            from sdlocal.engine.loader import PipelineCache

            self._cache = PipelineCache(self.config.max_loaded_models)
        return self._cache

    def _scheduler_cache(self) -> Any:
        if self._schedulers is None:
            from sdlocal.engine.samplers import SchedulerCache

            self._schedulers = SchedulerCache()
        return self._schedulers

    def _default_entry(self) -> ModelEntry:
        if self._current is not None:
            return self._current
        supported = [e for e in self.models() if e.supported]
        if not supported:
            raise ModelNotFoundError("(default)", [])
        return supported[0]

    def load(self, name: str | None = None, on_status: Callable[[str], None] | None = None) -> ModelEntry:
        """Load (or switch to) a model and make it current; None means the current or the first supported one."""
        entry = self.find_model(name) if name else self._default_entry()
        with self._run_lock:
            self._load_entry(entry, on_status)
        return entry

    def _load_entry(self, entry: ModelEntry, on_status: Callable[[str], None] | None = None) -> tuple[Any, float]:
        """(LoadedModel, seconds spent loading: 0 when it was already loaded). Caller holds the run lock."""
        from sdlocal.engine.loader import load_pipeline

        runtime = self._runtime_now()
        cache = self._pipelines()
        loaded = cache.get(entry, runtime)
        if loaded is not None:
            self._current = entry
            self._note_widths(loaded)
            return loaded, 0.0
        started = time.perf_counter()
        cache.make_room()
        if self._schedulers is not None:
            self._schedulers.forget(str(entry.path))
        self._ensure_hash(entry)
        try:
            loaded = load_pipeline(entry, runtime, self.config.data_dir / "cache" / "configs", on_status)
        except BaseException:
            self.load_counts["failed"] += 1
            raise
        self.load_counts["loaded"] += 1
        cache.put(loaded)
        self._current = entry
        self._note_widths(loaded)
        if on_status:
            on_status(f"Loaded {entry.name} in {loaded.load_seconds:.1f} s")
        return loaded, time.perf_counter() - started

    def unload_all(self) -> None:
        """Every checkpoint and the upscaler model out of memory (A1111's "Unload checkpoint")."""
        with self._run_lock:
            if self._cache is not None:
                self._cache.clear()
            if self._upscaler_set is not None:
                self._upscaler_set.release()
            self._current = None

    # ------------------------------------------------------------------------------------------ embeddings
    def _get_embedding_library(self) -> Any:
        with self._state_lock:
            if self._embedding_library is None:
                from sdlocal.engine.networks.embeddings import EmbeddingLibrary

                self._embedding_library = EmbeddingLibrary(self.config)
            return self._embedding_library

    def embeddings(self, refresh: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """(loaded, skipped) textual-inversion embeddings by trigger name, for the current model.

        With no model loaded yet, they are matched to the default model's family (real models' widths); with no
        model at all, every one is skipped. The folders are scanned again on ``refresh`` and by every run (only
        new or changed files are read again).
        """
        library = self._get_embedding_library()
        if refresh:
            library.scan()
        return library.for_model(self._model_widths())

    # ------------------------------------------------------------------------------------------ LoRAs
    _lora_library: Any = None  # made at first use (a class default keeps __init__ as it is)

    def lora_library(self) -> Any:
        """The ``LoraLibrary`` over this engine's LoRA folders, made once: it keeps what it read per file version,
        so each scan re-reads only new and changed files."""
        with self._state_lock:
            if self._lora_library is None:
                from sdlocal.engine.networks.loras import LoraLibrary

                self._lora_library = LoraLibrary(self.config)
            return self._lora_library

    def loras(self, refresh: bool = False) -> list[Any]:
        """Every LoRA/LyCORIS file found (``LoraFile``), usable or not, in folder order; scanned at first use and
        again on ``refresh``. Never raises for anything in the folders."""
        library = self.lora_library()
        return library.scan() if refresh else library.entries()

    def _activate_networks(self, loaded: Any, request: GenerationRequest) -> Any:
        """Merge the prompt's LoRAs into ``loaded`` (or take the last run's out): the run's texts without the tags,
        the infotext's "Lora hashes" and the warnings. Caller holds the run lock."""
        from sdlocal.engine.networks.activation import LoraActivator
        from sdlocal.engine.networks.extra_networks import TAG
        from sdlocal.engine.networks.patching import patcher_for

        with self._state_lock:
            if self._lora_activator is None:
                self._lora_activator = LoraActivator(self.lora_library())
            activator = self._lora_activator
        if TAG.search(request.prompt or ""):
            self.lora_library().scan()  # a file dropped into the folder is found at once (only changes are read)
        activation = activator.prepare(loaded, request.prompt, request.negative_prompt)
        started = time.perf_counter()
        patcher = patcher_for(loaded)
        if activation.patches or patcher.active:
            patcher.apply(activation.patches)
        activation.seconds = time.perf_counter() - started
        return activation

    def _note_widths(self, loaded: Any) -> None:
        from sdlocal.engine.networks.embeddings import text_encoder_widths

        self._encoder_widths[loaded.key] = text_encoder_widths(loaded.pipe)

    def _model_widths(self) -> tuple[int, ...]:
        """The current model's text-encoder widths; else the default model's family's; () when there is none."""
        from sdlocal.engine.networks.formats import FAMILY_WIDTHS

        current = self._current
        if current is not None and str(current.path) in self._encoder_widths:
            return self._encoder_widths[str(current.path)]
        try:
            entry = self._default_entry()
        except ModelNotFoundError:
            return ()
        return FAMILY_WIDTHS.get(entry.family or "", ())

    # ------------------------------------------------------------------------------------------ VAEs
    def vae_library(self) -> Any:
        """The cached ``VaeLibrary`` over the VAE folders."""
        with self._state_lock:
            if self._vae_library is None:
                from sdlocal.engine.networks.vaes import VaeLibrary

                self._vae_library = VaeLibrary(self.config)
            return self._vae_library

    def vaes(self, refresh: bool = False) -> list[Any]:
        """Every VAE found (``VaeFile``), usable or not, with the reason; scanned again on ``refresh``."""
        library = self.vae_library()
        return library.scan() if refresh else library.entries()

    def _use_vae(self, loaded: Any, request: GenerationRequest, entry: ModelEntry) -> Any:
        """Put the VAE ``request.vae`` asks for into the loaded model (only if it changes) -> ``vae.VaeUse``."""
        from sdlocal.engine import vae

        choice, warnings = vae.choose(self.vae_library(), request.vae, Path(entry.path), loaded.family)
        vae.use(loaded, choice, self._runtime_now())
        short = ""
        if choice is not None:
            try:
                short = self._get_catalog().hashes.sha256(choice.weights)[:10]
            except (OSError, AttributeError):
                short = ""
        return vae.VaeUse(choice, short, warnings)

    # ------------------------------------------------------------------------------------------ generation
    def samplers(self) -> list[str]:
        from sdlocal.engine.samplers import sampler_names

        return sampler_names()

    def schedules(self) -> list[str]:
        from sdlocal.engine.samplers import schedule_names

        return schedule_names()

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        """The request's own checks plus the engine's: sampler, schedule and the pair of them."""
        from sdlocal.engine import samplers
        from sdlocal.engine.networks.extra_networks import parse_networks

        request.validate()
        request.sampler, request.schedule = samplers.check(request.sampler, request.schedule)
        parse_networks(request.prompt, "prompt")  # a malformed <lora:...> tag fails here, before any loading
        parse_networks(request.negative_prompt, "negative_prompt")
        if request.vae not in ("Automatic", "None"):
            from sdlocal.engine.vae import find_named, refuse

            found = find_named(self.vae_library(), request.vae)  # fails now, not after the model loads
            if not found.usable:
                raise refuse(found, found.reason)
        if request.hires is not None:
            from sdlocal.engine import hires

            hires.check_sampler(request)
            hires.check_upscaler(request.hires, self.upscaler_set().find)
        return request

    def generate(self, request: GenerationRequest, on_progress: Callable[[Progress], None] | None = None,
                 control: RunControl | None = None) -> GenerationResult:
        """Validate, load ``request.model`` if it is not current, and run batch_count x batch_size images.

        ``control`` is the run's Interrupt/Skip buttons, made by the caller so that a press that comes before
        the run gets here (while it validates, waits for the lock, or loads) still applies to this run. The
        job queue passes one per job; without one, ``interrupt()``/``skip()`` reach the run once it started.
        """
        from sdlocal.engine.generate import run_generation
        from sdlocal.engine.networks.embeddings import skipped_in_prompt

        started = time.perf_counter()
        control = control if control is not None else RunControl()
        self.validate(request)
        entry = self.find_model(request.model) if request.model else self._default_entry()
        with self._run_lock:
            self._control = control
            try:
                loaded, load_seconds = self._load_entry(entry)
                scheduler = self._scheduler_cache().get(loaded.key, request.sampler, request.schedule,
                                                        loaded.scheduler_config)
                # Looked for again at every run, as A1111 does: a file dropped into the folder is used at once
                # (the walk re-reads only new or changed files).
                library = self._get_embedding_library()
                library.scan()
                embeddings, skipped = library.for_model(self._encoder_widths[loaded.key])
                vae_use = self._use_vae(loaded, request, entry)
                networks = self._activate_networks(loaded, request)
                output = run_generation(loaded, request, scheduler, control, Path(entry.name).name,
                                        entry.short_hash, on_progress, embeddings=embeddings, texts=networks.texts,
                                        infotext_extra={**(vae_use.infotext or {}), "Lora hashes": networks.hashes},
                                        **self._hires_arguments(loaded, request, control))
                output.warnings[:0] = networks.warnings + skipped_in_prompt(
                    [request.prompt, request.negative_prompt], embeddings, skipped) + (vae_use.warnings or [])
            finally:
                self._control = None
        return GenerationResult(
            images=output.images, request=request, model_name=entry.name, model_hash=entry.short_hash or "",
            seeds=output.seeds, interrupted=output.interrupted, warnings=output.warnings,
            vae_name=vae_use.vae.filename if vae_use.vae else "", vae_hash=vae_use.short_hash,
            timings={"load": round(load_seconds, 3), "networks": round(networks.seconds, 3),
                     "generate": round(output.seconds, 3),
                     "total": round(time.perf_counter() - started, 3)},
        )

    def _hires_arguments(self, loaded: Any, request: GenerationRequest, control: RunControl) -> dict[str, Any]:
        """run_generation's hires fix arguments: the second pass's scheduler and the picture upscaler."""
        if request.hires is None:
            return {}
        from sdlocal.engine.hires import effective_sampler

        sampler, schedule = effective_sampler(request)
        scheduler = self._scheduler_cache().get(loaded.key, sampler, schedule, loaded.scheduler_config)
        return {"hires_scheduler": scheduler,  # self.upscale takes the run lock again: it is re-entrant
                "upscale": lambda image, name, width, height: self.upscale(image, name, width, height, control=control,
                                                                           field="hr_upscaler")}

    def interrupt(self) -> None:
        """Stop the running generation after its current step; generate() returns the images already finished.

        Reaches only a run that has started; to stop a run that may not have started yet, pass it a
        ``RunControl`` and interrupt that.
        """
        control = self._control
        if control is not None:
            control.interrupt()

    def skip(self) -> None:
        """Abandon the current batch and go on with the next (A1111's Skip); between batches, skip the next one."""
        control = self._control
        if control is not None:
            control.skip()

    @property
    def busy(self) -> bool:
        return self._control is not None


__all__ = ["Engine", "EngineError", "ModelNotFoundError"]
