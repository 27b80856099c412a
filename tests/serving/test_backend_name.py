"""The backend a served file reports without ``--backend`` (``/v1/model`` and the Prometheus label)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.serving.service import _backend_from_suffix


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("m.ckpt", "torch"),
        ("m.onnx", "onnx"),
        ("m.xml", "openvino"),
        ("m.tflite", "tflite"),
        ("m.int8.tflite", "tflite"),
    ],
)
def test_backend_follows_the_file_suffix_like_every_command(name: str, backend: str) -> None:
    assert _backend_from_suffix(Path(name)) == backend
