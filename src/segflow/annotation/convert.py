"""``segflow data convert``: read a dataset in one format and write it in another.

The source is read through its reader (``segflow.data.DATASETS``), so its label rules,
rasterising rules and checks apply; each image's label mask (class indices and
``ignore_index``) goes to the target format's writer (``segflow.annotation.writers.WRITERS``).
Conversion carries semantic labels: one mask (or mask shape) per class and image.

Cost: every image is decoded once (its size must equal its mask's), every mask read or
rasterised once, and every image copied (hard-linked where the file
system allows); memory holds one mask at a time plus what the target keeps until the end
(the shapes of a single-file format: COCO, CVAT, Label Studio, VIA, Datumaro).

Nothing is written into ``DST`` until every image converted: the output is built in a
hidden sibling folder and moved into place at the end, so a failure leaves ``DST`` as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.io import read_image, size_mismatch_message
from segflow.data.readers import SplitListing, create_reader
from segflow.data.spec import DataSpec, load_data_spec
from segflow.errors import ConfigError, DataError
from segflow.io_utils import claim_output_dir, is_owned

MAX_SHOWN_PROBLEMS = 3


def source_spec(format_name: str | None, source: Path, classes: list[str] | None = None) -> DataSpec:
    """The data spec of a conversion source: a data YAML as it is, or ``{format, root}``.

    A folder holding a ``data.yaml`` of the same format (what ``data convert`` and
    ``data split`` write) is read through that YAML, so its class list and reading options
    come back with it.

    Raises:
        ConfigError: Unknown format, a YAML whose format differs from ``format_name``, or a
            missing source.
    """
    written = source / DATA_YAML
    if source.is_dir() and written.is_file() and format_name is not None:
        spec = load_data_spec(written)
        if spec.format == format_name and spec.root is not None and spec.root.resolve() == source.resolve():
            return spec if classes is None else spec.model_copy(update={"classes": classes})
    if source.suffix.lower() in (".yaml", ".yml") and source.is_file():
        spec = load_data_spec(source)
        if format_name and format_name != spec.format:
            raise ConfigError(
                f"--from {format_name} but {source} says 'format: {spec.format}'; drop --from or fix it"
            )
        return spec if classes is None else spec.model_copy(update={"classes": classes})
    if format_name is None:
        raise ConfigError(f"--from FORMAT is needed for {source} (a folder, not a data YAML)")
    if not source.exists():
        raise ConfigError(f"source {source} does not exist; give the export's folder")
    raw: dict[str, object] = {"format": format_name, "root": str(source.resolve())}
    if classes:
        raw["classes"] = classes
    return load_data_spec(raw)


def convert(
    spec: DataSpec,
    to_format: str,
    out: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Converts every split of ``spec`` into ``to_format`` under ``out``.

    Args:
        spec: The source dataset.
        to_format: A name of ``WRITERS``.
        out: Output folder (empty or missing, or ``overwrite``).
        overwrite: Replace what a previous conversion wrote in ``out``.
        progress: Called with one line per split.
        warn: Called with each warning of the source's reader (ignored shapes, skipped
            annotations, ...), once.

    Returns:
        The ``data.yaml`` written in ``out`` (reads the converted dataset back).

    Raises:
        ConfigError: Unknown target format, ``out`` not empty without ``overwrite``, or
            ``out`` is the source's folder, inside it or holds it.
        DataError: The source has problems (missing images, bad shapes, an image whose size
            differs from its annotation's) or no image; the first few problems are named and
            nothing is written.
    """
    writer_cls = WRITERS.get(to_format)
    _refuse_overlap(spec, out)
    if out.exists() and not overwrite:  # refuse a non-empty DST before any work (creates nothing)
        claim_output_dir(out, overwrite=False, owned=(), what="output folder")
    reader = create_reader(spec)
    rules = reader.label_rules
    listings = {split: reader.list_split(split) for split in reader.split_names()}
    _refuse_problems(listings)
    if not any(listing.samples for listing in listings.values()):
        raise DataError(
            f"cannot convert: found no image in {spec.root or spec.format} as a {spec.format} dataset; "
            "check --from and the folder (run 'segflow data check')"
        )
    for warning in dict.fromkeys(w for listing in listings.values() for w in listing.warnings):
        if warn:
            warn(warning)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        writer = writer_cls(staging, reader.classes, spec.ignore_index, reader.palette)
        mismatched: list[str] = []
        for split, listing in listings.items():
            for sample in listing.samples:
                raw = reader.read_raw_mask(sample)
                labels = rules.to_labels(raw, sample.mask_path or sample.image_path)
                image_hw = read_image(sample.image_path).shape[:2]
                if tuple(image_hw) != labels.shape:
                    mismatched.append(
                        size_mismatch_message(sample.image_path, image_hw, sample.mask_path, labels.shape)
                    )
                    continue
                writer.add(split, sample.name, sample.image_path, labels)
            if progress:
                progress(f"{split}: {len(listing.samples)} images")
        _refuse_problems({"": SplitListing([], mismatched)})
        writer.finish()
        _refuse_clashes(out, staging, writer_cls)
        claim_output_dir(out, overwrite=overwrite, owned=writer_cls.owned, what="output folder")
        for entry in sorted(staging.iterdir()):
            shutil.move(str(entry), str(out / entry.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "data.yaml"


def _refuse_overlap(spec: DataSpec, out: Path) -> None:
    """DST must be apart from the source: not its folder, not inside it, not above it."""
    if spec.root is None:
        return
    source, target = spec.root.resolve(), out.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ConfigError(
            f"output folder {out} overlaps the source {spec.root} (the same folder, inside it or "
            "holding it); write the conversion to a folder of its own"
        )


def _refuse_clashes(out: Path, staging: Path, writer_cls: type[DatasetWriter]) -> None:
    """Refuses, before anything in ``out`` is removed, an entry of ``out`` that the new output
    would land on but that is not the format's own (a user's folder named like a split)."""
    clashes = [
        entry.name
        for entry in sorted(staging.iterdir())
        if (out / entry.name).exists() and not is_owned(out / entry.name, writer_cls.owned)
    ]
    if clashes:
        raise ConfigError(
            f"output folder {out} holds {', '.join(clashes)}, which the {writer_cls.format_name} output "
            "writes but segflow did not write there; move it away or choose another folder"
        )


def _refuse_problems(listings: dict[str, SplitListing]) -> None:
    problems = [p for listing in listings.values() for p in listing.problems]
    if problems:
        shown = "; ".join(problems[:MAX_SHOWN_PROBLEMS])
        more = (
            f" (and {len(problems) - MAX_SHOWN_PROBLEMS} more; run 'segflow data check')"
            if len(problems) > MAX_SHOWN_PROBLEMS
            else ""
        )
        raise DataError(f"cannot convert: {shown}{more}")
