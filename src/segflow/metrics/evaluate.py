"""``segflow evaluate``: exact split metrics for a model, or for a folder of predicted masks.

Both paths feed one :class:`SegmentationMetrics` (one integer confusion matrix over the whole
split) and write the same report: ``metrics.json``, ``metrics.md``, ``confusion.png`` and
``per_class_iou.png``.

Under ``torchrun``/``srun`` (a :class:`~segflow.distributed.launch.Topology` with more than one
process) each rank scores its own share of the split and the integer counts (confusion matrix,
boundary-F1 counts, image count) are summed over a gloo process group before any ratio is taken,
so rank 0 writes exactly the metrics of a one-process run; the other ranks write nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import Progress

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE
from segflow.data import create_dataset
from segflow.data.check import require_labelled_pixel
from segflow.data.spec import DataSpec
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.metrics import SegmentationMetrics, render_markdown, save_metrics_json

if TYPE_CHECKING:
    from segflow.distributed.launch import Topology

SHARD_WAIT = timedelta(hours=24)
"""How long the first rank to finish its share of a distributed evaluation waits for the last
(a rank that dies ends the wait at once: its connections close)."""


def _progress(total: int, label: str) -> Progress:
    progress = Progress(transient=True)
    progress.add_task(label, total=total)
    return progress


def score_pairs(
    pairs: Iterator[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int,
    class_names: list[str],
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    sum_over_ranks: bool = False,
) -> dict[str, Any]:
    """Accumulates ``(prediction (H, W), ground truth (H, W))`` pairs into one metrics dict.

    Args:
        pairs: Predicted class indices and ground-truth labels (class indices and
            ``ignore_index``), one pair per image.
        num_classes: Number of classes K.
        ignore_index: Ignored label (may be a class index: that class is not scored).
        class_names: K names.
        boundary_tolerance: Boundary F1 match distance in pixels (``boundary_tolerance_px``).
        sum_over_ranks: Each rank of the initialised default process group scored its share of
            the split: the integer counts are summed over all ranks (``all_reduce``) before the
            ratios, and every rank returns the whole split's metrics. Every rank must call it.
    """
    # Without sum_over_ranks one process scores the whole split, even inside a DDP job (the
    # final evaluation after training): never wait for other ranks.
    metric = SegmentationMetrics(
        num_classes,
        ignore_index=ignore_index,
        class_names=class_names,
        boundary_tolerance=boundary_tolerance,
        sync_on_compute=False,
    )
    for pred, target in pairs:
        metric.update(
            torch.from_numpy(np.asarray(pred, dtype=np.int64))[None],
            torch.from_numpy(np.asarray(target, dtype=np.int64))[None],
        )
    if sum_over_ranks:
        import torch.distributed as dist

        for counts in (metric.confmat, metric.boundary, metric.num_images):  # int64: exact sums
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return metric.compute()


def shard_indices(dataset: Any, rank: int, world_size: int) -> list[int]:
    """The sample indices rank ``rank`` of ``world_size`` scores; every index goes to one rank.

    Samples are dealt round-robin in groups: one image each, or for a volume dataset each run
    of consecutive slices of one case (a volume is scored whole, on one rank).

    Args:
        dataset: A :class:`segflow.data.dataset.SegmentationDataset`.
        rank: This process's global rank.
        world_size: Number of processes.

    Returns:
        Ascending indices.
    """
    if world_size == 1:
        return list(range(len(dataset)))
    if VolumeScores.of(dataset) is None:
        return list(range(rank, len(dataset), world_size))
    indices, group, previous = [], -1, None
    for index, sample in enumerate(dataset.samples):
        case = dataset.reader.case(sample).name
        if case != previous:
            group, previous = group + 1, case
        if group % world_size == rank:
            indices.append(index)
    return indices


def _gathered_volumes(volumes: VolumeScores, world_size: int) -> list[dict[str, Any]]:
    """Every rank's per-volume entries, in split order (rank r scored groups r, r + W, ...)."""
    from segflow.distributed.launch import gather_objects

    parts: list[list[dict[str, Any]]] = gather_objects(volumes.per_volume)
    keyed = [(j * world_size + r, entry) for r, part in enumerate(parts) for j, entry in enumerate(part)]
    return [entry for _, entry in sorted(keyed, key=lambda item: item[0])]


def write_report(metrics: dict[str, Any], out_dir: Path) -> None:
    """Writes metrics.json, metrics.md, confusion.png (row-normalised) and per_class_iou.png."""
    from segflow.viz import plot_confusion, plot_per_class_iou

    out_dir.mkdir(parents=True, exist_ok=True)
    save_metrics_json(out_dir / "metrics.json", metrics)
    with atomic_write(out_dir / "metrics.md") as tmp:
        tmp.write_text(render_markdown(metrics) + volume_markdown(metrics))
    names = list(metrics["per_class"])
    plot_confusion(np.asarray(metrics["confusion_matrix"]), names, out_dir / "confusion.png")
    plot_per_class_iou(metrics["per_class"], out_dir / "per_class_iou.png")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _model_pairs(
    model: Path, predictor: Any, dataset: Any, indices: list[int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with _progress(len(indices), f"evaluating {model.name}") as progress:
        for index in indices:
            item = dataset[index]
            yield predictor.predict(item["image"]).labels, item["mask"]
            progress.advance(progress.task_ids[0])


def _folder_pairs(folder: Path, dataset: Any, indices: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from segflow.viz import read_label_png

    missing = [s.name for s in dataset.samples if not (folder / f"{s.name}.png").is_file()]
    if missing:
        raise DataError(
            f"{folder}: no prediction for {len(missing)} image(s) of the split, e.g. "
            f"{missing[0]}.png; predictions must be index PNGs named like the images"
        )
    num_classes = len(dataset.classes)
    for index in indices:
        sample = dataset.samples[index]
        path = folder / f"{sample.name}.png"
        pred = read_label_png(path)
        mask = dataset[index]["mask"]  # a stored value that maps to no label is a DataError here
        if pred.shape != mask.shape:
            raise DataError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                f"{mask.shape[1]}x{mask.shape[0]}; predictions must have the image's size"
            )
        if pred.size and int(pred.max()) >= num_classes:
            value = int(pred.max())
            raise DataError(
                f"{path}: prediction value {value} ({int((pred == value).sum())} pixels) is not a class "
                f"0..{num_classes - 1}; predictions must be class-index PNGs for this dataset's classes"
            )
        yield pred, mask


def evaluate_model(
    model: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    backend: str | None = None,
    tta: Any = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    warn: Callable[[str], None] | None = None,
    topology: Topology | None = None,
    upsample: str = "probs",
) -> dict[str, Any]:
    """Scores a checkpoint or export on a split through the one inference path (Predictor).

    Args:
        model: Checkpoint (``.ckpt``) or segflow export (``.onnx``).
        spec: The dataset.
        split: Split name.
        out_dir: Where to write the report; None writes nothing.
        backend: Inference backend name; None picks one from the file suffix.
        tta: Test-time augmentation (see ``segflow.inference.tta``): None (off), an explicit
            value, or ``"checkpoint"`` (the views stored in the model, see
            :meth:`segflow.models.meta.CheckpointMeta.resolve_tta`); recorded as ``metrics["tta"]``.
        warn: Receives one line per way the data differs from what the model was trained on,
            and one line when evaluated images were among its training images (None:
            ``warnings.warn``).
        boundary_tolerance: Boundary F1 match distance in pixels, recorded as
            ``metrics["boundary_tolerance_px"]``.
        topology: This process's place in a ``torchrun``/``srun`` job
            (:func:`segflow.distributed.launch.detect_topology`); with more than one process
            each rank scores :func:`shard_indices`, the counts are summed over a gloo process
            group (set up here unless one exists), and only rank 0 warns and writes the report.
            Every rank of the job must call it. None: this process scores the whole split.
        upsample: ``"probs"`` or ``"labels"`` (:class:`segflow.inference.options.InferenceOptions`
            ``upsample``: labels argmaxed at the network's resolution and enlarged by nearest
            neighbour); recorded as ``metrics["upsample"]``.

    Returns:
        The metrics dict (layout in docs/metrics.md), with ``train_overlap``: ``{count,
        total, examples}`` for a model whose checkpoint stores its train images' content
        hashes (``segflow.data.fingerprint``), None for one that does not. Under a multi-process
        ``topology`` every rank returns the whole split's metrics (``train_overlap`` only on
        rank 0, None elsewhere).

    Raises:
        DataError: The split has no labelled pixel (the ``data check`` rule; nothing is
            scored or written), or the model predicts other classes than the data has
            (checked before any image is scored, like the other differences, which are warnings).
    """
    from segflow.distributed.launch import Topology
    from segflow.inference import InferenceOptions, Predictor
    from segflow.models.meta import DataSummary, check_data_match

    ranks = topology or Topology()
    say = (warn or _warn) if ranks.is_main else _silent
    options = InferenceOptions(tta=tta, upsample=upsample)  # refusals before any image is read
    dataset = create_dataset(spec, split)
    require_labelled_pixel(dataset.reader, split, dataset.samples)  # before any inference
    classes = list(dataset.classes)
    predictor = Predictor.from_path(model, options, backend=backend)
    summary = DataSummary.from_spec(spec, classes, dataset.in_channels)
    check_data_match(predictor.meta, summary, str(model), say)
    overlap = _train_overlap(predictor.meta, dataset, say) if ranks.is_main else None
    views = predictor.tta  # resolved by the Predictor ("checkpoint" -> the stored views)
    volumes = VolumeScores.of(dataset)
    indices = shard_indices(dataset, ranks.rank, ranks.world_size)
    pairs = _model_pairs(Path(model), predictor, dataset, indices)
    samples = [dataset.samples[i] for i in indices]
    scored = pairs if volumes is None else volumes.collect(zip(samples, pairs, strict=True))
    metrics = _score_on_ranks(scored, dataset, volumes, ranks, boundary_tolerance)
    metrics["tta"] = None if views is None else {**asdict(views), "scales": list(views.scales)}
    metrics["upsample"] = predictor.options.upsample
    metrics["train_overlap"] = overlap
    if out_dir is not None and ranks.is_main:
        write_report(metrics, Path(out_dir))
    return metrics


def _silent(message: str) -> None:
    """Drops a warning (ranks other than 0: rank 0 gives it once)."""


def _train_overlap(meta: Any, dataset: Any, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """Evaluated images whose content the model was trained on (None when it does not know)."""
    from segflow.data.fingerprint import train_overlap

    stored = meta.data_fingerprint
    if stored is None or stored.train_images is None:
        return None
    overlap = train_overlap(stored.train_images, dataset.reader, dataset.samples)
    if overlap.count:
        warn(overlap.message())
    return overlap.to_dict()


def evaluate_predictions(
    predictions: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    topology: Topology | None = None,
) -> dict[str, Any]:
    """Scores existing index-PNG masks (same stems as the split's images) with no model.

    For a volume dataset (``format: nifti`` / ``dicom``) the predictions are label volumes
    ``<case>.nii.gz`` (or ``.nii``), matched by case name, scored per slice and per volume
    (``per_volume`` and ``per_volume_mean`` in the metrics; see :class:`VolumeScores`).

    Args:
        predictions: Folder of ``<sample name>.png`` class-index masks (volumes: ``<case>.nii.gz``).
        spec: The dataset (ground truth and label rules).
        split: Split name.
        out_dir: Where to write the report; None writes nothing.
        boundary_tolerance: Boundary F1 match distance in pixels.
        topology: As for :func:`evaluate_model`: with more than one process each rank scores
            its share and only rank 0 writes the report.

    Raises:
        DataError: Missing folder or prediction, a split with no labelled pixel (the
            ``data check`` rule; nothing is written), a size mismatch, a prediction value that
            is no class, or a ground-truth value that maps to no label.
    """
    folder = Path(predictions)
    if not folder.is_dir():
        raise DataError(f"--predictions {folder}: folder not found")
    from segflow.distributed.launch import Topology

    ranks = topology or Topology()
    dataset = create_dataset(spec, split)
    require_labelled_pixel(dataset.reader, split, dataset.samples)
    volumes = VolumeScores.of(dataset)
    indices = shard_indices(dataset, ranks.rank, ranks.world_size)
    if volumes is None:
        pairs = _folder_pairs(folder, dataset, indices)
    else:
        pairs = volumes.collect(_volume_pairs(folder, dataset, indices))
    metrics = _score_on_ranks(pairs, dataset, volumes, ranks, boundary_tolerance)
    if out_dir is not None and ranks.is_main:
        write_report(metrics, Path(out_dir))
    return metrics


def _score_on_ranks(
    pairs: Iterator[tuple[np.ndarray, np.ndarray]],
    dataset: Any,
    volumes: VolumeScores | None,
    ranks: Topology,
    boundary_tolerance: int,
) -> dict[str, Any]:
    """Scores this rank's pairs inside the job's process group: the integer counts (and the
    per-volume rows) of every rank are combined, so each rank returns the whole split's metrics."""
    from segflow.distributed.launch import process_group

    classes = list(dataset.classes)
    with process_group(ranks, timeout=SHARD_WAIT):
        metrics = score_pairs(
            pairs,
            len(classes),
            dataset.labels.ignore_index,
            classes,
            boundary_tolerance,
            sum_over_ranks=ranks.distributed,
        )
        if volumes is not None:
            if ranks.distributed:
                volumes.per_volume = _gathered_volumes(volumes, ranks.world_size)
            metrics.update(volumes.results())
    return metrics


# --- volumes (format: nifti / dicom) ---------------------------------------------------------

VOLUME_FORMATS = ("nifti", "dicom")
"""Dataset formats whose samples are slices of volumes (scored per volume as well)."""
VOLUME_KEYS = ("dice", "iou", "hd95_mm", "assd_mm")
"""Per-volume metrics of each foreground class."""


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def volume_class_scores(pred: np.ndarray, gt: np.ndarray, spacing: Any) -> dict[str, float | int]:
    """Dice, IoU, ``hd95_mm`` and ``assd_mm`` of one class in one volume.

    Args:
        pred: ``(X, Y, Z)`` bool, voxels predicted as the class (ignored voxels already False).
        gt: ``(X, Y, Z)`` bool, ground-truth voxels of the class (ignored voxels False).
        spacing: Voxel size in mm per axis.

    Returns:
        ``dice`` = 2|P&G| / (|P| + |G|) and ``iou`` = |P&G| / |P|G| (NaN when both are empty;
        0 when only one is), ``hd95_mm`` / ``assd_mm`` from
        :func:`segflow.domains.medical.surface.surface_metrics` (NaN when either is empty),
        and the voxel counts ``pred_voxels`` / ``gt_voxels``.
    """
    from segflow.domains.medical.surface import surface_metrics

    inter = int(np.count_nonzero(pred & gt))
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    union = n_pred + n_gt - inter
    nan = float("nan")
    return {
        "dice": 2 * inter / (n_pred + n_gt) if n_pred + n_gt else nan,
        "iou": inter / union if union else nan,
        **surface_metrics(pred, gt, spacing),
        "pred_voxels": n_pred,
        "gt_voxels": n_gt,
    }


class VolumeScores:
    """Per-volume metrics of a volume dataset, collected while its slices are scored.

    Each case's slices (samples ``<case>/z<k>``, in order) are stacked back into the RAS label
    volume and scored per foreground class (classes ``1..K-1`` that are scored; class 0 is the
    background, left out as MONAI's ``include_background=False`` does) with
    :func:`volume_class_scores`, in mm through the mask volume's spacing. Voxels labelled
    ``ignore_index`` count for neither prediction nor ground truth.

    ``results()`` gives ``per_volume`` (one entry per case: ``case``, ``spacing_mm``,
    ``per_class`` {name: scores}, and the mean over classes of each of :data:`VOLUME_KEYS`)
    and ``per_volume_mean`` (per class: the mean over volumes, NaN skipped, with
    ``volumes`` = how many volumes gave a surface distance; overall: the mean of the class
    means).
    """

    def __init__(self, dataset: Any) -> None:
        self.reader = dataset.reader
        self.ignore_index = int(dataset.labels.ignore_index)
        scored = dataset.labels.scored
        self.classes = [(i, name) for i, name in enumerate(dataset.classes) if i > 0 and scored[i]]
        self.per_volume: list[dict[str, Any]] = []
        self._case: Any = None
        self._sample: Any = None
        self._slices: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, dataset: Any) -> VolumeScores | None:
        """A collector for a volume dataset, ``None`` for any other."""
        return cls(dataset) if dataset.reader.format_name in VOLUME_FORMATS else None

    def collect(
        self, items: Iterator[tuple[Any, tuple[np.ndarray, np.ndarray]]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Passes ``(sample, (pred, gt))`` items on as ``(pred, gt)`` pairs, scoring each case
        once its slices are through."""
        for sample, (pred, gt) in items:
            case = self.reader.case(sample).name
            if self._case is not None and case != self._case:
                self._finish()
            self._case, self._sample = case, sample
            self._slices[int(sample.key)] = (np.asarray(pred), np.asarray(gt))
            yield pred, gt
        if self._case is not None:
            self._finish()

    def _finish(self) -> None:
        sample, slices = self._sample, self._slices
        self._case, self._sample, self._slices = None, None, {}
        from segflow.domains.medical.volume import stack_slices

        volume = self.reader.mask_volume(sample.mask_path)
        depth = volume.shape[2]
        name = self.reader.case(sample).name
        if sorted(slices) != list(range(depth)):
            skipped = f"only {len(slices)} of {depth} slices in the split"
            self.per_volume.append({"case": name, "skipped": skipped})
            return
        pred = stack_slices([slices[z][0] for z in range(depth)])
        gt = stack_slices([slices[z][1] for z in range(depth)])
        valid = gt != self.ignore_index
        spacing = [float(v) for v in volume.spacing]
        per_class = {
            label: volume_class_scores((pred == index) & valid, (gt == index) & valid, spacing)
            for index, label in self.classes
        }
        entry: dict[str, Any] = {"case": name, "spacing_mm": spacing, "per_class": per_class}
        entry.update({key: _nanmean([float(s[key]) for s in per_class.values()]) for key in VOLUME_KEYS})
        self.per_volume.append(entry)

    def results(self) -> dict[str, Any]:
        """``{"per_volume": [...], "per_volume_mean": {...}}`` (see the class docstring)."""
        scored = [v for v in self.per_volume if "per_class" in v]
        per_class: dict[str, dict[str, Any]] = {}
        for _, label in self.classes:
            values = {key: [float(v["per_class"][label][key]) for v in scored] for key in VOLUME_KEYS}
            per_class[label] = {key: _nanmean(vals) for key, vals in values.items()}
            per_class[label]["volumes"] = int(sum(not np.isnan(x) for x in values["hd95_mm"]))
        mean: dict[str, Any] = {key: _nanmean([c[key] for c in per_class.values()]) for key in VOLUME_KEYS}
        mean.update({"volumes": len(scored), "per_class": per_class})
        return {"per_volume": self.per_volume, "per_volume_mean": mean}


def _volume_pairs(
    folder: Path, dataset: Any, indices: list[int]
) -> Iterator[tuple[Any, tuple[np.ndarray, np.ndarray]]]:
    """``(sample, (pred slice, gt slice))`` of the samples at ``indices`` (ascending), from
    prediction volumes ``<case>.nii[.gz]`` in ``folder``.

    Raises:
        DataError: A case without prediction, a prediction on another voxel grid than its
            ground truth, or a value that is no class (each names the file).
    """
    from segflow.domains.medical.volume import slice_stack

    reader = dataset.reader
    cases = list(dict.fromkeys(reader.case(s).name for s in dataset.samples))
    found = {case: _prediction_volume(folder, case) for case in cases}
    missing = [case for case, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{folder}: no prediction for {len(missing)} volume(s) of the split, e.g. "
            f"{missing[0]}.nii.gz; predictions must be label volumes named like the cases (<case>.nii.gz)"
        )
    current: tuple[str, np.ndarray] | None = None
    for index in indices:
        sample = dataset.samples[index]
        case = reader.case(sample).name
        if current is None or current[0] != case:
            current = (case, _read_prediction(found[case], sample, reader, len(dataset.classes)))
        pred = slice_stack(current[1], int(sample.key), 0)[..., 0]
        yield sample, (pred, dataset.load_mask(index))


def _prediction_volume(folder: Path, case: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        if (folder / f"{case}{suffix}").is_file():
            return folder / f"{case}{suffix}"
    return None


def _read_prediction(path: Any, sample: Any, reader: Any, num_classes: int) -> np.ndarray:
    """The prediction volume in RAS order (uint16 class indices), checked against the mask's grid."""
    from segflow.domains.medical.nifti import read_nifti
    from segflow.domains.medical.reader import AFFINE_ATOL_MM, mask_values
    from segflow.domains.medical.volume import to_ras

    truth = reader.mask_volume(sample.mask_path)
    pred = to_ras(read_nifti(path))
    if pred.shape != truth.shape or not np.allclose(pred.affine, truth.affine, rtol=0, atol=AFFINE_ATOL_MM):
        raise DataError(
            f"{path}: prediction grid {pred.shape} (spacing {np.round(pred.spacing, 4).tolist()} mm) "
            f"differs from the ground truth {sample.mask_path} {truth.shape} (spacing "
            f"{np.round(truth.spacing, 4).tolist()} mm) or its affine; predictions must keep the "
            "image's shape and affine"
        )
    labels = mask_values(pred.data, path)
    if labels.size and int(labels.max()) >= num_classes:
        value = int(labels.max())
        raise DataError(
            f"{path}: prediction value {value} ({int((labels == value).sum())} voxels) is not a class "
            f"0..{num_classes - 1}; predictions must hold this dataset's class indices"
        )
    return labels


def volume_markdown(metrics: dict[str, Any]) -> str:
    """``metrics.md``'s per-volume section (empty without ``per_volume``)."""
    from segflow.metrics.report import markdown_escape

    volumes = metrics.get("per_volume")
    if not volumes:
        return ""

    def cell(value: Any) -> str:
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        return "n/a" if missing else f"{value:.4f}"

    lines = ["", "## Per volume", "", "| volume | Dice | IoU | HD95 (mm) | ASSD (mm) |"]
    lines.append("|---|---|---|---|---|")
    for entry in volumes:
        name = markdown_escape(entry["case"])
        if "skipped" in entry:
            lines.append(f"| {name} | {markdown_escape(entry['skipped'])} | | | |")
        else:
            lines.append(f"| {name} | " + " | ".join(cell(entry[k]) for k in VOLUME_KEYS) + " |")
    mean = metrics.get("per_volume_mean") or {}
    lines.append("| **mean of class means** | " + " | ".join(cell(mean.get(k)) for k in VOLUME_KEYS) + " |")
    note = "Foreground classes only; HD95 and ASSD are n/a where a prediction or ground truth is empty."
    lines += ["", note, ""]
    return "\n".join(lines)
