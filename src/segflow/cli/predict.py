"""``segflow predict MODEL INPUT... --out DIR``: label PNGs (or BigTIFFs), overlays, probabilities, videos."""

from __future__ import annotations

import glob
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from segflow.cli.app import app
from segflow.cli.tta_option import TTA_HELP, UPSAMPLE_HELP, tta_choice, upsample_choice
from segflow.data.io import IMAGE_EXTENSIONS
from segflow.distributed.ray_predict import DEFAULT_RAY_BATCH, RayOptions
from segflow.domains.route import SLIDE_SUFFIXES, is_volume
from segflow.errors import ConfigError, DataError, InferenceError, SegflowError
from segflow.inference.backends import read_model_meta
from segflow.inference.dispatch import predict_input
from segflow.inference.manifest import (
    MANIFEST_NAME,
    PredictionManifest,
    input_key,
    input_sha256,
    input_stem,
    model_record,
    open_prediction_dir,
)
from segflow.inference.options import DEFAULT_FRAME_BATCH, DEFAULT_OVERLAP, INPUT_KINDS, InferenceOptions
from segflow.inference.predictor import Predictor
from segflow.inference.streaming import RichTileProgress
from segflow.inference.video import VIDEO_SUFFIXES, is_video, predict_video
from segflow.models.meta import TTA_FROM_CHECKPOINT
from segflow.models.source import parse_model_source

GLOB_CHARS = ("*", "?", "[")
DEFAULT_RAY_WORKERS = 1
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


def _check_stems(images: Sequence[str | Path]) -> None:
    seen: dict[str, str | Path] = {}
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
        str | None,
        typer.Option(
            help="torch, onnx, onnx-int8, openvino, openvino-int8, tflite or tflite-int8 "
            "(default by suffix: .onnx onnx, .xml openvino, .tflite tflite, else torch)."
        ),
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Sliding-window tile size (multiple of the stride).")
    ] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap in [0, 0.9).")] = DEFAULT_OVERLAP,
    tile_batch: Annotated[
        int, typer.Option(help="Tiles per forward pass (memory grows with it; see streaming docs).")
    ] = CLI_TILE_BATCH,
    tta: Annotated[str | None, typer.Option("--tta", help=TTA_HELP)] = None,
    upsample: Annotated[str, typer.Option(metavar="probs|labels", help=UPSAMPLE_HELP)] = "probs",
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
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Images: predict on a Ray actor pool (a failed image is recorded, the rest go on); "
            "docs/ray.md.",
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            help="--ray: join this cluster (auto, ray://HOST:PORT or HOST:PORT); default: a local Ray."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="--ray: actors, each loading the model once (default 1).")
    ] = None,
    ray_batch: Annotated[int | None, typer.Option(help="--ray: images per actor call (default 1).")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="classical:/prompt: methods: a method parameter, key=value (repeat)."),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="prompt: models: prompts.json, a list of {image, points, box, class}.")
    ] = None,
    instances: Annotated[
        str | None,
        typer.Option(
            help="Semantic models: also split thing classes into instances, by 'components' or "
            "'watershed' (--param min_distance=N, min_area=N); writes instances.json (COCO RLE)."
        ),
    ] = None,
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
    With --ray, images run on a Ray actor pool (docs/ray.md); an image that fails is listed
    in predictions.json with its error, the others go on, and the command then exits 1.

    MODEL may also be classical:NAME (docs/classical.md, with --param key=value) or
    prompt:grabcut / prompt:sam:PATH / prompt:sam2:PATH (docs/prompt.md, with --prompts); an
    instance, panoptic or multi-label checkpoint writes that task's outputs (docs/kinds.md).
    """
    upsample = upsample_choice(upsample)
    kind = _kind_of(model, server, ray, instances)
    if kind is not None and upsample != "probs":
        raise ConfigError(f"--upsample {upsample} is for plain semantic predictions, not {kind[0]} ({model})")
    if kind is not None:
        if instances is not None:
            param = [f"method={instances}", *(param or [])]
        _predict_kind(kind, model, inputs, out, param, prompts, overlay, overwrite, resume, backend, tile)
        return
    if param or prompts is not None:
        raise ConfigError(
            "--param and --prompts are for classical:NAME and prompt:... models; a trained "
            f"semantic model {model!r} takes neither"
        )
    ray_options = _ray_options(ray, address, workers, ray_batch, server)
    if server is not None and upsample != "probs":
        raise ConfigError("--upsample is not sent to a server; leave it out with --server")
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
        upsample=upsample,
    )
    if ray_options is not None:
        _predict_on_ray(model, model_path, backend, options, inputs, out, overwrite, resume, ray_options)
        return
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


def _kind_of(model: str, server: str | None, ray: bool, instances: str | None) -> tuple[str, str] | None:
    """``(kind, spec)`` when MODEL is a prefix kind or a non-semantic checkpoint, or when a
    semantic model is asked for ``--instances``; else None (the semantic path)."""
    from segflow.inference.kinds import prefix_kind
    from segflow.tasks import INSTANCE, SEMANTIC, run_file_task

    if instances is not None:
        if instances not in INSTANCE_METHODS:
            raise ConfigError(f"--instances {instances!r}: choose one of {', '.join(INSTANCE_METHODS)}")
        if prefix_kind(model) is not None or server is not None or ray:
            raise ConfigError("--instances splits a semantic model's output; give a checkpoint, locally")
        return INSTANCE, model
    found = prefix_kind(model)
    if found is None and server is None and Path(model).is_file():
        try:
            task = run_file_task(model)
        except SegflowError:  # not a readable model: the semantic path says why, in its order
            task = SEMANTIC
        found = None if task == SEMANTIC else (task, model)
    if found is not None and (server is not None or ray):
        raise ConfigError(f"--server and --ray run semantic models only, not {found[0]} ({model})")
    return found


INSTANCE_METHODS = ("components", "watershed")
"""``--instances``: how a semantic model's thing classes become instances (segflow.instance)."""


def _predict_kind(
    kind: tuple[str, str],
    model: str,
    inputs: list[str] | None,
    out: Path,
    param: list[str] | None,
    prompts: Path | None,
    overlay: bool,
    overwrite: bool,
    resume: bool,
    backend: str | None,
    tile: int | None,
) -> None:
    """Runs a kind from :data:`segflow.inference.kinds.PREDICT_KINDS` and prints its summary."""
    from segflow.inference.kinds import KindRequest, get_kind, parse_params

    if not inputs:
        hint = f"segflow predict {model} INPUT... --out DIR"
        raise ConfigError(f"give at least one INPUT after the model: {hint}")
    runner = get_kind(kind[0])
    request = KindRequest(
        kind=kind[0],
        spec=kind[1],
        inputs=expand_inputs(inputs),
        out=out,
        params=parse_params(param),
        prompts=prompts,
        overlay=overlay,
        overwrite=overwrite,
        resume=resume,
        backend=backend,
        options={"tile": tile},
    )
    given = {
        "params": ("--param", request.params),
        "prompts": ("--prompts", prompts),
        "backend": ("--backend", backend),
        "tile": ("--tile", tile),
    }
    refused = [flag for name, (flag, value) in given.items() if value and name not in runner.options]
    if refused:
        raise ConfigError(f"{model}: {kind[0]} predictions do not take {', '.join(refused)}; leave it out")
    written, skipped = runner.run(request)
    Console().print(rich_escape(f"{kind[0]}: {written} predicted, {skipped} skipped -> {out}"))


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
                written = predict_input(predictor, path, out, tiles)
                done_images += 1
            if manifest is not None:
                manifest.record(path, digest, written)
            progress.advance(files_task)
    skipped = len(images) + len(videos) - done_images - done_videos
    if skipped:
        console.print(f"--resume: skipped {skipped} input(s) already finished in {out}", highlight=False)
    return console, done_images, done_videos, frames, time.perf_counter() - started


_predict_input = predict_input  # the name tests/domains/test_domain_route.py imports


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


def _ray_inputs(inputs: list[str]) -> list[str | Path]:
    """--ray inputs: local files, folders and globs as :func:`expand_inputs` finds them, and
    fsspec URLs (``s3://bucket/dir/*.png``) listed through fsspec; videos are refused."""
    from segflow.distributed.ray_predict import expand_url, is_url

    local = [item for item in inputs if not is_url(item)]
    found: list[str | Path] = list(expand_inputs(local)) if local else []
    suffixes = tuple(s for s in INPUT_SUFFIXES if s not in VIDEO_SUFFIXES)
    for item in (item for item in inputs if is_url(item)):
        found.extend(url for url in expand_url(item, suffixes) if url not in found)
    videos = [item for item in found if is_video(item)]
    if videos:
        raise ConfigError(f"--ray takes images, not videos ({videos[0]}); predict videos without --ray")
    _check_stems(found)
    return found


def _finished(manifest: PredictionManifest, item: str | Path) -> bool:
    """Whether the manifest lists ``item`` as finished with its current bytes; only listed inputs
    are hashed here (the Ray actors hash the others as they read them)."""
    from segflow.distributed.ray_predict import is_url, url_sha256

    if input_key(item) not in manifest.inputs:
        return False
    return manifest.is_finished(item, url_sha256(str(item)) if is_url(item) else input_sha256(item))


def _summary(
    console: Console, images: int, videos: int, frames: int, seconds: float, out: Path, failed: int = 0
) -> None:
    """One line: files, seconds, images (and frames) per second, failures, output location."""
    rate = (images + frames) / seconds if seconds > 0 else float("inf")
    what = f"{images} image(s)" + (f" and {videos} video(s), {frames} frames" if videos else "")
    unit = "images+frames/s" if videos else "images/s"
    failures = f", {failed} failed (errors in {out / MANIFEST_NAME})" if failed else ""
    console.print(
        f"predicted {what} in {seconds:.1f} s ({rate:.2f} {unit}){failures}; outputs in {out}",
        highlight=False,
    )


def _ray_options(
    ray: bool, address: str | None, workers: int | None, ray_batch: int | None, server: str | None
) -> RayOptions | None:
    """The checked --ray options, or None without --ray (whose options are then refused)."""
    if not ray:
        values = {"--address": address, "--workers": workers, "--ray-batch": ray_batch}
        given = [flag for flag, value in values.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --ray; add --ray or leave them out")
        return None
    if server is not None:
        raise ConfigError(
            "--ray and --server exclude each other: the server predicts itself; pass one of them"
        )
    return RayOptions(
        address=address,
        workers=DEFAULT_RAY_WORKERS if workers is None else workers,
        batch=DEFAULT_RAY_BATCH if ray_batch is None else ray_batch,
    )


def _predict_on_ray(
    model: str,
    model_path: Path,
    backend: str | None,
    options: InferenceOptions,
    inputs: list[str],
    out: Path,
    overwrite: bool,
    resume: bool,
    ray_options: RayOptions,
) -> None:
    """Images on a Ray actor pool (:mod:`segflow.distributed.ray_predict`), under the same
    folder rule and manifest as local prediction; failed images are recorded, then exit 1.

    Order: every refusal (options, inputs, the model loaded once here with the backend the
    actors use, the folder rule, Ray's address and CPUs) comes before ``--overwrite`` removes
    anything; with ``--resume`` and nothing left to predict, Ray is not started."""
    from segflow.distributed.ray_predict import RayJobError, check_model_loads, predict_on_ray, ray_session

    images = _ray_inputs(inputs)
    if out.suffix.lower() in VIDEO_SUFFIXES:
        raise ConfigError(f"--ray writes into an --out folder, not the video file {out}")
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other; pass one of them")
    check_model_loads(model_path, backend, _resolved(options, model_path))

    def open_out() -> PredictionManifest:
        return open_prediction_dir(
            out,
            images,
            model_record(model, backend),
            options,
            overwrite,
            resume,
            resolve=lambda given: _resolved(given, model_path),
        )

    console = Console(stderr=True, soft_wrap=True)
    started = time.perf_counter()
    manifest = None if overwrite else open_out()  # without --overwrite it removes nothing
    pending = list(images) if manifest is None else [path for path in images if not _finished(manifest, path)]
    if manifest is not None and not pending:
        manifest.begin()  # writes the failures of inputs no longer given as dropped
        manifest.close()
        console.print(f"--resume: skipped {len(images)} input(s) already finished in {out}", highlight=False)
        _summary(console, 0, 0, 0, time.perf_counter() - started, out)
        return
    done = failed = 0
    with ray_session(ray_options):  # connects (or refuses) before --overwrite clears --out
        if manifest is None:
            manifest = open_out()  # --overwrite: nothing is finished afterwards
        manifest.begin()
        try:
            with _progress(console) as progress:
                task = progress.add_task("files", total=len(images), completed=len(images) - len(pending))
                for result in predict_on_ray(
                    model_path, backend, manifest.options, pending, out, ray_options
                ):
                    if result.error is None:
                        manifest.record(result.path, result.sha256, result.outputs)
                        done += 1
                    else:
                        manifest.record_failure(result.path, result.sha256, result.error)
                        console.print(f"failed: {result.path}: {result.error}", highlight=False)
                        failed += 1
                    progress.advance(task)
        except RayJobError as err:
            manifest.close()
            where = (
                f"the inputs finished so far are in {manifest.path}: fix the cause and rerun with --resume"
                if manifest.path.is_file()
                else "nothing was finished: fix the cause and rerun"
            )
            raise InferenceError(f"{err}; {where}") from None
        finally:
            manifest.close()
    if len(images) > len(pending):
        console.print(
            f"--resume: skipped {len(images) - len(pending)} input(s) already finished in {out}",
            highlight=False,
        )
    _summary(console, done, 0, 0, time.perf_counter() - started, out, failed)
    if failed:
        raise InferenceError(
            f"{failed} of {len(pending)} image(s) failed; their errors are in {out / MANIFEST_NAME}: "
            "fix them and rerun with --resume to predict only those"
        )
