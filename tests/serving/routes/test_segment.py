"""POST /v1/segment: every format, both upload styles, options, limits and bad input."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from segflow.inference.tta import TTAConfig
from segflow.serving.codecs import decode_label_png
from segflow.serving.crafted import bomb_png

from ..fakes import (
    CLASSES,
    PALETTE,
    TOP_PROBABILITY,
    FakePredictor,
    expected_labels,
    jpeg_bytes,
    png_bytes,
    sample_image,
    serving,
)


@pytest.fixture(scope="module")
def client():
    with serving() as test_client:
        yield test_client


def test_png_raw_body_is_exact_index_png_with_palette(client):
    image = sample_image(24, 32)
    response = client.post("/v1/segment", content=png_bytes(image), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as mask:
        assert mask.mode == "P"
        assert mask.size == (32, 24)
        assert mask.getpalette()[: 3 * len(PALETTE)] == [v for colour in PALETTE for v in colour]
    np.testing.assert_array_equal(decode_label_png(response.content), expected_labels(image))
    assert "total;dur=" in response.headers["server-timing"]


def test_multipart_upload_equals_raw_body(client):
    image = sample_image(17, 23, seed=3)
    raw = client.post("/v1/segment", content=png_bytes(image))
    multi = client.post("/v1/segment", files={"file": ("x.png", png_bytes(image), "image/png")})
    assert multi.status_code == 200
    np.testing.assert_array_equal(decode_label_png(multi.content), decode_label_png(raw.content))


def test_rle_decodes_with_pycocotools_to_the_png_mask(client):
    image = sample_image(20, 30, seed=5)
    png = client.post("/v1/segment", content=png_bytes(image))
    rle = client.post("/v1/segment", params={"format": "rle"}, content=png_bytes(image))
    assert rle.status_code == 200
    answer = rle.json()
    assert (answer["width"], answer["height"]) == (30, 20)
    assert answer["model_id"] == "fake-model"
    labels = decode_label_png(png.content)
    rebuilt = np.full_like(labels, 255)
    for item in answer["classes"]:
        encoded = {"size": item["rle"]["size"], "counts": item["rle"]["counts"].encode()}
        binary = coco_mask.decode(encoded).astype(bool)
        assert binary.sum() == item["area"]
        rebuilt[binary] = item["id"]
        assert item["name"] == CLASSES[item["id"]]
        assert item["share"] == pytest.approx(item["area"] / labels.size)
        assert item["confidence"] == pytest.approx(TOP_PROBABILITY)
    np.testing.assert_array_equal(rebuilt, labels)


def test_json_has_areas_without_rle(client):
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    image[:, :4, 0] = 250  # 40 px bright, 60 px background
    answer = client.post("/v1/segment?format=json", content=png_bytes(image)).json()
    assert [(c["name"], c["area"]) for c in answer["classes"]] == [("background", 60), ("bright", 40)]
    assert all("rle" not in c for c in answer["classes"])
    assert answer["confidence"] == pytest.approx(TOP_PROBABILITY)


def test_overlay_is_rgb_blend_of_the_input_size(client):
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    image[:, 160:] = (250, 100, 50)
    response = client.post(
        "/v1/segment", params={"format": "overlay", "alpha": 0.5}, content=png_bytes(image)
    )
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as blended:
        rgb = np.asarray(blended.convert("RGB")).astype(int)
    assert rgb.shape == (240, 320, 3)
    # Bottom corners are far from the legend (top left): exact 50 % blends.
    np.testing.assert_allclose(rgb[-1, 0], np.array(PALETTE[0]) * 0.5, atol=1)
    np.testing.assert_allclose(rgb[-1, -1], (np.array(PALETTE[2]) + [250, 100, 50]) * 0.5, atol=1)


def test_form_field_overrides_query_format(client):
    image = sample_image()
    response = client.post(
        "/v1/segment?format=png",
        files={"file": ("x.png", png_bytes(image), "image/png")},
        data={"format": "json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


def test_options_reach_the_predictor():
    predictor = FakePredictor()
    with serving(predictor) as client:
        response = client.post(
            "/v1/segment",
            params={"tta": "true", "tile": 16, "overlap": 0.5, "min_object_size": 3},
            content=png_bytes(sample_image()),
        )
    assert response.status_code == 200
    applied = predictor.calls[-1][0]
    assert applied.tta == TTAConfig(hflip=True, vflip=True)
    assert (applied.tile, applied.overlap, applied.min_object_size) == (16, 0.5, 3)


def test_grayscale_and_rgba_and_jpeg_inputs_are_accepted(client):
    image = sample_image(12, 14)
    for body in (png_bytes(image, "L"), png_bytes(image, "RGBA"), jpeg_bytes(image)):
        response = client.post("/v1/segment", content=body)
        assert response.status_code == 200
        assert decode_label_png(response.content).shape == (12, 14)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"definitely not an image", 400, "not a decodable image"),
        (b"", 400, "no image"),
        (png_bytes(sample_image(64, 64))[:200], 400, "truncated"),
        (jpeg_bytes(sample_image(64, 64))[:2000], 400, "truncated"),
        (bomb_png(), 413, "pixels"),
        (bomb_png(8000, 6000), 413, "--max-pixels"),
    ],
    ids=["garbage", "empty", "truncated-png", "truncated-jpeg", "bomb-100000", "over-max-pixels"],
)
def test_bad_input_gets_its_4xx_with_a_json_reason(client, body, status, words):
    response = client.post("/v1/segment", content=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail
    assert "Traceback" not in response.text
    # The server keeps serving afterwards.
    assert client.post("/v1/segment", content=png_bytes(sample_image())).status_code == 200


def test_unsupported_mode_and_format_get_415(client):
    # 16-bit images are accepted (tests/serving/test_codecs.py); floating-point ones are not.
    floating = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    buffer = io.BytesIO()
    floating.save(buffer, format="TIFF")
    response = client.post("/v1/segment", content=buffer.getvalue())
    assert response.status_code == 415
    assert "mode" in response.json()["detail"]
    ppm = io.BytesIO()
    Image.fromarray(sample_image()).save(ppm, format="PPM")
    response = client.post("/v1/segment", content=ppm.getvalue())
    assert response.status_code == 415
    assert "PPM" in response.json()["detail"]


def test_invalid_options_get_422_with_one_line_naming_the_option(client):
    body = png_bytes(sample_image())
    for query, words in [
        ("format=jpeg", "format='jpeg'"),
        ("tile=abc", "tile='abc'"),
        ("tile=0", "tile=0 is outside the range"),
        ("overlap=0.95", "overlap=0.95 is outside [0, 0.9)"),
        ("overlap=-1", "overlap=-1 is outside [0, 0.9)"),
        ("tile_batch=0", "tile_batch=0 is outside [1, 64]"),
        ("min_object_size=-1", "min_object_size=-1 is outside [0, 2147483647]"),
        ("alpha=2", "alpha='2'"),
    ]:
        response = client.post(f"/v1/segment?{query}", content=body)
        assert response.status_code == 422, query
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        assert words in detail, (query, detail)
    response = client.post(
        "/v1/segment", files={"file": ("x.png", body, "image/png")}, data={"colour": "red"}
    )
    assert response.status_code == 422
    assert "unknown option 'colour'" in response.json()["detail"]


def test_multipart_without_file_and_urlencoded_get_400(client):
    assert client.post("/v1/segment", files={"other": (None, "text")}).status_code == 400
    response = client.post("/v1/segment", data={"format": "png"})
    assert response.status_code == 400
    assert "multipart" in response.json()["detail"]


def test_upload_over_limit_gets_413_declared_and_streamed():
    body = png_bytes(sample_image(600, 600))  # ~1 MB of noise
    assert len(body) > 0.5 * 1024 * 1024
    with serving(max_upload_mb=0.5) as client:
        declared = client.post("/v1/segment", content=body)
        assert declared.status_code == 413
        assert "--max-upload-mb" in declared.json()["detail"]

        def chunks():
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        streamed = client.post("/v1/segment", content=chunks())  # chunked: no Content-Length
        assert streamed.status_code == 413
        assert client.post("/v1/segment", content=png_bytes(sample_image())).status_code == 200


def test_slow_model_gets_504():
    with serving(FakePredictor(delay_s=0.5), timeout_s=0.1) as client:
        response = client.post("/v1/segment", content=png_bytes(sample_image()))
    assert response.status_code == 504
    assert "--timeout-s" in response.json()["detail"]


def test_full_queue_gets_503_with_retry_after():
    answers = []
    with serving(FakePredictor(delay_s=0.4), queue_size=1, max_batch=1, max_wait_ms=0) as client:

        def call():
            answers.append(client.post("/v1/segment", content=png_bytes(sample_image())))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {200, 503}
    assert statuses.count(200) >= 2  # the one running and the one queued
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["detail"]


def test_model_error_is_500_without_traceback():
    class Broken(FakePredictor):
        def predict_batch(self, images, return_probs=False):
            if self.calls:
                raise RuntimeError("secret internal state")
            return super().predict_batch(images, return_probs)

    with serving(Broken()) as client:
        response = client.post("/v1/segment", content=png_bytes(sample_image()))
    assert response.status_code == 500
    assert "secret" not in response.text
    assert response.json()["detail"].startswith("internal server error")


def test_tta_defaults_to_the_checkpoint_views_like_segflow_predict():
    stored = {"hflip": True, "vflip": False, "scales": [1.0]}
    predictor = FakePredictor(meta_extra={"format_version": 2, "tta": stored})
    body = png_bytes(sample_image())
    expected = {
        None: TTAConfig(hflip=True, vflip=False),  # absent: what the model was validated with
        "checkpoint": TTAConfig(hflip=True, vflip=False),
        "none": None,
        "false": None,
        "true": TTAConfig(hflip=True, vflip=True),
        "vflip": TTAConfig(hflip=False, vflip=True),
    }
    with serving(predictor) as client:
        for value, views in expected.items():
            params = {} if value is None else {"tta": value}
            assert client.post("/v1/segment", params=params, content=body).status_code == 200
            assert predictor.calls[-1][0].tta == views, value
        refused = client.post("/v1/segment", params={"tta": "sideways"}, content=body)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("invalid option: ")
    assert "sideways" in refused.json()["detail"]


@pytest.mark.parametrize("word", ["NONE", "on", "0", "yes", "Flip", " flip", ""])
def test_tta_accepts_exactly_the_words_of_segflow_predict(word):
    """``tta=NONE``, ``on`` and ``0`` were accepted although ``predict --tta=NONE`` was refused,
    and the 422 listed "None, one of none, hflip, vflip, flip or a dict" without checkpoint/true/false."""
    with serving() as client:
        refused = client.post("/v1/segment", params={"tta": word}, content=png_bytes(sample_image()))
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        f"invalid option: tta={word!r} is invalid; "
        "use one of checkpoint, none, hflip, vflip, flip, true, false"
    )


def test_one_tta_parser_for_cli_http_python_and_metadata():
    from segflow.cli.tta_option import TTA_CHOICES, tta_choice
    from segflow.errors import ConfigError, InferenceError
    from segflow.inference.options import InferenceOptions
    from segflow.inference.tta import TTA_WORDS, parse_tta_option
    from segflow.models.meta import CheckpointMeta

    assert TTA_WORDS == ("checkpoint", "none", "hflip", "vflip", "flip", "true", "false")
    assert TTA_CHOICES == TTA_WORDS
    model = {"arch": "a", "encoder": "e", "in_channels": 1, "num_classes": 2}
    for word in TTA_WORDS:
        assert tta_choice(word) == word
        assert InferenceOptions(tta=word).tta == parse_tta_option(word)
        if word != "checkpoint":
            stored = CheckpointMeta.of({"format_version": 2, "model": model, "tta": word}).resolve_tta()
            assert stored == parse_tta_option(word)
    for word in ("NONE", "on", "0"):
        with pytest.raises(ConfigError):
            tta_choice(word)
        with pytest.raises(InferenceError):
            InferenceOptions(tta=word)
    assert InferenceOptions(tta=True).tta == TTAConfig() and InferenceOptions(tta=False).tta is None
