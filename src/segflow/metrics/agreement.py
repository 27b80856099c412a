"""``segflow data agree A.yaml B.yaml --out DIR``: inter-annotator agreement of two label sets.

Two data YAMLs (any formats, e.g. one CVAT export per annotator) label the same images.
The agreement is scored by the metric owners of ``segflow evaluate``: A is the reference
and B the prediction in :func:`segflow.metrics.confusion_matrix` and
:func:`segflow.metrics.boundary_counts`, and :func:`segflow.metrics.metrics_from_counts`
turns the split-wide counts into scores. IoU and boundary F1 are symmetric (swapping A and
B swaps fp with fn and boundary precision with recall, which both formulas treat alike),
and so are pixel agreement and Cohen's kappa, so the choice of reference changes no score.

The rules:

- **Matching.** An image is keyed by its path relative to its dataset's root
  (:meth:`segflow.data.readers.base.Reader.relative_path`, the key of split lists and of the
  fingerprint). When no key is common to both sets (the roots are laid out differently,
  e.g. ``images/x.png`` in a CVAT export and ``images/val/x.png`` in a folder dataset), the
  images are matched by sample name instead (the file stem, ``sub/stem`` in sub-folders).
  Images in one set only are listed (count and the first few) and left out; no common image
  is an error. Without ``--split`` every split of each set is read.
- **Labels.** Each set's own label rules (:class:`segflow.data.labels.LabelRules`: its
  ``mask_values``, ``ignore_index``, format table) turn its masks into labels, so the two
  ``ignore_index`` values may differ. The class lists must be the same names in the same
  order. A pixel ignored in either set is left out of every count; so are the pixels of a
  class that either set does not score (its ``ignore_index`` is that class's index), which is
  then ``null`` in the report. A pair whose label maps differ in size is an error.
- **Cohen's kappa** (Cohen 1960) over the counted pixels, from the confusion matrix:
  see :func:`cohen_kappa`.
- **Per image**: mIoU over the classes present in either set and boundary F1 (the same
  formulas on the image's own counts). Only images with some disagreement (a counted pixel
  whose labels differ) are ranked: the ``--worst`` K are those of them with the lowest mIoU
  (ties by key). An image where A and B agree on every counted pixel (mIoU 1.0), or without
  a counted pixel, is never listed nor drawn; when no image disagrees, the report says
  "no disagreement" and no ``disagreements.png`` is written.

Outputs (``claim_output_dir``, atomic writes): ``metrics.json``, ``metrics.md`` and
``disagreements.png`` (one row per worst image, at most ``MAX_PANELS``: image | A overlay |
B overlay | disagreement map).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX
from segflow.data.labels import LabelRules
from segflow.data.readers import Reader, Sample, create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write, claim_output_dir
from segflow.metrics.boundary import boundary_counts, check_tolerance
from segflow.metrics.confusion import confusion_matrix
from segflow.metrics.report import MISSING, markdown_escape, save_metrics_json
from segflow.metrics.scores import metrics_from_counts

DEFAULT_WORST = 10
"""Images listed by ``--worst`` by default."""

MAX_PANELS = 8
"""Rows of ``disagreements.png`` at most (the K worst images beyond it are only listed)."""

MAX_TILE_SIDE = 384
"""Longer side of each picture in a panel; larger images are scaled down (area, nearest for labels)."""

MAX_LISTED_UNMATCHED = 5
"""Unmatched images named in the report and the console (the count says how many there are)."""

DISAGREE_COLOR = (255, 0, 255)
"""Disagreement-map colour of a counted pixel where A and B differ (magenta: no class's overlay)."""

AGREE_DIM = 0.4
"""Brightness of the grey image under the disagreement map where A and B agree."""

NO_DISAGREEMENT = "none, no disagreement (A and B give every counted pixel the same label)"
"""What the console and ``metrics.md`` say of the worst images when no image disagrees
(nothing is listed nor drawn)."""

OUTPUTS = ("metrics.json", "metrics.md", "disagreements.png")
"""What ``data agree`` writes (and ``--overwrite`` replaces) in its ``--out`` folder."""

Shape = tuple[int, ...]

MATCH_PATH = "relative_path"
MATCH_NAME = "name"


# -- Cohen's kappa -------------------------------------------------------------------------
def cohen_kappa(confmat: np.ndarray) -> float:
    """Cohen's kappa of two raters from their (K, K) confusion matrix (Cohen 1960).

    kappa = (p_o - p_e) / (1 - p_e), with observed agreement p_o = trace / N and chance
    agreement p_e = sum_k (row_k / N) (col_k / N). Computed exactly in integers as
    (N * trace - sum_k row_k col_k) / (N^2 - sum_k row_k col_k).

    Reference: J. Cohen, "A coefficient of agreement for nominal scales", Educational and
    Psychological Measurement 20(1), 37-46, 1960.

    Args:
        confmat: (K, K) integer counts, rows = rater A, columns = rater B.

    Returns:
        kappa in [-1, 1]; NaN when it is undefined (no pixel, or both raters put every pixel
        in the same single class, so p_e = 1), as ``sklearn.metrics.cohen_kappa_score``.
    """
    counts = np.asarray(confmat, dtype=np.int64)
    total = int(counts.sum())
    rows = [int(v) for v in counts.sum(axis=1)]
    cols = [int(v) for v in counts.sum(axis=0)]
    chance = sum(r * c for r, c in zip(rows, cols, strict=True))  # python ints: no overflow
    denominator = total * total - chance
    if denominator == 0:
        return math.nan
    return (total * int(np.trace(counts)) - chance) / denominator


# -- reading the two sets --------------------------------------------------------------------
@dataclass
class LabelSet:
    """One annotator's labels, as read through its data YAML.

    Attributes:
        source: The data YAML (for messages).
        reader: Its dataset reader.
        rules: Its label rules.
        samples: Every sample read (each image once), in split then name order.
        by_path: Relative image path -> sample index.
        by_name: Sample name -> sample indices (a name may repeat across splits).
    """

    source: str
    reader: Reader
    rules: LabelRules
    samples: list[Sample] = field(default_factory=list)
    by_path: dict[str, int] = field(default_factory=dict)
    by_name: dict[str, list[int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The data YAML's folder and file name (``annotator1/data.yaml``), for captions."""
        return Path(self.source).resolve().relative_to(Path(self.source).resolve().parent.parent).as_posix()

    def keys(self, rule: str) -> list[str]:
        """The images' keys under a matching rule, in sample order."""
        return list(self.by_path) if rule == MATCH_PATH else list(self.by_name)

    def index(self, key: str, rule: str) -> int:
        """Sample index of ``key``; a DataError when a sample name is not unique."""
        if rule == MATCH_PATH:
            return self.by_path[key]
        found = self.by_name[key]
        if len(found) > 1:
            first, second = (self.samples[i].image_path for i in found[:2])
            raise DataError(
                f"{self.source}: two images share the sample name {key!r} ({first} and {second}), so "
                "images cannot be matched by name; pass --split to compare one split, or lay out both "
                "datasets alike so images match by their path relative to the root"
            )
        return found[0]

    def labels(self, index: int) -> np.ndarray:
        """(H, W) int64 labels of sample ``index`` under this set's rules (DataError names the file)."""
        sample = self.samples[index]
        return self.rules.to_labels(self.reader.read_raw_mask(sample), self.mask_source(index))

    def mask_source(self, index: int) -> str:
        """The file that holds sample ``index``'s labels (its mask, else its image's annotations)."""
        sample = self.samples[index]
        return str(sample.mask_path) if sample.mask_path is not None else f"{sample.image_path} (annotations)"


def read_label_set(data: str | Path, split: str | None) -> LabelSet:
    """Lists one annotator's images (``split``, or every split) and its label rules.

    Raises:
        ConfigError: Bad YAML, unknown split.
        DataError: A split has listing problems (unpaired files, bad annotations; run
            ``segflow data check``), or no image at all.
    """
    spec = load_data_spec(data)
    reader = create_reader(spec)
    label_set = LabelSet(str(data), reader, reader.label_rules)
    if split is not None:
        reader.require_split(split)
    for name in [split] if split is not None else reader.split_names():
        listing = reader.list_split(name)
        if listing.problems:
            raise DataError(
                f"{data}: split {name!r} has {len(listing.problems)} problem(s): {listing.problems[0]}; "
                f"run `segflow data check {data}` for the full report"
            )
        for sample in listing.samples:
            key = reader.relative_path(sample.image_path)
            if key in label_set.by_path:
                continue  # one image in two split lists
            label_set.by_path[key] = len(label_set.samples)
            label_set.by_name.setdefault(sample.name, []).append(len(label_set.samples))
            label_set.samples.append(sample)
    if not label_set.samples:
        where = f"split {split!r}" if split is not None else "any split"
        raise DataError(f"{data}: no image with labels in {where}; check the data YAML's root and format")
    return label_set


def check_same_classes(a: LabelSet, b: LabelSet) -> None:
    """Raises a one-line ConfigError when the two class lists differ in names or order."""
    names_a, names_b = list(a.rules.classes), list(b.rules.classes)
    if names_a == names_b:
        return
    if len(names_a) != len(names_b):
        what = f"{a.source} has {len(names_a)} classes {names_a} but {b.source} has {len(names_b)} {names_b}"
    else:
        index = next(i for i, (x, y) in enumerate(zip(names_a, names_b, strict=True)) if x != y)
        what = (
            f"class {index} is {names_a[index]!r} in {a.source} but {names_b[index]!r} in {b.source} "
            f"(classes {names_a} vs {names_b})"
        )
    raise ConfigError(
        f"class lists differ: {what}; give both data YAMLs the same 'classes:' in the same order"
    )


@dataclass
class Matching:
    """Which images the two sets share.

    Attributes:
        rule: ``relative_path`` or ``name`` (see the module docstring).
        common: Keys in both sets, in A's order.
        only_a: Keys in A only.
        only_b: Keys in B only.
    """

    rule: str
    common: list[str]
    only_a: list[str]
    only_b: list[str]


def match_images(a: LabelSet, b: LabelSet) -> Matching:
    """Matches images by relative path, else (no common path) by sample name.

    Raises:
        DataError: No image is in both sets.
    """
    rule = MATCH_PATH if set(a.by_path) & set(b.by_path) else MATCH_NAME
    keys_a, keys_b = a.keys(rule), b.keys(rule)
    in_b, in_a = set(keys_b), set(keys_a)
    common = [key for key in keys_a if key in in_b]
    if not common:
        example_a, example_b = a.keys(MATCH_PATH)[0], b.keys(MATCH_PATH)[0]
        raise DataError(
            f"no image is in both {a.source} ({len(a.samples)} images, e.g. {example_a!r}) and {b.source} "
            f"({len(b.samples)} images, e.g. {example_b!r}); images match by their path relative to the "
            "dataset root, else by sample name (file stem): point both data YAMLs at the same images"
        )
    return Matching(rule, common, [k for k in keys_a if k not in in_b], [k for k in keys_b if k not in in_a])


# -- scoring ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRules:
    """How one pair of label maps becomes (target, prediction) for the metric owners.

    Attributes:
        a: A's label rules.
        b: B's label rules.
        scoring: Rules of the combined labels: the same classes, all scored, and an
            ``ignore_index`` outside the classes marking pixels left out.
        unscored: Classes that A or B does not score (their ``ignore_index`` is a class index).
    """

    a: LabelRules
    b: LabelRules
    scoring: LabelRules
    unscored: tuple[int, ...]

    @classmethod
    def of(cls, a: LabelRules, b: LabelRules) -> PairRules:
        """Rules for two sets with the same classes."""
        num_classes = a.num_classes
        scoring = LabelRules.for_scoring(num_classes, max(IGNORE_INDEX, num_classes), list(a.classes))
        unscored = tuple(sorted({c for c in (a.ignored_class, b.ignored_class) if c is not None}))
        return cls(a, b, scoring, unscored)

    def left_out(self, labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
        """(H, W) bool: pixels ignored in either set, or of a class either set does not score."""
        out = ~self.a.labelled(labels_a) | ~self.b.labelled(labels_b)
        for c in self.unscored:
            out |= (labels_a == c) | (labels_b == c)
        return out

    def target_and_prediction(
        self, labels_a: np.ndarray, labels_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A as the reference (left-out pixels = scoring ignore) and B as the prediction
        (left-out pixels = class 0: never counted, since the reference ignores them)."""
        left_out = self.left_out(labels_a, labels_b)
        target = np.where(left_out, self.scoring.ignore_index, labels_a)
        prediction = np.where(left_out, 0, labels_b)
        return target, prediction


@dataclass
class ImageScore:
    """Agreement on one image (key, mIoU, boundary F1, counted and differing pixels)."""

    image: str
    miou: float
    boundary_f1: float
    pixel_agreement: float
    counted_pixels: int
    differing_pixels: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN kept; ``to_json_safe`` writes it as null)."""
        return dict(vars(self))


def _size_error(a: LabelSet, ia: int, b: LabelSet, ib: int, key: str, shape_a: Shape, shape_b: Shape) -> str:
    return (
        f"size mismatch for image {key!r}: A's labels {a.mask_source(ia)} ({a.source}) are "
        f"{shape_a[1]}x{shape_a[0]} but B's labels {b.mask_source(ib)} ({b.source}) are "
        f"{shape_b[1]}x{shape_b[0]}; both annotators must label the same image at its full size"
    )


def pair_labels(a: LabelSet, b: LabelSet, matching: Matching, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Both sets' (H, W) labels of one matched image.

    Raises:
        DataError: The two label maps differ in size (names both files), or a stored value
            maps to no label.
    """
    ia, ib = a.index(key, matching.rule), b.index(key, matching.rule)
    labels_a, labels_b = a.labels(ia), b.labels(ib)
    if labels_a.shape != labels_b.shape:
        raise DataError(_size_error(a, ia, b, ib, key, labels_a.shape, labels_b.shape))
    return labels_a, labels_b


def score_agreement(
    a: LabelSet,
    b: LabelSet,
    matching: Matching,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], list[ImageScore]]:
    """Scores the matched images: split-wide counts, then every score once.

    Args:
        a: Reference set.
        b: Compared set (same classes).
        matching: From :func:`match_images`.
        tolerance: Boundary F1 match distance in pixels.
        progress: Called with (images done, total) after each image.

    Returns:
        ``(metrics, per_image)``: the :func:`metrics_from_counts` dict of all images plus
        ``kappa`` and ``pixel_agreement``; one :class:`ImageScore` per image in match order.
    """
    rules = PairRules.of(a.rules, b.rules)
    num_classes = rules.scoring.num_classes
    classes = list(rules.scoring.classes)
    ignore = rules.scoring.ignore_index
    total_confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    total_boundary = np.zeros((num_classes, 4), dtype=np.int64)
    per_image = []
    for done, key in enumerate(matching.common, start=1):
        target, prediction = rules.target_and_prediction(*pair_labels(a, b, matching, key))
        confusion = confusion_matrix(prediction, target, num_classes, ignore)
        boundary = boundary_counts(prediction, target, num_classes, ignore, tolerance)
        total_confusion += confusion
        total_boundary += boundary
        scores = metrics_from_counts(confusion, boundary, classes, labels=rules.scoring)
        counted = int(confusion.sum())
        per_image.append(
            ImageScore(
                key,
                scores["miou"],
                scores["boundary_f1"],
                scores["pixel_accuracy"],
                counted,
                counted - int(np.trace(confusion)),
            )
        )
        if progress is not None:
            progress(done, len(matching.common))
    metrics = metrics_from_counts(
        total_confusion,
        total_boundary,
        classes,
        num_images=len(matching.common),
        labels=rules.scoring,
        boundary_tolerance_px=tolerance,
    )
    metrics["kappa"] = cohen_kappa(total_confusion)
    metrics["pixel_agreement"] = metrics["pixel_accuracy"]
    return metrics, per_image


def disagrees(score: ImageScore) -> bool:
    """Whether A and B label some counted pixel of the image differently (the one rule for
    which images are listed and drawn as worst, and for the "no disagreement" report)."""
    return score.differing_pixels > 0


def worst_images(per_image: list[ImageScore], count: int) -> list[ImageScore]:
    """The ``count`` images of lowest mIoU among those that disagree, ties by key.

    Images where A and B agree on every counted pixel (mIoU 1.0, or no counted pixel and so
    no mIoU) are not ranked: fewer than ``count`` (none) come back when fewer images disagree.
    """
    ranked = [score for score in per_image if disagrees(score)]
    return sorted(ranked, key=lambda score: (score.miou, score.image))[: max(count, 0)]


# -- the report ------------------------------------------------------------------------------
def agreement_report(
    a: LabelSet,
    b: LabelSet,
    matching: Matching,
    metrics: dict[str, Any],
    per_image: list[ImageScore],
    worst: list[ImageScore],
) -> dict[str, Any]:
    """The ``metrics.json`` dict (NaN -> null when saved).

    Layout: ``reference`` / ``compared`` (each: data YAML, images read, images only in it
    and the first few), ``matched_by``, ``num_images``, ``boundary_tolerance_px``,
    ``miou``, ``boundary_f1``, ``pixel_agreement``, ``kappa``, ``labelled_pixels``,
    ``classes``, ``per_class`` (name -> iou, boundary_f1, pixels_a, pixels_b),
    ``confusion_matrix`` (rows = A, columns = B), ``disagreeing_images`` (images with a
    differing counted pixel), ``worst`` (only such images; empty when none) and ``images``
    (per image: image, miou, boundary_f1, pixel_agreement, counted_pixels, differing_pixels).
    """
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    names = list(metrics["per_class"])
    per_class = {
        name: {
            "iou": metrics["per_class"][name]["iou"],
            "boundary_f1": metrics["per_class"][name]["boundary_f1"],
            "pixels_a": int(confusion[c].sum()),
            "pixels_b": int(confusion[:, c].sum()),
        }
        for c, name in enumerate(names)
    }

    def side(label_set: LabelSet, only: list[str]) -> dict[str, Any]:
        return {
            "data": label_set.source,
            "images": len(label_set.samples),
            "unmatched": len(only),
            "unmatched_examples": only[:MAX_LISTED_UNMATCHED],
        }

    return {
        "reference": side(a, matching.only_a),
        "compared": side(b, matching.only_b),
        "matched_by": matching.rule,
        "num_images": metrics["num_images"],
        "boundary_tolerance_px": metrics["boundary_tolerance_px"],
        "miou": metrics["miou"],
        "boundary_f1": metrics["boundary_f1"],
        "pixel_agreement": metrics["pixel_agreement"],
        "kappa": metrics["kappa"],
        "labelled_pixels": int(confusion.sum()),
        "classes": names,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "disagreeing_images": sum(1 for score in per_image if disagrees(score)),
        "worst": [score.as_dict() for score in worst],
        "images": [score.as_dict() for score in per_image],
    }


def _fmt(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.4f}"


def render_agreement_markdown(report: dict[str, Any]) -> str:
    """Short Markdown of an agreement report: summary, per class, worst images."""
    ref, cmp_ = report["reference"], report["compared"]
    lines = [
        "# Annotator agreement",
        "",
        f"A (reference): {markdown_escape(ref['data'])}  ",
        f"B: {markdown_escape(cmp_['data'])}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| images compared | {report['num_images']} |",
        f"| matched by | {report['matched_by']} |",
        f"| images only in A | {ref['unmatched']} |",
        f"| images only in B | {cmp_['unmatched']} |",
        f"| images with a disagreement | {report['disagreeing_images']} |",
        f"| mIoU | {_fmt(report['miou'])} |",
        f"| boundary F1 ({report['boundary_tolerance_px']} px) | {_fmt(report['boundary_f1'])} |",
        f"| pixel agreement | {_fmt(report['pixel_agreement'])} |",
        f"| Cohen's kappa | {_fmt(report['kappa'])} |",
        "",
        "| class | IoU | boundary F1 | pixels A | pixels B |",
        "|---|---|---|---|---|",
    ]
    for name, scores in report["per_class"].items():
        lines.append(
            f"| {markdown_escape(name)} | {_fmt(scores['iou'])} | {_fmt(scores['boundary_f1'])} | "
            f"{scores['pixels_a']} | {scores['pixels_b']} |"
        )
    if not report["disagreeing_images"]:
        lines += ["", f"Worst images: {NO_DISAGREEMENT}."]
    elif report["worst"]:
        lines += ["", "| worst image | mIoU | boundary F1 | differing pixels |", "|---|---|---|---|"]
        for score in report["worst"]:
            lines.append(
                f"| {markdown_escape(score['image'])} | {_fmt(score['miou'])} | "
                f"{_fmt(score['boundary_f1'])} | {score['differing_pixels']} |"
            )
    lines += [
        "",
        f"`{MISSING}`: undefined (class in neither set, or a class one set does not score). IoU and "
        "boundary F1 are symmetric in A and B.",
    ]
    return "\n".join(lines) + "\n"


def unmatched_warnings(report: dict[str, Any]) -> list[str]:
    """One line per set with images the other set lacks (count and the first few)."""
    lines = []
    for side, label in (("reference", "A"), ("compared", "B")):
        info = report[side]
        if info["unmatched"]:
            more = ", ..." if info["unmatched"] > len(info["unmatched_examples"]) else ""
            lines.append(
                f"{info['unmatched']} image(s) only in {label} ({info['data']}), left out: "
                f"{', '.join(info['unmatched_examples'])}{more}"
            )
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What ``data agree`` prints: the scores, then the worst images (or "no disagreement")."""
    lines = []
    lines.append(
        f"{report['num_images']} images (matched by {report['matched_by']}): mIoU {_fmt(report['miou'])}  "
        f"kappa {_fmt(report['kappa'])}  pixel agreement {_fmt(report['pixel_agreement'])}  "
        f"boundary F1 {_fmt(report['boundary_f1'])} ({report['boundary_tolerance_px']} px)"
    )
    if not report["disagreeing_images"]:
        lines.append(f"worst: {NO_DISAGREEMENT}")
    elif report["worst"]:
        shown = ", ".join(f"{item['image']} (mIoU {_fmt(item['miou'])})" for item in report["worst"])
        lines.append(f"worst: {shown}")
    return lines


# -- the picture -----------------------------------------------------------------------------
TITLE_SCALE = 0.5
TITLE_PAD = 6


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: other characters become '?'."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)  # noqa: PLR2004 - printable ASCII


def _fit_text(text: str, width: int) -> str:
    from segflow.viz.overlay import FONT

    text = _ascii(text)
    while text and cv2.getTextSize(text, FONT, TITLE_SCALE, 1)[0][0] > width - 2 * TITLE_PAD:
        text = text[:-4] + "..." if len(text) > 4 else ""  # noqa: PLR2004 - room for the dots
    return text


CaptionItem = tuple[tuple[int, int, int] | None, str]
"""(swatch colour or None, text) drawn left to right in a caption bar."""


def _caption(width: int, items: list[CaptionItem]) -> np.ndarray:
    """(h, width, 3) uint8 bar with the items' swatches and texts (cut to the width)."""
    from segflow.viz.overlay import FONT, LEGEND_BACKGROUND, TEXT_COLOR

    (_, text_height), baseline = cv2.getTextSize("Ag", FONT, TITLE_SCALE, 1)
    bar = np.full((text_height + baseline + 2 * TITLE_PAD, width, 3), LEGEND_BACKGROUND, np.uint8)
    x, top = TITLE_PAD, TITLE_PAD
    for color, text in items:
        if x + text_height + 2 * TITLE_PAD > width:
            break  # no room left: the items that follow are not drawn
        if color is not None:
            corner = (x + text_height, top + text_height)
            cv2.rectangle(bar, (x, top), corner, tuple(map(int, color)), -1)
            cv2.rectangle(bar, (x, top), corner, TEXT_COLOR, 1)
            x += text_height + TITLE_PAD
        shown = _fit_text(text, width - x + TITLE_PAD)
        cv2.putText(bar, shown, (x, top + text_height), FONT, TITLE_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
        x += cv2.getTextSize(shown, FONT, TITLE_SCALE, 1)[0][0] + 2 * TITLE_PAD
    return bar


def _titled(tile: np.ndarray, items: list[CaptionItem]) -> np.ndarray:
    """``tile`` under a caption bar."""
    return np.concatenate([_caption(tile.shape[1], items), tile], axis=0)


def _display_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of a panel picture: longer side scaled into [MIN_VIEW_SIDE, MAX_TILE_SIDE]."""
    from segflow.viz.overlay import MIN_VIEW_SIDE

    longer = max(height, width)
    # small images are enlarged an integer factor (whole pixels), large ones shrunk to fit
    scale = MAX_TILE_SIDE / longer if longer > MAX_TILE_SIDE else float(-(-MIN_VIEW_SIDE // longer))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(array: np.ndarray, size: tuple[int, int], labels: bool) -> np.ndarray:
    """``array`` at ``size`` (h, w): nearest (pixel centres) for labels and enlargements,
    area averaging to shrink an image."""
    if array.shape[:2] == size:
        return array
    if labels or size[0] > array.shape[0]:
        rows = ((2 * np.arange(size[0]) + 1) * array.shape[0]) // (2 * size[0])
        cols = ((2 * np.arange(size[1]) + 1) * array.shape[1]) // (2 * size[1])
        return array[rows[:, None], cols]
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def disagreement_map(
    rgb: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, left_out: np.ndarray
) -> np.ndarray:
    """(H, W, 3) uint8: the image in dim grey where A and B agree, ``DISAGREE_COLOR`` where
    they differ, ``IGNORE_COLOR`` where a pixel is left out (ignored in either set)."""
    from segflow.viz.palette import IGNORE_COLOR

    grey = (rgb.astype(np.float32).mean(axis=2) * AGREE_DIM).astype(np.uint8)
    out = np.repeat(grey[:, :, None], 3, axis=2)
    out[(labels_a != labels_b) & ~left_out] = DISAGREE_COLOR
    out[left_out] = IGNORE_COLOR
    return out


def _pad_to(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    from segflow.viz.overlay import LEGEND_BACKGROUND

    out = np.empty((height, width, 3), np.uint8)
    out[:] = LEGEND_BACKGROUND
    out[: tile.shape[0], : tile.shape[1]] = tile
    return out


def _stack(tiles: list[np.ndarray], axis: int, gap: int) -> np.ndarray:
    """Tiles side by side (axis 1) or one under another (axis 0), padded to a common size."""
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    padded = [_pad_to(t, height, t.shape[1]) if axis == 1 else _pad_to(t, t.shape[0], width) for t in tiles]
    spacer_shape = (height, gap, 3) if axis == 1 else (gap, width, 3)
    spacer = np.zeros(spacer_shape, np.uint8)
    parts: list[np.ndarray] = []
    for tile in padded:
        parts += [spacer, tile] if parts else [tile]
    return np.concatenate(parts, axis=axis)


def panel_row(a: LabelSet, b: LabelSet, matching: Matching, score: ImageScore) -> np.ndarray:
    """One row of ``disagreements.png``: image | A overlay | B overlay | disagreement map."""
    from segflow.viz.overlay import legend_entries, overlay, to_rgb8
    from segflow.viz.palette import IGNORE_COLOR

    rules = PairRules.of(a.rules, b.rules)
    labels_a, labels_b = pair_labels(a, b, matching, score.image)
    index_a = a.index(score.image, matching.rule)
    image = _read_image(a, index_a, labels_a.shape)
    left_out = rules.left_out(labels_a, labels_b)
    size = _display_size(*labels_a.shape)
    rgb = _resize(to_rgb8(image), size, labels=False)
    ignore = rules.scoring.ignore_index
    shown_a = _resize(np.where(a.rules.labelled(labels_a), labels_a, ignore), size, labels=True)
    shown_b = _resize(np.where(b.rules.labelled(labels_b), labels_b, ignore), size, labels=True)
    small_a, small_b = _resize(labels_a, size, labels=True), _resize(labels_b, size, labels=True)
    small_left_out = _resize(left_out.view(np.uint8), size, labels=True).astype(bool)
    palette = a.reader.palette
    classes = list(rules.scoring.classes)
    tiles = [
        _titled(rgb, [(None, "image")]),
        _titled(
            overlay(rgb, shown_a, palette, 0.5, legend=False, ignore_index=ignore), [(None, f"A: {a.name}")]
        ),
        _titled(
            overlay(rgb, shown_b, palette, 0.5, legend=False, ignore_index=ignore), [(None, f"B: {b.name}")]
        ),
        _titled(
            disagreement_map(rgb, small_a, small_b, small_left_out),
            [(DISAGREE_COLOR, "A != B"), (IGNORE_COLOR, "ignored")],
        ),
    ]
    row = _stack(tiles, axis=1, gap=4)
    title = (
        f"{score.image}   mIoU {_fmt(score.miou)}   boundary F1 {_fmt(score.boundary_f1)}   "
        f"{score.differing_pixels} of {score.counted_pixels} px differ"
    )
    # one class legend per row (classes in A or B), so no legend box hides part of an overlay
    present = legend_entries(np.concatenate([shown_a, shown_b]), palette, classes, ignore)
    legend: list[CaptionItem] = [(color, name) for name, color in present]
    return np.concatenate(
        [_caption(row.shape[1], [(None, title)]), _caption(row.shape[1], legend), row], axis=0
    )


def _read_image(label_set: LabelSet, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """The image of sample ``index``; a DataError when it is not the size of its labels."""
    from segflow.data.io import read_image, size_mismatch_message

    sample = label_set.samples[index]
    image = read_image(sample.image_path)
    if image.shape[:2] != shape:
        raise DataError(
            f"{label_set.source}: "
            + size_mismatch_message(sample.image_path, image.shape[:2], sample.mask_path, shape)
        )
    return image


def save_disagreements(
    path: Path, a: LabelSet, b: LabelSet, matching: Matching, worst: list[ImageScore]
) -> bool:
    """Writes ``disagreements.png`` for the first ``MAX_PANELS`` worst images (atomic).

    ``worst`` comes from :func:`worst_images`, so every row shows some disagreement.

    Its size is bounded: at most ``MAX_PANELS`` rows of 4 pictures whose longer side is at
    most ``MAX_TILE_SIDE`` (plus legend strips and caption bars).

    Returns:
        False (nothing written) when there is no image to show.
    """
    from segflow.viz.png import save_image_png

    rows = [panel_row(a, b, matching, score) for score in worst[:MAX_PANELS]]
    if not rows:
        return False
    save_image_png(path, _stack(rows, axis=0, gap=8))
    return True


# -- the command -----------------------------------------------------------------------------
@dataclass
class AgreementResult:
    """What :func:`run_agreement` did: the report dict and the files written."""

    report: dict[str, Any]
    written: list[Path]


def run_agreement(
    data_a: str | Path,
    data_b: str | Path,
    out: str | Path,
    split: str | None = None,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    worst: int = DEFAULT_WORST,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AgreementResult:
    """``segflow data agree``: reads both sets, scores them, writes the report.

    Args:
        data_a: Reference data YAML (annotator A).
        data_b: Compared data YAML (annotator B).
        out: Output folder (refused when non-empty, unless ``overwrite``).
        split: Compare this split of both sets; None: every split of each.
        tolerance: Boundary F1 match distance in pixels.
        worst: How many worst images to list (the picture shows at most ``MAX_PANELS``).
        overwrite: Replace an earlier report in ``out``.
        progress: Called with (images done, total).

    Returns:
        The report and the paths written.

    Raises:
        ConfigError: Class lists differ, bad tolerance or worst count, unknown split, bad YAML,
            or ``out`` not empty.
        DataError: No common image, a size mismatch, unreadable or unmapped masks.
    """
    check_tolerance(tolerance)
    if worst < 0:
        raise ConfigError(f"--worst must be 0 or more, got {worst}")
    a, b = read_label_set(data_a, split), read_label_set(data_b, split)
    check_same_classes(a, b)
    matching = match_images(a, b)
    folder = claim_output_dir(out, overwrite=overwrite, owned=OUTPUTS, what="--out folder")
    metrics, per_image = score_agreement(a, b, matching, tolerance, progress)
    ranked = worst_images(per_image, worst)
    report = agreement_report(a, b, matching, metrics, per_image, ranked)
    save_metrics_json(folder / "metrics.json", report)
    with atomic_write(folder / "metrics.md") as tmp:
        tmp.write_text(render_agreement_markdown(report), encoding="utf-8")
    written = [folder / "metrics.json", folder / "metrics.md"]
    if save_disagreements(folder / "disagreements.png", a, b, matching, ranked):
        written.append(folder / "disagreements.png")
    return AgreementResult(report, written)
