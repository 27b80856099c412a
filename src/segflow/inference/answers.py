"""``MetaAnswers``: what every predictor answers from its model's metadata (one owner for the
semantic :class:`segflow.inference.Predictor` and the task predictors of
:mod:`segflow.inference.loader`)."""

from __future__ import annotations

from segflow.models.meta import CheckpointMeta


class MetaAnswers:
    """What every predictor answers from its model's metadata (``self._meta``, set by the
    subclass): the writers, ``segflow predict`` and the service ask these of any task's predictor."""

    _meta: CheckpointMeta

    @property
    def meta(self) -> CheckpointMeta:
        """The model's metadata (:class:`segflow.models.meta.CheckpointMeta`)."""
        return self._meta

    @property
    def classes(self) -> list[str]:
        """Class names in index order (``class_<i>`` where the metadata has none)."""
        return self._meta.class_names

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """One (r, g, b) colour per class."""
        return self._meta.colors

    @property
    def num_classes(self) -> int:
        """K, the number of classes (2 for a single-logit binary model)."""
        return self._meta.num_classes

    @property
    def in_channels(self) -> int:
        """Channels the network expects."""
        return self._meta.in_channels

    @property
    def max_value(self) -> float:
        """``normalization.max_value``: the pixel value the model's training mapped to 1.0."""
        return self._meta.max_value
