"""segflow.models: architecture registry, SegmentationNet, checkpoints and their metadata.

Names are imported lazily (on first attribute access), so ``segflow.models.meta`` (the
metadata class, used by ONNX inference) can be imported without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.models.checkpoint import build_meta, load_checkpoint, read_meta, save_model_checkpoint
    from segflow.models.factory import MODELS, create_model, default_normalization
    from segflow.models.meta import CheckpointMeta, DataSummary, migrate_meta
    from segflow.models.net import SegmentationNet
    from segflow.models.source import ModelSource, parse_model_source

_SOURCES = {
    "MODELS": "segflow.models.factory",
    "CheckpointMeta": "segflow.models.meta",
    "DataSummary": "segflow.models.meta",
    "ModelSource": "segflow.models.source",
    "SegmentationNet": "segflow.models.net",
    "build_meta": "segflow.models.checkpoint",
    "create_model": "segflow.models.factory",
    "default_normalization": "segflow.models.factory",
    "load_checkpoint": "segflow.models.checkpoint",
    "migrate_meta": "segflow.models.meta",
    "parse_model_source": "segflow.models.source",
    "read_meta": "segflow.models.checkpoint",
    "save_model_checkpoint": "segflow.models.checkpoint",
}

__all__ = [
    "MODELS",
    "CheckpointMeta",
    "DataSummary",
    "ModelSource",
    "SegmentationNet",
    "build_meta",
    "create_model",
    "default_normalization",
    "load_checkpoint",
    "migrate_meta",
    "parse_model_source",
    "read_meta",
    "save_model_checkpoint",
]

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
