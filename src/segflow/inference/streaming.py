"""Prediction of image files of any size, streamed band by band, and the output files.

:func:`predict_file` reads small images whole and predicts them in memory. Images with more
than :data:`STREAM_MIN_PIXELS` pixels are streamed: read in bands of ``tile`` rows
(:mod:`segflow.inference.bands`), predicted with the tiling engine, and their labels written
band by band. Outputs up to :data:`MAX_PNG_PIXELS` pixels are palette PNGs (the label map,
one byte per pixel, is assembled in memory and post-processed as a whole); larger ones are
tiled BigTIFFs with the palette as colour map, written while the bands arrive (then
``min_object_size``/``fill_holes`` apply to each band on its own, so objects cut by a band
edge are judged by their part in the band).

Peak memory of a streamed prediction to BigTIFF, with ``t = tile``, ``s`` its step,
``c = t - s`` the rows shared by consecutive window rows, ``Wp = max(W, t)``, ``K`` classes,
``C`` channels, ``b`` bytes per input sample, ``B = tile_batch`` and ``T = 256`` (TIFF tile)::

    2 * 4 * (K + 1) * c * Wp          rows carried to the next window row (in and out)
  + 4 * (K + 1) * t * t               strip of finished rows (see tiling.iter_blended_bands)
  + b * (t + 512) * Wp * C            input band of one window row (plus the TIFF tile rows
                                      the reader decodes around it)
  + 4 * B * t * t * (C + 3 * K)       one batch of windows, their logits, probabilities and
                                      softmax temporaries
  + s * Wp                            labels of one band
  + 2 * (T + s) * Wp                  rows waiting to become TIFF tiles
  + model activations for B windows (ONNX Runtime's arena is off, so they are freed)
  + the runtime itself (Python, NumPy, OpenCV, ONNX Runtime: ~0.2 GB; torch: ~0.7 GB more)

which depends on the tile, overlap, class count and width, never on the height. The tiling
comes from the predictor (:attr:`Predictor.tile_spec`, or :attr:`Predictor.streaming_tile_spec`
for streamed images); this module never reads the predictor's options, and
:mod:`segflow.inference.predictor` never imports this module. For
example W = 20000, t = 512, overlap 0.25 (c = 128), K = 12, C = 3, uint8, B = 4: about
0.27 GB carried + 0.01 GB strip + 0.06 GB input + 0.16 GB batch + 0.03 GB labels and TIFF
rows, i.e. about 0.5 GB plus the model and the runtime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from segflow.errors import InferenceError
from segflow.inference.bands import BandReader, open_band_reader, write_label_tiff
from segflow.inference.tiling import count_windows
from segflow.io_utils import atomic_write

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from segflow.inference.predictor import Prediction, Predictor

STREAM_MIN_PIXELS = 4096 * 4096
"""Images with more pixels than this are streamed in bands."""
MAX_PNG_PIXELS = 8192 * 8192
"""Label maps with more pixels than this are written as tiled BigTIFF instead of PNG."""
PROBS_DTYPE = np.float16
OVERLAY_ALPHA = 0.5


class TileProgress(Protocol):
    """Receives progress in tiles (windows)."""

    def start(self, description: str, total: int) -> None:
        """A new image with ``total`` windows begins."""
        ...

    def advance(self, count: int) -> None:
        """``count`` more windows are done."""
        ...


@dataclass
class RichTileProgress:
    """:class:`TileProgress` shown as a task of a ``rich.progress.Progress``; removed when done."""

    progress: RichProgress
    task: TaskID | None = field(default=None)

    def start(self, description: str, total: int) -> None:
        """Adds (or replaces) the tile task."""
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total)

    def advance(self, count: int) -> None:
        """Advances the tile task."""
        if self.task is not None:
            self.progress.advance(self.task, count)


def output_paths(out_dir: Path, stem: str, large: bool) -> dict[str, Path]:
    """Output files for one input: ``labels`` (.png or .tif), ``overlay`` and ``probs``."""
    return {
        "labels": out_dir / f"{stem}{'.tif' if large else '.png'}",
        "overlay": out_dir / f"{stem}_overlay.png",
        "probs": out_dir / f"{stem}_probs.npy",
    }


def save_overlay(path: Path, image: np.ndarray, labels: np.ndarray, predictor: Predictor) -> None:
    """Writes the image blended with the class colours and a class legend (PNG, atomic)."""
    from segflow.viz import overlay, save_image_png

    save_image_png(path, overlay(image, labels, predictor.palette, OVERLAY_ALPHA, predictor.classes))


def save_probs(path: Path, probs: np.ndarray) -> None:
    """Writes float16 ``(K, H, W)`` probabilities as ``.npy`` (atomic)."""
    with atomic_write(path) as tmp:
        np.save(tmp, probs.astype(PROBS_DTYPE))


def write_prediction(
    paths: dict[str, Path], image: np.ndarray, prediction: Prediction, predictor: Predictor, overlay: bool
) -> list[Path]:
    """Writes the label PNG, and the overlay and probabilities when present/asked."""
    from segflow.viz import save_label_png

    save_label_png(paths["labels"], prediction.labels, predictor.palette)
    written = [paths["labels"]]
    if overlay:
        save_overlay(paths["overlay"], image, prediction.labels, predictor)
        written.append(paths["overlay"])
    if prediction.probs is not None:
        save_probs(paths["probs"], prediction.probs)
        written.append(paths["probs"])
    return written


def _start(progress: TileProgress | None, name: str, total: int) -> None:
    if progress is not None:
        progress.start(f"tiles of {name}", total)


def predict_file(
    predictor: Predictor,
    input_path: Path,
    out_dir: Path,
    overlay: bool = False,
    probs: bool = False,
    progress: TileProgress | None = None,
) -> list[Path]:
    """Predicts one image file into ``out_dir``; streams it when it is large.

    Args:
        predictor: The predictor.
        input_path: Image file (TIFF/BigTIFF read lazily; other formats read whole).
        out_dir: Output folder.
        overlay: Also write ``<stem>_overlay.png`` (not for outputs over MAX_PNG_PIXELS).
        probs: Also write float16 ``<stem>_probs.npy`` ``(K, H, W)``.
        progress: Receives tile progress for tiled predictions.

    Returns:
        Paths written (labels first).

    Raises:
        DataError: The file is unreadable, not an image, or has zero size.
        InferenceError: An option cannot apply to this image (e.g. overlay of a huge map).
    """
    reader = open_band_reader(input_path)
    try:
        pixels = reader.height * reader.width
        if pixels > STREAM_MIN_PIXELS:
            return stream_file(predictor, reader, input_path, out_dir, overlay, probs, progress)
        paths = output_paths(out_dir, input_path.stem, large=False)
        image = reader.read(0, reader.height)
        callback = None
        spec = predictor.tile_spec
        if spec is not None:
            _start(progress, input_path.name, count_windows(reader.height, reader.width, spec))
            callback = progress.advance if progress is not None else None
        prediction = predictor.predict(image, return_probs=probs, progress=callback, name=input_path.name)
        return write_prediction(paths, image, prediction, predictor, overlay)
    finally:
        reader.close()


def stream_file(
    predictor: Predictor,
    reader: BandReader,
    input_path: Path,
    out_dir: Path,
    overlay: bool = False,
    probs: bool = False,
    progress: TileProgress | None = None,
    large: bool | None = None,
) -> list[Path]:
    """Streams a prediction of ``reader``'s image to files (see the module docstring).

    Args:
        predictor: The predictor; its ``streaming_tile_spec`` places the windows.
        reader: Band reader of the image.
        input_path: The image file (names the outputs).
        out_dir: Output folder.
        overlay: Also write an overlay PNG (PNG-sized outputs only).
        probs: Also write float16 probabilities ``(K, H, W)`` to ``.npy``, band by band.
        progress: Receives tile progress.
        large: Force BigTIFF (True) or PNG (False) labels; None picks by MAX_PNG_PIXELS.

    Returns:
        Paths written.
    """
    height, width = reader.height, reader.width
    large = height * width > MAX_PNG_PIXELS if large is None else large
    if overlay and large:
        raise InferenceError(
            f"--overlay is not available for {input_path} ({width}x{height} pixels): its labels are "
            f"written as a BigTIFF above {MAX_PNG_PIXELS} pixels; drop --overlay and view the .tif"
        )
    paths = output_paths(out_dir, input_path.stem, large)
    _start(progress, input_path.name, count_windows(height, width, predictor.streaming_tile_spec))
    callback = progress.advance if progress is not None else None
    with contextlib.ExitStack() as stack:
        probs_out = (
            _open_probs(stack, paths["probs"], predictor.num_classes, height, width) if probs else None
        )
        bands = _band_labels(predictor, reader, callback, probs_out, large, input_path.name)
        if large:
            with atomic_write(paths["labels"]) as tmp:
                write_label_tiff(tmp, bands, height, width, predictor.palette)
        else:
            _write_label_png(paths["labels"], bands, predictor, height, width)
        if probs_out is not None:
            probs_out.flush()
    written = [paths["labels"]] + ([paths["probs"]] if probs else [])
    if overlay:
        from segflow.viz import read_label_png

        labels = read_label_png(paths["labels"])
        save_overlay(paths["overlay"], reader.read(0, height), labels, predictor)
        written.insert(1, paths["overlay"])
    return written


def _open_probs(stack: contextlib.ExitStack, path: Path, classes: int, height: int, width: int) -> np.memmap:
    tmp = stack.enter_context(atomic_write(path))
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=PROBS_DTYPE, shape=(classes, height, width))


def _band_labels(
    predictor: Predictor,
    reader: BandReader,
    callback: object,
    probs_out: np.memmap | None,
    per_band_postprocess: bool,
    name: str,
) -> Iterator[np.ndarray]:
    """Label bands in order; stores each band's probabilities in ``probs_out`` when given."""
    bands = predictor.iter_label_bands(reader, callback, probs_out is not None, name)  # type: ignore[arg-type]
    for band in bands:
        if probs_out is not None and band.probs is not None:
            probs_out[:, band.y0 : band.y0 + band.labels.shape[0]] = band.probs
        yield predictor.postprocess(band.labels) if per_band_postprocess else band.labels


def _write_label_png(
    path: Path, bands: Iterator[np.ndarray], predictor: Predictor, height: int, width: int
) -> None:
    from segflow.viz import save_label_png

    labels = np.empty((height, width), dtype=np.uint8)
    row = 0
    for band in bands:
        labels[row : row + band.shape[0]] = band
        row += band.shape[0]
    save_label_png(path, predictor.postprocess(labels), predictor.palette)
