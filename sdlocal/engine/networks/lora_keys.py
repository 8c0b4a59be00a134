"""Which module of which pipeline component a LoRA tensor name means, in every spelling the files in the wild use.

A LoRA file names each module it changes by a *base key*: the tensor name before ``.lora_down.weight``,
``.hada_w1_a``, ``.alpha`` and so on. The trainers spell the same module several ways:

* kohya sd-scripts, diffusers-style UNet (its SD 1.x/2.x files): ``lora_unet_`` + the diffusers module name with
  ``.`` -> ``_`` (``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``);
* kohya, LDM/SGM-style UNet (its SDXL files, some SD 1.x trainers): ``lora_unet_`` + the original checkpoint's
  module name (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), from ``ldm_layout.unet_namer``;
* kohya text encoders: ``lora_te_`` (SD 1.x/2.x) or ``lora_te1_`` / ``lora_te2_`` (SDXL's two) + the
  transformers 4 module name (``text_model_encoder_layers_0_self_attn_q_proj``);
* diffusers / PEFT: dotted ``unet.<module>``, ``text_encoder.<module>``, ``text_encoder_2.<module>``, the text
  encoders with or without the ``text_model.`` level.

Rather than parse names (``_`` is both the separator and part of names like ``to_q``), every spelling of every
``nn.Linear`` / ``nn.Conv2d`` module is generated from the models themselves and looked up. Only module names and
types are read, so meta-device models work. The table is cached per pipeline object and per model.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from sdlocal.engine.networks.lora import COMPONENTS

# kohya's prefixes per component; SDXL numbers its two text encoders.
_KOHYA_TEXT = {False: {"text_encoder": "lora_te_"}, True: {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}}
KOHYA_UNET_PREFIX = "lora_unet_"

Targets = dict[str, tuple[str, str]]
_per_model: weakref.WeakKeyDictionary[Any, dict[tuple[str, bool], Targets]] = weakref.WeakKeyDictionary()
_per_pipe: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Targets]] = weakref.WeakKeyDictionary()


def components_of(pipe: Any) -> dict[str, Any]:
    """The LoRA-patchable models of a pipeline, or of a ``{component: model}`` mapping (``build_meta_models``)."""
    if isinstance(pipe, Mapping):
        found = {name: pipe.get(name) for name in COMPONENTS}
    else:
        found = {name: getattr(pipe, name, None) for name in COMPONENTS}
    return {name: model for name, model in found.items() if model is not None}


def is_sdxl(pipe: Any) -> bool:
    """SDXL pipelines have a second text encoder; kohya then writes ``lora_te1_``/``lora_te2_``."""
    return "text_encoder_2" in components_of(pipe)


def patchable_modules(model: Any) -> Iterator[tuple[str, Any]]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` of a model, by name: what a LoRA can change."""
    import torch

    for name, module in model.named_modules():
        if name and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            yield name, module


def text_model_name(name: str) -> str:
    """A text-encoder module name as transformers 4 spelled it (and kohya's keys still do): under ``text_model.``,
    except the projection of ``CLIPTextModelWithProjection``, which sits beside it."""
    if name.startswith(("text_model.", "text_projection")):
        return name
    return "text_model." + name


def kohya_text_key(component: str, name: str, sdxl: bool) -> str:
    """``lora_te_text_model_encoder_layers_0_self_attn_q_proj`` (``lora_te1_``/``lora_te2_`` on SDXL)."""
    return _KOHYA_TEXT[sdxl][component] + text_model_name(name).replace(".", "_")


def kohya_unet_keys(name: str, ldm_name: str | None) -> list[str]:
    """The diffusers-style kohya key, then the LDM-style one when the module has an original name."""
    keys = [KOHYA_UNET_PREFIX + name.replace(".", "_")]
    if ldm_name is not None:
        keys.append(KOHYA_UNET_PREFIX + ldm_name.replace(".", "_"))
    return keys


def unet_ldm_names(unet: Any) -> dict[str, str]:
    """diffusers UNet module name -> its original (``input_blocks...``) module name, for the modules that have one."""
    from sdlocal.engine.ldm_layout import unet_namer

    namer = unet_namer(unet)
    names: dict[str, str] = {}
    for name, _module in patchable_modules(unet):
        try:
            names[name] = namer(name + ".weight").removesuffix(".weight")
        except KeyError:
            continue  # a module the original layout has no name for: the diffusers spellings still reach it
    return names


def _spellings(component: str, model: Any, sdxl: bool) -> Targets:
    targets: Targets = {}
    if component == "unet":
        ldm = unet_ldm_names(model)
        for name, _module in patchable_modules(model):
            for key in (*kohya_unet_keys(name, ldm.get(name)), f"unet.{name}"):
                targets.setdefault(key, (component, name))
        return targets
    if component not in _KOHYA_TEXT[sdxl]:
        return targets
    for name, _module in patchable_modules(model):
        full = text_model_name(name)
        short = name.removeprefix("text_model.")
        for key in (kohya_text_key(component, name, sdxl), f"{component}.{full}", f"{component}.{short}"):
            targets.setdefault(key, (component, name))
    return targets


def _model_targets(component: str, model: Any, sdxl: bool) -> Targets:
    try:
        cache = _per_model.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return _spellings(component, model, sdxl)
    if (component, sdxl) not in cache:
        cache[(component, sdxl)] = _spellings(component, model, sdxl)
    return cache[(component, sdxl)]


def module_targets(pipe: Any) -> dict[str, tuple[str, str]]:
    """Every accepted spelling of a module's base key -> (component, module name in that component).

    ``pipe`` is a diffusers pipeline or a ``{component: model}`` mapping. The module name is what
    ``model.get_submodule`` takes (``encoder.layers.0.self_attn.q_proj`` with transformers 5). Do not change the
    returned dict: it is the cached table.
    """
    models = components_of(pipe)
    sdxl = "text_encoder_2" in models
    identity = tuple(id(model) for model in models.values())
    try:
        cached = _per_pipe.get(pipe)
    except TypeError:
        cached = None
    if cached is not None and cached[0] == identity:
        return cached[1]
    targets: Targets = {}
    for component, model in models.items():
        for key, target in _model_targets(component, model, sdxl).items():
            targets.setdefault(key, target)
    try:
        _per_pipe[pipe] = (identity, targets)
    except TypeError:
        pass
    return targets
