"""Streaming prediction: agreement with in-memory tiling, output files, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segflow.errors import DataError, InferenceError
from segflow.inference import InferenceOptions, Predictor
from segflow.inference.bands import TiffBandReader
from segflow.inference.streaming import predict_file, stream_file
from segflow.viz import read_label_png
from segflow.viz.overlay import MIN_VIEW_SIDE


def test_streamed_labels_equal_in_memory_tiled_labels(tmp_path: Path, make_backend, make_image) -> None:
    image = make_image(300, 260, seed=5)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    predictor = Predictor(make_backend(), InferenceOptions(tile=64, overlap=0.25))
    in_memory = predictor.predict(image).labels
    for large, name in ((True, "scene.tif"), (False, "scene.png")):
        out = tmp_path / f"out_{large}"
        reader = TiffBandReader(path)
        written = stream_file(predictor, reader, path, out, large=large)
        reader.close()
        assert written == [out / name]
        streamed = tifffile.imread(written[0]) if large else read_label_png(written[0])
        agreement = float((streamed == in_memory).mean())
        assert agreement >= 0.9999
        np.testing.assert_array_equal(streamed, in_memory)  # identical by construction


def test_streamed_probs_and_png_postprocessing(tmp_path: Path, make_backend, make_image) -> None:
    image = make_image(150, 90, seed=6)
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, image)
    predictor = Predictor(make_backend(), InferenceOptions(tile=32, min_object_size=20))
    expected = predictor.predict(image, return_probs=True)
    reader = TiffBandReader(path)
    written = stream_file(predictor, reader, path, tmp_path / "o", probs=True, large=False)
    reader.close()
    np.testing.assert_array_equal(read_label_png(written[0]), expected.labels)
    probs = np.load(written[1])
    assert probs.dtype == np.float16 and probs.shape == (3, 150, 90)
    np.testing.assert_allclose(probs, expected.probs, atol=1e-3)


def test_predict_file_writes_png_overlay_probs(tmp_path: Path, make_backend, make_image) -> None:
    from PIL import Image

    image = make_image(45, 70)
    Image.fromarray(image).save(tmp_path / "small.png")
    predictor = Predictor(make_backend())
    written = predict_file(predictor, tmp_path / "small.png", tmp_path / "out", overlay=True, probs=True)
    assert [p.name for p in written] == ["small.png", "small_overlay.png", "small_probs.npy"]
    with Image.open(written[0]) as saved:
        assert saved.mode == "P" and saved.size == (70, 45)
        assert saved.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
    np.testing.assert_array_equal(read_label_png(written[0]), predictor.predict(image).labels)
    with Image.open(written[1]) as over:
        assert over.mode == "RGB" and over.size[1] == 45 * -(-MIN_VIEW_SIDE // 70)  # small: enlarged
    assert np.load(written[2]).shape == (3, 45, 70)


def test_bad_inputs_leave_no_output(tmp_path: Path, make_backend) -> None:
    predictor = Predictor(make_backend())
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="fake.tif"):
        predict_file(predictor, fake, out)
    assert not out.exists() or not any(out.iterdir())


def test_overlay_of_a_bigtiff_output_is_refused_before_work(tmp_path: Path, make_backend, make_image) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, make_image(40, 40))
    reader = TiffBandReader(path)
    with pytest.raises(InferenceError, match="--overlay is not available"):
        stream_file(
            Predictor(make_backend(), InferenceOptions(tile=16)),
            reader,
            path,
            tmp_path / "o",
            overlay=True,
            large=True,
        )
    reader.close()
    assert not (tmp_path / "o").exists()


MEMORY_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import numpy as np, tifffile, torch
    from torch import nn
    sys.path.insert(0, sys.argv[4])
    from conftest import TorchBackend, make_meta
    from segflow.inference import InferenceOptions, Predictor
    from segflow.inference.bands import TiffBandReader
    from segflow.inference.streaming import stream_file

    height, width, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    tile = 256
    def tiles():
        rng = np.random.default_rng(0)
        block = rng.integers(0, 256, size=(tile, tile, 3), dtype=np.uint8)
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                yield np.roll(block, (y + x) % 97, axis=1)
    path = folder / "big.tif"
    tifffile.imwrite(path, tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile))
    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, 1)
    predictor = Predictor(
        TorchBackend(net, make_meta(4, 3)), InferenceOptions(tile=tile, overlap=0.25, tile_batch=4)
    )
    reader = TiffBandReader(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stream_file(predictor, reader, path, folder / "out", large=True)
    reader.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "peak_kb": peak}))
    """
)


def peak_rss_kb(tmp_path: Path, height: int, width: int) -> int:
    folder = tmp_path / f"h{height}"
    folder.mkdir()
    script = folder / "child.py"
    script.write_text(MEMORY_CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(height), str(width), str(folder), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert tifffile.imread(folder / "out" / "big.tif").shape == (height, width)
    return int(report["peak_kb"])


@pytest.mark.slow
def test_streaming_peak_memory_does_not_grow_with_height(tmp_path: Path) -> None:
    width = 2048
    short = peak_rss_kb(tmp_path, 1024, width)
    tall = peak_rss_kb(tmp_path, 8192, width)
    extra_pixels = (8192 - 1024) * width
    # Holding the image would add 3 bytes per extra pixel, a full-size label map 1 byte, and a
    # full-size float32 output with 4 classes plus a count map (MONAI) 20 bytes (~290 MB here).
    # Measured: ~4 MB of growth for 14.7 M extra pixels.
    growth_bytes = (tall - short) * 1024
    assert growth_bytes < 1.0 * extra_pixels, (short, tall)
