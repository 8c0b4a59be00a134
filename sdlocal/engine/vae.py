"""Swapping the VAE of a loaded model: only that module changes; the UNet and text encoders stay as they are.

A chosen VAE file is built as an ``AutoencoderKL`` on the meta device from the loaded model's own VAE config (so
the scaling factor and shapes are the model family's, whatever the file's origin) and filled tensor by tensor
through the streaming loader's name mapping (``streaming.plan_component``): the file's original (LDM) or diffusers
names, checked for shape before anything is read. The checkpoint's own VAE object is kept (in RAM while another is
in use), so going back to it ("None") decodes bit for bit as before the first switch.

Then what loading did for the VAE is done again for the new one: its device, its precision (``loader.vae_precision``
with the new VAE's ``force_upcast``: the fp16-fix VAEs say False and run in fp16), slicing, tiling and fast mode;
the fp32 upcast a NaN decode caused is forgotten. The img2img and inpainting pipelines built over the same modules
(``loaded.variants``) get the same VAE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlocal.engine.networks.vaes import LDM_PREFIX, VaeFile, family_label
from sdlocal.engine.request import RequestError

log = logging.getLogger(__name__)


@dataclass
class VaeSlot:
    """The VAE state of one loaded model: its own VAE module and the file in use instead (None: its own)."""

    own: Any
    current: VaeFile | None = None

    def is_current(self, choice: VaeFile | None) -> bool:
        if choice is None or self.current is None:
            return choice is None and self.current is None
        return (choice.path, choice.size, choice.mtime_ns) == (self.current.path, self.current.size,
                                                               self.current.mtime_ns)


def refuse(vae: VaeFile, why: str) -> RequestError:
    return RequestError("vae", vae.name, f"it cannot be used here: {why}")


def misfit(vae: VaeFile, model_family: str) -> str:
    """Why ``vae`` cannot decode for a model of ``model_family`` ("" when it can)."""
    if not vae.usable:
        return vae.reason
    if not vae.fits(model_family):
        return (f"it is an {vae.family_label} VAE and the loaded model is {family_label(model_family)}; choose a "
                "VAE made for this model, or Automatic")
    return ""


def check_fits(vae: VaeFile, model_family: str) -> None:
    """RequestError on ``vae`` when the file is not a usable VAE or is made for another model family."""
    why = misfit(vae, model_family)
    if why:
        raise refuse(vae, why)


# ------------------------------------------------------------------------------------------- reading
def _tensor_infos(tensors: dict[str, Any]) -> dict[str, Any]:
    """A header-like map (dtype name, shape) of in-memory tensors, so the streaming plan can check them."""
    from sdlocal.engine.streaming import TensorInfo

    return {key: TensorInfo(str(t.dtype).removeprefix("torch."), tuple(int(d) for d in t.shape), 0, 0)
            for key, t in tensors.items() if hasattr(t, "shape")}


def read_pickle(vae: VaeFile) -> dict[str, Any]:
    """A ``.pt``/``.ckpt`` VAE's tensors through ``torch.load(weights_only=True)``; its "state_dict" unwrapped."""
    import pickle

    import torch

    try:
        state = torch.load(vae.path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise refuse(vae, f"it holds Python objects other than weights, which could run code when opened "
                          f"({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else 'refused'}); use a "
                          ".safetensors VAE") from None
    except Exception as exc:  # noqa: BLE001 - damaged or truncated
        raise refuse(vae, f"it cannot be read ({type(exc).__name__}: {str(exc)[:160]}); download it again") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise refuse(vae, "it holds no state dict")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _mapper(vae: VaeFile, model: Any, header: dict[str, Any]) -> Any:
    """diffusers name -> where the file holds it: the LDM names (``streaming``'s map) or the diffusers ones."""
    from sdlocal.engine.streaming import Source, _vae_sources

    if vae.layout == "ldm":
        return _vae_sources(model)
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}  # older diffusers files

    def source(key: str) -> Source:
        wanted = vae.prefix + key
        if wanted not in header:
            for new, old in legacy.items():
                if f".{new}." in key and (candidate := wanted.replace(f".{new}.", f".{old}.")) in header:
                    return Source(candidate)
        return Source(wanted)

    return source


def empty_module(vae: VaeFile, own: Any) -> Any:
    """The chosen VAE's module on the meta device: the loaded model's own VAE class and config (its scaling
    factor, its shapes), with the file's ``force_upcast`` where the file says it (the fp16-fix VAEs)."""
    from accelerate import init_empty_weights

    overrides = {} if vae.force_upcast is None else {"force_upcast": vae.force_upcast}
    with init_empty_weights():
        return type(own).from_config(own.config, **overrides).eval()


def fill(vae: VaeFile, model: Any, dtype: Any, device: str) -> Any:
    """Read the file's tensors into the empty ``model`` at ``dtype`` on ``device``; RequestError when they do not
    fit it (checked for every tensor before any is read)."""
    from sdlocal.engine import streaming

    if vae.format == "ckpt":
        tensors: dict[str, Any] | None = read_pickle(vae)
        header = _tensor_infos(tensors)
    else:
        try:
            tensors, header = None, streaming.read_header(vae.weights)
        except streaming.LayoutMismatch as exc:
            raise refuse(vae, str(exc)) from None
    if vae.layout == "ldm" and vae.prefix != LDM_PREFIX:  # the streaming map names them under first_stage_model.
        header = {LDM_PREFIX + key.removeprefix(vae.prefix): info for key, info in header.items()}
        if tensors is not None:
            tensors = {LDM_PREFIX + key.removeprefix(vae.prefix): t for key, t in tensors.items()}
    try:
        steps = streaming.plan_component("vae", model, "", header, mapper=_mapper(vae, model, header))
    except streaming.LayoutMismatch as exc:
        raise refuse(vae, f"its tensors do not fit this model's VAE ({exc})") from None
    if tensors is None:
        try:
            streaming.stream_into(Path(vae.weights), {"vae": model}, steps, header, dtype, device)
        except OSError as exc:  # gone, or cut short, since it was listed
            raise refuse(vae, f"it cannot be read ({exc}); download it again, then refresh the VAE list") from None
    else:
        for step in steps:
            streaming._assign(model, step.name, streaming._value(tensors[step.source.key], step, dtype, device,
                                                                 owned=False))
    return model


# ------------------------------------------------------------------------------------------- the swap
def slot_of(loaded: Any) -> VaeSlot:
    if loaded.vae_slot is None:
        loaded.vae_slot = VaeSlot(own=loaded.pipe.vae)
    return loaded.vae_slot


def use(loaded: Any, choice: VaeFile | None, runtime: Any) -> bool:
    """Make ``choice`` (None: the model's own) the VAE of ``loaded`` and of its variants; False if it already was.

    Raises RequestError on ``vae`` when the file does not fit; the model keeps its VAE then.
    """
    from sdlocal.engine.devices import torch_dtype
    from sdlocal.engine.loader import free_memory, vae_precision
    from sdlocal.engine.streaming import target_device

    slot = slot_of(loaded)
    if slot.is_current(choice):
        return False
    if choice is None:
        new = slot.own
    else:
        check_fits(choice, loaded.family)
        new = empty_module(choice, slot.own)
        dtype = torch_dtype(vae_precision(_Probe(loaded.pipe, new.config), runtime))
        fill(choice, new, dtype, target_device(runtime))
    old = loaded.pipe.vae
    _install(loaded, new, runtime, fresh=new is not slot.own)
    slot.current = choice
    if old is slot.own and new is not slot.own and not _offloaded(runtime):
        slot.own.to("cpu")  # kept for "None", out of the GPU's memory meanwhile
    del old
    free_memory()
    log.info("VAE of %s: %s", loaded.entry.name if loaded.entry else "the model",
             choice.name if choice else "its own")
    return True


class _Probe:
    """What ``loader.vae_precision`` looks at (the pipeline's ``upcast_vae`` and its VAE's config), for a VAE
    not yet built."""

    def __init__(self, pipe: Any, config: Any) -> None:
        self.vae = type("ProbeVae", (), {"config": config})()
        if hasattr(pipe, "upcast_vae"):
            self.upcast_vae = pipe.upcast_vae


def _offloaded(runtime: Any) -> bool:
    return bool(runtime.cpu_offload or getattr(runtime, "sequential_offload", False))


def _install(loaded: Any, new: Any, runtime: Any, fresh: bool) -> None:
    """Register ``new`` in the pipeline and its variants, then place it as ``loader._place`` places a VAE."""
    from sdlocal.engine.devices import torch_dtype
    from sdlocal.engine.loader import vae_precision

    pipe = loaded.pipe
    for target in (pipe, *loaded.variants.values()):
        target.register_modules(vae=new)
    dtype = torch_dtype(vae_precision(pipe, runtime))
    if new.dtype != dtype:
        new.to(dtype=dtype)
    if runtime.sequential_offload:
        pipe.enable_sequential_cpu_offload()
    elif runtime.cpu_offload:
        pipe.enable_model_cpu_offload()
    else:
        new.to(runtime.device)
    if fresh:
        if runtime.attention == "xformers":
            new.enable_xformers_memory_efficient_attention()
        if runtime.attention_slicing and hasattr(new, "set_attention_slice"):
            new.set_attention_slice("auto")
        if runtime.vae_slicing:
            new.enable_slicing()
        _fast(loaded, new)
    if loaded.vae_tiling:
        new.enable_tiling()
    else:
        new.disable_tiling()
    loaded.vae_upcast = False


def _fast(loaded: Any, new: Any) -> None:
    """Fast mode's VAE changes, where the load made them on the model's own VAE (``fast.apply_fast_mode`` lists
    what it changed as "channels-last memory format (unet, vae)", "fused QKV projections (unet, vae)")."""
    import torch

    applied = [entry for entry in loaded.fast_applied or [] if "vae" in entry]
    if any(entry.startswith("channels-last") for entry in applied):
        new.to(memory_format=torch.channels_last)
    if any(entry.startswith("fused QKV") for entry in applied):
        from sdlocal.engine.fast import _uses_sdpa_only

        if _uses_sdpa_only(new):
            new.fuse_qkv_projections()


# ------------------------------------------------------------------------------------------- choosing
@dataclass
class VaeUse:
    """What a run decodes with: the VAE file (None: the checkpoint's own), its infotext pairs, the warnings."""

    vae: VaeFile | None = None
    short_hash: str = ""
    warnings: list[str] | None = None

    @property
    def infotext(self) -> dict[str, str]:
        """A1111's ``VAE hash`` and ``VAE`` pairs; none for the checkpoint's own VAE."""
        if self.vae is None:
            return {}
        return {"VAE hash": self.short_hash or None, "VAE": self.vae.filename}  # type: ignore[dict-item]


def find_named(library: Any, name: str) -> VaeFile:
    """The VAE called ``name`` (the folders are scanned again when it is not known yet: a file just added);
    RequestError on ``vae`` naming the closest names otherwise."""
    found = library.find(name)
    if found is None:
        library.scan()
        found = library.find(name)
    if found is None:
        close = library.closest(name)
        hint = f"the closest are {', '.join(close)}" if close else "no VAE was found in the VAE folders"
        raise RequestError("vae", name, f"must be a VAE in the VAE folders ({hint}), Automatic or None")
    return found


def choose(library: Any, wanted: str, checkpoint: Path, model_family: str) -> tuple[VaeFile | None, list[str]]:
    """A1111's ``sd_vae`` for this checkpoint: (the VAE file, or None for the checkpoint's own; warnings).

    "Automatic" falls back to the checkpoint's own VAE, with a warning, when the VAE named after the checkpoint
    cannot be used; a VAE asked for by name that does not fit is an error (RequestError on ``vae``).
    """
    if wanted == "None":
        return None, []
    if wanted == "Automatic":
        found = library.automatic_for(checkpoint)
        if found is None:
            return None, []
        why = misfit(found, model_family)
        if why:
            return None, [f"The VAE named after the checkpoint, {found.path.name}, was not used ({why}); the "
                          "checkpoint's own VAE decoded the images."]
        return found, []
    found = find_named(library, wanted)
    check_fits(found, model_family)
    return found, []
