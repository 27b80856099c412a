"""segflow.serving.client against a live server: every format, errors, predict_via_server."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.serving.client import Client, ServerError, predict_via_server
from segflow.serving.codecs import labels_from_rle
from segflow.viz import read_label_png

from .fakes import PALETTE, expected_labels, live_server, make_app, png_bytes, sample_image

KEY = "client-key"


@pytest.fixture(scope="module")
def url():
    with live_server(make_app(api_key=KEY)) as live:
        yield live.url


def test_segment_every_format(url, tmp_path):
    image = sample_image(30, 40)
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(image))
    with Client(url, api_key=KEY) as client:
        assert client.health() == {"alive": True, "ready": True}
        assert client.model_info()["num_classes"] == 3
        labels = client.segment(path)
        np.testing.assert_array_equal(labels, expected_labels(image))
        np.testing.assert_array_equal(client.segment(image), labels)  # array input
        rle = client.segment(image, format="rle")
        np.testing.assert_array_equal(labels_from_rle(rle["classes"], rle["height"], rle["width"]), labels)
        assert {c["name"] for c in client.segment(image, format="json", tta=True)["classes"]} == {
            "background",
            "middle",
            "bright",
        }
        assert client.segment(sample_image(240, 320), format="overlay").shape == (240, 320, 3)


def test_errors_raise_server_error_with_status(url):
    with Client(url) as client, pytest.raises(ServerError) as info:
        client.segment(sample_image())
    assert info.value.status_code == 401
    with Client(url, api_key=KEY) as client, pytest.raises(ServerError, match="not a decodable image"):
        client.segment(b"garbage")


def test_predict_via_server_writes_palette_png_and_overlay(url, tmp_path):
    image = sample_image(16, 20)
    source = tmp_path / "street.png"
    source.write_bytes(png_bytes(image))
    written = predict_via_server(url, [source], tmp_path / "out", overlay=True, api_key=KEY)
    assert [p.name for p in written] == ["street.png", "street_overlay.png"]
    np.testing.assert_array_equal(read_label_png(written[0]), expected_labels(image))
    from PIL import Image

    with Image.open(written[0]) as mask:
        assert mask.getpalette()[:9] == [v for colour in PALETTE for v in colour]


def test_cli_predict_with_server_flag(url, tmp_path):
    from segflow.cli.main import main

    image = sample_image(18, 22)
    source = tmp_path / "frame.png"
    source.write_bytes(png_bytes(image))
    out = tmp_path / "cli-out"
    assert (
        main(["predict", "--server", url, "--api-key", KEY, str(source), "--out", str(out), "--overlay"]) == 0
    )
    np.testing.assert_array_equal(read_label_png(out / "frame.png"), expected_labels(image))
    assert (out / "frame_overlay.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["frame.png", "frame_overlay.png", "predictions.json"]
    rerun = ["predict", "--server", url, "--api-key", KEY, str(source), "--out", str(out)]
    assert main(rerun) == 1  # the --out rule of local predict: non-empty without --overwrite/--resume
    assert main([*rerun, "--overlay", "--resume"]) == 0
    fresh = str(tmp_path / "cli-out-2")
    assert main(["predict", "--server", url, str(source), "--out", fresh]) == 1  # no key: 401, one line
