"""``segflow data split``: train/val/test lists that are grouped and stratified by class presence.

What it does, in order:

1. Lists every image of the dataset (all native splits merged, also when the data YAML
   already uses ``split_lists``); a dataset with listing problems is refused, as
   ``segflow data check`` would.
2. Puts each image in a group: ``--group-by REGEX`` is searched (``re.search``) in the image's
   file name (``0001TP_006690.png``), or, when the regex holds a ``/``, in its path relative to
   the dataset root (``patients/p07/slice3.png`` with ``'patients/([^/]+)/'``); the group is
   the regex's first capture group, or the whole match when it has none. (Searching the file
   name by default keeps ``images/train/seq1_0001.png`` and ``images/val/seq1_0002.png`` in
   one group ``seq1`` for a regex such as ``'^([^_]+)_'``.)
   Without ``--group-by`` each image is its own group. A group never straddles splits, so
   frames of one video or slices of one patient stay together.
3. Reads each mask once, through the reader and the dataset's
   :class:`~segflow.data.labels.LabelRules`, for the classes present in it and its labelled
   pixels per class (ignored pixels count nowhere). Cost: O(images) mask reads, one mask in
   memory at a time, O(images x classes) integers kept. Images themselves are not read
   (``data check`` compares image and mask sizes).
4. Assigns whole groups to the splits by iterative stratification (:func:`stratify`).
   With ``--hold-out GROUP[,GROUP]`` (:func:`plan_hold_out`): the named groups' images are
   ``test``; the others keep their ``train``/``val`` split of the data YAML when it has both,
   else they are stratified into train/val as above.
5. Warns about splits far from their target size (naming the classes whose coverage forced
   it) and classes missing from a split.
6. Writes ``train.txt``, ``val.txt``, ``test.txt`` (only the splits asked for that got an
   image), the report
   ``split_report.json`` and a ``data.yaml`` that reads the dataset through those lists
   (``split_lists:``), all atomically, into a folder claimed with
   :func:`segflow.io_utils.claim_output_dir`. An ``--out`` where an output would replace an
   input (the source YAML, its list files) is refused first.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from segflow.data.labels import LabelRules
from segflow.data.readers import Reader, Sample, create_reader
from segflow.data.readers.base import natural_key
from segflow.data.spec import PATH_OPTIONS, DataSpec, load_data_spec
from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write, claim_output_dir
from segflow.yaml_io import write_yaml

SPLIT_NAMES = ("train", "val", "test")
"""Split names, in the order they are written and reported."""
DATA_YAML = "data.yaml"
REPORT_JSON = "split_report.json"
OUTPUTS = (*(f"{name}.txt" for name in SPLIT_NAMES), REPORT_JSON, DATA_YAML)
"""What ``data split`` owns in its ``--out`` folder (``--overwrite`` replaces only these)."""
DEFAULT_FRACTION = 0.15
MAX_PROBLEMS_NAMED = 3
"""Dataset problems quoted in the refusal (``data check`` lists them all)."""
MAX_GROUPS_NAMED = 5
RENDER_WIDTH = 140
PERCENT = 100.0
FAR_POINTS = 0.05
"""A split's image share is far from its target only when also this far off (5 points)."""


@dataclass
class ImageStats:
    """Per-image class statistics of a dataset, read once.

    Attributes:
        paths: Image paths relative to the dataset root (posix), one per image.
        present: ``(N, K)`` bool, class ``k`` has a labelled pixel in image ``i``.
        pixels: ``(N, K)`` int64 labelled pixels per class and image.
    """

    paths: list[str]
    present: np.ndarray
    pixels: np.ndarray


@dataclass
class SplitResult:
    """What :func:`split_dataset` produced.

    Attributes:
        report: The JSON-ready report (also written to ``split_report.json``).
        warnings: One line each (splits far from their target size, classes in a single
            group, classes missing from a split).
        written: Files written, in writing order (``data.yaml`` last).
        text: The report as plain-text tables (what the CLI prints).
    """

    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    text: str = ""


# -- arguments --------------------------------------------------------------------------------
def split_fractions(val: float, test: float) -> dict[str, float]:
    """The share of images each split should get, checked.

    Args:
        val: Share of images for ``val``, in [0, 1).
        test: Share of images for ``test``, in [0, 1); 0 means no test split.

    Returns:
        ``{split: share}`` for the splits with a share above 0, in train/val/test order
        (``train`` gets ``1 - val - test``).

    Raises:
        ConfigError: A share outside [0, 1) or not a number, or ``val + test >= 1``.
    """
    for flag, value in (("--val", val), ("--test", test)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ConfigError(
                f"{flag} must be a share of the images in [0, 1), e.g. {flag} 0.15; got {value!r}"
            )
    if val + test >= 1.0:
        raise ConfigError(
            f"--val {val:g} and --test {test:g} add up to {val + test:g}, leaving no images for train; "
            "make their sum below 1, e.g. --val 0.15 --test 0.15"
        )
    shares = {"train": 1.0 - val - test, "val": float(val), "test": float(test)}
    return {name: share for name, share in shares.items() if share > 0.0}


def compile_group_regex(pattern: str) -> re.Pattern[str]:
    """Compiles ``--group-by``; a bad regex is one ConfigError line."""
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(
            f"--group-by '{pattern}' is not a valid regular expression ({err}); e.g. --group-by "
            "'([^/]+)_\\d+\\.png$' groups 'seq01_0001.png' and 'seq01_0002.png' as 'seq01'"
        ) from None


def assign_groups(paths: Sequence[str], pattern: str | None) -> list[str]:
    """The group of each image.

    Args:
        paths: Image paths relative to the dataset root (posix).
        pattern: ``--group-by`` regex, searched (``re.search``) in each file name, or in
            the whole path when the regex holds a ``/``; the group is its first capture
            group, or the whole match when it has no group. ``None``: each image is its own
            group (its path).

    Returns:
        One group name per path.

    Raises:
        ConfigError: The regex is invalid, or it gives no (or an empty) group for an image
            (names the first such image and how many more there are).
    """
    if pattern is None:
        return list(paths)
    regex = compile_group_regex(pattern)
    groups: list[str] = []
    missed: list[str] = []
    on_path = "/" in pattern
    for path in paths:
        match = regex.search(path if on_path else path.rsplit("/", 1)[-1])
        name = None if match is None else (match.group(1) if regex.groups else match.group(0))
        if not name:
            missed.append(path)
        groups.append(name or "")
    if missed:
        more = f" (and {len(missed) - 1} more image(s))" if len(missed) > 1 else ""
        capture = "its first capture group" if regex.groups else "it"
        where = "path relative to the dataset root" if on_path else "file name"
        raise ConfigError(
            f"--group-by '{pattern}' gives no group for image {missed[0]!r}{more}: {capture} must match a "
            f"non-empty part of every image {where}; "
            "widen the regex, "
            "e.g. '([^/]+)_\\d+\\.png$' for names like 'seq01_0001.png'"
        )
    return groups


# -- reading ----------------------------------------------------------------------------------
def list_images(reader: Reader, source: str) -> tuple[list[Sample], list[str]]:
    """Every image of the dataset (native splits merged), in natural order of its path.

    Args:
        reader: The dataset's reader.
        source: The data YAML (for messages).

    Returns:
        The images and the listing's warnings (e.g. annotations ``skip_degenerate`` skipped).

    Raises:
        DataError: The listing has problems (the first ones are named, as ``data check``
            reports them) or no image.
    """
    listing = reader.list_all_native()
    if listing.problems:
        count = len(listing.problems)
        shown = "; ".join(listing.problems[:MAX_PROBLEMS_NAMED])
        more = f" (and {count - MAX_PROBLEMS_NAMED} more)" if count > MAX_PROBLEMS_NAMED else ""
        raise DataError(
            f"{source}: the dataset has {count} problem(s), fix them before splitting: {shown}{more}; "
            f"'segflow data check {source}' lists them all"
        )
    if not listing.samples:
        where = listing.location or reader.spec.root
        raise DataError(f"{source}: the dataset has no images to split ({where})")
    samples = sorted(listing.samples, key=lambda s: natural_key(reader.relative_path(s.image_path)))
    return samples, list(listing.warnings)


def image_stats(reader: Reader, samples: Sequence[Sample]) -> ImageStats:
    """Reads each image's mask once, through the reader and its label rules.

    Cost: one mask read per image, one mask in memory at a time.

    Args:
        reader: The dataset's reader.
        samples: The images (from :func:`list_images`).

    Returns:
        Paths and per-image class presence and labelled pixel counts.

    Raises:
        DataError: A mask is unreadable or holds a value that maps to no label.
    """
    rules: LabelRules = reader.label_rules
    pixels = np.zeros((len(samples), rules.num_classes), dtype=np.int64)
    for index, sample in enumerate(samples):
        source_file = sample.mask_path or f"{sample.image_path} (annotations)"
        labels = rules.to_labels(reader.read_raw_mask(sample), source_file)
        pixels[index] = rules.class_pixels(labels)
    return ImageStats([reader.relative_path(s.image_path) for s in samples], pixels > 0, pixels)


# -- assignment -------------------------------------------------------------------------------
def stratify(
    label_counts: np.ndarray, sizes: Sequence[int], shares: Sequence[float], seed: int = 0
) -> list[int]:
    """Assigns groups to splits by iterative stratification, for multi-label data.

    The algorithm of Sechidis, Tsoumakas & Vlahavas (2011), "On the stratification of
    multi-label data" (ECML PKDD), applied to groups of images: a group's labels are the
    classes present in any of its images, and every demand is counted in images.

    - Split ``j`` wants ``shares[j] * N`` images in all and ``shares[j] * N_k`` images
      holding class ``k`` (``N_k`` images hold it in the dataset).
    - Repeatedly take the rarest class among the unassigned groups (fewest groups, then
      fewest images, then lowest index) and place each of its unassigned groups, largest
      first (equal sizes in seeded random order), in the split with the largest remaining
      demand for that class; ties go to the largest remaining total demand, then to a
      seeded random choice. Placing a group lowers every demand it meets.
    - Groups without any class go last, by remaining total demand.

    Rules added to the paper's (the paper places examples in arbitrary order and has no
    groups), in order of precedence:

    0. Train first: a class in fewer groups than there are splits cannot reach them all, and
       a model never learns a class absent from train, so its groups go to train first,
       then to val, then to test (the first split in that order still lacking it). This
       wins over rule 1: on three groups for three splits it may leave a split empty.
    1. Every split gets a group when there are enough groups: when the groups still to
       place are no more than the empty splits, the group goes to an empty split.
    2. A class reaches every split when it has enough groups: when the class's groups
       still to place are no more than the splits that lack it, the group goes to one of
       those (groups go largest first, so the smallest ones fill the small splits).
    3. Sizes: otherwise a group goes only to a split it brings closer to its target size
       (remaining total demand at least half the group), unless no split qualifies.
       Without this, the class demands of many-class groups drift the split sizes (up to
       1.6 largest-groups off on random multi-class data; within one group with it).

    Args:
        label_counts: ``(G, K)`` images of group ``g`` holding class ``k``.
        sizes: ``G`` image counts, one per group.
        shares: Target share of images per split (positive, summing to 1).
        seed: Seed of the random order of equal-size groups and of the ties.

    Returns:
        The split index of each group. Deterministic for a seed.
    """
    return _Stratifier(label_counts, sizes, shares, seed).run()


def stratify_explained(
    label_counts: np.ndarray, sizes: Sequence[int], shares: Sequence[float], seed: int = 0
) -> tuple[list[int], list[int]]:
    """:func:`stratify`, also telling which groups the class rules placed.

    Args:
        label_counts: ``(G, K)`` images of group ``g`` holding class ``k``.
        sizes: ``G`` image counts, one per group.
        shares: Target share of images per split (positive, summing to 1).
        seed: Seed of the random order of equal-size groups and of the ties.

    Returns:
        ``(splits, causes)``: the split index of each group (as :func:`stratify`) and, per
        group, the class whose coverage (rule 0 or 2 of :func:`stratify`) chose its split,
        or -1 when sizes or demands chose it.
    """
    stratifier = _Stratifier(label_counts, sizes, shares, seed)
    splits = stratifier.run()
    return splits, [int(cause) for cause in stratifier.cause]


class _Stratifier:
    """State of one :func:`stratify` run: remaining demands and what each split holds."""

    def __init__(
        self, label_counts: np.ndarray, sizes: Sequence[int], shares: Sequence[float], seed: int
    ) -> None:
        self.counts = np.asarray(label_counts, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        ratio = np.asarray(shares, dtype=np.float64)
        self.splits = list(range(len(ratio)))
        self.rng = random.Random(seed)
        order = list(range(len(self.sizes)))
        self.rng.shuffle(order)
        self.rank = {group: position for position, group in enumerate(order)}
        self.total_demand = ratio * float(self.sizes.sum())
        self.class_demand = ratio[:, None] * self.counts.sum(axis=0)[None, :].astype(np.float64)
        self.has_class = np.zeros((len(ratio), self.counts.shape[1]), dtype=bool)
        self.filled = np.zeros(len(ratio), dtype=bool)
        self.assignment = np.full(len(self.sizes), -1, dtype=np.int64)
        self.cause = np.full(len(self.sizes), -1, dtype=np.int64)
        self.groups_of_class = (self.counts > 0).sum(axis=0)

    def run(self) -> list[int]:
        while (label := self._rarest_class()) is not None:
            members = self._largest_first(np.flatnonzero((self.assignment < 0) & (self.counts[:, label] > 0)))
            for position, group in enumerate(members):
                left = len(members) - position
                candidates, cause = self._class_candidates(group, label, left)
                self._place(group, candidates, self.class_demand[:, label], cause)
        for group in self._largest_first(np.flatnonzero(self.assignment < 0)):
            self._place(group, self._forced_to_empty() or self.splits, self.total_demand)
        return [int(split) for split in self.assignment]

    def _rarest_class(self) -> int | None:
        """The class in the fewest unassigned groups (then fewest images, lowest index)."""
        open_groups = (self.assignment < 0)[:, None]
        groups_with = ((self.counts > 0) & open_groups).sum(axis=0)
        if not groups_with.any():
            return None
        images_with = (self.counts * open_groups).sum(axis=0)
        return int(min(np.flatnonzero(groups_with), key=lambda k: (groups_with[k], images_with[k], k)))

    def _largest_first(self, groups: np.ndarray) -> list[int]:
        return sorted((int(g) for g in groups), key=lambda g: (-int(self.sizes[g]), self.rank[g]))

    def _forced_to_empty(self) -> list[int]:
        """The empty splits when no more groups are left than empty splits, else []."""
        empty = [j for j in self.splits if not self.filled[j]]
        return empty if len(empty) >= int((self.assignment < 0).sum()) else []

    def _class_candidates(self, group: int, label: int, left: int) -> tuple[list[int], int]:
        """The splits a group of ``label`` may go to (rules 0-3 of :func:`stratify`), and
        ``label`` when a class rule (0 or 2) chose them, else -1."""
        lacking = [j for j in self.splits if not self.has_class[j, label]]
        few = self.groups_of_class[label] < len(self.splits)
        if few and lacking and lacking[0] == self.splits[0]:
            return [lacking[0]], label  # rule 0: train first, over rule 1
        forced = self._forced_to_empty()
        if forced:
            return ([j for j in forced if j in lacking][:1] or forced) if few else forced, -1
        if few and lacking:
            return [lacking[0]], label  # rule 0: then val, then test
        if lacking and left <= len(lacking):
            return lacking, label
        roomy = [j for j in self.splits if self.total_demand[j] >= self.sizes[group] / 2]
        return roomy or self.splits, -1

    def _place(self, group: int, candidates: list[int], demand: np.ndarray, cause: int = -1) -> None:
        """Largest ``demand`` wins; ties: largest total demand, then a seeded random choice."""
        best = max(demand[j] for j in candidates)
        tied = [j for j in candidates if demand[j] == best]
        if len(tied) > 1:
            most = max(self.total_demand[j] for j in tied)
            tied = [j for j in tied if self.total_demand[j] == most]
        split = tied[0] if len(tied) == 1 else self.rng.choice(tied)
        self.assignment[group] = split
        self.cause[group] = cause
        self.total_demand[split] -= self.sizes[group]
        self.class_demand[split] -= self.counts[group]
        self.has_class[split] |= self.counts[group] > 0
        self.filled[split] = True


# -- report -----------------------------------------------------------------------------------
def _shares(present: np.ndarray, pixels: np.ndarray) -> tuple[list[float], list[float]]:
    images = present.shape[0]
    labelled = int(pixels.sum())
    image_share = [float(v) / images if images else 0.0 for v in present.sum(axis=0)]
    pixel_share = [float(v) / labelled if labelled else 0.0 for v in pixels.sum(axis=0)]
    return image_share, pixel_share


def build_report(
    stats: ImageStats,
    groups: list[str],
    split_of_image: list[str],
    shares: dict[str, float],
    rules: LabelRules,
    forced: dict[str, list[int]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The split report and its warnings.

    Args:
        stats: Per-image class statistics.
        groups: Group of each image.
        split_of_image: Split of each image.
        shares: Target share per split.
        rules: The label rules (class names, the ignored class).
        forced: Per split, the classes whose coverage placed groups there, rarest first
            (from :func:`stratify_explained`); named by the size warnings.

    Returns:
        ``(report, warnings)``. The report holds per split (and ``all``): image and group
        counts, actual and target share, and per class the share of images holding it and
        its share of labelled pixels (``None``, JSON ``null``, for the ignored class: it
        has no labelled pixel by definition). Warnings: splits far from their target size
        (:func:`size_warnings`), then classes in a single group or missing from a split.
    """
    classes = list(rules.classes)
    scored = [k for k in range(rules.num_classes) if rules.scored[k]]
    names = np.asarray(split_of_image)
    group_names = np.asarray(groups)
    total = len(stats.paths)
    parts: dict[str, Any] = {}
    for split in ["all", *shares]:
        rows = np.ones(total, dtype=bool) if split == "all" else names == split
        image_share, pixel_share = _shares(stats.present[rows], stats.pixels[rows])
        parts[split] = {
            "images": int(rows.sum()),
            "groups": len(set(group_names[rows].tolist())),
            "share": float(rows.sum()) / total,
            "target_share": 1.0 if split == "all" else shares[split],
            "class_image_share": _undefined_ignored(classes, image_share, rules.ignored_class),
            "class_pixel_share": _undefined_ignored(classes, pixel_share, rules.ignored_class),
        }
    warnings = size_warnings(parts, shares, classes, forced or {})
    warnings += _class_warnings(stats, group_names, names, list(shares), classes, scored)
    report = {"classes": classes, "ignored_class": rules.ignored_class, "splits": parts, "warnings": warnings}
    return report, warnings


def _undefined_ignored(
    classes: list[str], values: list[float], ignored: int | None
) -> dict[str, float | None]:
    """``{class: value}``, ``None`` for the ignored class (its shares are undefined)."""
    return {
        name: None if index == ignored else value
        for index, (name, value) in enumerate(zip(classes, values, strict=True))
    }


def is_far_from_target(share: float, target: float) -> bool:
    """Whether a split's image share misses its target badly: none at all, or more than
    twice or less than half the target and more than :data:`FAR_POINTS` off."""
    if share == 0.0:
        return True
    off_ratio = share > 2.0 * target or share < target / 2.0
    return off_ratio and abs(share - target) > FAR_POINTS


def size_warnings(
    parts: dict[str, Any], shares: dict[str, float], classes: list[str], forced: dict[str, list[int]]
) -> list[str]:
    """One line per split whose image share is far from its target (:func:`is_far_from_target`).

    Args:
        parts: The report's per-split entries (``images``, ``groups``, ``share``).
        shares: Target share per split.
        classes: Class names.
        forced: Per split, the classes whose coverage placed groups there, rarest first.

    Returns:
        The lines: the share, the target and, where known, the classes whose groups forced
        it (placed in an over-full split, or in the other splits of an under-full one).
    """
    lines = []
    for split, target in shares.items():
        part = parts[split]
        share = float(part["share"])
        if not is_far_from_target(share, target):
            continue
        line = f"split {split!r} got {share * PERCENT:.1f}% of the images"
        line += f" for a target of {target * PERCENT:.1f}%"
        if share > target:
            culprits, where = forced.get(split, []), "in it"
        else:
            culprits = [k for name in shares if name != split for k in forced.get(name, [])]
            culprits, where = list(dict.fromkeys(culprits)), "in other splits"
        if culprits:
            named = ", ".join(f"class {k} ({classes[k]})" for k in culprits[:MAX_GROUPS_NAMED])
            more = f" and {len(culprits) - MAX_GROUPS_NAMED} more" if len(culprits) > MAX_GROUPS_NAMED else ""
            line += (
                f": the groups of {named}{more} were placed {where} so that each class reaches train "
                "first, then every split it can; add images of those classes in more groups, "
                "or group more finely"
            )
        elif share > target and part["groups"] == 1:
            line += f": its one group of {part['images']} image(s) is the least a split can hold; "
            line += "group more finely"
        else:
            line += ": the groups are too large for the target; "
            line += "group more finely (--group-by) or change --val/--test"
        if not part["images"]:
            line += f"; {split}.txt is not written and data.yaml has no {split!r} split"
        lines.append(line)
    return lines


def _class_warnings(
    stats: ImageStats,
    groups: np.ndarray,
    splits: np.ndarray,
    split_names: list[str],
    classes: list[str],
    scored: list[int],
) -> list[str]:
    warnings = []
    for k in scored:
        holders = stats.present[:, k]
        label = f"class {k} ({classes[k]})"
        if not holders.any():
            warnings.append(f"{label} is in no image of the dataset, so no split has it")
            continue
        its_groups = sorted(set(groups[holders].tolist()), key=natural_key)
        if len(its_groups) == 1 and len(split_names) > 1:
            only = its_groups[0]
            reached = str(splits[groups == only][0])
            images = int(holders.sum())
            warnings.append(
                f"{label} is in a single group ({only!r}, {images} image(s) hold it), so it can reach "
                f"only one split ({reached}); add images of it from other groups, or group more finely"
            )
            continue
        for split in split_names:
            if not (holders & (splits == split)).any():
                warnings.append(
                    f"{label} is in no image of split {split!r} (it is in {len(its_groups)} group(s) for "
                    f"{len(split_names)} splits)"
                )
    return warnings


def render_report(report: dict[str, Any], header: str) -> str:
    """The report as plain-text tables; data-derived text is never read as rich markup."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=RENDER_WIDTH, no_color=True, highlight=False)
    console.print(Text(header), soft_wrap=True)
    parts: dict[str, Any] = report["splits"]
    sizes = Table(title="splits")
    for column in ("split", "images", "groups", "share %", "target %"):
        sizes.add_column(column, justify="left" if column == "split" else "right")
    for name, part in parts.items():
        sizes.add_row(
            Text(name),
            str(part["images"]),
            str(part["groups"]),
            f"{part['share'] * PERCENT:.1f}",
            f"{part['target_share'] * PERCENT:.1f}",
        )
    console.print(sizes)
    table = Table(title="class share % (of images holding it / of labelled pixels)")
    table.add_column("class")
    for name in parts:
        table.add_column(Text(f"{name} img"), justify="right")
        table.add_column(Text(f"{name} px"), justify="right")
    for index, name in enumerate(report["classes"]):
        if index == report["ignored_class"]:
            table.add_row(Text(f"{index} {name}"), *("ignored" for _ in range(2 * len(parts))))
            continue
        cells = []
        for part in parts.values():
            cells += [
                f"{part['class_image_share'][name] * PERCENT:.1f}",
                f"{part['class_pixel_share'][name] * PERCENT:.2f}",
            ]
        table.add_row(Text(f"{index} {name}"), *cells)
    console.print(table)
    return buffer.getvalue()


# -- writing ----------------------------------------------------------------------------------
def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (posix), absolute when they are on different drives."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:
        return path.as_posix()


def split_data_yaml(spec: DataSpec, folder: Path, lists: dict[str, str]) -> dict[str, Any]:
    """The data YAML of the split dataset: the source spec read through the list files.

    Args:
        spec: The loaded source spec (absolute paths).
        folder: The output folder (absolute) the YAML is written to.
        lists: Split -> list file name in ``folder``.

    Returns:
        The spec as a YAML mapping: ``root`` and path options relative to ``folder``,
        ``split_lists`` replaced by ``lists``.
    """
    content = spec.model_dump(exclude_defaults=True, exclude={"split_lists"})
    content["format"] = spec.format
    if spec.root is not None:
        content["root"] = _relative_to(spec.root, folder)
    options = dict(spec.options)
    for key in PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = _relative_to(Path(str(options[key])), folder)
    if options:
        content["options"] = options
    content["split_lists"] = dict(lists)
    ordered = {key: content[key] for key in DataSpec.model_fields if key in content}
    return ordered


def _same_file(first: Path, second: Path) -> bool:
    """Same file: equal resolved paths (links followed), or ``samefile`` when both exist."""
    if first.resolve() == second.resolve():
        return True
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def refuse_inputs_among_outputs(data: str | Path, spec: DataSpec, out: str | Path) -> None:
    """Refuses an ``--out`` folder where an output (:data:`OUTPUTS`) is one of the inputs.

    ``--overwrite`` removes and rewrites every output name, so ``--out`` must not be where
    the source data YAML is ``data.yaml``, nor where its ``split_lists`` files are
    ``train.txt``/``val.txt``/``test.txt`` (e.g. re-splitting ``two/data.yaml`` with
    ``--out two``). Paths are compared resolved (links followed). Checked before any work.

    Args:
        data: The source data YAML.
        spec: Its loaded spec (absolute ``split_lists``).
        out: The ``--out`` folder.

    Raises:
        ConfigError: One line naming the input file and telling to choose another ``--out``.
    """
    inputs = [("the source data YAML", Path(data))]
    inputs += [
        (f"the {name!r} list of the source data YAML", path) for name, path in spec.split_lists.items()
    ]
    folder = Path(out)
    for what, path in inputs:
        for name in OUTPUTS:
            if _same_file(folder / name, path):
                raise ConfigError(
                    f"--out {out}: its {name} would replace {what}, {path}, which the split reads; "
                    "choose another --out folder (e.g. a new sub-folder)"
                )


def split_dataset(
    data: str | Path,
    out: str | Path,
    *,
    val: float | None = None,
    test: float | None = None,
    group_by: str | None = None,
    hold_out: str | Sequence[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SplitResult:
    """Splits a dataset into grouped, class-stratified train/val/test lists (module docstring).

    With ``hold_out`` (the held-out protocol, e.g. CamVid's drive ``0001TP`` as an unseen-drive
    test set): every image of the named groups goes to ``test``; the other images keep their
    split in the data YAML (its ``split_lists`` when it has them, else the format's own) when
    that YAML has both ``train`` and ``val``; otherwise they are stratified into train/val by
    :func:`stratify` (``val`` share of them). Images of a third split (e.g. a native ``test``)
    outside the held-out groups are then in no list (a warning counts them).

    Args:
        data: The source data YAML.
        out: Output folder (``train.txt``, ``val.txt``, ``test.txt``, ``split_report.json``,
            ``data.yaml``); refused when not empty unless ``overwrite``.
        val: Share of images for val, in [0, 1); 0 writes no val split. ``None``:
            :data:`DEFAULT_FRACTION`. With ``hold_out``: the share of the not-held-out images,
            refused when the data YAML has its own train and val.
        test: Share of images for test, in [0, 1); 0 writes no test split. ``None``:
            :data:`DEFAULT_FRACTION`; refused with ``hold_out`` (the held-out groups are test).
        group_by: Regex giving each image's group (see :func:`assign_groups`).
        hold_out: Group names (a list, or one comma-separated string) whose images become
            ``test``; needs ``group_by``.
        seed: Seed of the assignment's random tie-breaks.
        overwrite: Replace the files an earlier split wrote in ``out``.
        progress: Called with one line before the masks are read.

    Returns:
        The report, its warnings and the files written.

    Raises:
        ConfigError: Bad shares, a bad or non-matching regex, a bad spec, an output that
            would replace an input file (:func:`refuse_inputs_among_outputs`), a
            non-empty ``out`` without ``overwrite``; with ``hold_out``: no ``group_by``, a
            held-out group that does not exist (the existing groups are named), ``test`` or
            (with native train and val) ``val`` given, or an empty train left.
        DataError: The dataset has problems, no image, fewer groups than splits, or a
            mask that cannot be read or holds an unknown value.
    """
    held = hold_out_groups(hold_out, group_by, val=val, test=test)
    shares = split_fractions(
        DEFAULT_FRACTION if val is None else val, DEFAULT_FRACTION if test is None else test
    )
    if group_by is not None:
        compile_group_regex(group_by)
    spec = load_data_spec(data)
    refuse_inputs_among_outputs(data, spec, out)
    reader = create_reader(spec)
    rules = reader.label_rules
    source = str(data)
    samples, listing_warnings = list_images(reader, source)
    paths = [reader.relative_path(s.image_path) for s in samples]
    groups = assign_groups(paths, group_by)
    plan = None if not held else plan_hold_out(reader, samples, groups, held, val, group_by or "", source)
    if plan is None and len(set(groups)) < len(shares):
        count = len(set(groups))
        raise DataError(
            f"{source}: {count} group(s) for {len(shares)} splits ({', '.join(shares)}); each split needs a "
            "whole group: split into fewer parts (--test 0 or --val 0) or group more finely (--group-by)"
        )
    folder = claim_output_dir(out, overwrite=overwrite, owned=OUTPUTS, what="--out folder").resolve()
    if progress is not None:
        progress(f"reading {len(samples)} masks")
    stats = image_stats(reader, samples)
    if plan is None:
        split_of_image, forced = _assign(stats, groups, shares, seed)
        method = STRATIFIED_METHOD
    else:
        split_of_image, shares, forced = _assign_held_out(stats, groups, plan, seed)
        listing_warnings += plan.warnings
        method = plan.method
    report, warnings = build_report(stats, groups, split_of_image, shares, rules, forced)
    warnings = [*listing_warnings, *warnings]
    report = {
        "data": source,
        "format": spec.format,
        "root": None if spec.root is None else str(spec.root),
        "seed": seed,
        "group_by": group_by,
        "hold_out": held or None,
        "method": method,
        **report,
        "warnings": warnings,
    }
    result = SplitResult(report, warnings, _write_outputs(folder, spec, stats.paths, split_of_image, report))
    result.text = render_report(report, _header(spec, len(stats.paths), groups, group_by, seed, held))
    return result


# -- held-out groups --------------------------------------------------------------------------
STRATIFIED_METHOD = "iterative stratification of groups (Sechidis, Tsoumakas & Vlahavas 2011)"
HELD_OUT_NATIVE = "held-out groups -> test; the other images keep their train/val split of the data YAML"
HELD_OUT_STRATIFIED = f"held-out groups -> test; the other images: {STRATIFIED_METHOD} into train/val"
MAX_GROUPS_LISTED = 30
"""Existing groups named by the refusal of an unknown ``--hold-out`` group."""


@dataclass
class HoldOutPlan:
    """Where each image goes under ``--hold-out``, decided before any mask is read.

    Attributes:
        split_of_image: Per image: ``test`` (held out), its native ``train``/``val``, ``""``
            (in no list), or ``None`` (to be stratified into train/val).
        rest_shares: Target shares of the stratified images (``{}`` when none is stratified).
        method: The report's ``method``.
        warnings: One line each (images left out, an empty native val).
    """

    split_of_image: list[str | None]
    rest_shares: dict[str, float]
    method: str
    warnings: list[str] = field(default_factory=list)


def hold_out_groups(
    hold_out: str | Sequence[str] | None,
    group_by: str | None,
    *,
    val: float | None = None,
    test: float | None = None,
) -> list[str]:
    """The ``--hold-out`` group names, checked against the other arguments.

    Args:
        hold_out: Group names, or one comma-separated string (``"0001TP,0006R0"``); ``None``
            or empty: no hold-out.
        group_by: The ``--group-by`` regex (required with names).
        val: ``--val`` as given (``None``: not given); checked later against the dataset.
        test: ``--test`` as given (``None``: not given).

    Returns:
        The names, stripped, duplicates dropped, in the order given; ``[]`` without hold-out.

    Raises:
        ConfigError: Names without ``group_by``, a list naming no group, or ``test`` given.
    """
    if hold_out is None or (isinstance(hold_out, str) and not hold_out):
        return []
    raw = hold_out.split(",") if isinstance(hold_out, str) else list(hold_out)
    text = hold_out if isinstance(hold_out, str) else ",".join(raw)
    names = list(dict.fromkeys(name.strip() for name in raw if name.strip()))
    if not names:
        raise ConfigError(
            f"--hold-out '{text}' names no group; give group names separated by commas, "
            "e.g. --hold-out 0001TP"
        )
    if group_by is None:
        raise ConfigError(
            f"--hold-out {text} needs --group-by: the held-out names are groups, e.g. --group-by '^([^_]+)_' "
            "puts '0001TP_006690.png' in group '0001TP'"
        )
    if test is not None:
        raise ConfigError(
            f"--test {test:g} and --hold-out exclude each other: the held-out groups are the test split; "
            "drop --test"
        )
    return names


def native_split_of(reader: Reader, samples: Sequence[Sample]) -> list[str | None]:
    """Each image's split in the data YAML (its ``split_lists``, else the format's own).

    Args:
        reader: The dataset's reader.
        samples: The images (from :func:`list_images`; the reader lists the same paths again).

    Returns:
        Per sample the first split (in the YAML's order) listing it, ``None`` when none does.
    """
    where: dict[tuple[Path, int | None], str] = {}
    for name in reader.split_names():
        for sample in reader.list_split(name).samples:
            where.setdefault((sample.image_path, sample.key), name)
    return [where.get((sample.image_path, sample.key)) for sample in samples]


def plan_hold_out(
    reader: Reader,
    samples: Sequence[Sample],
    groups: Sequence[str],
    held: Sequence[str],
    val: float | None,
    group_by: str,
    source: str,
) -> HoldOutPlan:
    """Places held-out groups in ``test`` and keeps (or marks for stratification) the rest.

    Args:
        reader: The dataset's reader.
        samples: The images (from :func:`list_images`).
        groups: Group of each image.
        held: The held-out group names (from :func:`hold_out_groups`).
        val: ``--val`` as given (``None``: not given, :data:`DEFAULT_FRACTION` when stratifying).
        group_by: The regex (for messages).
        source: The data YAML (for messages).

    Returns:
        The plan (see :class:`HoldOutPlan`).

    Raises:
        ConfigError: A held-out group that does not exist (the existing ones are named), ``val``
            given while the YAML has its own train and val, or no train image left.
        DataError: Too few not-held-out groups for train and val when stratifying.
    """
    existing = sorted(set(groups), key=natural_key)
    missing = [name for name in held if name not in existing]
    if missing:
        shown = ", ".join(existing[:MAX_GROUPS_LISTED])
        more = f" (and {len(existing) - MAX_GROUPS_LISTED} more)" if len(existing) > MAX_GROUPS_LISTED else ""
        raise ConfigError(
            f"--hold-out: no group {', '.join(repr(m) for m in missing)} in {source} by --group-by "
            f"'{group_by}'; its {len(existing)} group(s): {shown}{more}"
        )
    is_held = [group in held for group in groups]
    names = ",".join(held)
    split_names = reader.split_names()
    if "train" in split_names and "val" in split_names:
        if val is not None:
            raise ConfigError(
                f"--val {val:g} is not used with --hold-out: {source} has its own train and val splits, "
                "which the other images keep; drop --val"
            )
        native = native_split_of(reader, samples)
        plan: list[str | None] = [
            "test" if h else (n if n in ("train", "val") else "")
            for h, n in zip(is_held, native, strict=True)
        ]
        if "train" not in plan:
            raise ConfigError(
                f"--hold-out {names} leaves train empty: every train image of {source} is in a held-out "
                "group; hold out fewer groups"
            )
        warnings = []
        left = [n or "(none)" for p, n in zip(plan, native, strict=True) if p == ""]
        if left:
            counts = ", ".join(f"{count} of split {name!r}" for name, count in _counted(left))
            warnings.append(
                f"{len(left)} image(s) outside the held-out groups ({counts}) are in no list: with "
                "--hold-out, test is the held-out groups, train and val the data YAML's own"
            )
        if "val" not in plan:
            warnings.append(
                f"every val image of {source} is in a held-out group; val.txt is not written and data.yaml "
                "has no 'val' split"
            )
        return HoldOutPlan(plan, {}, HELD_OUT_NATIVE, warnings)
    share = DEFAULT_FRACTION if val is None else val
    rest_shares = split_fractions(share, 0.0)
    rest = {group for group, h in zip(groups, is_held, strict=True) if not h}
    if not rest:
        raise ConfigError(
            f"--hold-out {names} leaves train empty: every image of {source} is in a held-out group; "
            "hold out fewer groups"
        )
    if len(rest) < len(rest_shares):
        raise DataError(
            f"{source}: 1 group outside --hold-out {names} for train and val; each split needs a whole "
            "group: add --val 0 (no val split) or group more finely (--group-by)"
        )
    return HoldOutPlan(["test" if h else None for h in is_held], rest_shares, HELD_OUT_STRATIFIED)


def _counted(values: Sequence[str]) -> list[tuple[str, int]]:
    """``(value, count)`` in first-seen order."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return list(counts.items())


def _assign_held_out(
    stats: ImageStats, groups: list[str], plan: HoldOutPlan, seed: int
) -> tuple[list[str], dict[str, float], dict[str, list[int]]]:
    """Split of each image under a hold-out plan (the open images stratified by :func:`_assign`),
    the splits' target shares of all images, and the classes that forced groups (as :func:`_assign`).

    Targets: the kept native splits and the held-out test have their actual share as target;
    stratified train/val have their share of the stratified images.
    """
    chosen = list(plan.split_of_image)
    forced: dict[str, list[int]] = {}
    total = len(chosen)
    open_rows = [i for i, split in enumerate(chosen) if split is None]
    targets: dict[str, float] = {}
    if open_rows:
        subset = ImageStats(
            [stats.paths[i] for i in open_rows], stats.present[open_rows], stats.pixels[open_rows]
        )
        placed, forced = _assign(subset, [groups[i] for i in open_rows], plan.rest_shares, seed)
        for row, split in zip(open_rows, placed, strict=True):
            chosen[row] = split
        targets = {name: share * len(open_rows) / total for name, share in plan.rest_shares.items()}
    final = [split or "" for split in chosen]
    shares: dict[str, float] = {}
    for name in SPLIT_NAMES:
        count = final.count(name)
        if name in targets:
            shares[name] = targets[name]
        elif count:
            shares[name] = count / total
    return final, shares, forced


def _write_outputs(
    folder: Path, spec: DataSpec, paths: list[str], split_of_image: list[str], report: dict[str, Any]
) -> list[Path]:
    """Writes the list files, the report and ``data.yaml`` (last), each atomically."""
    lists = {  # an empty split (rule 0 of stratify on tiny data) is not written: data check refuses it
        name: f"{name}.txt" for name, part in report["splits"].items() if name != "all" and part["images"]
    }
    written = []
    for name, file_name in lists.items():
        chosen = sorted((p for p, s in zip(paths, split_of_image, strict=True) if s == name), key=natural_key)
        written.append(_write_text(folder / file_name, "".join(f"{line}\n" for line in chosen)))
    written.append(_write_text(folder / REPORT_JSON, json.dumps(report, indent=2) + "\n"))
    with atomic_write(folder / DATA_YAML) as tmp:
        write_yaml(tmp, split_data_yaml(spec, folder, lists))
    return [*written, folder / DATA_YAML]


def _header(
    spec: DataSpec, num_images: int, groups: list[str], group_by: str | None, seed: int, held: list[str]
) -> str:
    """First line of the printed report: the dataset, its images and groups, the seed, the
    held-out groups."""
    names = sorted(set(groups), key=natural_key)
    from segflow.data.check import dataset_location

    where = dataset_location(spec.format, spec.root, spec.sources)
    if group_by is None:
        return f"dataset: {where}; {num_images} images in {len(names)} groups (one per image); seed {seed}"
    shown = ", ".join(names[:MAX_GROUPS_NAMED]) + (", ..." if len(names) > MAX_GROUPS_NAMED else "")
    line = (
        f"dataset: {where}; {num_images} images in {len(names)} groups by --group-by '{group_by}' "
        f"({shown}); seed {seed}"
    )
    return line + (f"; held out as test: {', '.join(held)}" if held else "")


def _assign(
    stats: ImageStats, groups: list[str], shares: dict[str, float], seed: int
) -> tuple[list[str], dict[str, list[int]]]:
    """Split name of each image (groups stratified by :func:`stratify`), and per split the
    classes whose coverage placed groups there, rarest (first placed) first."""
    names = sorted(set(groups), key=natural_key)
    index = {name: i for i, name in enumerate(names)}
    member = np.asarray([index[g] for g in groups], dtype=np.int64)
    label_counts = np.zeros((len(names), stats.present.shape[1]), dtype=np.int64)
    np.add.at(label_counts, member, stats.present.astype(np.int64))
    sizes = np.bincount(member, minlength=len(names))
    split_names = list(shares)
    of_group, causes = stratify_explained(label_counts, sizes.tolist(), list(shares.values()), seed)
    forced: dict[str, list[int]] = {name: [] for name in split_names}
    for split, cause in zip(of_group, causes, strict=True):  # groups in name order, causes by class
        if cause >= 0 and cause not in forced[split_names[split]]:
            forced[split_names[split]].append(cause)
    groups_of_class = (label_counts > 0).sum(axis=0)
    for classes in forced.values():
        classes.sort(key=lambda k: (int(groups_of_class[k]), k))
    return [split_names[of_group[m]] for m in member], forced


def _write_text(path: Path, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
