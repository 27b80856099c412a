"""``task: multilabel``: registers the multi-label :class:`~segflow.tasks.Task`.

A run trains ``segflow.models.create_model(arch, ..., num_classes=K)`` (one output channel per
class, no background channel unless the data has one) with BCE + Dice on a multi-label data
format (:mod:`segflow.data.readers.multilabel`), picks ``best.ckpt`` by ``val/miou`` at the
thresholds chosen on val, and stores them in the checkpoint (``task_options.thresholds``).
Prediction, export and serving use the one :class:`~segflow.inference.Predictor`, which reads
the task from the checkpoint. The stored palette gives every class a visible colour
(:func:`multilabel_palette`: no black class 0 when the data gives no palette).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segflow.multilabel.evaluate import evaluate_model, evaluate_predictions, final_metrics, summary
from segflow.tasks import MULTILABEL, Task, register_task

MIN_CLASSES = 2
"""A model with one sigmoid output is a binary semantic model: train it as ``task: semantic``."""


def multilabel_palette(data_palette: Any, num_classes: int) -> list[list[int]]:
    """RGB colour per class of a multi-label model (stored in its metadata).

    A multi-label model has no background class, so when the data gives no palette of its own
    (``data_palette`` is None or segflow's :func:`~segflow.constants.default_palette`, whose
    class 0 is black) every class gets a visible colour: the default palette shifted by one
    (class ``k`` gets default colour ``k + 1``). A palette the data gives is kept.

    Args:
        data_palette: The dataset's palette (``reader.palette``), or None.
        num_classes: Number of classes.

    Returns:
        ``num_classes`` ``[r, g, b]`` lists.
    """
    from segflow.constants import default_palette

    given = [tuple(int(v) for v in colour) for colour in data_palette or []][:num_classes]
    if len(given) == num_classes and given != default_palette(num_classes):
        return [list(colour) for colour in given]
    return [list(colour) for colour in default_palette(num_classes + 1)[1:]]


def build(config: Any, spec: Any, class_share: list[float]) -> tuple[Any, Any]:
    """Network, loss, metadata and loaders of one multi-label run (``Task.build``).

    Raises:
        ConfigError: Fewer than 2 classes, ``loss.class_weights`` set, or a loss that is not
            multi-label.
    """
    from segflow.data.fingerprint import fingerprint
    from segflow.errors import ConfigError
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta
    from segflow.models.meta import DataSummary
    from segflow.multilabel.dataset import MultilabelDataModule, MultilabelDataset
    from segflow.multilabel.losses import DEFAULT_LOSS, create_multilabel_loss
    from segflow.multilabel.module import MultilabelModule
    from segflow.multilabel.outputs import DEFAULT_THRESHOLD, THRESHOLDS_KEY
    from segflow.training.engine import TRAINING_SPLITS

    probe = MultilabelDataset(spec, "train")
    classes = list(probe.classes)
    if len(classes) < MIN_CLASSES:
        raise ConfigError(
            f"task multilabel needs at least {MIN_CLASSES} classes, the data has {classes}; "
            "train one class as a binary task: semantic model"
        )
    if config.loss.class_weights is not None:
        raise ConfigError(
            "loss.class_weights is for semantic cross-entropy; for task multilabel weigh positives "
            "with loss.options.bce.pos_weight (one number per class)"
        )
    terms = config.loss.terms if "loss" in config.model_fields_set else DEFAULT_LOSS
    loss = create_multilabel_loss(terms, len(classes), config.loss.options)
    m = config.model
    net = create_model(
        m.arch,
        encoder=m.encoder,
        in_channels=m.in_channels or probe.in_channels,
        num_classes=len(classes),
        encoder_weights=m.encoder_weights,
        mean=m.mean,
        std=m.std,
        **m.kwargs,
    )
    datamodule = MultilabelDataModule(spec, config, net.output_stride)
    palette = multilabel_palette(probe.palette, len(classes))
    meta = build_meta(
        net,
        classes=classes,
        palette=palette,
        ignore_index=spec.ignore_index,
        normalization={"max_value": float(probe.max_value)},
        input_policy=config.input_policy.model_dump(),
        class_distribution=class_share if len(class_share) == len(classes) else None,
        config=config.model_dump(mode="json"),
        tta=config.evaluate.tta,
        data=DataSummary.from_spec(spec, classes, probe.in_channels),
        data_fingerprint=fingerprint(probe.reader, TRAINING_SPLITS).summary(),
        task=MULTILABEL,
        task_options={THRESHOLDS_KEY: [DEFAULT_THRESHOLD] * len(classes)},
    )
    module = MultilabelModule(
        net,
        loss,
        classes,
        config.optimizer,
        config.scheduler,
        meta,
        channels_last=config.trainer.channels_last,
        log_every_n_steps=config.trainer.log_every_n_steps,
    )
    return module, datamodule


def load_predictor(path: Path, options: Any = None, backend: str | None = None) -> Any:
    """The :class:`~segflow.inference.Predictor` of a multi-label model (it reads the task itself)."""
    from segflow.inference.predictor import Predictor

    return Predictor.from_path(path, options, backend=backend)


register_task(
    Task(
        MULTILABEL,
        "one sigmoid channel per class, a pixel may carry several",
        build=build,
        final_metrics=final_metrics,
        monitor="val/miou",
        monitor_mode="max",
        sample_grid=False,
        evaluate_model=evaluate_model,
        evaluate_predictions=evaluate_predictions,
        summary=summary,
        load_predictor=load_predictor,
    )
)
