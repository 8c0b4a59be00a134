"""Textual-inversion embeddings: found in the embeddings folders, recognised from their tensors, used by name.

The trigger is the file name without its extension (as in A1111), whatever folder the file is in. Discovery
(``EmbeddingLibrary``) never raises: a file it cannot use is still listed, with the reason, so the user learns why
a trigger does nothing instead of seeing it silently ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from sdlocal.engine.networks.folders import Listing, embedding_dirs, walk
from sdlocal.engine.networks.formats import NotAnEmbedding, describe_widths, family_of, load_tensors, read_info
from sdlocal.engine.networks.library import FileLibrary, read_or_reason
from sdlocal.engine.request import EngineError

log = logging.getLogger(__name__)

NO_MODEL = "no model is loaded, so whether it fits is not known yet: load a model"


@dataclass
class Embedding:
    """One embedding file, as discovery found it.

    ``widths`` is the vector width per text encoder (SD 1.x (768,), SD 2.x (1024,), SDXL (768, 1280)): an
    embedding fits a model whose text encoders have exactly those widths. ``family`` names the family those
    widths are ("sd1", "sd2", "sdxl"), None for other widths or when the file could not be read (then
    ``reason`` says why). ``vectors`` is how many token slots it takes. ``shape`` is A1111's: the total
    width (768 + 1280 = 2048 for SDXL).
    """

    name: str
    path: Path
    widths: tuple[int, ...] = ()
    family: str | None = None
    vectors: int = 0
    shape: int = 0
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    reason: str = ""  # why it is skipped or unsupported; "" when usable
    _tensors: dict[int, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def usable(self) -> bool:
        """Read without a problem (it may still be made for another model: see ``EmbeddingLibrary.for_model``)."""
        return not self.reason and bool(self.widths)

    def tensors(self) -> dict[int, Any]:
        """Text-encoder index -> float32 CPU tensor [vectors, width] (0: clip_l or the only encoder, 1: clip_g).

        Read from the file the first time and kept: a prompt that uses the trigger in every request reads it once.
        A file that changed into something else since the scan is an ``EngineError`` saying to refresh.
        """
        if self._tensors is None:
            try:
                tensors, widths = load_tensors(Path(self.path))
            except (NotAnEmbedding, OSError) as exc:
                raise EngineError(f"The embedding {self.name} ({self.path}) cannot be read now: {exc}.",
                                  "Refresh the embeddings list, or remove the file.") from None
            if widths != self.widths:
                raise EngineError(f"The embedding {self.name} ({self.path}) changed since it was listed "
                                  f"(its vectors are {widths}, not {self.widths}).", "Refresh the embeddings list.")
            self._tensors = tensors
        return self._tensors

    @cached_property
    def shorthash(self) -> str:
        """A1111's "TI hashes" value: the first 12 hex digits of the sha256 of the file's bytes, computed once.

        An embedding built by hand with no file behind it hashes its tensors instead, so infotext still names it.
        """
        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    digest.update(chunk)
        except OSError:
            digest = hashlib.sha256()
            for index, tensor in sorted((self._tensors or {}).items()):
                digest.update(str(index).encode() + tensor.detach().cpu().float().numpy().tobytes())
        return digest.hexdigest()[:12]


def unsupported(name: str, path: Path, reason: str) -> Embedding:
    """An entry for a file (or folder) that cannot be used, listed so the user sees why."""
    return Embedding(name=name, path=path, reason=reason)


def read_embedding(path: Path, name: str) -> Embedding:
    """The embedding in ``path``, or an unsupported entry whose reason says what is wrong; never raises."""
    return read_or_reason(_read_embedding, path, name, "embedding", NotAnEmbedding, unsupported, log)


def _read_embedding(path: Path, name: str) -> Embedding:
    info = read_info(path)
    return Embedding(name=name, path=path, widths=info.widths, family=family_of(info.widths), vectors=info.vectors,
                     shape=sum(info.widths), step=info.step, sd_checkpoint=info.sd_checkpoint,
                     sd_checkpoint_name=info.sd_checkpoint_name, _tensors=info.tensors)


def text_encoder_widths(pipe: Any) -> tuple[int, ...]:
    """A pipeline's text-encoder widths (``config.hidden_size``), in encoder order: what an embedding must match."""
    encoders = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
    return tuple(int(encoder.config.hidden_size) for encoder in encoders if encoder is not None)


class EmbeddingLibrary(FileLibrary[Embedding]):
    """The embedding files in every embeddings folder (``folders.embedding_dirs``), read once per file version.

    A scan re-reads only the files whose (path, size, mtime) changed since the last one, so a refresh of a
    folder of a hundred embeddings costs a hundred ``stat`` calls. Two files with one trigger (compared without
    case: CLIP's tokenizer lowercases): the first found is used, the others are listed with the reason. Safe to
    call from several threads.
    """

    clash_kind = "embedding"

    def folders(self) -> list[Path]:
        """The folders a scan looks in, in the order that decides name clashes."""
        return embedding_dirs(self.config)

    def candidates(self, folder: Path) -> Iterator[Listing]:
        return walk(folder)

    def locate(self, folder: Path, path: Path) -> tuple[Path, str]:
        """The trigger is the file's stem, whatever folder it is in (as in A1111)."""
        return path, path.stem

    def read(self, path: Path, name: str) -> Embedding:
        return read_embedding(path, name)

    def unlisted(self, folder: Path, path: Path, reason: str) -> Embedding:
        return unsupported(str(path), path, reason)

    def for_model(self, widths: tuple[int, ...]) -> tuple[dict[str, Embedding], dict[str, Embedding]]:
        """(loaded, skipped) by trigger name for a model whose text encoders have ``widths``; ``()``: no model.

        Loaded: usable and made for exactly those widths. Skipped: the rest, each with its reason (made for other
        widths, named like another, or unsupported). A skipped name seen twice gets " (2)", " (3)"... so every
        file is listed.
        """
        widths = tuple(widths)
        loaded: dict[str, Embedding] = {}
        skipped: dict[str, Embedding] = {}
        for embedding in self.entries():
            if embedding.usable and widths and embedding.widths == widths:
                loaded[embedding.name] = embedding
                continue
            if embedding.usable:
                reason = (f"made for {describe_widths(embedding.widths)}; the loaded model is "
                          f"{describe_widths(widths)}" if widths else NO_MODEL)
                embedding = replace(embedding, reason=reason)
            skipped[_unique_key(skipped, embedding.name)] = embedding
        return loaded, skipped


def skipped_in_prompt(texts: list[str], loaded: dict[str, Embedding], skipped: dict[str, Embedding]) -> list[str]:
    """A warning for each skipped embedding whose trigger is written in one of ``texts``.

    A1111 silently reads such a word as plain text (an SD 1.x ``EasyNegative`` on an SDXL model does nothing
    useful); saying so is the difference between a puzzled user and a fixed prompt.
    """
    warnings: list[str] = []
    seen: set[str] = set()
    for embedding in skipped.values():
        key = embedding.name.casefold()
        if key in seen or embedding.name in loaded:
            continue
        word = re.compile(rf"(?<![\w]){re.escape(embedding.name)}(?![\w])", re.IGNORECASE)
        if any(word.search(text) for text in texts):
            seen.add(key)
            warnings.append(f"The embedding {embedding.name!r} was not used ({embedding.reason}); the prompt's "
                            f"{embedding.name!r} was read as plain words.")
    return warnings


def _unique_key(taken: dict[str, Any], name: str) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"
