"""A deterministic fake predictor and helpers shared by the serving tests.

The fake labels a pixel by its red value: 0..85 -> class 0, 86..171 -> class 1, 172..255 -> 2,
so every expected mask is known exactly without a model.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from segflow.inference.options import InferenceOptions
from segflow.serving.app import create_app
from segflow.serving.settings import ServeSettings

CLASSES = ["background", "middle", "bright"]
PALETTE = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]
REFERENCE = [0.5, 0.3, 0.2]
TOP_PROBABILITY = 0.8
STEP = 86
READY_TIMEOUT_S = 10.0


def expected_labels(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 labels the fake predicts for an ``(H, W, C)`` image."""
    return (image[..., 0] // STEP).astype(np.uint8)


@dataclass
class FakePrediction:
    labels: np.ndarray
    probs: np.ndarray | None
    confidence: float
    class_share: np.ndarray


@dataclass
class FakePredictor:
    """Satisfies ``PredictorLike``; records every batch it gets.

    Attributes:
        delay_s: Sleep per batch (to make requests overlap).
        window_delay_s: Sleep per window of a tiled prediction (``tile`` set).
        options: The options of this variant (``with_options`` argument).
        calls: ``(options dict, batch size)`` per call, shared with every variant.
        windows: Windows run by tiled predictions, shared with every variant.
    """

    delay_s: float = 0.0
    window_delay_s: float = 0.0
    options: InferenceOptions = field(default_factory=InferenceOptions)
    calls: list[tuple[InferenceOptions, int]] = field(default_factory=list)
    meta_extra: dict[str, Any] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return CLASSES

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return PALETTE

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    @property
    def meta(self) -> dict[str, Any]:
        base = {
            "segflow_version": "test",
            "format_version": 1,
            "model": {"arch": "fake", "encoder": "none", "in_channels": 3, "num_classes": 3},
            "classes": CLASSES,
            "palette": [list(c) for c in PALETTE],
            "input_policy": {"mode": "keep", "size": None, "multiple": 1, "scale": None},
            "class_distribution": REFERENCE,
        }
        return {**base, **self.meta_extra}

    def with_options(self, options: InferenceOptions) -> FakePredictor:
        return FakePredictor(
            self.delay_s, self.window_delay_s, options, self.calls, self.meta_extra, self.windows
        )

    def predict(
        self, image: np.ndarray, return_probs: bool = False, progress: Callable[[int], None] | None = None
    ) -> FakePrediction:
        """One image; with ``tile`` set, walks its windows (calling ``progress``) like the tiling engine."""
        tile = self.options.tile
        if tile:
            count = math.ceil(image.shape[0] / tile) * math.ceil(image.shape[1] / tile)
            for _ in range(count):
                time.sleep(self.window_delay_s)
                self.windows.append(1)
                if progress is not None:
                    progress(1)
            self.calls.append((self.options, 1))
            return self._predict(image, return_probs)
        return self.predict_batch([image], return_probs)[0]

    def predict_batch(self, images: list[np.ndarray], return_probs: bool = False) -> list[FakePrediction]:
        self.calls.append((self.options, len(images)))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self._predict(image, return_probs) for image in images]

    def _predict(self, image: np.ndarray, return_probs: bool) -> FakePrediction:
        labels = expected_labels(image)
        probs = np.full((3, *labels.shape), (1 - TOP_PROBABILITY) / 2, dtype=np.float32)
        np.put_along_axis(probs, labels[None].astype(np.int64), TOP_PROBABILITY, axis=0)
        share = np.bincount(labels.ravel(), minlength=3) / labels.size
        return FakePrediction(labels, probs if return_probs else None, TOP_PROBABILITY, share)


def settings(**overrides: Any) -> ServeSettings:
    """Settings for tests: a fake model path, otherwise defaults unless overridden."""
    return ServeSettings(model=Path("fake-model.pt"), **overrides)


def make_app(predictor: FakePredictor | None = None, **overrides: Any) -> FastAPI:
    return create_app(settings(**overrides), predictor=predictor or FakePredictor())


@contextmanager
def serving(predictor: FakePredictor | None = None, **overrides: Any) -> Iterator[TestClient]:
    """A TestClient whose app has started and warmed up."""
    app = make_app(predictor, **overrides)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("service did not become ready")
        time.sleep(0.01)


def sample_image(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 image with all three fake classes present."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image[0, 0, 0], image[0, 1, 0], image[0, 2, 0] = 0, 100, 250
    return image


def png_bytes(image: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image) if mode is None else Image.fromarray(image).convert(mode)
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@contextmanager
def running_threads(targets: list[Any]) -> Iterator[list[threading.Thread]]:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        for thread in threads:
            thread.join(timeout=30)


@dataclass
class LiveServer:
    url: str
    server: Any
    thread: threading.Thread


@contextmanager
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    """Runs ``app`` with uvicorn on a free loopback port in a background thread."""
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.01)
    live = LiveServer(url=f"http://127.0.0.1:{port}", server=server, thread=thread)
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=15)
