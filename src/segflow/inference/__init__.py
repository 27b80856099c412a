"""segflow.inference: the Predictor (one inference path), tiling, streaming, TTA, video.

Names are imported lazily (on first attribute access); nothing here imports torch unless the
torch backend is used, so ONNX inference runs without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segflow.inference.predictor import LabelBand, Prediction, Predictor
    from segflow.inference.tiling import TileSpec, make_tile_spec, sliding_window
    from segflow.inference.tta import TTAConfig, parse_tta

_SOURCES = {
    "LabelBand": "segflow.inference.predictor",
    "Prediction": "segflow.inference.predictor",
    "Predictor": "segflow.inference.predictor",
    "TTAConfig": "segflow.inference.tta",
    "TileSpec": "segflow.inference.tiling",
    "make_tile_spec": "segflow.inference.tiling",
    "parse_tta": "segflow.inference.tta",
    "sliding_window": "segflow.inference.tiling",
}

__all__ = [
    "LabelBand",
    "Prediction",
    "Predictor",
    "TTAConfig",
    "TileSpec",
    "make_tile_spec",
    "parse_tta",
    "sliding_window",
]


def __getattr__(name: str) -> Any:
    """Imports the module defining ``name`` on first access (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
