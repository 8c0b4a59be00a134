"""The progress bar's HTML and the small waits on a queued job that the Generate handler streams from.

The queue's ``ProgressState`` is read duck-typed on purpose, so a fake queue in a test needs only its fields.
"""

from __future__ import annotations

import html
from typing import Any


class Waiting:
    """The progress shown between submitting a job and its first report."""

    text = "Queued…"
    step = 0
    total_steps = 0


def progress_html(state: Any) -> str:
    """A progress bar with step, batch and ETA from the queue's ProgressState."""
    if state is None:
        return ""
    text = html.escape(str(getattr(state, "text", "") or getattr(state, "state", "") or "Working…"))
    step = getattr(state, "step", 0) or 0
    total = getattr(state, "total_steps", 0) or 0
    fraction = getattr(state, "fraction", None)
    if fraction is None:
        fraction = step / total if total else 0.0
    parts = []
    if total:
        parts.append(f"step {step}/{total}")
    batch_count = getattr(state, "batch_count", 0) or 0
    if batch_count > 1 and getattr(state, "job_kind", "") != "script":  # a script's text says "Cell i/n"
        parts.append(f"batch {(getattr(state, 'batch_index', 0) or 0) + 1}/{batch_count}")
    eta = getattr(state, "eta_seconds", None)
    if eta is not None and total:
        parts.append(f"ETA {_seconds(eta)}")
    waiting = getattr(state, "queue_position", None) or 0
    if waiting:
        parts.append(f"{waiting} ahead in the queue")
    detail = " · ".join(parts)
    percent = max(0.0, min(1.0, float(fraction))) * 100
    return (
        f'<div class="sd-progress"><div class="sd-progress-bar" style="width:{percent:.1f}%"></div>'
        f'<div class="sd-progress-text">{text} {detail} ({percent:.0f}%)</div></div>'
    )


def done_html(result: Any, count: int) -> str:
    """The finished bar: how many images, how long, or that the run was interrupted."""
    plural = "s" if count != 1 else ""
    seconds = (getattr(result, "timings", {}) or {}).get("total")
    done = f"Done: {count} image{plural}" + (f" in {seconds:.1f} s" if seconds else "")
    if result.interrupted:
        done = f"Interrupted: kept {count} finished image{plural}"
    return f'<div class="sd-progress sd-done"><div class="sd-progress-text">{html.escape(done)}</div></div>'


def _seconds(value: float) -> str:
    value = max(0.0, float(value))
    return f"{value:.0f} s" if value < 90 else f"{value / 60:.1f} min"


def job_done(job: Any) -> bool:
    done = getattr(job, "done", None)
    if callable(done):
        return bool(done())
    if done is not None:
        return bool(done)
    return getattr(job, "result", None) is not None or getattr(job, "error", None) is not None


def safe_progress(queue: Any, job: Any = None) -> Any:
    """The queue's progress as seen by this job (its place in the queue while it waits)."""
    try:
        return queue.progress(job)
    except Exception:  # noqa: BLE001 - progress is cosmetic
        return None
