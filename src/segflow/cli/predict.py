"""``segflow predict MODEL INPUT... --out DIR``: label PNGs (or BigTIFFs), overlays, probabilities, videos."""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from segflow.cli.app import app
from segflow.cli.tta_option import TTA_HELP, tta_choice
from segflow.data.io import IMAGE_EXTENSIONS
from segflow.domains.route import SLIDE_SUFFIXES, input_kind, is_volume
from segflow.errors import ConfigError, DataError
from segflow.inference.backends import read_model_meta
from segflow.inference.manifest import (
    PredictionManifest,
    input_sha256,
    input_stem,
    model_record,
    open_prediction_dir,
)
from segflow.inference.options import DEFAULT_FRAME_BATCH, DEFAULT_OVERLAP, INPUT_KINDS, InferenceOptions
from segflow.inference.predictor import Predictor
from segflow.inference.streaming import RichTileProgress, predict_file
from segflow.inference.video import VIDEO_SUFFIXES, is_video, predict_video
from segflow.models.meta import TTA_FROM_CHECKPOINT
from segflow.models.source import parse_model_source

GLOB_CHARS = ("*", "?", "[")
CLI_TILE_BATCH = 1
"""Tiles per forward for ``segflow predict``: on the 2-core CPU, 1 ran as fast as 4 (3.37 vs
3.40 windows/s, ONNX Unet-MobileNetV3 on a 20000x1024 strip) with 0.32 GB less peak RSS."""


INPUT_SUFFIXES = (*IMAGE_EXTENSIONS, *VIDEO_SUFFIXES, *SLIDE_SUFFIXES, ".nii", ".nii.gz", ".dcm")


def _is_input_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(INPUT_SUFFIXES)


def _folder_files(folder: Path) -> list[Path]:
    """A folder's inputs: its image, video, slide and volume files, and its sub-folders that
    hold a DICOM series; a folder that is itself a DICOM series is one input."""
    if is_volume(folder):
        return [folder]
    children = sorted(folder.iterdir())
    return [p for p in children if _is_input_file(p) or (p.is_dir() and is_volume(p))]


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, videos, slides and volumes, sorted) and globs -> unique
    inputs, in order. A DICOM series folder (given, in a folder, or matched by a glob) is one input.

    Raises:
        DataError: An input does not exist or a glob/folder matches nothing.
    """
    found: list[Path] = []
    for item in inputs:
        if any(char in item for char in GLOB_CHARS):
            globbed = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            matches = [p for p in globbed if p.is_file() or (p.is_dir() and is_volume(p))]
        elif Path(item).is_dir():
            matches = _folder_files(Path(item))
        elif Path(item).is_file():
            matches = [Path(item)]
        else:
            raise DataError(f"input {item} does not exist; give image files, folders or globs")
        if not matches:
            raise DataError(
                f"input {item} matches no image, video, slide or volume file ({', '.join(INPUT_SUFFIXES)}); "
                "a folder is searched one level deep: for sub-folders give a glob such as 'DIR/*/*.nii.gz'"
            )
        found.extend(p for p in matches if p not in found)
    return found


def _check_stems(images: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in images:
        stem = input_stem(path)
        if stem in seen:
            raise ConfigError(
                f"inputs {seen[stem]} and {path} would both write outputs named {stem}.*; "
                "predict them into different --out folders"
            )
        seen[stem] = path


def _video_target(video: Path, out: Path) -> Path:
    return out if out.suffix.lower() in VIDEO_SUFFIXES else out / f"{video.stem}.mp4"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@app.command()
def predict(
    model: Annotated[
        str, typer.Argument(help="Checkpoint (.ckpt/.pt) or segflow export (.onnx); with --server, an input.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (or a .mp4 file for one video).")],
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Image files, folders or globs; or videos.")
    ] = None,
    overlay: Annotated[
        bool, typer.Option(help="Also write <stem>_overlay.png; videos: blend over frames.")
    ] = False,
    probs: Annotated[bool, typer.Option(help="Also write float16 <stem>_probs.npy (K, H, W).")] = False,
    backend: Annotated[
        str | None, typer.Option(help="torch, onnx or onnx-int8 (default: by suffix).")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Sliding-window tile size (multiple of the stride).")
    ] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap in [0, 0.9).")] = DEFAULT_OVERLAP,
    tile_batch: Annotated[
        int, typer.Option(help="Tiles per forward pass (memory grows with it; see streaming docs).")
    ] = CLI_TILE_BATCH,
    tta: Annotated[str | None, typer.Option("--tta", help=TTA_HELP)] = None,
    min_object_size: Annotated[int, typer.Option(help="Relabel objects smaller than this (pixels).")] = 0,
    fill_holes: Annotated[int, typer.Option(help="Fill enclosed holes smaller than this (pixels).")] = 0,
    threshold: Annotated[float | None, typer.Option(help="Binary models: class 1 where p1 >= this.")] = None,
    batch: Annotated[
        int, typer.Option(help="Video frames or volume slices per forward pass.")
    ] = DEFAULT_FRAME_BATCH,
    server: Annotated[
        str | None, typer.Option(help="Send images to a running `segflow serve` at this URL instead.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SEGFLOW_API_KEY", help="API key for --server.")
    ] = None,
    as_kind: Annotated[
        str | None,
        typer.Option("--as", help="Force the input path: image, slide, geo or volume (default: per file)."),
    ] = None,
    mpp: Annotated[
        float | None, typer.Option(help="Whole slides: target microns per pixel (picks the pyramid level).")
    ] = None,
    vectorize: Annotated[
        str | None,
        typer.Option(help="GeoTIFFs: also write polygons, geojson or gpkg (slides always get GeoJSON)."),
    ] = None,
    min_area: Annotated[
        float, typer.Option(help="Drop polygons smaller than this (map units^2; slides: um^2).")
    ] = 0.0,
    volume_output: Annotated[
        str, typer.Option(help="Volumes: nifti, or seg (also a DICOM SEG for DICOM input).")
    ] = "nifti",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Non-empty --out: first remove the outputs segflow wrote there (yours stay)."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Non-empty --out: finish the run recorded in its predictions.json (same model and options).",
        ),
    ] = False,
) -> None:
    """Segment images (any size: large TIFFs are streamed), videos, volumes, slides or rasters.

    Each image gives <stem>.png, an 8-bit palette PNG of class indices with the model's
    colours and the input's size (<stem>.tif, a tiled BigTIFF, above 8192x8192 pixels).
    A video gives <stem>.mp4 (or the --out .mp4 file) at the source frame rate and size.
    A volume (NIfTI, DICOM file or series folder) gives <case>.nii.gz with the source's
    affine; a whole slide (.svs, .ndpi, .mrxs, or a pyramidal TIFF with --mpp) gives
    <stem>.ome.tif and <stem>.geojson; a GeoTIFF gives <stem>.tif with its CRS and transform.
    docs/medical.md, docs/pathology.md and docs/geospatial.md describe each; --as overrides
    the choice (segflow.domains.route).
    --out also gets predictions.json, listing the model, the options and each finished input
    with its SHA-256 and outputs. A non-empty --out is refused unless --overwrite or --resume.
    """
    if server is not None:
        _predict_via_server(server, [model, *(inputs or [])], out, overlay, api_key, overwrite, resume)
        return
    if not inputs:
        raise ConfigError("give at least one INPUT after the model: segflow predict MODEL INPUT... --out DIR")
    if as_kind is not None and as_kind not in INPUT_KINDS:
        raise ConfigError(f"--as {as_kind!r} is not an input kind; choose one of {', '.join(INPUT_KINDS)}")
    source = parse_model_source(model, accept=("file",), command="predict", check_exists=False)
    model_path = source.path or Path(model)
    options = InferenceOptions(
        tta=tta_choice(tta),
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        min_object_size=min_object_size,
        fill_holes=fill_holes,
        threshold=threshold,
        batch=batch,
        probs=probs,
        overlay=overlay,
        input_kind=as_kind,
        mpp=mpp,
        vectorize=vectorize,
        min_area=min_area,
        volume_output=volume_output,
    )
    files = expand_inputs(inputs)
    videos = [p for p in files if is_video(p)]
    images = [p for p in files if not is_video(p)]
    _check_stems(images)
    _check_stems(videos)
    if out.suffix.lower() in VIDEO_SUFFIXES:
        _check_video_file_target(out, images, videos, overwrite, resume)
        manifest = None
    else:
        manifest = open_prediction_dir(
            out,
            files,
            model_record(model, backend),
            options,
            overwrite,
            resume,
            resolve=lambda given: _resolved(given, model_path),
        )
        options = manifest.options
    predictor = Predictor.from_path(model_path, options, backend=backend)
    if manifest is not None:
        manifest.begin()
    try:
        counts = _run(predictor, images, videos, out, manifest)
    finally:
        if manifest is not None:
            manifest.close()
    _summary(*counts, out)


def _resolved(options: InferenceOptions, model_path: Path) -> InferenceOptions:
    """``options`` for the model file: ``--tta checkpoint`` becomes the views stored in it (read
    from its metadata, without loading it), so the manifest records, and ``--resume``
    compares, the views that run."""
    if options.tta != TTA_FROM_CHECKPOINT:
        return options
    return options.resolved(read_model_meta(model_path))


def _run(
    predictor: Predictor,
    images: list[Path],
    videos: list[Path],
    out: Path,
    manifest: PredictionManifest | None,
) -> tuple[Console, int, int, int, float]:
    """Predicts every input not finished yet, recording each in the manifest as it finishes.

    Returns:
        ``(console, images predicted, videos predicted, frames, seconds)`` for :func:`_summary`.
    """
    options = predictor.options
    console = Console(stderr=True)
    started = time.perf_counter()
    done_images = done_videos = frames = 0
    with _progress(console) as progress:
        files_task = progress.add_task("files", total=len(images) + len(videos))
        tiles = RichTileProgress(progress)
        for path in [*images, *videos]:
            digest = input_sha256(path) if manifest is not None else ""
            if manifest is not None and manifest.is_finished(path, digest):
                progress.advance(files_task)
                continue
            if is_video(path):
                frames_task = progress.add_task(f"frames of {path.name}", total=None)

                def on_frames(done: int, total: int, task: TaskID = frames_task) -> None:
                    progress.update(task, completed=done, total=total or None)

                result = predict_video(
                    predictor, path, _video_target(path, out), options.overlay, options.batch, on_frames
                )
                written, frames, done_videos = [result.path], frames + result.frames, done_videos + 1
            else:
                written = _predict_input(predictor, path, out, tiles)
                done_images += 1
            if manifest is not None:
                manifest.record(path, digest, written)
            progress.advance(files_task)
    skipped = len(images) + len(videos) - done_images - done_videos
    if skipped:
        console.print(f"--resume: skipped {skipped} input(s) already finished in {out}", highlight=False)
    return console, done_images, done_videos, frames, time.perf_counter() - started


def _predict_input(predictor: Predictor, path: Path, out: Path, tiles: RichTileProgress) -> list[Path]:
    """One non-video input through the path :func:`segflow.domains.route.input_kind` chooses."""
    options = predictor.options
    data = predictor.meta.data
    slide_model = data is not None and data.format == "wsi"
    kind = input_kind(path, as_kind=options.input_kind, mpp=options.mpp, slide_model=slide_model)
    if kind == "volume":
        from segflow.domains.medical.predict import predict_volume

        return predict_volume(predictor, path, out, output=options.volume_output, progress=tiles)
    if kind == "slide":
        from segflow.domains.wsi.predict import predict_slide

        if options.vectorize == "gpkg":
            raise ConfigError(
                f"{path}: slides get GeoJSON contours (<stem>.geojson, QuPath's format); --vectorize gpkg "
                "is for GeoTIFFs: leave it out"
            )
        return predict_slide(predictor, path, out, mpp=options.mpp, min_area=options.min_area, progress=tiles)
    if kind == "geo":
        from segflow.domains.geo.predict import predict_raster

        return predict_raster(
            predictor, path, out, vectorize=options.vectorize, min_area=options.min_area, progress=tiles
        )
    _refuse_domain_model(predictor, path)
    return predict_file(predictor, path, out, options.overlay, options.probs, tiles)


def _refuse_domain_model(predictor: Predictor, path: Path) -> None:
    """A model that reads raw values through an intensity policy (HU, reflectance) or stacks
    neighbouring slices (2.5-D) cannot take a plain image: its pixels would mean something else."""
    from segflow.domains.medical.predict import model_context

    meta = predictor.meta
    context = model_context(meta)
    if meta.intensity is None and not context:
        return
    trained = meta.data.format if meta.data is not None else None
    if trained == "geotiff":
        what, kind = "a GeoTIFF (its bands in raw units, through the model's band stretch)", "geo"
    else:
        reads = f"{2 * context + 1} neighbouring slices" if context else "values in HU through its window"
        what, kind = f"a NIfTI or DICOM volume (it reads {reads})", "volume"
    raise ConfigError(
        f"{path}: this model was trained on {trained or 'volume or raster'} data; give it {what}, "
        f"or force that path for this file with --as {kind}"
    )


def _check_video_file_target(
    out: Path, images: list[Path], videos: list[Path], overwrite: bool, resume: bool
) -> None:
    """``--out clip.mp4``: one video in, that file out; an existing file needs --overwrite."""
    if images:
        raise ConfigError(f"--out {out} is a video file but images were given; use a folder for images")
    if len(videos) != 1:
        raise ConfigError(f"--out {out} is one video file but {len(videos)} inputs were given; use a folder")
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a folder named like a video file; give a new .mp4 path or a folder"
        )
    if resume:
        raise ConfigError(f"--resume needs an --out folder with predictions.json, not the video file {out}")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it, or choose another file")


def _predict_via_server(
    url: str, inputs: list[str], out: Path, overlay: bool, api_key: str | None, overwrite: bool, resume: bool
) -> None:
    """Images only: each is sent to the server; outputs (and the manifest) match local prediction."""
    from segflow.serving.client import predict_via_server

    files = expand_inputs(inputs)
    if any(is_video(p) for p in files):
        raise ConfigError("--server takes images only; predict videos locally with a model file")
    _check_stems(files)
    options = InferenceOptions(overlay=overlay)
    manifest = open_prediction_dir(out, files, model_record(url, "server"), options, overwrite, resume)
    manifest.begin()
    console = Console(stderr=True)
    started = time.perf_counter()
    try:
        for path in files:
            digest = input_sha256(path)
            if not manifest.is_finished(path, digest):
                written = predict_via_server(url, [path], out, overlay=overlay, api_key=api_key)
                manifest.record(path, digest, written)
    finally:
        manifest.close()
    _summary(console, len(files), 0, 0, time.perf_counter() - started, out)


def _summary(console: Console, images: int, videos: int, frames: int, seconds: float, out: Path) -> None:
    """One line: files, seconds, images (and frames) per second, output location."""
    rate = (images + frames) / seconds if seconds > 0 else float("inf")
    what = f"{images} image(s)" + (f" and {videos} video(s), {frames} frames" if videos else "")
    unit = "images+frames/s" if videos else "images/s"
    console.print(
        f"predicted {what} in {seconds:.1f} s ({rate:.2f} {unit}); outputs in {out}", highlight=False
    )
