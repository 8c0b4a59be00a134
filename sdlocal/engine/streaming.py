"""Single ``.safetensors`` checkpoints loaded tensor by tensor, at about the model's own size in memory.

diffusers' ``from_single_file`` reads the whole file into a state dict, converts it to diffusers names, then
builds the models from it: two copies of every weight at once (13.4 GiB resident for a 6.9 GB SDXL file, killed
by the OOM killer on a 16 GB machine). Here each component (UNet, VAE, text encoders) is built on the meta device
from the config folder (no memory), and every parameter is read on its own from the file with plain reads (no
mmap, so the file's pages count as page cache, not as this process's memory), converted to the target precision
and put in its place, directly on the GPU when the pipeline goes there. Peak memory is the model plus its largest
tensor.

The names come from ``ldm_layout`` (diffusers name -> original name), used backwards: renames, q/k/v split out of
OpenCLIP's fused ``in_proj``, its transposed projection, and 1x1 convolutions reshaped to linear layers. Values
are copied bit for bit, converted exactly as diffusers converts them (``Tensor.to(dtype)``). A file whose layout
this does not know (an unknown prefix, a missing or misshapen tensor, an unusual dtype) raises ``LayoutMismatch``
before anything is read; the loader then falls back to diffusers' reader, so whatever loaded before still loads.

Diffusers folders go the same way (``from_pretrained`` holds a converted copy beside the file's state dict too):
their safetensors files already use the models' names. ``.ckpt`` files keep diffusers' reader: a pickle has no
header to plan from, and ``torch.load(mmap=True)`` keeps every page it has read mapped until the last tensor is
released (measured: 2.0x the model at peak for SD 1.5 in bf16).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlocal.engine import ldm_layout
from sdlocal.engine.fit import Needs, check_fits

log = logging.getLogger(__name__)

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


class LayoutMismatch(ValueError):
    """The file cannot be streamed into the configured models (the loader falls back to diffusers' reader)."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file (offsets absolute, from the start of the file)."""

    dtype: str  # a torch dtype name: "float16", "int64", ...
    shape: tuple[int, ...]
    start: int
    end: int
    path: Path | None = None  # the file it is in (a diffusers folder has one or more per component)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Source:
    """Where one diffusers tensor comes from: a file key and how to turn that tensor into it."""

    key: str
    chunk: int | None = None  # q, k, v = chunks 0, 1, 2 of a fused in_proj along dim 0
    transpose: bool = False  # OpenCLIP stores the text projection as the matrix it multiplies by


# ------------------------------------------------------------------------------------------------ header
def read_header(path: Path, namespace: str = "") -> dict[str, TensorInfo]:
    """The tensors a safetensors file holds, from its JSON header alone (nothing else is read); ``namespace`` is
    put before every name (a folder's components share names such as ``conv_in.weight``). The header is parsed
    and checked against the file's length by discovery's own reader; a file it refuses is not streamed."""
    from sdlocal.engine.headers import TRUNCATED, HeaderError, read_safetensors_header

    path = Path(path)
    try:
        header = read_safetensors_header(path)
    except (HeaderError, OSError) as exc:
        where = "its tensors lie outside the file: " if str(exc) == TRUNCATED else ""
        raise LayoutMismatch(f"{path.name}: {where}{exc}") from None
    base = 8 + _header_length(path)
    tensors: dict[str, TensorInfo] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        kind = _DTYPES.get(str(info.get("dtype")))
        if kind is None:
            raise LayoutMismatch(f"{path.name}: tensor {key} has the dtype {info.get('dtype')}, not streamed here")
        begin, end = (int(v) for v in info["data_offsets"])
        if not 0 <= begin <= end:
            raise LayoutMismatch(f"{path.name}: tensor {key} has offsets {begin}..{end}")
        tensors[namespace + key] = TensorInfo(kind, tuple(int(d) for d in info["shape"]), base + begin, base + end,
                                              path)
    return tensors


def _header_length(path: Path) -> int:
    """The header's length, which places every tensor (data offsets count from the end of the header)."""
    import struct

    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


# ------------------------------------------------------------------------------------------ name mapping
def _unet_sources(unet: Any) -> Callable[[str], Source]:
    namer = ldm_layout._unet_namer(unet)
    return lambda key: Source(ldm_layout.UNET_PREFIX + namer(key))


def _vae_sources(vae: Any) -> Callable[[str], Source]:
    levels = len(vae.decoder.up_blocks)

    def source(key: str) -> Source:
        module, param = ldm_layout._split(key)
        if module in ("quant_conv", "post_quant_conv"):
            return Source(f"{ldm_layout.VAE_PREFIX}{module}.{param}")
        part, _, rest = module.partition(".")
        new = ldm_layout._vae_part_name(rest, levels) if part in ("encoder", "decoder") else None
        if new is None:
            raise KeyError(key)
        return Source(f"{ldm_layout.VAE_PREFIX}{part}.{new}.{param}")

    return source


def _clip_sources(prefix: str) -> Callable[[str], Source]:
    return lambda key: Source(prefix + key)


def _openclip_sources(prefix: str) -> Callable[[str], Source]:
    """The inverse of ``ldm_layout._openclip_items``."""
    layer_to_original = ldm_layout._OPENCLIP_LAYER

    def source(key: str) -> Source:
        module, param = ldm_layout._split(key)
        if key == "embeddings.token_embedding.weight":
            return Source(prefix + "token_embedding.weight")
        if key == "embeddings.position_embedding.weight":
            return Source(prefix + "positional_embedding")
        if module == "final_layer_norm":
            return Source(f"{prefix}ln_final.{param}")
        if key == "text_projection.weight":
            return Source(prefix + "text_projection", transpose=True)
        if match := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj", module):
            return Source(f"{prefix}transformer.resblocks.{match[1]}.attn.in_proj_{param}", chunk="qkv".index(match[2]))
        if (match := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", module)) and match[2] in layer_to_original:
            return Source(f"{prefix}transformer.resblocks.{match[1]}.{layer_to_original[match[2]]}.{param}")
        raise KeyError(key)

    return source


def _text_sources(component: str, family: str, header: dict[str, TensorInfo]) -> Callable[[str], Source]:
    """Which slot of the file a text encoder comes from, decided by the keys the file has (as diffusers does)."""
    if family == "sdxl":
        if component == "text_encoder":
            return _clip_sources(ldm_layout.SDXL_CLIP_PREFIX)
        return _openclip_sources(ldm_layout.SDXL_OPENCLIP_PREFIX)
    if ldm_layout.SD2_OPENCLIP_PREFIX + "token_embedding.weight" in header:
        return _openclip_sources(ldm_layout.SD2_OPENCLIP_PREFIX)
    return _clip_sources(ldm_layout.SD1_CLIP_PREFIX)


# ------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Step:
    """One tensor to read: where it goes (component, name in its state dict), where it comes from, its shape."""

    component: str
    name: str
    source: Source
    shape: tuple[int, ...]
    floating: bool


def plan_component(component: str, model: Any, family: str, header: dict[str, TensorInfo],
                   mapper: Callable[[str], Source] | None = None) -> list[Step]:
    """Every tensor of ``model``'s state dict with the file tensor it comes from; LayoutMismatch if one is not there.

    Shapes are checked here, before anything is read: the file's tensor must give the model's shape (after the
    split or transpose), or differ only by trailing 1x1 dimensions (a convolution stored for a linear layer).
    """
    if mapper is not None:
        pass
    elif component == "unet":
        mapper = _unet_sources(model)
    elif component == "vae":
        mapper = _vae_sources(model)
    else:
        mapper = _text_sources(component, family, header)
    steps = []
    for name, tensor in model.state_dict().items():
        short = name.removeprefix("text_model.") if component.startswith("text_encoder") else name
        try:
            source = mapper(short)
        except KeyError:
            raise LayoutMismatch(f"{component}: no original-layout name for {name}") from None
        shape = tuple(int(d) for d in tensor.shape)
        info = header.get(source.key)
        if info is None:
            raise LayoutMismatch(f"{component}.{name}: the file has no tensor {source.key}")
        if _source_shape(info.shape, source) is None or not _fits(_source_shape(info.shape, source), shape):
            raise LayoutMismatch(f"{component}.{name}: {source.key} has the shape {list(info.shape)}, the model "
                                 f"needs {list(shape)}")
        steps.append(Step(component, name, source, shape, tensor.is_floating_point()))
    return steps


def _source_shape(shape: tuple[int, ...], source: Source) -> tuple[int, ...] | None:
    if source.chunk is not None:
        if not shape or shape[0] % 3:
            return None
        return (shape[0] // 3, *shape[1:])
    if source.transpose:
        return tuple(reversed(shape)) if len(shape) == 2 else None
    return shape


def _fits(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    def squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        return shape

    return have == want or squeeze(have) == squeeze(want)


def needed_bytes(steps: list[Step], dtype: Any, header: dict[str, TensorInfo]) -> int:
    """The loaded model's size: floating tensors at ``dtype``, the others at the file's own width."""
    import torch

    width = torch.empty((), dtype=dtype).element_size()
    total = 0
    for step in steps:
        count = math.prod(step.shape)
        own = torch.empty((), dtype=getattr(torch, header[step.source.key].dtype)).element_size()
        total += count * (width if step.floating else own)
    return total


def header_estimate(header: dict[str, TensorInfo], dtype: Any) -> int:
    """The model's size from the header alone, for files that are not streamed: weights of the known components."""
    import torch

    width = torch.empty((), dtype=dtype).element_size()
    prefixes = (ldm_layout.UNET_PREFIX, ldm_layout.VAE_PREFIX, "cond_stage_model.", "conditioner.")
    return sum(info.numel * width for key, info in header.items()
               if key.startswith(prefixes) and info.dtype.startswith(("float", "bfloat")))


# ----------------------------------------------------------------------------------------- meta models
def model_index(config_dir: Path) -> dict[str, Any]:
    return json.loads((Path(config_dir) / "model_index.json").read_text(encoding="utf-8"))


def build_meta_models(config_dir: Path) -> dict[str, Any]:
    """The pipeline's models from ``config_dir`` on the meta device: parameters without memory, buffers real."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    config_dir = Path(config_dir)
    index = model_index(config_dir)
    models: dict[str, Any] = {}
    with init_empty_weights():
        for component in MODEL_COMPONENTS:
            library, class_name = (index.get(component) or (None, None))[:2]
            if library is None:
                continue
            cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
            folder = str(config_dir / component)
            if library == "diffusers":
                model = cls.from_config(cls.load_config(folder))
            else:
                model = cls(cls.config_class.from_pretrained(folder))
            models[component] = model.eval()
    return models


def load_other_components(config_dir: Path) -> dict[str, Any]:
    """Tokenizers and the scheduler from the config folder (local files only)."""
    import diffusers
    import transformers

    config_dir = Path(config_dir)
    parts: dict[str, Any] = {}
    for component in ("tokenizer", "tokenizer_2", "scheduler"):
        library, class_name = (model_index(config_dir).get(component) or (None, None))[:2]
        if library is None:
            continue
        cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
        folder = str(config_dir / component)
        if component == "scheduler":
            parts[component] = cls.from_config(cls.load_config(folder))
        else:
            parts[component] = cls.from_pretrained(folder, local_files_only=True)
    return parts


# ------------------------------------------------------------------------------------------------ reads
def _read(fh: Any, info: TensorInfo, into: Any = None) -> Any:
    """One tensor of the file's dtype, read into ``into`` (a reused byte buffer) or into fresh memory.

    Plain reads, not mmap: only this tensor is resident, the file's pages stay page cache, not this process's.
    """
    import torch

    kind = getattr(torch, info.dtype)
    nbytes = info.end - info.start
    if into is None:
        tensor = torch.empty(info.shape, dtype=kind)
        flat = tensor.reshape(-1).view(torch.uint8)
    else:
        flat = into[:nbytes]
        tensor = flat.view(kind).reshape(info.shape)
    view = memoryview(flat.numpy()) if nbytes else memoryview(b"")
    fh.seek(info.start)
    done = 0
    while done < nbytes:
        count = fh.readinto(view[done:])
        if not count:
            raise OSError(f"the file ended at byte {info.start + done}, inside a tensor (truncated?)")
        done += count
    return tensor


def _shaped(raw: Any, step: Step) -> Any:
    """The file's tensor in the model's shape: q/k/v split, transpose, reshape (views where it can); not converted.
    The LoRA patcher's originals use it too, to read a weight back exactly as the load read it."""
    value = raw
    if step.source.chunk is not None:
        value = value.chunk(3, dim=0)[step.source.chunk]
    if step.source.transpose:
        value = value.t()
    if tuple(value.shape) != step.shape:
        value = value.reshape(step.shape)
    return value


def _value(raw: Any, step: Step, dtype: Any, device: str, owned: bool) -> Any:
    """The model's tensor from the file's: split, transpose, reshape, convert; a copy unless ``raw`` is its own."""
    import torch

    value = _shaped(raw, step)
    target = dtype if step.floating else value.dtype
    value = value.to(device=device, dtype=target)
    # Still a view of the read buffer (no conversion was needed): give the parameter storage of its own.
    if not owned and value.untyped_storage().data_ptr() == raw.untyped_storage().data_ptr():
        value = value.clone(memory_format=torch.contiguous_format)
    return value


def _assign(model: Any, name: str, value: Any) -> None:
    import torch

    module_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(module_name) if module_name else model
    if attr in owner._parameters:
        old = owner._parameters[attr]
        owner._parameters[attr] = torch.nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[attr] = value


def _direct(steps: list[Step], info: TensorInfo, dtype: Any, device: str) -> bool:
    """Whether a file tensor can be read straight into the parameter's own memory (no conversion, no split)."""
    import torch

    if device != "cpu" or len(steps) != 1:
        return False
    step = steps[0]
    plain = step.source.chunk is None and not step.source.transpose
    return plain and (not step.floating or getattr(torch, info.dtype) == dtype)


def stream_into(path: Path, models: dict[str, Any], steps: list[Step], header: dict[str, TensorInfo], dtype: Any,
                device: str = "cpu") -> None:
    """Fill the meta models from the file, one tensor at a time, in file order (sequential reads).

    Tensors that need converting (or go to a GPU) are read into one reused buffer the size of the largest, so
    the only memory beside the model is that buffer: no per-tensor temporaries for the allocator to keep.
    """
    import torch

    by_key: dict[str, list[Step]] = {}
    for step in steps:
        by_key.setdefault(step.source.key, []).append(step)
    direct = {key for key, group in by_key.items() if _direct(group, header[key], dtype, device)}
    sizes = [header[key].end - header[key].start for key in by_key if key not in direct]
    scratch = torch.empty(max(sizes), dtype=torch.uint8) if sizes else None
    handles: dict[Path, Any] = {}
    with contextlib.ExitStack() as stack:
        for key in sorted(by_key, key=lambda k: (str(header[k].path or path), header[k].start)):
            file = Path(header[key].path or path)
            if file not in handles:
                handles[file] = stack.enter_context(open(file, "rb", buffering=0))
            owned = key in direct
            raw = _read(handles[file], header[key], None if owned else scratch)
            for step in by_key[key]:
                _assign(models[step.component], step.name, _value(raw, step, dtype, device, owned))
            del raw
    del scratch


def _leftover_meta(models: dict[str, Any]) -> Iterator[str]:
    for component, model in models.items():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.device.type == "meta":
                yield f"{component}.{name}"


# ------------------------------------------------------------------------------------------------ entry
@dataclass
class StreamPlan:
    """What loading a file will read: the empty models, every step, and the loaded size."""

    path: Path
    config_dir: Path
    header: dict[str, TensorInfo]
    models: dict[str, Any]
    steps: list[Step]
    name_or_path: str | None = None  # a folder's path, recorded in the pipeline's config as from_pretrained does

    def size(self, dtype: Any) -> int:
        return needed_bytes(self.steps, dtype, self.header)


def _meta_models(config_dir: Path) -> dict[str, Any]:
    try:
        return build_meta_models(config_dir)
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as exc:  # a class or config not known here
        raise LayoutMismatch(f"the models cannot be built from {config_dir} ({type(exc).__name__}: {exc})") from None


def plan_single_file(path: Path, config_dir: Path, family: str) -> StreamPlan:
    """Map every model tensor to the file before reading any; LayoutMismatch when the file does not fit."""
    header = read_header(path)
    models = _meta_models(config_dir)
    steps: list[Step] = []
    for component, model in models.items():
        steps.extend(plan_component(component, model, family, header))
    return StreamPlan(Path(path), Path(config_dir), header, models, steps)


def load_planned(plan: StreamPlan, pipeline_cls: Any, dtype: Any, device: str = "cpu",
                 extra: dict[str, Any] | None = None) -> Any:
    """Read the planned tensors into the models and assemble the pipeline with tokenizers and scheduler."""
    stream_into(plan.path, plan.models, plan.steps, plan.header, dtype, device)
    missing = list(_leftover_meta(plan.models))
    if missing:  # a bug here, not a bad file: every state-dict entry has a step
        raise RuntimeError(f"{plan.path.name}: {len(missing)} tensors were not loaded, e.g. {missing[:3]}")
    parts = {**plan.models, **load_other_components(plan.config_dir)}
    index = model_index(plan.config_dir)
    options = {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)}
    pipe = pipeline_cls(**parts, **{**options, **(extra or {})})
    if plan.name_or_path is not None:  # what from_pretrained records: the folder, and transformers' loaded dtype
        pipe.register_to_config(_name_or_path=plan.name_or_path)
        for model in plan.models.values():
            if not hasattr(model, "register_to_config"):
                model.config.dtype = dtype
    return pipe


def target_device(runtime: Any) -> str:
    """Where the tensors are put as they are read: the GPU itself unless offloading (--medvram's model offload,
    --lowvram's sequential one) keeps the model in RAM and moves parts to the GPU only while they run."""
    device = str(runtime.device)
    offload = runtime.cpu_offload or getattr(runtime, "sequential_offload", False)
    if device.split(":")[0] in ("cuda", "mps") and not offload:
        return device
    return "cpu"


def needs_for(size: int, largest: int, runtime: Any) -> Needs:
    """RAM and GPU bytes a load needs: on the GPU the model passes through RAM one tensor at a time."""
    if target_device(runtime) == "cpu":
        return Needs(ram=size)
    return Needs(ram=largest, gpu=size) if str(runtime.device).startswith("cuda") else Needs(ram=size)


def load_single_file(path: Path, config_dir: Path, family: str, pipeline_cls: Any, runtime: Any,
                     extra: dict[str, Any] | None = None, name: str | None = None,
                     fits: Callable[..., None] | None = None,
                     on_plan: Callable[[StreamPlan], None] | None = None) -> Any | None:
    """The pipeline streamed from ``path`` onto the runtime's device, or None when the layout is not one streamed
    here (the caller then uses diffusers' reader). Raises EngineError when the model does not fit. ``on_plan``
    gets the plan before its tensors are read (the LoRA patcher re-reads originals through it)."""
    path = Path(path)
    label = name or path.name
    fits = fits or check_fits
    try:
        plan = plan_single_file(path, config_dir, family)
    except LayoutMismatch as exc:
        log.info("%s: not streamed (%s); loading it with diffusers' single-file reader", path.name, exc)
        try:
            header = read_header(path)
        except LayoutMismatch:
            return None
        size = header_estimate(header, runtime.dtype)
        on_gpu = target_device(runtime).startswith("cuda")  # diffusers' reader loads in RAM, then moves it
        fits(label, Needs(ram=size, gpu=size if on_gpu else 0), runtime.precision, str(runtime.device))
        return None
    return _load_checked(plan, pipeline_cls, runtime, extra, label, fits, on_plan)


def _component_files(folder: Path, component: str) -> list[Path]:
    """The safetensors files diffusers loads for a component: those without a variant (``.fp16``) in the name."""
    return [f for f in sorted((Path(folder) / component).glob("*.safetensors")) if "." not in f.stem]


def _folder_sources(component: str, header: dict[str, TensorInfo]) -> Callable[[str], Source]:
    """Same names as the model's, under the component; text encoders saved with or without ``text_model.``."""

    def source(key: str) -> Source:
        for candidate in (key, "text_model." + key):
            if f"{component}/{candidate}" in header:
                return Source(f"{component}/{candidate}")
        return Source(f"{component}/{key}")  # not there: the plan says which tensor is missing

    return source


def plan_folder(folder: Path) -> StreamPlan:
    """Map every model tensor of a diffusers folder to its file; LayoutMismatch for .bin weights, variants only."""
    folder = Path(folder)
    models = _meta_models(folder)
    header: dict[str, TensorInfo] = {}
    steps: list[Step] = []
    for component, model in models.items():
        _name_after(model, folder / component)
        files = _component_files(folder, component)
        if not files:
            raise LayoutMismatch(f"{component}: no safetensors weights without a variant in {folder / component}")
        for file in files:
            header.update(read_header(file, f"{component}/"))
        steps.extend(plan_component(component, model, "", header, mapper=_folder_sources(component, header)))
    return StreamPlan(folder, folder, header, models, steps, name_or_path=str(folder))


def _name_after(model: Any, folder: Path) -> None:
    """Record where the model came from, as ``from_pretrained`` does (``config._name_or_path``)."""
    if hasattr(model, "register_to_config"):
        model.register_to_config(_name_or_path=str(folder))
    else:
        model.config._name_or_path = str(folder)


def folder_estimate(folder: Path, dtype: Any) -> int:
    """A diffusers folder's model size at ``dtype`` from its safetensors headers (for the fallback's fit check)."""
    total = 0
    for component in MODEL_COMPONENTS:
        for file in _component_files(folder, component) or sorted((Path(folder) / component).glob("*.safetensors")):
            try:
                total += header_estimate({f"{ldm_layout.UNET_PREFIX}{k}": v for k, v in read_header(file).items()},
                                         dtype)
            except LayoutMismatch:
                continue  # damaged: diffusers' own load reports it with the file's name
    return total


def load_folder(folder: Path, pipeline_cls: Any, runtime: Any, extra: dict[str, Any] | None = None,
                name: str | None = None, fits: Callable[..., None] | None = None,
                on_plan: Callable[[StreamPlan], None] | None = None) -> Any | None:
    """A diffusers folder streamed onto the runtime's device, or None when it is not one streamed here (``.bin``
    weights, variant files only, an unknown class: the caller then uses ``from_pretrained``). ``on_plan`` as for
    ``load_single_file``."""
    folder = Path(folder)
    label = name or folder.name
    fits = fits or check_fits
    try:
        plan = plan_folder(folder)
    except LayoutMismatch as exc:
        log.info("%s: not streamed (%s); loading it with diffusers' from_pretrained", folder.name, exc)
        size = folder_estimate(folder, runtime.dtype)
        on_gpu = target_device(runtime).startswith("cuda")  # diffusers loads in RAM, then the pipeline moves
        if size:
            fits(label, Needs(ram=size, gpu=size if on_gpu else 0), runtime.precision, str(runtime.device))
        return None
    return _load_checked(plan, pipeline_cls, runtime, extra, label, fits, on_plan)


def _load_checked(plan: StreamPlan, pipeline_cls: Any, runtime: Any, extra: dict[str, Any] | None, label: str,
                  fits: Callable[..., None], on_plan: Callable[[StreamPlan], None] | None = None) -> Any:
    largest = max((plan.header[s.source.key].end - plan.header[s.source.key].start for s in plan.steps), default=0)
    fits(label, needs_for(plan.size(runtime.dtype), largest, runtime), runtime.precision, str(runtime.device))
    if on_plan is not None:
        on_plan(plan)
    return load_planned(plan, pipeline_cls, runtime.dtype, target_device(runtime), extra)
