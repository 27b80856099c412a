"""Video: every frame segmented in batches, written at the source fps and size; bad files refused."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segflow.errors import DataError
from segflow.inference import Predictor
from segflow.inference.video import predict_video


def write_clip(path: Path, frames: int, size: tuple[int, int], fps: float, make_image) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    for index in range(frames):
        writer.write(make_image(size[1], size[0], seed=index))
    writer.release()


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def test_colour_mask_video_has_every_frame_at_source_fps(tmp_path: Path, make_backend, make_image) -> None:
    clip = tmp_path / "in.avi"
    write_clip(clip, 5, (48, 32), 15.0, make_image)
    backend = make_backend()
    progress: list[tuple[int, int]] = []
    result = predict_video(
        Predictor(backend),
        clip,
        tmp_path / "out.avi",
        overlay=False,
        batch=2,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert (result.frames, result.width, result.height, result.fps) == (5, 48, 32, 15.0)
    assert progress == [(2, 5), (4, 5), (5, 5)]
    assert [shape[0] for shape in backend.calls] == [2, 2, 1]
    frames, fps = read_frames(tmp_path / "out.avi")
    assert len(frames) == 5 and fps == pytest.approx(15.0) and frames[0].shape == (32, 48, 3)
    # A colour-mask frame only holds palette colours (up to MJPG compression error).
    palette_bgr = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0]], np.int32)
    distance = np.abs(frames[0].astype(np.int32)[:, :, None, :] - palette_bgr).sum(-1).min(-1)
    assert np.median(distance) < 20


def test_unreadable_video_leaves_no_output(tmp_path: Path, make_backend) -> None:
    clip = tmp_path / "bad.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    with pytest.raises(DataError, match="bad.mp4 cannot be opened"):
        predict_video(Predictor(make_backend()), clip, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert list(tmp_path.iterdir()) == [clip]
