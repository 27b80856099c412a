"""``segflow data check DATA.yaml``: validate a dataset and print the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import data_app
from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, MAX_BOUNDARY_TOLERANCE
from segflow.data.check import DEFAULT_MAX_UNLABELLED_SHARE, check_dataset
from segflow.errors import ConfigError


@data_app.command("check")
def check(
    data: Annotated[Path, typer.Argument(help="Dataset YAML file (see configs/data/).")],
    split: Annotated[
        list[str] | None, typer.Option("--split", "-s", help="Split to check (repeatable); default: all.")
    ] = None,
    max_unlabelled_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Warn when more than this share of a split's images have no labelled pixel.",
        ),
    ] = DEFAULT_MAX_UNLABELLED_SHARE,
) -> None:
    """Checks a dataset: unpaired, unreadable or mismatched files, bad mask values, class shares."""
    report = check_dataset(data, splits=split or None, max_unlabelled_share=max_unlabelled_share)
    Console(highlight=False, soft_wrap=True).print(report.render(), markup=False, end="")
    if not report.ok:
        raise typer.Exit(1)


FORMAT_NAMES = "folder, coco, voc, cityscapes, camvid, labelme, cvat, label-studio, via, datumaro"
"""The dataset formats, as --help lists them (tests/annotation checks it against the registries)."""


@data_app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="The export's folder (or a data YAML).", show_default=False)],
    destination: Annotated[Path, typer.Argument(help="Output folder.", show_default=False)],
    to_format: Annotated[str, typer.Option("--to", help=f"Target format: {FORMAT_NAMES}.")],
    from_format: Annotated[
        str | None, typer.Option("--from", help=f"Source format: {FORMAT_NAMES} (or give a data YAML).")
    ] = None,
    classes: Annotated[
        str | None, typer.Option("--classes", help="Class names in index order, comma separated.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier conversion in DST.")
    ] = False,
    anonymise: Annotated[
        bool,
        typer.Option(
            "--anonymise",
            help="With --from dicom --to dicom: copy every DICOM file with patient-identifying tags removed.",
        ),
    ] = False,
) -> None:
    """Converts a dataset between formats: `segflow data convert --from cvat SRC --to coco DST`.

    `segflow data convert --from dicom SRC --to dicom DST --anonymise` de-identifies a tree of
    DICOM files (docs/medical.md lists the tags).
    """
    if anonymise or "dicom" in (from_format, to_format):
        _anonymise(source, destination, from_format, to_format, anonymise, overwrite)
        return
    from segflow.annotation.convert import convert, source_spec

    names = [name.strip() for name in classes.split(",") if name.strip()] if classes else None
    spec = source_spec(from_format, source, names)
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    written = convert(
        spec,
        to_format,
        destination,
        overwrite=overwrite,
        progress=lambda line: console.print(line, markup=False),
        warn=lambda line: errors.print(f"warning: {line}", markup=False),
    )
    console.print(f"wrote {destination} ({to_format}); read it with: {written}", markup=False)


def _anonymise(
    source: Path, destination: Path, from_format: str | None, to_format: str, anonymise: bool, overwrite: bool
) -> None:
    """``--from dicom --to dicom --anonymise``: the one DICOM conversion (de-identification)."""
    if not (anonymise and from_format == "dicom" and to_format == "dicom"):
        raise ConfigError(
            "DICOM is converted only to de-identify it: segflow data convert --from dicom SRC --to dicom DST "
            "--anonymise (volumes are read as they are by 'format: dicom')"
        )
    import shutil
    import tempfile

    from segflow.domains.medical.deid import anonymise_tree
    from segflow.io_utils import claim_output_dir

    if not source.is_dir():
        raise ConfigError(f"DICOM source {source} is not a folder; give the folder that holds the series")
    src, dst = source.resolve(), destination.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConfigError(f"{destination} overlaps the source {source}; write the anonymised copy elsewhere")
    names = {entry.name for entry in source.iterdir()}
    claim_output_dir(destination, overwrite=overwrite, owned=lambda entry: entry.name in names)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        written = anonymise_tree(source, staging)
        for entry in sorted(staging.iterdir()):
            shutil.move(str(entry), str(dst / entry.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    message = f"wrote {written} de-identified DICOM file(s) to {destination}"
    Console(highlight=False).print(message, markup=False)


@data_app.command("agree")
def agree_command(
    data_a: Annotated[Path, typer.Argument(metavar="A.YAML", help="Reference labels (data YAML).")],
    data_b: Annotated[Path, typer.Argument(metavar="B.YAML", help="Compared labels (data YAML).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder.", show_default=False)],
    split: Annotated[
        str | None, typer.Option("--split", help="Compare this split of both sets; default: every split.")
    ] = None,
    boundary_tolerance: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_BOUNDARY_TOLERANCE,
            help=f"Boundary F1 match distance in pixels, 0..{MAX_BOUNDARY_TOLERANCE}.",
        ),
    ] = DEFAULT_BOUNDARY_TOLERANCE,
    worst: Annotated[
        int | None,
        typer.Option(min=0, help="List this many disagreeing images of lowest mIoU (default 10; 8 drawn)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier report.")] = False,
) -> None:
    """Inter-annotator agreement of two label sets: IoU, boundary F1, Cohen's kappa, worst images."""
    from rich.text import Text

    from segflow.metrics.agreement import DEFAULT_WORST, run_agreement, summary_lines, unmatched_warnings

    result = run_agreement(
        data_a,
        data_b,
        out,
        split=split,
        tolerance=boundary_tolerance,
        worst=DEFAULT_WORST if worst is None else worst,
        overwrite=overwrite,
    )
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in unmatched_warnings(result.report):
        errors.print(Text.assemble(("warning: ", "bold yellow"), line))
    console = Console(highlight=False, soft_wrap=True)
    for line in summary_lines(result.report):
        console.print(line, markup=False)
    console.print("wrote " + ", ".join(str(path) for path in result.written), markup=False)


GROUP_BY_HELP = (
    "Regex on the image file name (on the path under the root when it holds a '/'); "
    "its first group (else the match) is the group."
)
HOLD_OUT_HELP = (
    "Groups (of --group-by, comma separated) whose images are the test split; the others keep the "
    "dataset's own train/val, or are stratified into train/val when it has no such pair."
)


@data_app.command("split")
def split_command(
    data: Annotated[Path, typer.Argument(help="Dataset YAML (all its images).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the lists and YAML.", show_default=False)],
    val: Annotated[
        float | None, typer.Option("--val", help="Share of images for val, in [0, 1); default 0.15.")
    ] = None,
    test: Annotated[
        float | None, typer.Option("--test", help="Share for test, in [0, 1); 0: none; default 0.15.")
    ] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help=GROUP_BY_HELP)] = None,
    hold_out: Annotated[
        str | None, typer.Option("--hold-out", metavar="GROUP[,GROUP]", help=HOLD_OUT_HELP)
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random tie-breaks.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier split.")] = False,
) -> None:
    """Grouped, class-stratified train/val/test lists and a data YAML that reads them.

    `--group-by '^([^_]+)_' --hold-out 0001TP` makes CamVid's drive 0001TP the test split.
    """
    from rich.text import Text

    from segflow.data.split import split_dataset

    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    result = split_dataset(
        data,
        out,
        val=val,
        test=test,
        group_by=group_by,
        hold_out=hold_out,
        seed=seed,
        overwrite=overwrite,
        progress=lambda line: console.print(line, markup=False),
    )
    console.print(result.text, markup=False, end="")
    for line in result.warnings:
        errors.print(Text.assemble(("warning: ", "bold yellow"), line))
    console.print("wrote " + ", ".join(str(path) for path in result.written), markup=False)
