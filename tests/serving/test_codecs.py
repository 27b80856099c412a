"""One decoder for `segflow serve` and `segflow predict`: equal pixels, equal masks, every image kind.

Each image kind is written to a file; the local path is ``segflow predict``'s
(``streaming.predict_file`` on the file), the server path is ``codecs.decode_image`` on the
file's bytes followed by ``Predictor.predict`` (what the segment route runs), plus one
end-to-end request through the app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from segflow.inference.bands import open_band_reader
from segflow.inference.predictor import Predictor
from segflow.inference.preprocess import luminance
from segflow.inference.streaming import predict_file
from segflow.serving.codecs import decode_image, decode_label_png
from segflow.serving.errors import BadImage, PayloadTooLarge, UnsupportedImage
from segflow.viz import read_label_png

MAX_PIXELS = 10**7
HEIGHT, WIDTH = 23, 31


class LinearBackend:
    """Per-pixel classifier on the mean intensity m in [0, 1]: dark -> 0, middle -> 1, bright -> 2."""

    output_stride = 4

    def __init__(self, in_channels: int, max_value: float = 255.0) -> None:
        self.meta: dict[str, Any] = {
            "model": {"arch": "linear", "encoder": "none", "in_channels": in_channels, "num_classes": 3},
            "classes": ["dark", "middle", "bright"],
            "palette": [[0, 0, 0], [200, 30, 30], [30, 200, 30]],
            "normalization": {
                "mean": [0.0] * in_channels,
                "std": [1.0] * in_channels,
                "max_value": max_value,
            },
            "input_policy": {"mode": "keep", "size": None, "multiple": 4, "scale": None},
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=1)
        return np.stack([4.0 - 12.0 * mean, np.zeros_like(mean), 12.0 * mean - 8.0], axis=1).astype(
            np.float32
        )


def _ramp(channels: int, top: int, dtype: type) -> np.ndarray:
    """Colour gradients over the full range, different per channel (so luminance != any channel)."""
    rows = np.linspace(0, 1, HEIGHT)[:, None]
    cols = np.linspace(0, 1, WIDTH)[None, :]
    planes = [(rows + cols) / 2, rows, cols * cols, 0.2 + 0.8 * rows][:channels]
    full = [np.broadcast_to(plane, (HEIGHT, WIDTH)) for plane in planes]
    return np.round(np.stack(full, axis=2) * top).astype(dtype)


def gray8(path: Path) -> None:
    Image.fromarray(_ramp(1, 255, np.uint8)[:, :, 0], mode="L").save(path)


def gray16(path: Path) -> None:
    Image.fromarray(_ramp(1, 65535, np.uint16)[:, :, 0]).save(path)  # mode I;16


def rgb8(path: Path) -> None:
    Image.fromarray(_ramp(3, 255, np.uint8)).save(path)


def rgba8(path: Path) -> None:
    Image.fromarray(_ramp(4, 255, np.uint8)).save(path)


def palette8(path: Path) -> None:
    Image.fromarray(_ramp(3, 255, np.uint8)).quantize(16).save(path)


def palette_transparent(path: Path) -> None:
    image = Image.fromarray(_ramp(3, 255, np.uint8)).quantize(16)
    image.info["transparency"] = 0
    image.save(path, transparency=0)


def rgb16(path: Path) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(_ramp(3, 65535, np.uint16), cv2.COLOR_RGB2BGR))


def jpeg(path: Path) -> None:
    Image.fromarray(_ramp(3, 255, np.uint8)).save(path, quality=90)


def tiff16(path: Path) -> None:
    import tifffile

    tifffile.imwrite(path, _ramp(3, 65535, np.uint16), photometric="rgb")


KINDS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "gray8": (".png", gray8),
    "gray16": (".png", gray16),
    "rgb8": (".png", rgb8),
    "rgba8": (".png", rgba8),
    "palette": (".png", palette8),
    "palette_transparent": (".png", palette_transparent),
    "rgb16": (".png", rgb16),
    "jpeg": (".jpg", jpeg),
    "tiff16": (".tif", tiff16),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_server_mask_equals_predict_mask(tmp_path: Path, kind: str, channels: int) -> None:
    suffix, write = KINDS[kind]
    path = tmp_path / f"{kind}{suffix}"
    write(path)
    predictor = Predictor(LinearBackend(channels))
    local = read_label_png(predict_file(predictor, path, tmp_path / "out")[0])
    decoded = decode_image(path.read_bytes(), MAX_PIXELS, channels)
    served = predictor.predict(decoded).labels
    np.testing.assert_array_equal(served, local)
    assert decoded.shape == (HEIGHT, WIDTH, channels)
    assert set(np.unique(local)) == {0, 1, 2}, "the image should reach every class"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoded_pixels_are_the_local_readers_pixels(tmp_path: Path, kind: str) -> None:
    suffix, write = KINDS[kind]
    path = tmp_path / f"{kind}{suffix}"
    write(path)
    reader = open_band_reader(path)
    local = reader.read(0, reader.height)
    reader.close()
    decoded = decode_image(path.read_bytes(), MAX_PIXELS, local.shape[2])
    assert decoded.dtype == local.dtype and local.dtype == (np.uint16 if "16" in kind else np.uint8)
    np.testing.assert_array_equal(decoded, local)


def test_sixteen_bit_gray_is_accepted_with_its_values(tmp_path: Path) -> None:
    gray16(tmp_path / "g.png")
    decoded = decode_image((tmp_path / "g.png").read_bytes(), MAX_PIXELS, 3)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, np.repeat(_ramp(1, 65535, np.uint16), 3, axis=2))


def test_sixteen_bit_image_scales_like_its_eight_bit_version_for_an_eight_bit_model(tmp_path: Path) -> None:
    eight = _ramp(3, 255, np.uint8)
    predictor = Predictor(LinearBackend(3, max_value=255.0))
    probs8 = predictor.predict(eight, return_probs=True).probs
    probs16 = predictor.predict(eight.astype(np.uint16) * 257, return_probs=True).probs
    np.testing.assert_allclose(probs16, probs8, rtol=1e-5, atol=1e-6)


def test_rgb_for_a_gray_model_is_luminance_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rgb8(tmp_path / "c.png")
    with caplog.at_level(logging.WARNING):
        decoded = decode_image((tmp_path / "c.png").read_bytes(), MAX_PIXELS, 1)
    np.testing.assert_array_equal(decoded, luminance(_ramp(3, 255, np.uint8)))
    assert [r.getMessage() for r in caplog.records] == [
        "uploaded image has 3 colour channels but the model takes 1: converted to grayscale by "
        "luminance (0.299 R + 0.587 G + 0.114 B); convert it yourself to silence this"
    ]


def test_bad_uploads_map_to_their_status(tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="the body \\(9 bytes\\) is not a decodable image"):
        decode_image(b"not image", MAX_PIXELS, 3)
    rgb8(tmp_path / "c.png")
    data = (tmp_path / "c.png").read_bytes()
    with pytest.raises(PayloadTooLarge):
        decode_image(data, HEIGHT * WIDTH - 1, 3)
    with pytest.raises(
        BadImage, match="cannot be decoded: image file uploaded image is unreadable or truncated"
    ):
        decode_image(data[: len(data) // 2], MAX_PIXELS, 3)
    la = tmp_path / "la.tif"  # gray + extra sample: Pillow 12 cannot open it, tifffile reads it
    import tifffile

    tifffile.imwrite(la, _ramp(2, 255, np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(UnsupportedImage, match=r"has 2 channel\(s\) but the model expects 4"):
        decode_image(la.read_bytes(), MAX_PIXELS, 4)


def test_end_to_end_request_equals_predict_for_16_bit_and_rgb(tmp_path: Path) -> None:
    """Through the app: 16-bit gray and RGB uploads to a 1-channel model equal `segflow predict`."""
    from .fakes import serving

    predictor = Predictor(LinearBackend(1))
    with serving(predictor) as client:  # type: ignore[arg-type]
        for kind in ("gray16", "rgb8"):
            path = tmp_path / f"{kind}.png"
            KINDS[kind][1](path)
            response = client.post("/v1/segment", content=path.read_bytes())
            assert response.status_code == 200, response.text
            local = read_label_png(predict_file(predictor, path, tmp_path / "out")[0])
            np.testing.assert_array_equal(decode_label_png(response.content), local)
