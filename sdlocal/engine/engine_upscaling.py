"""The engine's upscaler and Extras methods, kept apart from loading and generation so each file reads in one sitting.

``Engine`` inherits them; they use its config, its runtime (the device), its run lock (an upscaler model shares
the device with the checkpoint) and its current run control (so ``interrupt()`` reaches an upscale between tiles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdlocal.engine.request import RunControl


class UpscalingMethods:
    """Upscaler listing and running, and the Extras tab's postprocessing, for ``Engine``."""

    config: Any
    _state_lock: Any
    _run_lock: Any
    _control: Any
    _runtime_now: Callable[[], Any]  # Engine's: the resolved device and precision

    # ------------------------------------------------------------------------------------------ upscalers
    _upscaler_set: Any = None  # made at first use

    def upscaler_set(self) -> Any:
        """The ``UpscalerSet`` over the upscaler folders, made once (it keeps what it read per file version)."""
        with self._state_lock:
            if self._upscaler_set is None:
                from sdlocal.engine.upscalers import UpscalerSet

                self._upscaler_set = UpscalerSet(self.config)
            return self._upscaler_set

    def upscalers(self, refresh: bool = False) -> list[Any]:
        """Every upscaler (``UpscalerInfo``): the resamplers, then each file found, usable or not, with the reason."""
        upscalers = self.upscaler_set()
        return upscalers.scan() if refresh else upscalers.entries()

    def upscale(self, image: Any, name: str, width: int, height: int, control: RunControl | None = None,
                on_progress: Callable[[int, int], None] | None = None, field: str = "upscaler_1") -> Any:
        """``image`` at ``width`` x ``height`` with the upscaler ``name``, on this engine's device (fp16 on CUDA,
        fp32 elsewhere). Holds the run lock: an upscaler model shares the device with the checkpoint. Called on
        its own (not inside a run), ``interrupt()`` reaches it between tiles (``UpscaleInterrupted``)."""
        import torch

        device = str(self._runtime_now().device)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        control = control if control is not None else self._control or RunControl()
        with self._run_lock:
            outer = self._control  # inside a run (hires fix) the run's control stays the one interrupt() reaches
            self._control = outer or control
            try:
                return self.upscaler_set().upscale(image, name, width, height, device=device, dtype=dtype,
                                                   control=control, on_progress=on_progress, field=field)
            finally:
                self._control = outer

    # ------------------------------------------------------------------------------------------ extras
    def validate_extras(self, request: Any) -> Any:
        """An ``extras.ExtrasRequest``'s own checks, then its upscaler names against the upscalers found (a latent
        mode or an unknown name is refused naming ``upscaler_1``/``upscaler_2``, with the known names)."""
        request.validate()
        for field_name in ("upscaler_1", "upscaler_2"):
            name = getattr(request, field_name)
            if name != "None":
                setattr(request, field_name, self.upscaler_set().find(name, field_name).name)
        return request

    def postprocess(self, request: Any, on_progress: Callable[[int, int, int, int], None] | None = None,
                    control: RunControl | None = None) -> Any:
        """The Extras tab's upscale of ``request.images`` (``extras.run_extras`` over ``self.upscale``, which holds
        the run lock per picture): an ``ExtrasResult``, the images done before an interrupt kept."""
        from sdlocal.engine.extras import run_extras

        self.validate_extras(request)
        return run_extras(request, self.upscale, on_progress=on_progress, control=control)
