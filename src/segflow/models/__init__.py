"""segflow.models: architecture registry, SegmentationNet and checkpoints."""

from segflow.models.checkpoint import build_meta, load_checkpoint, read_meta, save_model_checkpoint
from segflow.models.factory import MODELS, create_model, default_normalization
from segflow.models.net import SegmentationNet

__all__ = [
    "MODELS",
    "SegmentationNet",
    "build_meta",
    "create_model",
    "default_normalization",
    "load_checkpoint",
    "read_meta",
    "save_model_checkpoint",
]
