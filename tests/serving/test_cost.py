"""The request cost formula (docs/serving.md, "Memory budget") on hand-computed cases."""

from __future__ import annotations

import pytest

from segflow.inference.options import InferenceOptions
from segflow.serving.cost import BadOption, CostModel, ImageHeader, ModelShape

SHAPE = ModelShape(channels=3, classes=2, stride=32, activation_bytes_per_px=100)
BIG = 10**12


def model(whole: int = BIG, tiled: int = BIG, auto_tile_pixels: int = 4_194_304) -> CostModel:
    return CostModel(SHAPE, whole_capacity=whole, tiled_capacity=tiled, auto_tile_pixels=auto_tile_pixels)


def test_whole_image_cost_pads_to_the_stride_and_counts_classes_and_bytes():
    # 100x50 pads to 128x64 = 8192 network pixels, each 4 * (2 * 3 + 4 * 2) + 100 = 156 bytes;
    # the 5000 decoded pixels cost (8 + 3) bytes to decode and 2 for the labels and their PNG.
    assert model().whole_cost(100, 50, InferenceOptions()) == 8192 * 156 + 5000 * (11 + 2)
    # probabilities and the class summary (format rle/json): + 4 * K + 24 per pixel
    assert model().whole_cost(100, 50, InferenceOptions(probs=True)) == 8192 * 156 + 5000 * (13 + 8 + 24)
    # overlay: + 15 per pixel
    assert model().whole_cost(100, 50, InferenceOptions(overlay=True)) == 8192 * 156 + 5000 * (13 + 15)
    # flip TTA: + 4 * (3 + 2 * 2) per network pixel; a 1.5x scale view: all of it x 2.25
    assert model().whole_cost(100, 50, InferenceOptions(tta=True)) == 8192 * (156 + 28) + 5000 * 13
    scaled = InferenceOptions(tta={"hflip": True, "vflip": False, "scales": [1.0, 1.5]})
    assert model().whole_cost(100, 50, scaled) == 8192 * (156 + 28) * 2.25 + 5000 * 13
    # a 16-bit image decodes to 2 bytes a sample
    assert model().whole_cost(100, 50, InferenceOptions(), sample_bytes=2) == 8192 * 156 + 5000 * (14 + 2)


def test_thin_image_pays_for_its_padding():
    thin = model().whole_cost(1, 4000, InferenceOptions())
    assert thin == 32 * 4000 * 156 + 4000 * 13  # 32 network rows for one image row


def test_tiled_cost_is_bounded_by_the_tile_not_the_image_height():
    options = InferenceOptions(tile=256, overlap=0.25, tile_batch=2)
    engine = (
        2 * 4 * 3 * (256 - 192) * 1000  # carried rows of two window rows, K + 1 = 3 channels
        + 4 * 3 * 256 * 256  # finished strip
        + 3 * 256 * 1000  # uint8 input band
        + 2 * 256 * 256 * 156  # a batch of two windows
    )
    costs = model()
    assert costs.tiled_cost(500, 1000, options) == engine + 500 * 1000 * 13
    assert (
        costs.tiled_cost(50_000, 1000, options) == engine + 50_000 * 1000 * 13
    )  # only decode and labels grow


def test_plan_tiles_large_images_automatically_and_takes_the_worse_orientation():
    costs = model(auto_tile_pixels=1000 * 1000)
    small = costs.plan(ImageHeader(800, 600), InferenceOptions())
    assert not small.tiled and small.cost == costs.whole_cost(600, 800, InferenceOptions())
    large = costs.plan(ImageHeader(3000, 2000), InferenceOptions())
    assert large.tiled and large.options.tile == 512
    upright, rotated = (
        costs.tiled_cost(2000, 3000, large.options),
        costs.tiled_cost(3000, 2000, large.options),
    )
    assert large.cost == upright > rotated  # the engine's buffers grow with the width
    assert large.what == "a 3000x2000 image tiled 512"
    # an image that cannot run whole within the budget is tiled even below auto_tile_pixels
    tight = model(whole=costs.whole_cost(600, 800, InferenceOptions()) - 1)
    assert tight.plan(ImageHeader(800, 600), InferenceOptions()).tiled


def test_ranges_follow_the_budget():
    costs = model(tiled=model().engine_cost(320, 320, 0.0, 4, None))
    assert costs.max_tile(tile_batch=4) == 320
    assert costs.max_tile_batch(tile=320) == 4
    assert costs.auto_tile(4, 0.0, None) == 320  # 512 would not fit
    costs.check_ranges(320, 4, 0.0, None)
    with pytest.raises(BadOption, match=r"tile=352 is outside .* a multiple of 32 in \[32, 320\]"):
        costs.check_ranges(352, 4, 0.0, None)
    with pytest.raises(BadOption, match=r"tile=100 is outside .* a multiple of 32 in \[32, 320\]"):
        costs.check_ranges(100, 4, 0.0, None)
    with pytest.raises(
        BadOption, match=r"tile=320 is outside .* at tile_batch=5: a multiple of 32 in \[32, 256\]"
    ):
        costs.check_ranges(320, 5, 0.0, None)
    # without a tile, tile_batch is checked for the automatic tile (320 here, as 512 would not
    # fit 4 windows), not for a 512 tile that no request without a tile runs with
    assert costs.max_tile_batch(tile=512) == 1
    costs.check_ranges(None, 2, 0.0, None)
    costs.check_ranges(None, 4, 0.0, None)
    with pytest.raises(BadOption) as err:
        costs.check_ranges(None, 5, 0.0, None)
    assert str(err.value) == (
        "tile_batch=5 is outside [1, 4], the range the server's memory budget (--max-memory-mb) "
        "allows for 320-px tiles"
    )


@pytest.mark.parametrize("budget_tile", [32, 64, 96, 200, 320, 512, 700, 4096])
@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_limits_are_non_empty_and_exactly_what_check_ranges_allows(budget_tile, overlap):
    """/v1/model advertised ``tile_batch: {min: 1, max: 0}`` while ``tile_batch=1`` and
    ``tile=64&tile_batch=64`` were accepted: the ranges and the check must be one rule."""
    costs = model(tiled=model().engine_cost(budget_tile, budget_tile, overlap, 4, None))
    limits = costs.limits(None, 4, overlap, None)
    assert limits.max_tile >= 32 and limits.max_tile_batch >= 4  # 4 windows of budget_tile fit
    assert limits.tile == costs.auto_tile(4, overlap, None)
    for batch in range(1, 65):
        accepted = True
        try:
            costs.check_ranges(None, batch, overlap, None)
        except BadOption:
            accepted = False
        assert accepted == (batch <= limits.max_tile_batch)
    for tile in range(32, 4096 + 1, 32):
        accepted = True
        try:
            costs.check_ranges(tile, 4, overlap, None)
        except BadOption:
            accepted = False
        assert accepted == (tile <= limits.max_tile)
    json = limits.to_json()
    assert json["tile"] == {"multiple_of": 32, "min": 32, "max": limits.max_tile, "at_tile_batch": 4}
    assert json["tile_batch"] == {"min": 1, "max": limits.max_tile_batch, "at_tile": limits.tile}


def test_header_sample_depth_from_the_image_header():
    import io

    import cv2
    import numpy as np
    from PIL import Image

    from segflow.serving.routes.segment import read_header

    def encoded(array: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(".png", array)
        assert ok
        return buffer.tobytes()

    assert read_header(encoded(np.zeros((4, 5, 3), np.uint16)), 100) == ImageHeader(5, 4, 2)  # RGB;16B
    assert read_header(encoded(np.zeros((4, 5), np.uint16)), 100) == ImageHeader(5, 4, 2)  # I;16
    assert read_header(encoded(np.zeros((4, 5, 3), np.uint8)), 100) == ImageHeader(5, 4, 1)
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(jpeg, format="JPEG")
    assert read_header(jpeg.getvalue(), 100) == ImageHeader(7, 6, 1)
