"""Figures for people: confusion matrix, per-class IoU, training curves, sample grids.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, so no
pyplot state and no global backend switch happen (safe in servers and threads).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from segflow.constants import IGNORE_INDEX
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.viz.overlay import legend_entries, to_rgb8
from segflow.viz.palette import Color, colorize

DPI = 100
CURVE_PANELS = (("loss", "loss"), ("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy"))
"""(metric suffix in metrics.csv, panel title) of :func:`plot_curves`."""
CURVE_SPLITS = ("train", "val")
MAX_ANNOTATED_CLASSES = 30
"""Confusion matrices with more classes are drawn without numbers in the cells."""


def _save(fig: Figure, out_png: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(fig)
    with atomic_write(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def plot_confusion(
    matrix: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], out_png: str | os.PathLike[str]
) -> None:
    """Row-normalised confusion matrix (rows = ground truth), each cell annotated in %.

    Args:
        matrix: (K, K) counts, rows = ground truth, columns = prediction.
        class_names: K names.
        out_png: Destination PNG; figure size grows with K so labels stay readable.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    num_classes = counts.shape[0]
    if counts.shape != (num_classes, num_classes) or len(class_names) != num_classes:
        raise DataError(f"confusion matrix {counts.shape} does not match {len(class_names)} class names")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
    side = max(5.0, 0.55 * num_classes + 2.5)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    shown = ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of ground-truth row")
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (row-normalised)")
    if num_classes <= MAX_ANNOTATED_CLASSES:
        fontsize = 10 if num_classes <= 12 else 8 if num_classes <= 20 else 6
        for (row, col), value in np.ndenumerate(share):
            text = "-" if math.isnan(value) else f"{100 * value:.0f}"
            color = "white" if not math.isnan(value) and value > 0.5 else "black"
            ax.text(float(col), float(row), text, ha="center", va="center", color=color, fontsize=fontsize)
    fig.tight_layout()
    _save(fig, out_png)


VALUE_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}
"""Backdrop of the per-class IoU values, so the mIoU line never strikes through them."""


def plot_per_class_iou(per_class: dict[str, dict[str, Any]], out_png: str | os.PathLike[str]) -> None:
    """Horizontal bar chart of per-class IoU, value printed at each bar ("n/a" for NaN/null).

    Args:
        per_class: The ``per_class`` dict of a metrics dict (name -> {"iou": ...}).
        out_png: Destination PNG.
    """
    names = list(per_class)
    values = [per_class[name].get("iou") for name in names]
    ious = np.array([np.nan if v is None else float(v) for v in values])
    fig = Figure(figsize=(7.0, max(2.5, 0.35 * len(names) + 1.2)))
    ax = fig.add_subplot()
    positions = np.arange(len(names))
    ax.barh(positions, np.nan_to_num(ious), color="tab:blue")
    ax.set_yticks(positions, labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1)
    ax.set_xlabel("IoU")
    with np.errstate(invalid="ignore"):
        miou = float(np.nanmean(ious)) if np.isfinite(ious).any() else math.nan
    title = "per-class IoU"
    if not math.isnan(miou):  # named in the title: a legend box would hide a bar's value
        ax.axvline(miou, color="tab:red", linestyle="--")
        title += f" (dashed red line: mIoU {miou:.3f})"
    for pos, value in zip(positions, ious, strict=True):
        label = "n/a" if math.isnan(value) else f"{value:.3f}"
        x = (0.0 if math.isnan(value) else value) + 0.01
        ax.text(x, float(pos), label, va="center", fontsize=8, zorder=3, bbox=VALUE_BOX)  # above the line
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, out_png)


def read_epoch_metrics(metrics_csv: str | os.PathLike[str]) -> dict[str, dict[int, float]]:
    """Last non-empty value of each column per epoch from a Lightning CSVLogger metrics.csv.

    Returns:
        column -> {epoch: value}, for every column but ``epoch`` and ``step``.

    Raises:
        DataError: The file is missing or has no ``epoch`` column.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        raise DataError(f"metrics file {path} not found; pass the metrics.csv written by training")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "epoch" not in (reader.fieldnames or []):
            raise DataError(
                f"{path} has no 'epoch' column (columns: {reader.fieldnames}); is it a metrics.csv?"
            )
        series: dict[str, dict[int, float]] = {}
        for row in reader:
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for column, value in row.items():
                if column not in ("epoch", "step") and value not in (None, ""):
                    series.setdefault(column, {})[epoch] = float(value)
    return series


def plot_curves(metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> None:
    """Loss, mIoU and pixel accuracy per epoch, train and val lines, from metrics.csv.

    Columns are ``<split>/<metric>`` (e.g. ``val/miou``); missing ones leave their line
    out, and an empty panel says "no data".

    Args:
        metrics_csv: Lightning CSVLogger file (sparse rows; see :func:`read_epoch_metrics`).
        out_png: Destination PNG.
    """
    series = read_epoch_metrics(metrics_csv)
    fig = Figure(figsize=(15.0, 4.2))
    for index, (metric, title) in enumerate(CURVE_PANELS):
        ax = fig.add_subplot(1, len(CURVE_PANELS), index + 1)
        drawn = False
        for split in CURVE_SPLITS:
            points = series.get(f"{split}/{metric}", {})
            if points:
                epochs = sorted(points)
                ax.plot(epochs, [points[e] for e in epochs], marker="o", label=split)
                drawn = True
        if drawn:
            ax.legend()
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, out_png)


def save_sample_grid(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    palette: Sequence[Color],
    out_png: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """Grid with one row per sample: image | ground truth | prediction, titled columns.

    Args:
        rows: (image (H, W[, C]) uint8/uint16, gt (H, W), pred (H, W)) per sample.
        palette: One (r, g, b) per class.
        out_png: Destination PNG.
        class_names: Names for the legend under the grid (classes present only).
        ignore_index: Label drawn in the ignore colour.
    """
    if not rows:
        raise DataError("save_sample_grid needs at least one (image, gt, pred) row")
    titles = ("image", "ground truth", "prediction")
    first_h, first_w = np.shape(rows[0][1])
    cell_w = 4.0
    cell_h = max(1.5, min(8.0, cell_w * first_h / max(first_w, 1)))
    fig = Figure(figsize=(3 * cell_w, len(rows) * cell_h + 0.8))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    present: set[int] = set()
    for row_axes, (image, gt, pred) in zip(axes, rows, strict=True):
        pictures = (
            to_rgb8(image),
            colorize(gt, palette, ignore_index),
            colorize(pred, palette, ignore_index),
        )
        for ax, picture in zip(row_axes, pictures, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
        present |= set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    labels = np.array(sorted(present)).reshape(1, -1)
    handles = [
        Patch(facecolor=(color[0] / 255, color[1] / 255, color[2] / 255), edgecolor="black", label=name)
        for name, color in legend_entries(labels, palette, class_names, ignore_index)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    fig.tight_layout(rect=(0.0, 0.06 if len(rows) > 1 else 0.12, 1.0, 1.0))
    _save(fig, out_png)
