"""segflow.viz: palettes, colorized masks, overlays with legends, label PNGs and plots.

The matplotlib plots (``plot_*``, ``save_sample_grid``) are loaded on first access, so
importing segflow.viz stays light for the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segflow.viz.overlay import add_legend, legend_entries, overlay, to_rgb8
from segflow.viz.palette import IGNORE_COLOR, colorize, palette_lut, resolve_palette
from segflow.viz.png import read_label_png, save_image_png, save_label_png

if TYPE_CHECKING:
    from segflow.viz.plots import plot_confusion, plot_curves, plot_per_class_iou, save_sample_grid

_PLOTS = ("plot_confusion", "plot_curves", "plot_per_class_iou", "save_sample_grid")

__all__ = [
    "IGNORE_COLOR",
    "add_legend",
    "colorize",
    "legend_entries",
    "overlay",
    "palette_lut",
    "plot_confusion",
    "plot_curves",
    "plot_per_class_iou",
    "read_label_png",
    "resolve_palette",
    "save_image_png",
    "save_label_png",
    "save_sample_grid",
    "to_rgb8",
]


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from segflow.viz import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
