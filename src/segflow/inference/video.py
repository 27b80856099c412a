"""Video segmentation: read frames with OpenCV, predict them in batches, write a video.

Frames are streamed: at most ``batch`` decoded frames (plus their predictions) are in memory,
whatever the video's length. The output has the source's frame rate and size and is written
to a temporary name, renamed at the end (a failed run leaves nothing behind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from segflow.errors import DataError
from segflow.inference.options import DEFAULT_FRAME_BATCH
from segflow.io_utils import atomic_write

if TYPE_CHECKING:
    from segflow.inference.predictor import Predictor

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_FPS = 25.0
OVERLAY_ALPHA = 0.5
FRAME_COUNT_SLACK = 1
"""Containers without an index estimate the frame count from the duration: allow one off."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    fps: float
    width: int
    height: int
    frame_count: int


@dataclass(frozen=True)
class VideoResult:
    """Outcome of :func:`predict_video`."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int


def is_video(path: str | Path) -> bool:
    """True for the video suffixes segflow reads (``.mp4 .avi .mov .mkv``)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Opens a video for reading.

    Raises:
        DataError: Missing, unreadable, or no frame size (names the file).
    """
    if not path.is_file():
        raise DataError(f"video file {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not capture.isOpened() or width <= 0 or height <= 0:
        capture.release()
        raise DataError(f"video file {path} cannot be opened (unreadable, truncated or not a video)")
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or DEFAULT_FPS
    count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    return capture, VideoInfo(fps, width, height, count)


def iter_frame_batches(capture: cv2.VideoCapture, batch: int) -> Iterator[list[np.ndarray]]:
    """Yields lists of up to ``batch`` RGB frames ``(H, W, 3)`` uint8."""
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if len(frames) == batch:
            yield frames
            frames = []
    if frames:
        yield frames


def render_frame(frame: np.ndarray, labels: np.ndarray, predictor: Predictor, overlay: bool) -> np.ndarray:
    """BGR output frame: the overlay (colours blended over the frame) or the colour mask."""
    from segflow.viz import colorize
    from segflow.viz import overlay as blend

    if overlay:
        rgb = blend(frame, labels, predictor.palette, OVERLAY_ALPHA, predictor.classes, legend=False)
    else:
        rgb = colorize(labels, predictor.palette)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def predict_video(
    predictor: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    overlay: bool = True,
    batch: int = DEFAULT_FRAME_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Segments every frame of a video and writes the rendered frames as a video.

    Args:
        predictor: The predictor (its tiling, TTA and post-processing apply to each frame).
        input_path: Source video (any format OpenCV reads).
        output_path: Destination; ``.mp4``/``.mov`` use the ``mp4v`` codec, ``.avi``/``.mkv``
            ``MJPG``.
        overlay: Blend class colours over the frames; False writes the colour mask only.
        batch: Frames per ``predict_batch`` call.
        progress: Called with ``(frames done, frames expected)`` after each batch.

    Returns:
        A :class:`VideoResult` (frames written, fps, size).

    Raises:
        DataError: The video cannot be opened, holds no frame, or ends before the frame
            count its header announces (truncated).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    capture, info = open_video(input_path)
    fourcc = cv2.VideoWriter.fourcc(*FOURCC_BY_SUFFIX.get(output_path.suffix.lower(), "mp4v"))
    done = 0
    try:
        with atomic_write(output_path) as tmp:
            writer = cv2.VideoWriter(str(tmp), fourcc, info.fps, (info.width, info.height))
            if not writer.isOpened():
                raise DataError(
                    f"cannot write video {output_path}: OpenCV has no encoder for {output_path.suffix}"
                )
            try:
                for frames in iter_frame_batches(capture, batch):
                    for frame, prediction in zip(frames, predictor.predict_batch(frames), strict=True):
                        writer.write(render_frame(frame, prediction.labels, predictor, overlay))
                    done += len(frames)
                    if progress is not None:
                        progress(done, info.frame_count)
            finally:
                writer.release()
            _check_complete(input_path, done, info.frame_count)
    finally:
        capture.release()
    return VideoResult(output_path, done, info.fps, info.width, info.height)


def _check_complete(path: Path, frames: int, expected: int) -> None:
    if frames == 0:
        raise DataError(f"video file {path} holds no readable frame (truncated or corrupt)")
    if expected and frames < expected - FRAME_COUNT_SLACK:
        raise DataError(
            f"video file {path} is truncated: read {frames} of the {expected} frames its header announces"
        )
