"""One non-video input through its prediction path: the code both local and Ray prediction run.

``segflow predict`` calls :func:`predict_input` for each input in its own process; under
``--ray`` (:mod:`segflow.distributed.ray_predict`) each actor calls the same function, so both
write the same files with the same names (``<stem>.png`` or ``.tif``, ``_overlay.png``,
``_probs.npy``; domain outputs for volumes, slides and rasters). Large images take the
streamed, tiled path of :func:`segflow.inference.streaming.predict_file` in either case.
"""

from __future__ import annotations

from pathlib import Path

from segflow.domains.route import input_kind
from segflow.errors import ConfigError
from segflow.inference.predictor import Predictor
from segflow.inference.streaming import TileProgress, predict_file


def predict_input(
    predictor: Predictor, path: Path, out: Path, progress: TileProgress | None = None
) -> list[Path]:
    """Predicts one image, volume, slide or raster into ``out`` through the path
    :func:`segflow.domains.route.input_kind` chooses for it.

    Args:
        predictor: The predictor; its options say what to write (overlay, probabilities,
            the forced input kind, slide resolution, vectors, volume output).
        path: Input file (or DICOM series folder).
        out: Output folder (exists or is created by the writers).
        progress: Receives tile (or slice) progress, or None.

    Returns:
        The paths written, labels first.

    Raises:
        ConfigError: The model cannot take this kind of input, or an option does not apply to it.
        DataError: The input is unreadable or empty.
        InferenceError: An option cannot apply to this image.
    """
    options = predictor.options
    data = predictor.meta.data
    slide_model = data is not None and data.format == "wsi"
    kind = input_kind(path, as_kind=options.input_kind, mpp=options.mpp, slide_model=slide_model)
    if kind == "volume":
        from segflow.domains.medical.predict import predict_volume

        return predict_volume(predictor, path, out, output=options.volume_output, progress=progress)
    if kind == "slide":
        from segflow.domains.wsi.predict import predict_slide

        if options.vectorize == "gpkg":
            raise ConfigError(
                f"{path}: slides get GeoJSON contours (<stem>.geojson, QuPath's format); --vectorize gpkg "
                "is for GeoTIFFs: leave it out"
            )
        return predict_slide(
            predictor, path, out, mpp=options.mpp, min_area=options.min_area, progress=progress
        )
    if kind == "geo":
        from segflow.domains.geo.predict import predict_raster

        return predict_raster(
            predictor, path, out, vectorize=options.vectorize, min_area=options.min_area, progress=progress
        )
    refuse_domain_model(predictor, path)
    return predict_file(predictor, path, out, options.overlay, options.probs, progress)


def refuse_domain_model(predictor: Predictor, path: Path) -> None:
    """Refuses a plain image for a model that reads raw values through an intensity policy
    (HU, reflectance) or stacks neighbouring slices (2.5-D): its pixels would mean something else.

    Raises:
        ConfigError: The model was trained on volumes or rasters (names the ``--as`` to use).
    """
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
