"""``task: instance``: Mask R-CNN through the shared training, evaluation, prediction and serving paths.

Registers :data:`INSTANCE_TASK` in :data:`segflow.tasks.TASKS` on import. A run's config::

    task: instance
    data: data.yaml                 # folder (instances/<split>/<stem>.png), shapes or coco; `things:`
    model: {arch: maskrcnn, encoder: resnet18, encoder_weights: null,
            kwargs: {min_size: 128, max_size: 512, score_threshold: 0.5}}

``model.kwargs.score_threshold`` and ``mask_threshold`` are stored in the checkpoint
(``task_options``) for prediction and serving; every other key goes to
:func:`segflow.instance.maskrcnn.create_maskrcnn`. ``loss``, ``input_policy`` and
``evaluate.tta`` do not apply (Mask R-CNN has its own losses and resizing) and are refused when
set. ``metrics.json`` holds COCO mask AP of the best checkpoint on val (``map``, ``map50``,
``map75``, ``map_small`` / ``medium`` / ``large``, null where no object has that size,
``per_class_ap``), from pycocotools' ``COCOeval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segflow.errors import ConfigError
from segflow.tasks import INSTANCE, Task, register_task

TASK_OPTION_KEYS = ("score_threshold", "mask_threshold")
"""``model.kwargs`` keys that are prediction settings (stored in ``task_options``), not network ones."""
EVAL_BATCH = 4
DEFAULT_LOSS = "1.0*ce + 1.0*dice"


def check_config(config: Any) -> None:
    """Refuses training settings that do not apply to Mask R-CNN (one line each)."""
    from segflow.instance.maskrcnn import ARCH

    if config.model.arch.lower() != ARCH:
        raise ConfigError(
            f"task instance trains model.arch {ARCH} (got {config.model.arch!r}); set model.arch: {ARCH}"
        )
    if config.loss.terms != DEFAULT_LOSS or config.loss.class_weights is not None or config.loss.options:
        raise ConfigError(
            "loss does not apply to task instance (Mask R-CNN trains its own five losses); remove it"
        )
    if config.evaluate.tta is not None:
        raise ConfigError(
            "evaluate.tta does not apply to task instance (no test-time augmentation); remove it"
        )


def build(config: Any, spec: Any, class_share: list[float]) -> tuple[Any, Any]:
    """``Task.build``: Mask R-CNN, its metadata and the instance data loaders for one run.

    Raises:
        ConfigError: Settings that do not apply, a bad model option, class 0 being a thing.
        DataError: The dataset has no instances.
    """
    from segflow.constants import default_palette
    from segflow.data.fingerprint import fingerprint
    from segflow.instance.datamodule import InstanceDataModule
    from segflow.instance.maskrcnn import ARCH, create_maskrcnn
    from segflow.instance.module import InstanceModule
    from segflow.instance.predictor import DEFAULT_MASK_THRESHOLD, DEFAULT_SCORE_THRESHOLD, _unit
    from segflow.models.meta import CheckpointMeta, DataSummary
    from segflow.training.engine import TRAINING_SPLITS

    check_config(config)
    datamodule = InstanceDataModule(spec, config)
    probe = datamodule.train_set
    classes = list(probe.classes)
    if 0 in probe.things:
        raise ConfigError(
            f"class 0 ({classes[0]!r}) is a thing, but Mask R-CNN reserves label 0 for the background: "
            "list a "
            "background class first in the data's classes"
        )
    palette = [list(c) for c in (probe.palette or default_palette(len(classes)))]
    m = config.model
    kwargs = dict(m.kwargs)
    thresholds = {
        "score_threshold": kwargs.pop("score_threshold", DEFAULT_SCORE_THRESHOLD),
        "mask_threshold": kwargs.pop("mask_threshold", DEFAULT_MASK_THRESHOLD),
    }
    for key, value in thresholds.items():
        try:
            thresholds[key] = _unit(f"model.kwargs.{key}", value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    in_channels = m.in_channels or probe.in_channels
    net = create_maskrcnn(m.encoder, len(classes), in_channels, m.encoder_weights, m.mean, m.std, **kwargs)
    built: Any = net
    arch_kwargs = dict(built.arch_kwargs)
    transform: Any = built.transform
    raw = {
        "model": {
            "arch": ARCH,
            "encoder": m.encoder,
            "in_channels": in_channels,
            "num_classes": len(classes),
            "arch_kwargs": arch_kwargs,
        },
        "classes": classes,
        "palette": palette,
        "ignore_index": spec.ignore_index,
        "normalization": {
            "mean": [float(v) for v in transform.image_mean],
            "std": [float(v) for v in transform.image_std],
            "max_value": float(probe.max_value),
        },
        "input_policy": {"mode": "keep", "multiple": 1},
        "class_distribution": [float(v) for v in class_share] if class_share else None,
        "data": DataSummary.from_spec(spec, classes, probe.in_channels).model_dump(mode="json"),
        "data_fingerprint": fingerprint(probe.reader, TRAINING_SPLITS).summary().model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "task": INSTANCE,
        "task_options": {
            "things": list(probe.things),
            **thresholds,
            "min_size": arch_kwargs["min_size"],
            "max_size": arch_kwargs["max_size"],
        },
    }
    meta = _new_meta(raw)
    module = InstanceModule(
        net,
        classes,
        list(probe.things),
        spec.ignore_index,
        config.optimizer,
        config.scheduler,
        meta,
        score_threshold=thresholds["score_threshold"],
        mask_threshold=thresholds["mask_threshold"],
        log_every_n_steps=config.trainer.log_every_n_steps,
    )
    assert isinstance(meta, CheckpointMeta)
    return module, datamodule


def _new_meta(raw: dict[str, Any]) -> Any:
    import torch

    import segflow
    from segflow.constants import CHECKPOINT_FORMAT_VERSION
    from segflow.models.checkpoint import to_primitive
    from segflow.models.meta import CheckpointMeta

    full = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "segflow_version": segflow.__version__,
        "torch_version": str(torch.__version__),
        "tta": None,
        **raw,
    }
    return CheckpointMeta.of(to_primitive(full, "meta"), "new checkpoint")


def score_model(model: Any, meta: Any, dataset: Any, mask_threshold: float | None = None) -> dict[str, Any]:
    """COCO mask AP of a Mask R-CNN on every image of an :class:`InstanceDataset` split.

    Every detection of a thing class is scored (up to torchvision's ``box_detections_per_img``,
    from its ``box_score_thresh``), its mask cut at ``mask_threshold`` (default: the
    checkpoint's); masks may overlap, as COCO results do.
    """
    import torch

    from segflow.instance.metrics import coco_mask_ap
    from segflow.instance.predictor import DEFAULT_MASK_THRESHOLD, detections
    from segflow.instance.rle import encode_mask

    cut = (
        meta.task_options.get("mask_threshold", DEFAULT_MASK_THRESHOLD)
        if mask_threshold is None
        else mask_threshold
    )
    things = list(dataset.things)
    gt: list[dict[str, Any]] = []
    dt: list[dict[str, Any]] = []
    model.eval()
    for start in range(0, len(dataset), EVAL_BATCH):
        indices = range(start, min(start + EVAL_BATCH, len(dataset)))
        records = [dataset.gt_record(i) for i in indices]
        images = [dataset[i][0] for i in indices]
        with torch.inference_mode():
            outputs = model(images)
        for index, record, output in zip(indices, records, outputs, strict=True):
            gt.append(record)
            masks, labels, scores = detections(output, things, 0.0, cut)
            dt += [
                {"image_id": index, "category_id": int(c), "score": float(s), "segmentation": encode_mask(mk)}
                for mk, c, s in zip(masks, labels, scores, strict=True)
            ]
    return coco_mask_ap(gt, dt, dataset.classes, things)


def evaluate_model(
    model_path: Path, spec: Any, split: str, out_dir: Path | None = None, **_: Any
) -> dict[str, Any]:
    """``Task.evaluate_model``: COCO mask AP of a Mask R-CNN checkpoint on one split.

    Writes ``out_dir/metrics.json`` (atomic) when ``out_dir`` is given.

    Raises:
        CheckpointError: Not an instance checkpoint. DataError: the data's classes differ from the model's.
    """
    import logging

    from segflow.instance.predictor import load_maskrcnn
    from segflow.instance.targets import InstanceDataset
    from segflow.models.meta import DataSummary, check_data_match

    model, meta = load_maskrcnn(model_path)
    dataset = InstanceDataset(spec, split)
    summary = DataSummary.from_spec(dataset.reader.spec, dataset.classes, dataset.in_channels)
    check_data_match(meta, summary, str(model_path), logging.getLogger(__name__).warning)
    metrics = {
        **score_model(model, meta, dataset),
        "model": str(model_path),
        "split": split,
        "task": INSTANCE,
    }
    if out_dir is not None:
        write_metrics(metrics, Path(out_dir))
    return metrics


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> None:
    """``out_dir/metrics.json`` (atomic, NaN as null)."""
    from segflow.metrics.report import save_metrics_json

    out_dir.mkdir(parents=True, exist_ok=True)
    save_metrics_json(out_dir / "metrics.json", metrics)


def final_metrics(best: Path, spec: Any, tta: Any, run_dir: Path) -> dict[str, Any]:
    """``Task.final_metrics``: COCO mask AP of the best checkpoint on val, into ``run_dir/metrics.json``."""
    return evaluate_model(best, spec, "val", run_dir)


def evaluate_predictions(pred_dir: Path, spec: Any, split: str, out_dir: Path, **_: Any) -> dict[str, Any]:
    """``Task.evaluate_predictions``: ``segflow.instance.evaluate.evaluate_instance_predictions``."""
    from segflow.instance.evaluate import evaluate_instance_predictions

    return evaluate_instance_predictions(pred_dir, spec, split, out_dir)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def summary(metrics: dict[str, Any]) -> str:
    """The line ``segflow evaluate`` prints for instance metrics (``instance_summary``'s)."""
    from segflow.instance.evaluate import instance_summary

    return instance_summary(metrics)


def instance_markdown(metrics: dict[str, Any]) -> str:
    """Summary and per-class tables of instance metrics (the model card's validation section)."""
    from segflow.instance.metrics import METRIC_KEYS
    from segflow.metrics.report import markdown_escape

    lines = ["## Summary", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(metrics.get(key))} |" for key in METRIC_KEYS]
    for key in ("num_images", "num_gt", "num_dt"):
        if metrics.get(key) is not None:
            lines.append(f"| {key} | {metrics[key]} |")
    lines += ["", "## Per class (mask AP@[.5:.95])", "", "| class | AP |", "|---|---|"]
    lines += [
        f"| {markdown_escape(name)} | {_fmt(ap)} |" for name, ap in metrics.get("per_class_ap", {}).items()
    ]
    lines += [
        "",
        "COCO mask AP from pycocotools' COCOeval (iouType segm); `n/a`: no object of that size or class.",
    ]
    return "\n".join(lines) + "\n"


def load_predictor(path: Path, options: Any = None, backend: str | None = None) -> Any:
    """``Task.load_predictor``: :class:`segflow.instance.predictor.InstancePredictor`."""
    from segflow.instance.predictor import InstancePredictor

    return InstancePredictor.from_path(path, options, backend)


INSTANCE_TASK = register_task(
    Task(
        INSTANCE,
        "one mask, class and score per object (torchvision Mask R-CNN)",
        build=build,
        final_metrics=final_metrics,
        monitor="val/map",
        monitor_mode="max",
        sample_grid=False,
        evaluate_model=evaluate_model,
        evaluate_predictions=evaluate_predictions,
        summary=summary,
        load_predictor=load_predictor,
        markdown=instance_markdown,
    )
)
