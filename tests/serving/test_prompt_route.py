"""``POST /v1/prompt`` and ``/v1/prompt/export`` with the real GrabCut backend: masks of a known
shape, the image-key cache, limits, one-line errors, the memory budget, and exports read back."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from segflow.data.readers.base import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import CheckpointError, ConfigError
from segflow.instance.rle import decode_mask, encode_mask
from segflow.prompt.base import MAX_POINTS, image_key
from segflow.serving.app import create_app
from segflow.serving.settings import ServeSettings

from .fakes import CLASSES, PALETTE, FakePredictor, png_bytes, serving, settings

MIB = 1024 * 1024
H, W = 120, 160
CENTRE, RADIUS = (80, 60), 30  # (x, y) and radius of the disc
BOX = [45, 25, 116, 96]
KEY = "secret-key"


def disc() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - CENTRE[1]) ** 2 + (xx - CENTRE[0]) ** 2 < RADIUS**2


def scene() -> np.ndarray:
    """A yellow disc on a noisy green background."""
    rng = np.random.default_rng(0)
    image = np.full((H, W, 3), (40, 90, 40), np.int16) + rng.integers(-15, 16, (H, W, 3), dtype=np.int16)
    image[disc()] = (220, 200, 60)
    return np.clip(image, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels) in a Prometheus text exposition."""
    (value,) = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def upload(client: TestClient, image: np.ndarray, prompt: dict | None = None, **kwargs):
    data = {} if prompt is None else {"prompt": json.dumps(prompt)}
    return client.post(
        "/v1/prompt", files={"file": ("scene.png", png_bytes(image), "image/png")}, data=data, **kwargs
    )


@pytest.fixture(scope="module")
def client():
    with serving(prompt_backend="grabcut") as client:
        yield client


def test_box_prompt_on_an_upload_cuts_out_the_disc(client):
    image = scene()
    response = upload(client, image, {"box": BOX})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["image_key"] == image_key(image)  # sha256 of the decoded pixels
    assert (answer["width"], answer["height"]) == (W, H)
    (mask,) = answer["masks"]
    assert mask["segmentation"]["size"] == [H, W] and mask["score"] == 1.0
    decoded = decode_mask(mask["segmentation"])
    assert mask["area"] == int(decoded.sum())
    assert iou(decoded, disc()) >= 0.9


def test_image_key_reuses_the_cached_image(client):
    image = scene()
    cache = client.app.state.service.prompt.cache
    key = upload(client, image).json()["image_key"]  # no prompt: the image is only embedded
    entries, misses, hits = len(cache), cache.misses, cache.hits
    response = client.post("/v1/prompt", json={"image_key": key, "box": BOX, "points": [[80, 60, 1]]})
    assert response.status_code == 200, response.text
    assert iou(decode_mask(response.json()["masks"][0]["segmentation"]), disc()) >= 0.9
    assert (cache.hits, cache.misses, len(cache)) == (hits + 1, misses, entries)  # no new embedding
    again = upload(client, image, {"box": BOX})  # the same pixels again: same key, a hit
    assert again.json()["image_key"] == key and cache.misses == misses and len(cache) == entries
    metrics = client.get("/metrics").text
    assert metric(metrics, "segflow_prompt_cache_bytes") == cache.nbytes == entries * H * W * 3
    assert metric(metrics, "segflow_prompt_cache_max_bytes") == 512 * MIB
    assert metric(metrics, 'segflow_prompt_requests_total{image="key",status="200"}') >= 1


def test_unknown_key_is_404_saying_to_resend(client):
    response = client.post("/v1/prompt", json={"image_key": "0" * 64, "points": [[1, 1, 1]]})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "not in the server's grabcut cache" in detail and "send the image again" in detail


def test_png_answer_is_the_best_mask(client):
    image = scene()
    response = upload(client, image, {"box": BOX}, params={"format": "png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-segflow-image-key"] == image_key(image)
    assert float(response.headers["x-segflow-score"]) == 1.0
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert set(np.unique(mask)) == {0, 255} and iou(mask == 255, disc()) >= 0.9


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "the prompt is not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object, got list"),
        (json.dumps({"image_key": "k", "pointz": []}).encode(), 422, "unknown field 'pointz'; valid fields"),
        (json.dumps({"points": [[1, 1, 1]]}).encode(), 422, "a JSON prompt needs the image_key"),
        (json.dumps({"image_key": "k"}).encode(), 422, "the prompt is empty"),
        (json.dumps({"image_key": "k", "multimask": "maybe"}).encode(), 422, "multimask='maybe'"),
    ],
)
def test_bad_json_prompts_are_one_line(client, body, status, words):
    response = client.post("/v1/prompt", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail and "Traceback" not in detail


def test_bad_prompt_fields_name_the_field(client):
    key = upload(client, scene()).json()["image_key"]
    cases = [
        ({"points": [[200, 10, 1]]}, "prompt points[0] (200, 10) lies outside the 160x120 image"),
        ({"points": [[10, 10, 2]]}, "prompt: points[0] label must be 1 (positive) or 0 (negative)"),
        ({"box": [50, 50, 40, 60]}, "needs x0 < x1 and y0 < y1"),
        ({"points": [[1, 1, 1]] * (MAX_POINTS + 1)}, f"give at most {MAX_POINTS}"),
        ({"mask": {"size": [H, W], "counts": 5}}, "field 'mask': the RLE's counts must be compressed text"),
        ({"mask": {"size": [H, W], "counts": "zz"}}, "field 'mask': the RLE's counts hold 'z' at 0"),
        ({"mask": {"size": [H, W], "counts": "1"}}, f"the RLE covers 1 of {H}*{W} = {H * W} pixels"),
        ({"mask": {"size": [H, W], "counts": [5, 5]}}, f"the RLE covers 10 of {H}*{W} = {H * W} pixels"),
        (
            {"mask": {"size": [100, 120], "counts": "zz"}},
            f"size [100, 120] is not the image's [height, width] [{H}, {W}]",
        ),
        ({"mask": {"size": [-1, W], "counts": ""}}, "size must be [height, width] of positive integers"),
    ]
    for prompt, words in cases:
        response = client.post("/v1/prompt", json={"image_key": key, **prompt})
        assert response.status_code == 422, (prompt, response.text)
        assert words in response.json()["detail"] and "prompt: prompt" not in response.json()["detail"]
    response = upload(client, scene(), {"mask": {"size": [H, W], "counts": "1"}})
    assert response.status_code == 422 and "the RLE covers 1 of" in response.json()["detail"]
    response = upload(client, scene(), {"box": BOX, "image_key": key})
    assert response.status_code == 422 and "not both" in response.json()["detail"]
    response = client.post(
        "/v1/prompt", files={"file": ("a.png", png_bytes(scene()), "image/png")}, data={"points": "[]"}
    )
    assert response.status_code == 422 and "unknown form field(s) points" in response.json()["detail"]


def test_coarse_mask_prompt(client):
    key = upload(client, scene()).json()["image_key"]
    coarse = np.zeros((H, W), bool)
    coarse[40:80, 60:100] = True  # the middle of the disc
    response = client.post("/v1/prompt", json={"image_key": key, "mask": encode_mask(coarse), "box": BOX})
    assert response.status_code == 200
    assert iou(decode_mask(response.json()["masks"][0]["segmentation"]), disc()) >= 0.9


def test_limits_are_checked_before_work():
    big = np.zeros((100, 100, 3), np.uint8)
    with serving(prompt_backend="grabcut", prompt_max_pixels=5000, max_upload_mb=0.05) as client:
        response = upload(client, big, {"box": [1, 1, 50, 50]})
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "100x100 = 10000 pixels, more than the server's prompt limit of 5000" in detail
        assert "prompt_max_pixels" in detail and "--max-pixels" not in detail
        response = export(client, "png", width=100, height=100)
        assert response.status_code == 413 and "prompt_max_pixels" in response.json()["detail"]
        noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
        response = upload(client, noise)
        assert response.status_code == 413 and "--max-upload-mb" in response.json()["detail"]
        assert len(client.app.state.service.prompt.cache) == 0  # nothing was decoded
        response = client.post("/v1/prompt", content=b"not an image", headers={"content-type": "image/png"})
        assert response.status_code == 400 and "multipart field 'file'" in response.json()["detail"]
    with serving(prompt_backend="grabcut", max_pixels=5000) as client:
        response = upload(client, big, {"box": [1, 1, 50, 50]})
        assert response.status_code == 413 and "limit of 5000 (--max-pixels)" in response.json()["detail"]


def test_api_key_is_required():
    with serving(prompt_backend="grabcut", api_key=KEY) as client:
        assert upload(client, scene()).status_code == 401
        assert client.post("/v1/prompt/export?format=png", json={"width": 4, "height": 4}).status_code == 401
        assert upload(client, scene(), headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/prompt").status_code == 200  # the page holds no data


def test_prompting_off_is_409_saying_how_to_turn_it_on():
    with serving() as client:
        response = client.post("/v1/prompt", json={"image_key": "k", "points": [[1, 1, 1]]})
        assert response.status_code == 409
        assert "start it with --prompt-backend grabcut" in response.json()["detail"]
        assert client.get("/v1/model").json()["prompt"] is None
        assert (
            metric(client.get("/metrics").text, 'segflow_prompt_requests_total{image="none",status="409"}')
            == 1
        )


def test_timeout_is_504(monkeypatch):
    with serving(prompt_backend="grabcut", timeout_s=0.3) as client:
        backend = client.app.state.service.prompt
        monkeypatch.setattr(backend, "decode", lambda *args: time.sleep(1.0))
        started = time.monotonic()
        response = upload(client, scene(), {"box": BOX})
        assert response.status_code == 504 and "--timeout-s" in response.json()["detail"]
        assert time.monotonic() - started < 0.9


def test_cache_is_taken_out_of_the_memory_budget(monkeypatch):
    monkeypatch.setattr("segflow.serving.service.process_rss", lambda: 0)
    with serving(prompt_backend="grabcut", prompt_cache_mb=300, max_memory_mb=1000) as client:
        info = client.get("/v1/model").json()
        assert info["limits"]["memory_pool_mb"] == 700.0 and info["limits"]["prompt_cache_mb"] == 300.0
        assert info["prompt"]["backend"] == "grabcut" and info["prompt"]["cache"]["max_bytes"] == 300 * MIB
        assert metric(client.get("/metrics").text, "segflow_memory_pool_bytes") == 700 * MIB
    with serving(prompt_cache_mb=300, max_memory_mb=1000) as client:  # prompting off: no cache
        assert client.get("/v1/model").json()["limits"]["memory_pool_mb"] == 1000.0
    with pytest.raises(ConfigError) as err:
        create_app(
            settings(prompt_backend="grabcut", prompt_cache_mb=2000, max_memory_mb=1000), FakePredictor()
        )
    assert str(err.value).startswith(
        "serve option --prompt-cache-mb 2000 (2000.0 MiB) does not fit in the 1000.0 MiB"
    )


def test_backend_spec_errors_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"serve option --prompt-backend = 'foo': expected one of grabcut"):
        ServeSettings.load(model=Path("m.pt"), prompt_backend="foo")
    with pytest.raises(ConfigError, match=r"--prompt-backend = 'sam': expected one of grabcut, sam:PATH"):
        ServeSettings.load(model=Path("m.pt"), prompt_backend="sam")
    missing = tmp_path / "sam_vit_b.pth"
    with pytest.raises(CheckpointError, match=rf"sam checkpoint {missing} does not exist"):
        create_app(settings(prompt_backend=f"sam:{missing}"), FakePredictor())


def test_cli_lists_the_prompt_options(capsys):
    from segflow.cli.main import main

    main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--prompt-backend" in out and "--prompt-cache-mb" in out


def accepted_masks() -> tuple[np.ndarray, np.ndarray]:
    """Two accepted masks: the disc as "bright", then a square as "middle" drawn over its corner."""
    square = np.zeros((H, W), bool)
    square[70:110, 90:140] = True
    expected = np.zeros((H, W), np.uint8)
    expected[disc()] = 2
    expected[square] = 1
    return np.stack([disc(), square]), expected


def export(client, fmt: str, **body):
    masks, _ = accepted_masks()
    payload = {
        "image_name": "dir/scene 1.png",
        "width": W,
        "height": H,
        "masks": [
            {"segmentation": encode_mask(masks[0]), "class": "bright"},
            {"segmentation": encode_mask(masks[1]), "class": 1},
        ],
        **body,
    }
    return client.post(f"/v1/prompt/export?format={fmt}", json=payload)


def test_export_index_png(client):
    _, expected = accepted_masks()
    response = export(client, "png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'attachment; filename="scene_1_mask.png"'
    png = Image.open(io.BytesIO(response.content))
    assert png.mode == "P" and png.getpalette()[:9] == [c for colour in PALETTE for c in colour]
    assert np.array_equal(np.asarray(png), expected)


def test_export_coco_reads_back_with_pycocotools(client):
    from pycocotools.coco import COCO

    masks, _ = accepted_masks()
    response = export(client, "coco")
    assert response.headers["content-disposition"] == 'attachment; filename="scene_1_coco.json"'
    coco = COCO()
    coco.dataset = response.json()
    coco.createIndex()
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES[1:]
    assert coco.loadImgs([1])[0] == {"id": 1, "file_name": "scene_1.png", "height": H, "width": W}
    bright, middle = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert (bright["category_id"], middle["category_id"]) == (2, 1)
    assert np.array_equal(coco.annToMask(middle).astype(bool), masks[1])
    assert np.array_equal(coco.annToMask(bright).astype(bool), masks[0] & ~masks[1])  # visible part


def test_export_labelme_reads_back_with_segflows_reader(client, tmp_path):
    _, expected = accepted_masks()
    response = export(client, "labelme")
    assert response.headers["content-disposition"] == 'attachment; filename="scene_1.json"'
    document = response.json()
    assert document["imagePath"] == "scene_1.png" and {s["label"] for s in document["shapes"]} >= {"bright"}
    (tmp_path / "scene_1.json").write_bytes(response.content)
    Image.fromarray(scene()).save(tmp_path / "scene_1.png")
    reader = create_reader(load_data_spec({"format": "labelme", "root": str(tmp_path), "classes": CLASSES}))
    listing = reader.list_split("default")
    assert listing.problems == []
    labels = reader.label_rules.to_labels(reader.read_raw_mask(listing.samples[0]), "scene_1")
    assert np.array_equal(labels, expected)


def test_export_errors(client):
    response = export(client, "png", masks=[{"segmentation": encode_mask(disc()), "class": "tree"}])
    assert response.status_code == 422
    assert "masks[0].class 'tree' is not a class of the served model" in response.json()["detail"]
    response = export(client, "png", width=W + 1)
    assert (
        response.status_code == 422 and "size [120, 160] is not the image's [height, width]" in response.text
    )
    for counts, words in [
        ("zz", "masks[0].segmentation: the RLE's counts hold 'z'"),
        ("1", f"masks[0].segmentation: the RLE covers 1 of {H}*{W} = {H * W} pixels"),
        ([H * W + 1], f"the RLE covers {H * W + 1} of"),
        (["a"], "counts[0] must be a non-negative integer"),
    ]:
        bad = {"size": [H, W], "counts": counts}
        response = export(client, "coco", masks=[{"segmentation": bad, "class": 1}])
        assert response.status_code == 422 and words in response.json()["detail"], (counts, response.text)
    response = export(client, "tiff")
    assert response.status_code == 422 and "format" in response.json()["detail"]
    response = client.post(
        "/v1/prompt/export?format=png", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "the export body is not valid JSON" in response.json()["detail"]
    response = export(client, "png", width=10_000, height=10_000)
    assert response.status_code == 413


def tiny_sam_checkpoint(path: Path) -> Path:
    """A randomly initialised, tiny Segment Anything model (64-px input) from the library's own classes."""
    torch = pytest.importorskip("torch")
    modeling = pytest.importorskip("segment_anything.modeling")
    from functools import partial

    torch.manual_seed(0)
    encoder = modeling.ImageEncoderViT(
        img_size=64,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        out_chans=16,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
    prompts = modeling.PromptEncoder(
        embed_dim=16, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=4
    )
    decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=8),
        transformer_dim=16,
        iou_head_depth=3,
        iou_head_hidden_dim=16,
    )
    torch.save(modeling.Sam(encoder, prompts, decoder).state_dict(), path)
    return path


@pytest.mark.slow
def test_sam_backend_answers_three_masks_and_caches_the_embedding(tmp_path):
    weights = tiny_sam_checkpoint(tmp_path / "tiny_sam.pth")
    with serving(prompt_backend=f"sam:{weights}") as client:
        cache = client.app.state.service.prompt.cache
        first = upload(client, scene(), {"points": [[80, 60, 1]], "multimask": True})
        assert first.status_code == 200, first.text
        answer = first.json()
        assert len(answer["masks"]) == 3 and (answer["width"], answer["height"]) == (W, H)
        scores = [mask["score"] for mask in answer["masks"]]
        assert scores == sorted(scores, reverse=True)  # best first
        assert all(decode_mask(mask["segmentation"]).shape == (H, W) for mask in answer["masks"])
        assert (len(cache), cache.misses) == (1, 1)
        misses = cache.misses
        again = client.post(
            "/v1/prompt", json={"image_key": answer["image_key"], "points": [[10, 10, 0]], "box": BOX}
        )
        assert again.status_code == 200 and len(again.json()["masks"]) == 1
        assert cache.misses == misses and len(cache) == 1  # the click ran the decoder only
        assert client.get("/v1/model").json()["prompt"]["backend"] == "sam"
