"""Download one starter model from the Hugging Face Hub, for people who have no model yet.

Plain ``urllib`` with resume, not ``huggingface_hub``: a 4 GB download over a flaky line must continue where it
stopped, the progress bar needs bytes as they arrive, and the result must be a single file where A1111 users
expect it (``<data dir>/models/Stable-diffusion``), not a blob in the Hub cache. The file grows as a hidden
``.part`` file, is checked against its published sha256, and only then renamed to its final name: a model file
with the final name is always complete and correct. Offline (no route, DNS failure, ``HF_HUB_OFFLINE=1``) it
fails at once with a message that says where to get the file by hand.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StarterModel:
    """A model sdlocal offers to download: where it is on the Hub and the sha256 it must have."""

    key: str
    label: str
    repo: str
    filename: str
    sha256: str
    size: int  # bytes, for the message before the download starts; the server's length wins during it
    license: str

    def url(self, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/main/{self.filename}"


STARTER_MODELS: dict[str, StarterModel] = {
    "sd15": StarterModel(
        key="sd15",
        label="Stable Diffusion 1.5 (v1-5-pruned-emaonly, 4.3 GB)",
        repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        filename="v1-5-pruned-emaonly.safetensors",
        sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        size=4_265_146_304,
        license="CreativeML Open RAIL-M",
    ),
}


class StarterDownloadError(RuntimeError):
    """A download that did not produce a verified model; the message says why and what to do instead."""


ProgressFn = Callable[[int, int], None]  # (bytes done, total bytes or 0 when unknown)


def endpoint_from_env() -> str:
    """``HF_ENDPOINT`` is the Hub's own variable for mirrors; sdlocal honours it like the Hub tools do."""
    return os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


def download_starter(
    dest_dir: Path,
    model: StarterModel | str = "sd15",
    endpoint: str | None = None,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``model`` into ``dest_dir`` (resuming a previous ``.part``), verify its sha256, return its path."""
    spec = STARTER_MODELS[model] if isinstance(model, str) else model
    endpoint = endpoint or endpoint_from_env()
    url = spec.url(endpoint)
    manual = f"Download it by hand from {url} and put it into {dest_dir}."
    final = dest_dir / spec.filename
    if final.exists():
        return final
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise StarterDownloadError(f"HF_HUB_OFFLINE is set, so sdlocal does not go online. Unset it, or: {manual}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / f".{spec.filename}.part"

    digest = hashlib.sha256()
    done = 0
    if part.exists():
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
                done += len(block)

    request = urllib.request.Request(url, headers={"User-Agent": "sdlocal"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - https/http URL built above
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # the .part is already complete (or longer than the file): check it below
            response = None
        else:
            raise StarterDownloadError(f"The Hub answered {error.code} {error.reason} for {url}. {manual}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StarterDownloadError(
            f"Could not reach {endpoint} ({reason}): this machine looks offline or the Hub is blocked. {manual}"
        ) from None

    if response is not None:
        with response:
            if done and response.status != 206:  # the server ignored the range: start again
                digest, done = hashlib.sha256(), 0
                mode = "wb"
            else:
                mode = "ab"
            length = int(response.headers.get("Content-Length") or 0)
            total = done + length if length else spec.size
            try:
                with open(part, mode) as handle:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        handle.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
                    handle.flush()
                    os.fsync(handle.fileno())
            except (TimeoutError, OSError) as error:
                raise StarterDownloadError(
                    f"The download stopped after {done:,} bytes ({error}). Try again: it resumes where it stopped."
                ) from None
            if length and done != total:
                raise StarterDownloadError(
                    f"The download stopped after {done:,} of {total:,} bytes. Try again: it resumes where it stopped."
                )

    actual = digest.hexdigest()
    if actual != spec.sha256:
        part.unlink(missing_ok=True)
        raise StarterDownloadError(
            f"{spec.filename}: the downloaded file's sha256 is {actual}, not the published {spec.sha256}; "
            f"it was deleted. Try again, or: {manual}"
        )
    os.replace(part, final)
    return final
