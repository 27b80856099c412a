"""segflow.inference: the Predictor (one inference path), tiling, streaming, TTA, video."""

from segflow.inference.predictor import LabelBand, Prediction, Predictor
from segflow.inference.tiling import TileSpec, make_tile_spec, sliding_window
from segflow.inference.tta import TTAConfig, parse_tta

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
