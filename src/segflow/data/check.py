"""``segflow data check``: find what is wrong with a dataset before training on it.

Reports unpaired files (and files in sub-folders that are not read), unreadable/truncated
files, image/mask size mismatches, missing or mis-sized instance-id files (``folder`` data
with ``instances/``), mask values that map to no label, empty splits, splits
with no labelled pixel, mixed channel counts or bit depths, per-class pixel share per split
and image size statistics. Warns when ``ignore_index`` is a class index (that class is never
trained or scored), when a class has no pixel in a split, and when more than
``max_unlabelled_share`` of a split's images have no labelled pixel. Works through the
dataset's reader and its :class:`LabelRules`, so every layout is validated exactly as it is
loaded.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segflow.data.io import size_mismatch_message
from segflow.data.labels import LabelRules, lossy_mask_message
from segflow.data.readers import Reader, Sample, create_reader
from segflow.data.readers.folder import instance_file_problem, instance_warnings
from segflow.data.spec import DataSpec, load_data_spec
from segflow.errors import ConfigError, DataError

MAX_READ_THREADS = 4
MAX_FILES_PER_VALUE = 5
"""Files listed per out-of-range mask value (the count says how many there are)."""
MAX_UNLABELLED_NAMED = 20
"""Images without a labelled pixel named per split (the count says how many there are)."""
DEFAULT_MAX_UNLABELLED_SHARE = 0.1
"""Share of a split's images that may have no labelled pixel before ``data check`` warns."""
MAX_RENDERED_MESSAGES = 50
RENDER_WIDTH = 120
PERCENT = 100.0


@dataclass
class SampleResult:
    """What reading one image/mask pair found."""

    image_shape: tuple[int, ...] | None = None
    dtype: str | None = None
    class_pixels: np.ndarray | None = None
    unmapped: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class SplitStats:
    """Per-split summary: sample count, image sizes, channels, dtypes, class pixels."""

    location: str
    num_samples: int = 0
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    channels: Counter[int] = field(default_factory=Counter)
    dtypes: Counter[str] = field(default_factory=Counter)
    class_pixels: np.ndarray | None = None
    unlabelled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "unlabelled_images": list(self.unlabelled),
            "location": self.location,
            "num_samples": self.num_samples,
            "height": _min_median_max(self.heights),
            "width": _min_median_max(self.widths),
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "dtypes": dict(sorted(self.dtypes.items())),
            "class_pixels": [] if self.class_pixels is None else [int(v) for v in self.class_pixels],
        }


def dataset_location(fmt: str, root: Path | None, sources: Sequence[Path] = ()) -> str:
    """Where a dataset is, for one-line headers: ``folder at /data/roads``, ``shapes at
    (generated)``, or for a ``sources:`` union its data YAMLs relative to the folder that holds
    them all (``sources base.yaml, r1/data.yaml in /data/loop``)."""
    if not sources:
        return f"{fmt} at {root or '(generated)'}"
    paths = [Path(path).resolve() for path in sources]
    try:
        common = Path(os.path.commonpath([path.parent for path in paths]))
    except ValueError:  # different drives: absolute paths
        return f"{fmt} {', '.join(str(path) for path in paths)}"
    return f"{fmt} {', '.join(path.relative_to(common).as_posix() for path in paths)} in {common}"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        format: Dataset format.
        root: Dataset root (``None`` for generated datasets without one).
        classes: Class names.
        ignore_index: Ignore label.
        errors: Problems that make training wrong or impossible; each names the file(s).
        warnings: Suspicious but usable (e.g. a class absent from a split).
        class_share: Split -> per-class share of labelled pixels (sums to 1, or all 0; the
            ignored class, when ``ignore_index`` is a class index, is always 0).
        ignored_class: The class index equal to ``ignore_index``, or ``None``.
        splits: Split -> ``SplitStats``.
        sources: The data YAMLs of a ``sources:`` union (absolute), else empty.
    """

    format: str
    root: Path | None
    classes: list[str]
    ignore_index: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    class_share: dict[str, list[float]] = field(default_factory=dict)
    splits: dict[str, SplitStats] = field(default_factory=dict)
    ignored_class: int | None = None
    sources: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "ok": self.ok,
            "format": self.format,
            "root": None if self.root is None else str(self.root),
            "classes": self.classes,
            "ignore_index": self.ignore_index,
            "ignored_class": self.ignored_class,
            "errors": self.errors,
            "warnings": self.warnings,
            "class_share": self.class_share,
            "splits": {name: stats.to_dict() for name, stats in self.splits.items()},
        }

    def render(self) -> str:
        """The report as plain text tables (what ``segflow data check`` prints).

        Every text that comes from the data or the user (paths, class names, messages) is
        escaped, so ``[height, width]`` prints as written instead of being read as markup.
        """
        buffer = io.StringIO()
        console = Console(file=buffer, width=RENDER_WIDTH, no_color=True, highlight=False)
        console.print(
            escape(
                f"dataset: {dataset_location(self.format, self.root, self.sources)}; "
                f"{len(self.classes)} classes"
            )
        )
        console.print(self._splits_table())
        console.print(self._share_table())
        for title, messages in (("errors", self.errors), ("warnings", self.warnings)):
            console.print(f"{title}: {len(messages)}")
            for message in messages[:MAX_RENDERED_MESSAGES]:
                console.print(f"  - {escape(message)}", soft_wrap=True)
            if len(messages) > MAX_RENDERED_MESSAGES:
                console.print(f"  ... and {len(messages) - MAX_RENDERED_MESSAGES} more")
        console.print("result: OK" if self.ok else f"result: FAILED ({len(self.errors)} errors)")
        return buffer.getvalue()

    def _splits_table(self) -> Table:
        table = Table(title="splits")
        for column in ("split", "samples", "height min/med/max", "width min/med/max", "channels", "dtypes"):
            table.add_column(column)
        for name, stats in self.splits.items():
            summary = stats.to_dict()
            table.add_row(
                escape(name),
                str(stats.num_samples),
                "/".join(str(v) for v in summary["height"]) or "-",
                "/".join(str(v) for v in summary["width"]) or "-",
                escape(", ".join(f"{k}: {v}" for k, v in summary["channels"].items())) or "-",
                escape(", ".join(f"{k}: {v}" for k, v in summary["dtypes"].items())) or "-",
            )
        return table

    def _share_table(self) -> Table:
        table = Table(title="class pixel share (%)")
        table.add_column("class")
        for split in self.class_share:
            table.add_column(escape(split), justify="right")
        for index, name in enumerate(self.classes):
            if index == self.ignored_class:
                table.add_row(escape(f"{index} {name}"), *("ignored" for _ in self.class_share))
                continue
            table.add_row(
                escape(f"{index} {name}"),
                *(f"{shares[index] * PERCENT:.2f}" for shares in self.class_share.values()),
            )
        return table


def check_dataset(
    spec: DataSpec | str | Path | dict[str, Any],
    splits: list[str] | None = None,
    max_unlabelled_share: float = DEFAULT_MAX_UNLABELLED_SHARE,
) -> CheckReport:
    """Validates a dataset and summarises it.

    Args:
        spec: A ``DataSpec``, YAML path or spec dict.
        splits: Splits to check; ``None`` checks all of them.
        max_unlabelled_share: Warn when more than this share (0..1) of a split's images have
            no labelled pixel; a split with no labelled pixel at all is always an error.

    Returns:
        The report; ``report.ok`` is False when any error was found.

    Raises:
        ConfigError: The spec itself is invalid, a requested split does not exist, or
            ``max_unlabelled_share`` is outside 0..1.
    """
    if isinstance(max_unlabelled_share, bool) or not 0.0 <= max_unlabelled_share <= 1.0:
        raise ConfigError(f"max_unlabelled_share must be in 0..1, e.g. 0.1; got {max_unlabelled_share!r}")
    reader = create_reader(load_data_spec(spec))
    rules = reader.label_rules
    report = CheckReport(
        reader.spec.format,
        reader.spec.root,
        reader.classes,
        rules.ignore_index,
        ignored_class=rules.ignored_class,
        sources=list(reader.spec.sources),
    )
    report.warnings.extend(rules.warnings())
    report.warnings.extend(instance_warnings(reader))
    names = splits or reader.split_names()
    for name in names:
        reader.require_split(name)
    if not names:
        report.errors.append(f"no splits found for the {reader.format_name} dataset at {reader.spec.root}")
    for name in names:
        _check_split(reader, name, rules, report, max_unlabelled_share)
    return report


def _check_split(
    reader: Reader, split: str, rules: LabelRules, report: CheckReport, max_unlabelled_share: float
) -> None:
    try:
        listing = reader.list_split(split)
    except DataError as err:
        report.errors.append(f"split {split!r}: {err}")
        return
    report.errors.extend(f"split {split!r}: {problem}" for problem in listing.problems)
    report.warnings.extend(f"split {split!r}: {warning}" for warning in listing.warnings)
    stats = SplitStats(location=listing.location, num_samples=len(listing.samples))
    report.splits[split] = stats
    num_classes = len(report.classes)
    stats.class_pixels = np.zeros(num_classes, dtype=np.int64)
    if not listing.samples:
        if not listing.problems:  # else the problems say why (one line each), not a second time
            report.errors.append(f"split {split!r} is empty: no image/mask pairs in {listing.location}")
        report.class_share[split] = [0.0] * num_classes
        return
    with ThreadPoolExecutor(max_workers=MAX_READ_THREADS) as pool:
        results = list(pool.map(lambda s: _inspect_sample(reader, s, rules), listing.samples))
    unmapped: dict[int, tuple[int, list[Path]]] = {}
    # one line per message: the slices, tiles or windows of one broken file share theirs
    messages = dict.fromkeys(f"split {split!r}: {m}" for result in results for m in result.errors)
    report.errors.extend(messages)
    for sample, result in zip(listing.samples, results, strict=True):
        _add_sample(stats, sample, result, unmapped)
    _report_unmapped(split, unmapped, rules, report)
    _report_mixed(split, listing.samples, results, report)
    _report_unlabelled(split, listing.samples, results, max_unlabelled_share, report)
    total = int(stats.class_pixels.sum())
    report.class_share[split] = [float(v) / total if total else 0.0 for v in stats.class_pixels]
    if total:
        for index in np.flatnonzero((stats.class_pixels == 0) & rules.scored):
            report.warnings.append(
                f"split {split!r}: class {int(index)} ({report.classes[index]}) has no pixels"
            )


def _inspect_sample(reader: Reader, sample: Sample, rules: LabelRules) -> SampleResult:
    result = SampleResult()
    try:
        image = reader.read_image(sample)
        result.image_shape, result.dtype = image.shape, str(image.dtype)
    except DataError as err:
        result.errors.append(str(err))
    try:
        raw = reader.read_raw_mask(sample)
    except DataError as err:
        result.errors.append(str(err))
        return result
    if result.image_shape is not None and tuple(result.image_shape[:2]) != raw.shape:
        result.errors.append(
            size_mismatch_message(sample.image_path, result.image_shape[:2], sample.mask_path, raw.shape)
        )
    instance_error = instance_file_problem(reader, sample, raw.shape)
    if instance_error is not None:
        result.errors.append(instance_error)
    result.class_pixels, result.unmapped = rules.count_stored(raw)
    if result.unmapped and rules.looks_lossy(raw, result.unmapped):
        result.errors.append(lossy_mask_message(sample.mask_path or sample.image_path))
        result.unmapped = {}  # one lossy-compression error, not one per ringing value
    return result


def _report_unlabelled(
    split: str, samples: list[Sample], results: list[SampleResult], max_share: float, report: CheckReport
) -> None:
    """No labelled pixel in a whole split is an error; in too many of its images, a warning."""
    stats = report.splits[split]
    read = [(s, r) for s, r in zip(samples, results, strict=True) if r.class_pixels is not None]
    stats.unlabelled = [s.name for s, r in read if r.class_pixels is not None and not r.class_pixels.any()]
    if not read:
        return
    count = len(stats.unlabelled)
    if count == len(read):
        report.errors.append(no_labelled_pixel_message(split, count, _rules_of(report)))
        return
    share = count / len(samples)
    if share > max_share:
        shown = ", ".join(stats.unlabelled[:MAX_UNLABELLED_NAMED])
        more = f" and {count - MAX_UNLABELLED_NAMED} more" if count > MAX_UNLABELLED_NAMED else ""
        report.warnings.append(
            f"split {split!r}: {count} of {len(samples)} images ({share * PERCENT:.0f}%, more than "
            f"--max-unlabelled-share {max_share:g}) have no labelled pixel: {shown}{more}"
        )


def _rules_of(report: CheckReport) -> LabelRules:
    return LabelRules.for_scoring(len(report.classes), report.ignore_index, list(report.classes))


def no_labelled_pixel_message(split: str, num_masks: int, rules: LabelRules) -> str:
    """The one message for a split whose masks hold no labelled pixel (data check, train, evaluate).

    Args:
        split: Split name.
        num_masks: Number of masks read, all without a labelled pixel.
        rules: The dataset's label rules (ignore_index, the ignored class if any).
    """
    note = ""
    if rules.ignored_class is not None:
        note = f" (class {rules.ignored_class} {rules.classes[rules.ignored_class]}, which is ignored)"
    return (
        f"split {split!r} has no labelled pixel: all {num_masks} mask(s) hold only ignore_index "
        f"{rules.ignore_index}{note}, so nothing can be trained or scored; "
        "fix the masks, or 'ignore_index:' / 'mask_values:' in the data YAML"
    )


def require_labelled_pixel(reader: Reader, split: str, samples: list[Sample]) -> None:
    """Refuses a split none of whose masks holds a labelled pixel (the rule ``data check`` reports).

    Reads masks until the first labelled pixel, so a normal split costs one mask read.
    Unknown stored values are left to the mask loading that follows.

    Raises:
        DataError: No mask of ``samples`` has a labelled pixel (the same message as
            ``data check``).
    """
    rules = reader.label_rules
    for sample in samples:
        class_pixels, _ = rules.count_stored(reader.read_raw_mask(sample))
        if class_pixels.any():
            return
    if samples:
        raise DataError(no_labelled_pixel_message(split, len(samples), rules))


def _add_sample(
    stats: SplitStats, sample: Sample, result: SampleResult, unmapped: dict[int, tuple[int, list[Path]]]
) -> None:
    if result.image_shape is not None:
        stats.heights.append(int(result.image_shape[0]))
        stats.widths.append(int(result.image_shape[1]))
        stats.channels[int(result.image_shape[2])] += 1
        stats.dtypes[str(result.dtype)] += 1
    if result.class_pixels is not None and stats.class_pixels is not None:
        stats.class_pixels += result.class_pixels
    for value, pixels in result.unmapped.items():
        total, files = unmapped.get(value, (0, []))
        unmapped[value] = (total + pixels, [*files, sample.mask_path or sample.image_path])


def _report_unmapped(
    split: str, unmapped: dict[int, tuple[int, list[Path]]], rules: LabelRules, report: CheckReport
) -> None:
    for value, (pixels, files) in sorted(unmapped.items()):
        shown = ", ".join(str(f) for f in files[:MAX_FILES_PER_VALUE])
        more = f" and {len(files) - MAX_FILES_PER_VALUE} more" if len(files) > MAX_FILES_PER_VALUE else ""
        where = str(files[0]) if len(files) == 1 else f"{len(files)} files: {shown}{more}"
        report.errors.append(f"split {split!r}: {rules.describe_unknown(where, {value: pixels})}")


def _report_mixed(
    split: str, samples: list[Sample], results: list[SampleResult], report: CheckReport
) -> None:
    """Mixed channel counts or bit depths break batching and normalisation."""
    for what, key in (("channel counts", lambda r: r.image_shape[2]), ("pixel types", lambda r: r.dtype)):
        values = [(key(r), s.image_path) for s, r in zip(samples, results, strict=True) if r.image_shape]
        counts = Counter(v for v, _ in values)
        if len(counts) > 1:
            majority = counts.most_common(1)[0][0]
            odd = [path for v, path in values if v != majority][:MAX_FILES_PER_VALUE]
            report.errors.append(
                f"split {split!r}: images have mixed {what} {dict(counts)}; e.g. "
                f"{', '.join(str(p) for p in odd)} differ from the majority ({majority}): convert them"
            )


def _min_median_max(values: list[int]) -> list[int]:
    if not values:
        return []
    return [int(np.min(values)), int(np.median(values)), int(np.max(values))]
