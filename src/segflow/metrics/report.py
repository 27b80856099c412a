"""metrics.json (NaN written as null, atomic) and a Markdown rendering of a metrics dict."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from segflow.io_utils import atomic_write
from segflow.metrics.scores import PER_CLASS_KEYS, SUMMARY_KEYS

MISSING = "n/a"
"""How an undefined (NaN / null) score is shown in Markdown."""


def to_json_safe(value: Any) -> Any:
    """Copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinities become None (JSON null); NumPy scalars and arrays become Python
    numbers and lists; tuples become lists. Dict keys are kept.
    """
    if isinstance(value, dict):
        return {key: to_json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, np.generic):
        return to_json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_metrics_json(path: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    """Writes ``metrics`` as indented JSON through ``atomic_write`` (NaN -> null).

    Args:
        path: Destination, e.g. ``runs/eval/metrics.json``.
        metrics: Dict from :func:`segflow.metrics.metrics_from_counts`.
    """
    text = json.dumps(to_json_safe(metrics), indent=2, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~-])")


def markdown_escape(text: str) -> str:
    """``text`` shown literally in Markdown (table cells too): special characters escaped,
    line breaks turned into spaces. The one rule for data text (class names, file paths) in
    every ``metrics.md``."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def train_overlap_line(metrics: dict[str, Any]) -> str | None:
    """``metrics.md``'s train-overlap sentence (image paths escaped); None when ``train_overlap`` is absent
    or null (predictions scored without a model, or a checkpoint without train image hashes).

    The sentence is :meth:`segflow.data.fingerprint.TrainOverlap.message`'s, the console's.
    """
    overlap = metrics.get("train_overlap")
    if overlap is None:
        return None
    from segflow.data.fingerprint import TrainOverlap

    found = TrainOverlap.from_dict(overlap)
    shown = TrainOverlap(found.count, found.total, [markdown_escape(path) for path in found.examples])
    return "Train overlap: " + shown.message()


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value):.4f}"


def render_markdown(metrics: dict[str, Any]) -> str:
    """Summary table, train overlap line and per-class table of a metrics dict (NaN or null
    shown as ``n/a``; class names and paths escaped by :func:`markdown_escape`).

    Args:
        metrics: Dict from :func:`segflow.metrics.metrics_from_counts`, or loaded from
            ``metrics.json``.

    Returns:
        Markdown text ending with a newline.
    """
    lines = ["## Summary", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(metrics.get(key))} |" for key in SUMMARY_KEYS]
    for key in ("num_images", "boundary_tolerance_px", "ignore_index"):
        if metrics.get(key) is not None:
            lines.append(f"| {key} | {metrics[key]} |")
    overlap = train_overlap_line(metrics)
    if overlap is not None:
        lines += ["", overlap]
    lines += ["", "## Per class", "", "| class | " + " | ".join(PER_CLASS_KEYS) + " |"]
    lines.append("|---" * (len(PER_CLASS_KEYS) + 1) + "|")
    for name, scores in metrics.get("per_class", {}).items():
        cells = " | ".join(_fmt(scores.get(key)) for key in PER_CLASS_KEYS)
        lines.append(f"| {markdown_escape(name)} | {cells} |")
    lines += [
        "",
        f"`{MISSING}`: undefined (class absent from ground truth and prediction, or the class whose "
        "index is ignore_index, which is never scored; see docs/metrics.md).",
    ]
    return "\n".join(lines) + "\n"
