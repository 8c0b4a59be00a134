"""From a request's ``<lora:...>`` tags to the patches merged into the loaded model, with a warning for every tag
that does nothing (an unknown name, a file that cannot be used, a LoRA made for another family).

A1111 applies a LoRA of another family as far as its keys happen to match, silently; here it is skipped and the
result says so, which is the difference between "this LoRA does nothing" and knowing why.

Each LoRA file is read once and turned into patches at multiplier 1 (``build_patches``); a run scales them by
its tag's weights. Only the files of the current run stay in memory (the patcher needs their factors to tell an
unchanged set from a new one without recomputing), so memory grows by the LoRA files in use, not by a cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from sdlocal.engine.networks.extra_networks import NetworkUse, parse_networks
from sdlocal.engine.networks.lora import FAMILY_LABELS, TEXT_COMPONENTS, LoraFile, Patch

log = logging.getLogger(__name__)

MAX_LISTED = 3  # how many module names a warning quotes


@dataclass
class Activation:
    """What a run needs from its tags: the texts the encoder reads, the patches, the infotext value, warnings."""

    texts: tuple[str, str]
    patches: list[Patch] = field(default_factory=list)
    hashes: str | None = None  # "Lora hashes" as A1111 writes it; None when no LoRA is applied
    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # the names of the LoRAs applied, as the tags wrote them
    seconds: float = 0.0  # how long merging (or restoring) took


def _stamp(lora: LoraFile) -> tuple[str, int, int]:
    stat = os.stat(lora.path)
    return (os.path.realpath(lora.path), stat.st_size, stat.st_mtime_ns)


def _family_label(family: str | None) -> str:
    return FAMILY_LABELS.get(family or "", family or "an unknown family")


class LoraActivator:
    """Turns tags into patches for one engine; keeps the patch sets of the LoRAs the last run used."""

    def __init__(self, library: Any) -> None:
        self.library = library
        self._sets: dict[tuple[Any, ...], Any] = {}  # (model, pipeline id, file stamp) -> PatchSet at multiplier 1

    def prepare(self, loaded: Any, prompt: str, negative_prompt: str) -> Activation:
        """Parse both prompts, resolve the LoRAs, build the patches; never patches anything itself."""
        text, uses, others = parse_networks(prompt, "prompt")
        negative, negative_uses, negative_others = parse_networks(negative_prompt, "negative_prompt")
        activation = Activation(texts=(text, negative))
        if negative_uses:
            activation.warnings.append(
                f"LoRA tags in the negative prompt are not applied ({', '.join(u.tag for u in negative_uses)}); "
                "they were taken out of it. Put them in the prompt, with a negative weight to subtract a style.")
        for kind in dict.fromkeys(others + negative_others):
            activation.warnings.append(f"<{kind}:...> tags are not supported by sdlocal (only <lora:...> and "
                                       "<lyco:...>); they were taken out of the prompt.")
        kept: dict[tuple[Any, ...], Any] = {}
        hashes: list[str] = []
        for use in uses:
            lora = self._resolve(use, loaded, activation.warnings)
            if lora is None:
                continue
            patch_set = self._patch_set(loaded, lora, kept)
            if not self._fits(use, lora, patch_set, activation.warnings):
                continue
            patches = _scaled(patch_set.patches, use)
            if use.dyn is not None:
                activation.warnings.append(f"{use.tag}: dyn= is not applied by sdlocal; the LoRA was used at its "
                                           "full rank.")
            if not patches:
                continue  # weight 0: bit-identical to no LoRA, and not named in the infotext
            activation.patches.extend(patches)
            activation.applied.append(use.name)
            hashes.append(f"{use.name.replace(':', '').replace(',', '')}: {lora.shorthash}")
        self._sets = kept
        activation.hashes = ", ".join(hashes) or None
        return activation

    def _resolve(self, use: NetworkUse, loaded: Any, warnings: list[str]) -> LoraFile | None:
        lora = self.library.find(use.name)
        if lora is None:
            closest = self.library.closest(use.name)
            hint = f" The closest names: {', '.join(closest)}." if closest else " No LoRA files were found."
            warnings.append(f"{use.tag}: no LoRA named {use.name!r}; the tag was ignored.{hint}")
            return None
        if not lora.usable:
            warnings.append(f"{use.tag}: the LoRA {lora.path.name} cannot be used ({lora.reason}); it was ignored.")
            return None
        family = getattr(loaded, "family", None)
        if lora.family and family and lora.family != family:
            warnings.append(f"{use.tag}: the LoRA {lora.alias!r} is made for {_family_label(lora.family)} and the "
                            f"loaded model is {_family_label(family)}; it was skipped (pick a LoRA for this model).")
            return None
        return lora

    def _patch_set(self, loaded: Any, lora: LoraFile, kept: dict[tuple[Any, ...], Any]) -> Any:
        from sdlocal.engine.networks.lora_formats import build_patches, read_lora_tensors

        key = (getattr(loaded, "key", ""), id(loaded.pipe), _stamp(lora))  # this model, this file version
        patch_set = kept.get(key) or self._sets.get(key)
        if patch_set is None:
            tensors = read_lora_tensors(lora.path)
            patch_set = build_patches(tensors, loaded.pipe, 1.0, 1.0, lora.alias)
            del tensors
        kept[key] = patch_set
        return patch_set

    @staticmethod
    def _fits(use: NetworkUse, lora: LoraFile, patch_set: Any, warnings: list[str]) -> bool:
        if patch_set.mismatched:
            listed = "; ".join(patch_set.mismatched[:MAX_LISTED])
            warnings.append(f"{use.tag}: the LoRA {lora.alias!r} does not fit the loaded model ({listed}); it was "
                            "skipped (it is made for another model family or size).")
            return False
        if not patch_set.patches:
            warnings.append(f"{use.tag}: none of the LoRA {lora.alias!r}'s {len(patch_set.unmatched)} layers are in "
                            "the loaded model; it was skipped (it is made for another model family).")
            return False
        if patch_set.unmatched:
            listed = ", ".join(patch_set.unmatched[:MAX_LISTED])
            log.info("%s: %d layers not in the model (%s)", lora.path, len(patch_set.unmatched), listed)
            warnings.append(f"{use.tag}: {len(patch_set.unmatched)} of the LoRA {lora.alias!r}'s layers are not in "
                            f"the loaded model and were left out (e.g. {listed}).")
        return True


def _scaled(patches: list[Patch], use: NetworkUse) -> list[Patch]:
    """The multiplier-1 patches at the tag's weights; a weight of 0 leaves that part out entirely."""
    scaled = []
    for patch in patches:
        weight = use.te if patch.component in TEXT_COMPONENTS else use.unet
        if weight != 0:
            scaled.append(replace(patch, multiplier=patch.multiplier * weight))
    return scaled
