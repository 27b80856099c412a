"""``load_predictor``: the one way a command turns a model file into a predictor, by the task
stored in its metadata (``segflow.tasks``).

A semantic model gives :class:`segflow.inference.Predictor`. Instance, panoptic and multi-label
models give their task's predictor (:attr:`segflow.tasks.Task.load_predictor`), which answers
the same calls (``predict``, ``predict_batch``, ``classes``, ``palette``, ``num_classes``,
``meta``; ``segflow.serving.runner.PredictorLike``) and fills the task's fields of
:class:`segflow.inference.predictor.Prediction` (``instances``, ``panoptic``, ``masks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segflow.inference.answers import MetaAnswers
from segflow.inference.options import InferenceOptions


def load_predictor(
    path: str | Path, options: InferenceOptions | None = None, backend: str | None = None
) -> Any:
    """The predictor for the model file at ``path``.

    Args:
        path: Checkpoint or export.
        options: Inference options (semantic models honour them all; other tasks say which).
        backend: ``--backend`` or None (default by suffix).

    Raises:
        CheckpointError: The file is missing or not a segflow model.
        ConfigError: The task's predictor refuses ``backend`` or an option.
    """
    from segflow.inference.predictor import Predictor
    from segflow.tasks import SEMANTIC, get_task, run_file_task

    task = run_file_task(path)
    if task == SEMANTIC:
        return Predictor.from_path(path, options, backend=backend)
    loader = get_task(task).load_predictor
    if loader is None:
        from segflow.errors import ConfigError

        raise ConfigError(f"{path}: {task} models cannot be loaded for prediction yet")
    return loader(Path(path), options, backend)


class WholeImagePredictor(MetaAnswers):
    """What the predictors of instance and panoptic models share: the answers the writers and
    the service read from the model's metadata (``self._meta``, set by the subclass), and no
    tiling (these models see whole images; the service refuses tiled requests for them)."""

    @staticmethod
    def require_torch_backend(backend: str | None, models: str) -> None:
        """Refuses any ``--backend`` but torch (these models are not exported).

        Raises:
            ConfigError: ``backend`` is given and not ``torch`` (one line naming ``models``).
        """
        if backend not in (None, "torch"):
            from segflow.errors import ConfigError

            raise ConfigError(
                f"--backend {backend}: {models} run with the torch backend only; leave --backend out"
            )

    @property
    def stride(self) -> int:
        """Input multiple recorded in the metadata (the network pads internally)."""
        return self._meta.stride

    @property
    def tile_spec(self) -> None:
        """No tiling: the model sees whole images."""
        return None
