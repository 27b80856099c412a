"""segflow.inference: the Predictor (one inference path), tiling, streaming, TTA, video.

Names are imported lazily (on first attribute access); nothing here imports torch unless the
torch backend is used, so ONNX inference runs without it. The OpenVINO and LiteRT backend
modules are imported here (their runtimes only when a model is loaded), so ``BACKENDS`` is
complete whichever inference module is imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.inference import litert_backend, openvino_backend  # noqa: F401  (register their backends)
from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.inference.options import InferenceOptions
    from segflow.inference.predictor import LabelBand, Prediction, Predictor
    from segflow.inference.tiling import TileSpec, make_tile_spec, sliding_window
    from segflow.inference.tta import TTAConfig, parse_tta

_SOURCES = {
    "InferenceOptions": "segflow.inference.options",
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
    "InferenceOptions",
    "LabelBand",
    "Prediction",
    "Predictor",
    "TTAConfig",
    "TileSpec",
    "make_tile_spec",
    "parse_tta",
    "sliding_window",
]


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
