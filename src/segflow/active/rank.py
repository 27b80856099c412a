"""Ranking unlabelled images by the model's uncertainty: ``segflow rank`` and its Python API.

:func:`rank_images` predicts every image through :class:`segflow.inference.Predictor` (small
images whole, as ``segflow predict`` does; images over
:data:`segflow.inference.streaming.STREAM_MIN_PIXELS` pixels, or any image when a ``tile`` is
set, band by band through :meth:`Predictor.iter_label_bands`), and summarises each band's
probabilities at once (:class:`segflow.active.uncertainty.UncertaintySummary`), so an image's
``(K, H, W)`` probabilities are never held when it is streamed. Images are then sorted from the
most to the least uncertain (mean pixel uncertainty), optionally cut to ``top`` rows, or with
``diverse`` picked by k-center greedy on the encoder's pooled features among the
``pool`` most uncertain (:mod:`segflow.active.diversity`).

Two modes need the checkpoint's network, not only its logits, and so refuse exports:

- ``by="mc-dropout"``: the dropout modules of the decoder and head (never the encoder's) run in
  training mode for ``mc_samples`` forwards of every window; the mean of their softmax
  probabilities replaces the single prediction and its entropy is the pixel's uncertainty
  (predictive entropy, not BALD). Only architectures with such dropout are accepted.
- ``diverse=True``: a forward hook on the encoder global-average-pools its deepest feature map
  over every window the image is predicted in.

Outputs (:func:`write_ranking`): ``ranking.csv`` (``image,score,rank,<class>_share...,
<class>_uncertain_area...``), ``ranking.json`` and ``heatmaps/<stem>.png``;
:func:`read_ranking` is the one reader of ``ranking.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from segflow.active.diversity import default_pool, k_center_greedy
from segflow.active.uncertainty import (
    DEFAULT_HEATMAP_MAX_SIDE,
    DEFAULT_UNCERTAIN_ABOVE,
    ENTROPY,
    MC_DROPOUT,
    UncertaintySummary,
    check_measure,
    heatmap_rgb,
)
from segflow.data.io import IMAGE_EXTENSIONS
from segflow.errors import CheckpointError, ConfigError, DataError
from segflow.inference.manifest import input_stem
from segflow.inference.options import InferenceOptions
from segflow.io_utils import atomic_write

if TYPE_CHECKING:
    from torch import nn

    from segflow.inference.predictor import Predictor

logger = logging.getLogger(__name__)

RANKING_CSV = "ranking.csv"
RANKING_JSON = "ranking.json"
HEATMAP_DIR = "heatmaps"
STAGING_DIR = ".heatmaps.partial"
"""Heat-maps of every image are written here while ranking; the kept ones move to heatmaps/."""
BASE_COLUMNS = ("image", "score", "rank")
SHARE_SUFFIX = "_share"
UNCERTAIN_SUFFIX = "_uncertain_area"
DEFAULT_MC_SAMPLES = 8
MAX_MC_SAMPLES = 256
MC_SEED = 0
"""Dropout masks of every image are drawn from this torch seed, so a ranking is reproducible."""
ENCODER_OUT_KEY = "out"
"""torchvision backbones (``IntermediateLayerGetter``) name their deepest map ``out``."""
MODEL_SCHEMES = ("file", "models")
"""MODEL forms ``segflow rank`` takes: a model file, or a registry model resolved to one."""


@dataclass(frozen=True)
class RankRow:
    """One ranked image, a row of ``ranking.csv``.

    Attributes:
        image: Absolute path of the image.
        score: Mean pixel uncertainty in [0, 1] (higher: more uncertain).
        rank: 1 for the most uncertain image kept.
        shares: Class name -> fraction of the image's pixels predicted as that class.
        uncertain_area: Class name -> fraction of the image's pixels predicted as that class
            whose uncertainty exceeds the ``uncertain_above`` threshold.
        heatmap: The heat-map PNG, or None when none was written (or read from a CSV).
    """

    image: Path
    score: float
    rank: int
    shares: dict[str, float] = field(default_factory=dict)
    uncertain_area: dict[str, float] = field(default_factory=dict)
    heatmap: Path | None = None


@dataclass(frozen=True)
class RankOptions:
    """How to rank, besides the measure, ``top`` and ``diverse``.

    Attributes:
        inference: Predictor options (tiling, TTA); ``probs`` and the output fields are ignored.
        backend: ``--backend`` name, or None for the default by suffix.
        mc_samples: Dropout forwards per window for ``mc-dropout``, in [2, 256].
        uncertain_above: Pixel threshold of ``<class>_uncertain_area``, in [0, 1).
        pool: ``diverse``: candidates k-center chooses among (the most uncertain); None:
            ``min(N, 4 * top)``.
        heatmap_max_side: Heat-maps larger than this side are block-averaged down.
        overwrite: Replace an earlier ranking in ``out`` (else it is refused).
        device: Torch device of a checkpoint.
    """

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    backend: str | None = None
    mc_samples: int = DEFAULT_MC_SAMPLES
    uncertain_above: float = DEFAULT_UNCERTAIN_ABOVE
    pool: int | None = None
    heatmap_max_side: int = DEFAULT_HEATMAP_MAX_SIDE
    overwrite: bool = False
    device: str = "cpu"


@dataclass
class _Scored:
    """An image after prediction: its summary, features (``diverse``) and staged heat-map."""

    image: Path
    summary: UncertaintySummary
    feature: np.ndarray | None
    heatmap: Path | None


OnImage = Callable[[Path, str | None], None]
"""Called after each image with None, or the one-line reason it was skipped."""
OnWarning = Callable[[Path, str], None]
"""Called once per distinct warning a library issued while an image was ranked (one line)."""
SILENCED_WARNINGS: tuple[type[Warning], ...] = (Image.DecompressionBombWarning,)
"""Library warnings dropped while ranking: ranking reads large images on purpose (those over
Pillow's error limit are skipped with its error as the reason)."""


# --- checks --------------------------------------------------------------------------------


def check_rank_request(by: str, top: int | None, diverse: bool, options: RankOptions) -> None:
    """Refuses a bad measure, ``top``, ``pool`` or option before anything is loaded.

    Raises:
        ConfigError: One line naming the option and what to give.
    """
    check_measure(by)
    if top is not None and top < 1:
        raise ConfigError(f"--top {top}: give a positive number of images to keep, or leave --top out")
    if diverse and top is None:
        raise ConfigError("--diverse picks --top K images; give --top K (e.g. --top 50)")
    if options.pool is not None and (not diverse or top is None or options.pool < top):
        raise ConfigError(f"--pool {options.pool}: the candidate pool is for --diverse and must be >= --top")
    if not 2 <= options.mc_samples <= MAX_MC_SAMPLES:  # noqa: PLR2004 - a mean needs two samples
        raise ConfigError(f"--mc-samples {options.mc_samples} is outside [2, {MAX_MC_SAMPLES}]")
    if not 0.0 <= options.uncertain_above < 1.0:
        raise ConfigError(f"--uncertain-above {options.uncertain_above:g} is outside [0, 1)")
    if options.heatmap_max_side < 1:
        raise ConfigError(f"--heatmap-max-side {options.heatmap_max_side} must be >= 1")


def image_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files to rank: files, folders (their image files) and globs, as ``segflow predict``
    expands them (:func:`segflow.cli.predict.expand_inputs`), keeping only 2-D image files.

    Raises:
        DataError: An input is missing, matches nothing, or no image file is left.
    """
    from segflow.cli.predict import expand_inputs

    found = expand_inputs([str(item) for item in inputs])
    images = [p for p in found if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise DataError(
            f"no image file ({', '.join(IMAGE_EXTENSIONS)}) among the inputs {', '.join(map(str, inputs))}; "
            "segflow rank takes 2-D images"
        )
    seen: dict[str, Path] = {}
    for path in images:
        stem = input_stem(path)
        if stem in seen:
            raise ConfigError(
                f"inputs {seen[stem]} and {path} would both write heatmaps/{stem}.png; "
                "rank them into different --out folders or rename one"
            )
        seen[stem] = path
    return images


def check_out(out: Path, overwrite: bool) -> None:
    """Refuses an ``out`` that is a file, or holds a ranking, unless ``overwrite``.

    Raises:
        ConfigError: One line naming the folder and the flag to pass.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if not overwrite and ((out / RANKING_CSV).exists() or (out / HEATMAP_DIR).exists()):
        raise ConfigError(f"--out {out} already holds a ranking; pass --overwrite or choose another folder")


# --- the model -----------------------------------------------------------------------------


def resolve_model(model: str | Path) -> Path:
    """The model file of a MODEL argument, through the one parser
    (:func:`segflow.models.source.parse_model_source`).

    Raises:
        ConfigError: A form ``segflow rank`` does not take.
        CheckpointError: The file does not exist.
    """
    from segflow.models.source import parse_model_source

    source = parse_model_source(model, accept=MODEL_SCHEMES, command="rank")
    if source.path is None:
        raise ConfigError(f"MODEL {model!s} names no model file; give a checkpoint or an export")
    return source.path


def load_rank_predictor(
    path: Path, by: str, diverse: bool, options: RankOptions
) -> tuple[Predictor, _FeaturePool | None]:
    """The predictor of a semantic model, wrapped for ``mc-dropout``, and the encoder hook
    for ``diverse``.

    Raises:
        ConfigError: Not a semantic model; an export (or a TorchScript file) with ``mc-dropout``
            or ``diverse``; ``mc-dropout`` on an architecture without dropout in its decoder.
        CheckpointError: The file is not a segflow model.
    """
    from segflow.inference.predictor import Predictor
    from segflow.tasks import SEMANTIC, run_file_task

    task = run_file_task(path)
    if task != SEMANTIC:
        raise ConfigError(
            f"{path} is a {task} model; segflow rank ranks semantic segmentation models: give a semantic one"
        )
    inference = options.inference.replace(probs=False, overlay=False)
    predictor = Predictor.from_path(path, inference, backend=options.backend, device=options.device)
    if by != MC_DROPOUT and not diverse:
        return predictor, None
    what = "--by mc-dropout" if by == MC_DROPOUT else "--diverse"
    net = _checkpoint_net(predictor, path, what)
    hook = _FeaturePool(_encoder_of(net)) if diverse else None
    if by == MC_DROPOUT:
        dropouts = head_dropouts(net)
        if not dropouts:
            raise ConfigError(
                f"--by mc-dropout needs dropout in the decoder or head, and {net.arch}/{net.encoder} "
                f"({path}) has none; rank it --by entropy, or train an architecture with dropout "
                "(deeplabv3, deeplabv3plus, fpn, pspnet, fcn; docs/active_learning.md)"
            )
        predictor = Predictor(_McDropoutBackend(predictor.backend, dropouts, options.mc_samples), inference)
    return predictor, hook


def _checkpoint_net(predictor: Predictor, path: Path, what: str) -> Any:
    """The ``SegmentationNet`` of a checkpoint's torch backend; exports are refused."""
    from segflow.models.net import SegmentationNet

    module = getattr(predictor.backend, "module", None)
    if not isinstance(module, SegmentationNet):
        raise ConfigError(
            f"{what} needs a checkpoint (.ckpt/.pt): {path} is an export, which carries no encoder "
            "output or dropout; give the training checkpoint, or rank without it"
        )
    return module


def _encoder_of(net: Any) -> nn.Module:
    """The encoder module of a ``SegmentationNet`` (smp ``model.encoder``; torchvision backbone)."""
    encoder: nn.Module = net.model.encoder
    return encoder


def head_dropouts(net: Any) -> list[nn.Module]:
    """Dropout modules (p > 0) of a ``SegmentationNet`` outside its encoder and its auxiliary
    classification head: the ones ``mc-dropout`` samples."""
    from torch import nn

    encoder = {id(m) for m in _encoder_of(net).modules()}
    return [
        module
        for name, module in net.model.named_modules()
        if isinstance(module, nn.modules.dropout._DropoutNd)
        and module.p > 0
        and id(module) not in encoder
        and not name.startswith("classification_head")
    ]


class _McDropoutBackend:
    """A torch backend whose logits are the log of the mean softmax of ``samples`` forwards
    with the given dropout modules in training mode (the predictor's softmax gives that mean back)."""

    def __init__(self, inner: Any, dropouts: list[nn.Module], samples: int) -> None:
        self.inner = inner
        self.meta = inner.meta
        self.samples = samples
        for module in dropouts:
            module.train()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` in [0, 1] -> ``(N, K, H, W)`` log mean probabilities."""
        from segflow.inference.postprocess import softmax

        total: np.ndarray | None = None
        for _ in range(self.samples):
            probs = softmax(self.inner.forward(x))
            total = probs if total is None else total + probs
        mean = (total if total is not None else np.zeros(0, np.float32)) / np.float32(self.samples)
        return np.log(np.maximum(mean, np.float32(1e-12))).astype(np.float32)


class _FeaturePool:
    """Forward hook on the encoder: sums its deepest feature map over space and windows, so
    :meth:`take` gives the image's global-average-pooled feature ``(D,)``."""

    def __init__(self, encoder: nn.Module) -> None:
        self.total: Any = None
        self.count = 0
        encoder.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, dict):
            deepest = output.get(ENCODER_OUT_KEY, list(output.values())[-1])
        elif isinstance(output, list | tuple):
            deepest = output[-1]
        else:
            deepest = output
        summed = deepest.float().sum(dim=(0, 2, 3)).double().cpu()
        self.total = summed if self.total is None else self.total + summed
        self.count += int(deepest.shape[0] * deepest.shape[2] * deepest.shape[3])

    def take(self) -> np.ndarray:
        """The pooled feature of the windows since the last call (or :meth:`reset`), float64 ``(D,)``."""
        if self.total is None or self.count == 0:
            raise CheckpointError("the encoder produced no features; is this a segflow checkpoint?")
        feature = (self.total / self.count).numpy()
        self.reset()
        return np.asarray(feature, dtype=np.float64)

    def reset(self) -> None:
        """Drops the sums so far: called before each image, so the windows of an image that
        failed part-way never leak into the next image's feature."""
        self.total, self.count = None, 0


# --- one image -------------------------------------------------------------------------------


def _probability_bands(predictor: Predictor, reader: Any, name: str) -> Iterator[tuple[int, Any, Any]]:
    """``(y0, probs (K, h, W), labels (h, W))`` bands of an image: the whole image at once when
    ``segflow predict`` would predict it whole, else the tiled bands."""
    from segflow.inference.streaming import STREAM_MIN_PIXELS

    if predictor.tile_spec is None and reader.height * reader.width <= STREAM_MIN_PIXELS:
        prediction = predictor.predict(reader.read(0, reader.height), return_probs=True, name=name)
        yield 0, prediction.probs, prediction.labels
        return
    for band in predictor.iter_label_bands(reader, return_probs=True, name=name):
        yield band.y0, band.probs, band.labels


def summarise_image(
    predictor: Predictor,
    path: Path,
    by: str = ENTROPY,
    uncertain_above: float = DEFAULT_UNCERTAIN_ABOVE,
    heatmap_max_side: int = DEFAULT_HEATMAP_MAX_SIDE,
) -> UncertaintySummary:
    """Predicts one image file and summarises its uncertainty band by band.

    Memory: a streamed image holds one band's ``(K, h, W)`` probabilities at a time, plus the
    summary's heat-map (at most ``heatmap_max_side`` a side).

    Raises:
        DataError: The file is unreadable, not an image, or has zero size.
    """
    from segflow.inference.bands import open_band_reader

    reader = open_band_reader(path)
    try:
        summary = UncertaintySummary(
            predictor.num_classes, reader.height, reader.width, by, uncertain_above, heatmap_max_side
        )
        for y0, probs, labels in _probability_bands(predictor, reader, path.name):
            summary.add(y0, probs, labels)
        return summary
    finally:
        reader.close()


def _seeded(active: bool) -> contextlib.AbstractContextManager[Any]:
    """The same dropout masks for an image whatever its position (restores torch's RNG after)."""
    if not active:
        return contextlib.nullcontext()
    import torch

    @contextlib.contextmanager
    def fork() -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(MC_SEED)
            yield

    return fork()


# --- ranking ---------------------------------------------------------------------------------


def rank_images(
    model: str | Path,
    images: Sequence[str | Path],
    by: str = ENTROPY,
    top: int | None = None,
    diverse: bool = False,
    out: str | Path | None = None,
    options: RankOptions | None = None,
    *,
    on_image: OnImage | None = None,
    on_warning: OnWarning | None = None,
) -> list[RankRow]:
    """Ranks images from the most to the least uncertain under ``model``.

    Args:
        model: MODEL argument: a checkpoint or export path (or a form the one MODEL parser
            resolves to a file, such as a registry model).
        images: Image files, folders and globs (expanded as ``segflow predict`` does).
        by: ``entropy``, ``margin``, ``least-confidence`` or ``mc-dropout``
            (:mod:`segflow.active.uncertainty`).
        top: Keep only the ``top`` most uncertain (None: every image).
        diverse: Pick the ``top`` by k-center greedy on encoder features among the
            ``options.pool`` most uncertain (needs ``top`` and a checkpoint).
        out: Folder for ``ranking.csv``, ``ranking.json`` and ``heatmaps/``; None writes nothing.
        options: :class:`RankOptions` (None: the defaults).
        on_image: Called after each image with None, or the one-line reason it was skipped
            (None: a skip is a ``logging`` warning of this module).
        on_warning: Called once per distinct library warning (text) issued while ranking,
            with the first image it came from (None: a ``logging`` warning). Warnings are never
            printed by Python itself; Pillow's ``DecompressionBombWarning`` is dropped.

    Returns:
        The kept rows, most uncertain first (``rank`` 1, 2, ...).

    Raises:
        ConfigError: A bad option, a model that cannot rank this way, or an ``out`` that
            already holds a ranking (without ``options.overwrite``).
        DataError: No image among the inputs, or none of them readable. A single unreadable
            image is skipped (``on_image``, else a logged warning, says why) and listed in
            ``ranking.json``.
        CheckpointError: The model file is missing or not a segflow model.
    """
    options = options or RankOptions()
    check_rank_request(by, top, diverse, options)
    files = image_inputs(images)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_out(out_dir, options.overwrite)
    model_path = resolve_model(model)
    predictor, features = load_rank_predictor(model_path, by, diverse, options)
    staging = out_dir / STAGING_DIR if out_dir is not None else None
    try:
        scored, skipped = _score_all(predictor, files, by, options, features, staging, on_image, on_warning)
        rows = _select(scored, predictor.classes, top, diverse, options)
        if out_dir is not None and staging is not None:
            rows = _place_heatmaps(rows, staging, out_dir, options.overwrite)
            write_ranking(
                rows,
                out_dir,
                model=str(model),
                by=by,
                top=top,
                diverse=diverse,
                extra=_record(options, by, diverse, top, len(scored), skipped),
            )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return rows


def _score_all(
    predictor: Predictor,
    files: list[Path],
    by: str,
    options: RankOptions,
    features: _FeaturePool | None,
    staging: Path | None,
    on_image: OnImage | None,
    on_warning: OnWarning | None = None,
) -> tuple[list[_Scored], list[dict[str, str]]]:
    """Summarises every image; unreadable ones are skipped and returned with their reason.

    Each skip is reported once (``on_image``, else the logger); library warnings are caught
    per image and reported once per distinct text (``on_warning``, else the logger). The
    feature pool is reset before each image, so a failed image leaves nothing in it.
    """
    from segflow.viz import save_image_png

    scored: list[_Scored] = []
    skipped: list[dict[str, str]] = []
    warned: set[str] = set()
    for path in files:
        if features is not None:
            features.reset()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for kind in SILENCED_WARNINGS:
                warnings.simplefilter("ignore", kind)
            try:
                with _seeded(by == MC_DROPOUT):
                    summary = summarise_image(
                        predictor, path, by, options.uncertain_above, options.heatmap_max_side
                    )
                error = None
            except DataError as err:
                error = err
        if error is not None:
            if features is not None:
                features.reset()
            reason = " ".join(str(error).split())
            skipped.append({"image": str(path.resolve()), "error": reason})
            if on_image is not None:
                on_image(path, reason)
            else:
                logger.warning("skipped %s: %s", path, reason)
            continue  # the skip line says why; warnings of a skipped image add nothing
        for message in dict.fromkeys(" ".join(str(item.message).split()) for item in caught):
            if message and message not in warned:
                warned.add(message)
                if on_warning is not None:
                    on_warning(path, message)
                else:
                    logger.warning("%s: %s", path, message)
        heatmap = None
        if staging is not None:
            heatmap = staging / f"{input_stem(path)}.png"
            save_image_png(heatmap, heatmap_rgb(summary.heatmap()))
        feature = features.take() if features is not None else None
        scored.append(_Scored(path.resolve(), summary, feature, heatmap))
        if on_image is not None:
            on_image(path, None)
    if not scored:
        first = f" (first: {skipped[0]['error']})" if skipped else ""
        raise DataError(f"none of the {len(files)} input image(s) could be read{first}; fix or remove them")
    return scored, skipped


def _select(
    scored: list[_Scored], classes: list[str], top: int | None, diverse: bool, options: RankOptions
) -> list[RankRow]:
    """Sorted (most uncertain first), cut to ``top``, or the k-center pick among the pool."""
    ordered = sorted(scored, key=lambda s: (-s.summary.score, str(s.image)))
    if diverse and top is not None:
        pool = ordered[: options.pool or default_pool(len(ordered), top)]
        chosen = k_center_greedy(np.stack([s.feature for s in pool if s.feature is not None]), top)
        ordered = sorted((pool[i] for i in chosen), key=lambda s: (-s.summary.score, str(s.image)))
    elif top is not None:
        ordered = ordered[:top]
    return [
        RankRow(
            image=item.image,
            score=item.summary.score,
            rank=index,
            shares=dict(zip(classes, map(float, item.summary.shares), strict=True)),
            uncertain_area=dict(zip(classes, map(float, item.summary.uncertain_area), strict=True)),
            heatmap=item.heatmap,
        )
        for index, item in enumerate(ordered, start=1)
    ]


def _place_heatmaps(rows: list[RankRow], staging: Path, out: Path, overwrite: bool) -> list[RankRow]:
    """Moves the kept rows' heat-maps from ``staging`` into ``out/heatmaps`` (an earlier
    ranking's heat-maps are removed first with ``overwrite``)."""
    target = out / HEATMAP_DIR
    if overwrite and target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    placed = []
    for row in rows:
        heatmap = None
        if row.heatmap is not None:
            heatmap = target / row.heatmap.name
            row.heatmap.replace(heatmap)
        placed.append(RankRow(row.image, row.score, row.rank, row.shares, row.uncertain_area, heatmap))
    return placed


def _record(
    options: RankOptions, by: str, diverse: bool, top: int | None, ranked: int, skipped: list[dict[str, str]]
) -> dict[str, Any]:
    """The ranking.json fields beyond the contract's: how the ranking was made."""
    record: dict[str, Any] = {
        "ranked": ranked,
        "skipped": skipped,
        "uncertain_above": options.uncertain_above,
        "heatmap_max_side": options.heatmap_max_side,
        "tile": options.inference.tile,
    }
    if by == MC_DROPOUT:
        record["mc_samples"] = options.mc_samples
        record["mc_score"] = "predictive entropy"
    if diverse and top is not None:
        record["pool"] = options.pool or default_pool(ranked, top)
    return record


# --- files ---------------------------------------------------------------------------------


def _number(value: float) -> str:
    return repr(float(value))


def write_ranking(
    rows: Sequence[RankRow],
    out: str | Path,
    *,
    model: str,
    by: str,
    top: int | None,
    diverse: bool,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes ``out/ranking.csv`` and ``out/ranking.json`` atomically.

    ``ranking.csv`` columns: ``image`` (absolute path), ``score``, ``rank``, then
    ``<class>_share`` and ``<class>_uncertain_area`` per class, in the rows' class order.
    ``ranking.json``: ``model``, ``by``, ``top``, ``diverse``, ``count`` (rows), ``classes``,
    ``created`` (UTC, ISO 8601), ``csv``, and ``extra``'s fields.

    Returns:
        The CSV path.
    """
    out = Path(out)
    classes = list(rows[0].shares) if rows else []
    header = [
        *BASE_COLUMNS,
        *(f"{c}{SHARE_SUFFIX}" for c in classes),
        *(f"{c}{UNCERTAIN_SUFFIX}" for c in classes),
    ]
    csv_path = out / RANKING_CSV
    with atomic_write(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [
                    str(row.image),
                    _number(row.score),
                    row.rank,
                    *(_number(row.shares[c]) for c in classes),
                    *(_number(row.uncertain_area[c]) for c in classes),
                ]
            )
    record = {
        "model": model,
        "by": by,
        "top": top,
        "diverse": diverse,
        "count": len(rows),
        "classes": classes,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "csv": RANKING_CSV,
        **(extra or {}),
    }
    with atomic_write(out / RANKING_JSON) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return csv_path


def read_ranking(path: str | Path) -> list[RankRow]:
    """Reads a ``ranking.csv`` written by :func:`write_ranking`, in its row order.

    A relative ``image`` is taken relative to the CSV's folder. ``heatmap`` is the
    ``heatmaps/<stem>.png`` beside the CSV when that file exists.

    Raises:
        DataError: The file is missing or unreadable, lacks a column of ``image,score,rank``,
            has no rows, or a row holds a bad number (one line naming the file and row).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"ranking file {path} does not exist; write one with segflow rank MODEL DIR --out DIR"
        )
    header, table = _read_table(path)
    if not header:
        raise DataError(f"ranking file {path} is empty; write it with segflow rank")
    missing = [c for c in BASE_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"ranking file {path} lacks column(s) {', '.join(missing)} (needs {','.join(BASE_COLUMNS)}); "
            "write it with segflow rank"
        )
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise DataError(
            f"ranking file {path} names column(s) {', '.join(map(repr, twice))} twice; fix the header"
        )
    if not table:
        raise DataError(f"ranking file {path} has no rows; rank some images with segflow rank")
    shares = [c[: -len(SHARE_SUFFIX)] for c in header if c.endswith(SHARE_SUFFIX)]
    uncertain = [c[: -len(UNCERTAIN_SUFFIX)] for c in header if c.endswith(UNCERTAIN_SUFFIX)]
    return [_row(path, line, record, shares, uncertain) for line, record in table]


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header (``reader``'s first record) and ``(line, {column: cell})`` of every non-blank row.

    Raises:
        DataError: Unreadable (not UTF-8 text, a NUL byte, a field over the csv limit), or a
            row with more or fewer cells than the header (one line naming the file and line).
    """
    table: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            for cells in reader:
                if not cells:
                    continue  # a blank line, as csv.DictReader skips it
                if len(cells) != len(header):
                    raise DataError(
                        f"ranking file {path} line {reader.line_num} has {len(cells)} cells, not the "
                        f"header's {len(header)}; fix the row or write the file again with segflow rank"
                    )
                table.append((reader.line_num, dict(zip(header, cells, strict=True))))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"ranking file {path} is unreadable: {' '.join(str(err).split())}") from None
    return header, table


def _row(path: Path, line: int, record: dict[str, Any], shares: list[str], uncertain: list[str]) -> RankRow:
    """One CSV record -> :class:`RankRow` (DataError naming the file, line and value)."""

    def number(column: str) -> float:
        text = record.get(column)
        try:
            value = float(text or "")
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"ranking file {path} line {line}: {column} {text!r} is not a number")
        return value

    rank = number("rank")
    if not rank.is_integer() or rank < 1:
        raise DataError(
            f"ranking file {path} line {line}: rank {record.get('rank')!r} is not a positive integer"
        )
    if not record.get("image"):
        raise DataError(f"ranking file {path} line {line}: the image column is empty")
    image = Path(str(record["image"]))
    image = image if image.is_absolute() else (path.parent / image).resolve()
    heatmap = path.parent / HEATMAP_DIR / f"{input_stem(image)}.png"
    return RankRow(
        image=image,
        score=number("score"),
        rank=int(rank),
        shares={c: number(f"{c}{SHARE_SUFFIX}") for c in shares},
        uncertain_area={c: number(f"{c}{UNCERTAIN_SUFFIX}") for c in uncertain},
        heatmap=heatmap if heatmap.is_file() else None,
    )


__all__ = [
    "RankOptions",
    "RankRow",
    "rank_images",
    "read_ranking",
    "summarise_image",
    "write_ranking",
]
