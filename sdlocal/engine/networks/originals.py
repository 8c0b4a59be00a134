"""Where a patched weight's original comes from: the checkpoint file itself, or a CPU copy when it cannot be.

Merging LoRAs into the weights costs nothing per step, but undoing the merge must give back exactly the weights
that were loaded (the same pixels after fifty changes of LoRA set), and subtracting what was added does not: in
fp16 or bf16 ``(W + d) - d`` is not ``W``. Keeping a copy of every patched weight would cost about the patched
modules' size (1.4 GB of fp32 for SD 1.5's ~352 M parameters), more than the LoRA file the targets allow.

The weights of a streamed model are already on disk: the streaming loader read every tensor with ``_read`` and
converted it with ``_value`` (``Tensor.to(dtype)``, deterministic), so reading one tensor again the same way gives
the same bits, with one tensor in memory at a time. ``FileOriginals`` keeps what that needs (the plan's path,
header and steps, never its models) and the files' size and mtime at load time, to refuse a file that changed.
Models loaded by diffusers' own readers (a ``.ckpt``, a layout the streaming loader does not know) have no plan:
``MemoryOriginals`` keeps a CPU copy of each weight before its first change and drops it when it is restored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from sdlocal.engine.request import EngineError

log = logging.getLogger(__name__)


class Originals(Protocol):
    """The original (as loaded) value of any parameter of a loaded model, for the patcher's exact restore."""

    def remember(self, component: str, name: str, tensor: Any) -> None:
        """Called with a parameter's current (original) value just before its first change."""

    def read(self, component: str, name: str, like: Any) -> Any:
        """The original value of ``component``'s parameter ``name``, on ``like``'s device and dtype."""

    def read_into(self, component: str, name: str, out: Any) -> None:
        """The original value written into ``out`` (its dtype, device and layout: the weight itself, say)."""

    def done(self) -> None:
        """A batch of reads is over: buffers kept between its reads can go."""

    def forget(self, component: str, name: str) -> None:
        """The parameter has its original value again: nothing of it needs keeping."""

    def check(self) -> None:
        """Raise EngineError when the originals can no longer be read (before a change, not half-way through)."""


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


class FileOriginals:
    """Originals re-read from the files a streamed model was loaded from, exactly as the load read them.

    ``dtype`` and ``device`` are the load's (``stream_into``'s); a parameter later moved to another dtype (an
    upcast VAE) is converted on from the loaded value, as it was then.
    """

    def __init__(self, model: str, path: Path, header: dict[str, Any], steps: Iterable[Any], dtype: Any,
                 device: str = "cpu") -> None:
        self.model = model
        self.path = Path(path)
        self.dtype = dtype
        self.device = device
        self.steps = {(step.component, step.name): step for step in steps}
        self.header = {step.source.key: header[step.source.key] for step in self.steps.values()}
        self.stamps = {file: _stamp(file) for file in sorted({self._file(key) for key in self.header})}
        self._scratch: Any = None  # the read buffer, kept between the reads of one batch (``done`` drops it)

    @classmethod
    def from_plan(cls, model: str, plan: Any, dtype: Any, device: str = "cpu") -> FileOriginals:
        """From a ``streaming.StreamPlan`` before its tensors are read (the files' stamps are taken now)."""
        return cls(model, plan.path, plan.header, plan.steps, dtype, device)

    def _file(self, key: str) -> Path:
        return Path(self.header[key].path or self.path)

    def remember(self, component: str, name: str, tensor: Any) -> None:
        """Nothing to keep: the file holds it."""

    def forget(self, component: str, name: str) -> None:
        """Nothing was kept."""

    def check(self) -> None:
        for file, stamp in self.stamps.items():
            if stamp is None or _stamp(file) != stamp:
                raise self._changed(file)

    def _changed(self, file: Path) -> EngineError:
        return EngineError(f"{self.model} changed on disk since it was loaded ({file}), so its original weights "
                           "cannot be read back to remove or change LoRAs.", "Reload the model (pick it again).")

    def read(self, component: str, name: str, like: Any) -> Any:
        import torch

        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        self.read_into(component, name, out)
        self.done()
        return out

    def read_into(self, component: str, name: str, out: Any) -> None:
        """Read as ``stream_into`` read it, into one byte buffer reused between reads (fresh memory for every
        tensor costs a page fault per page: measured 3x slower than the copy itself); converted to the load's
        dtype as the load did (``copy_`` casts as ``Tensor.to``), then to ``out``'s if the weight moved since."""
        from sdlocal.engine import streaming

        step = self.steps.get((component, name))
        if step is None:
            raise KeyError(f"{component}.{name}: not a parameter loaded from {self.path.name}")
        info = self.header[step.source.key]
        file = self._file(step.source.key)
        if _stamp(file) != self.stamps[file]:
            raise self._changed(file)
        try:
            with open(file, "rb", buffering=0) as fh:
                raw = streaming._read(fh, info, self._buffer(info.end - info.start))
        except OSError as exc:
            raise EngineError(f"{self.model}: cannot read its original weights from {file} ({exc}).",
                              "Reload the model (pick it again).") from None
        value = streaming._shaped(raw, step)
        if step.floating and value.dtype != self.dtype and out.dtype != self.dtype:
            value = value.to(self.dtype)  # as loaded first (an fp16 load of an fp32 file), then as upcast since
        out.copy_(value)

    def _buffer(self, nbytes: int) -> Any:
        import torch

        if self._scratch is None or self._scratch.numel() < nbytes:
            self._scratch = torch.empty(nbytes, dtype=torch.uint8)
        return self._scratch

    def done(self) -> None:
        self._scratch = None


class MemoryOriginals:
    """CPU copies of the originals of the weights patched now, for models that were not streamed."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.copies: dict[tuple[str, str], Any] = {}
        self._told = False

    def remember(self, component: str, name: str, tensor: Any) -> None:
        key = (component, name)
        if key in self.copies:
            return
        if not self._told:
            log.info("%s was not streamed from a .safetensors file: each LoRA-patched weight keeps a CPU copy of its "
                     "original while patched (memory grows by the patched modules' size)", self.model)
            self._told = True
        self.copies[key] = tensor.detach().to("cpu", copy=True)

    def read(self, component: str, name: str, like: Any) -> Any:
        copy = self.copies.get((component, name))
        if copy is None:
            raise KeyError(f"{component}.{name}: no original kept (it was not patched)")
        return copy.to(device=like.device, dtype=like.dtype)

    def read_into(self, component: str, name: str, out: Any) -> None:
        copy = self.copies.get((component, name))
        if copy is None:
            raise KeyError(f"{component}.{name}: no original kept (it was not patched)")
        out.copy_(copy)

    def done(self) -> None:
        """Nothing is buffered between reads."""

    def forget(self, component: str, name: str) -> None:
        self.copies.pop((component, name), None)

    def check(self) -> None:
        """The copies are in memory: always readable."""

    @property
    def nbytes(self) -> int:
        return sum(copy.numel() * copy.element_size() for copy in self.copies.values())
