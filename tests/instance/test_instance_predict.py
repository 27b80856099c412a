"""Instance predictor, the ``instance`` prediction kind and serving, on a Mask R-CNN checkpoint.

The checkpoint is built by the task's own ``build`` (shapes data, 64 px) with random weights and
every detection kept (``box_score_thresh`` and ``score_threshold`` 0), so there are instances to
check without training: the tests check how outputs agree with each other, not their quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segflow.config import TrainConfig
from segflow.errors import ConfigError, InferenceError
from segflow.inference.kinds import KindRequest, get_kind
from segflow.instance.rle import decode_mask

pytestmark = pytest.mark.slow

CLASSES = ["background", "circle", "rectangle", "triangle", "star"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from segflow.data import create_dataset, load_data_spec
    from segflow.instance.task import build

    tmp = tmp_path_factory.mktemp("instance_predict")
    data = {
        "format": "shapes",
        "options": {
            "size": 64,
            "num_images": {"train": 2, "val": 2},
            "seed": 5,
            "cache_dir": str(tmp / "cache"),
        },
    }
    config = TrainConfig.model_validate(
        {
            "task": "instance",
            "data": data,
            "model": {
                "arch": "maskrcnn",
                "encoder": "mobilenet_v3_large",
                "kwargs": {
                    "min_size": 64,
                    "max_size": 64,
                    "box_score_thresh": 0.0,
                    "box_detections_per_img": 6,
                    "score_threshold": 0.0,
                },
            },
        }
    )
    torch.manual_seed(0)
    spec = load_data_spec(data)
    module, _ = build(config, spec, [])
    state = {"net." + k: v for k, v in module.net.state_dict().items()}
    ckpt = tmp / "maskrcnn.pt"
    torch.save({"segflow": module.meta.to_dict(), "state_dict": state}, ckpt)
    val = create_dataset(spec, "val")
    images = []
    (tmp / "images").mkdir()
    for sample in val.samples:  # named as the split's samples, so evaluate --predictions pairs them
        path = tmp / "images" / f"{sample.name}.png"
        Image.open(sample.image_path).save(path)
        images.append(path)
    return tmp, ckpt, images, data


def read_png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def check_agrees(labels: np.ndarray, ids: np.ndarray, records: list[dict]) -> None:
    """Each record's RLE is exactly its id's pixels; the semantic map is its class there, 0 elsewhere."""
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))
    for record in records:
        mask = decode_mask(record["segmentation"])
        np.testing.assert_array_equal(mask, ids == record["id"])
        assert (labels[mask] == record["category_id"]).all() and record["category_id"] in range(1, 5)
        assert record["area"] == mask.sum() and record["bbox"][2] * record["bbox"][3] >= mask.sum()
    assert (labels[ids == 0] == 0).all()
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)


def test_predictor_output(setup):
    from segflow.inference.loader import load_predictor
    from segflow.instance.predictor import InstancePredictor, instance_map

    _, ckpt, images, _ = setup
    predictor = load_predictor(ckpt)
    assert isinstance(predictor, InstancePredictor)
    assert predictor.classes == CLASSES and predictor.num_classes == 5 and predictor.in_channels == 3
    assert predictor.tile_spec is None and predictor.things == [1, 2, 3, 4]
    image = np.array(Image.open(images[0]).convert("RGB"))
    prediction = predictor.predict(image)
    assert prediction.labels.shape == (64, 64) and prediction.labels.dtype == np.uint8
    assert prediction.probs is None and 0.0 <= prediction.confidence <= 1.0
    assert prediction.instances, "score_threshold 0 keeps every detection"
    check_agrees(prediction.labels, instance_map(prediction), prediction.instances)
    np.testing.assert_allclose(
        prediction.class_share, np.bincount(prediction.labels.ravel(), minlength=5) / 4096
    )
    small = image[:40, :50]
    both = predictor.predict_batch([image, small])
    assert [p.labels.shape for p in both] == [(64, 64), (40, 50)]
    assert both[0].instances == prediction.instances  # batching does not change the answer


def test_predictor_refuses_what_it_cannot_do(setup):
    from segflow.inference.options import InferenceOptions
    from segflow.instance.predictor import InstancePredictor

    _, ckpt, _, _ = setup
    predictor = InstancePredictor.from_path(ckpt)
    with pytest.raises(InferenceError, match="tile do not apply to instance") as caught:
        predictor.with_options(InferenceOptions(tile=64))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="torch backend only"):
        InstancePredictor.from_path(ckpt, backend="onnx")
    with pytest.raises(InferenceError, match=r"score_threshold=1.5 must be in \[0, 1\]"):
        InstancePredictor.from_path(ckpt, score_threshold=1.5)
    high = InstancePredictor.from_path(ckpt, score_threshold=1.0)
    image = np.array(Image.open(setup[2][0]).convert("RGB"))
    empty = high.predict(image)
    assert empty.instances == [] and not empty.labels.any() and empty.confidence == 1.0


def test_predict_kind_writes_consistent_outputs(setup):
    from segflow.instance.task import evaluate_predictions

    tmp, ckpt, images, data = setup
    out = tmp / "out"
    kind = get_kind("instance")
    written, skipped = kind.run(
        KindRequest(kind="instance", spec=str(ckpt), inputs=images, out=out, overlay=True)
    )
    assert (written, skipped) == (2, 0)
    results = json.loads((out / "instances.json").read_text())
    assert {r["image_id"] for r in results} <= {p.stem for p in images} and results
    for path in images:
        stem = path.stem
        labels, ids = read_png(out / f"{stem}.png"), read_png(out / f"{stem}_instances.png")
        assert ids.dtype == np.uint16 and labels.shape == ids.shape == (64, 64)
        assert read_png(out / f"{stem}_overlay.png").shape[2] == 3
        check_agrees(labels, ids, [r for r in results if r["image_id"] == stem])
    before = (out / "instances.json").read_text()
    again = kind.run(KindRequest(kind="instance", spec=str(ckpt), inputs=images, out=out, resume=True))
    assert again == (0, 2) and (out / "instances.json").read_text() == before
    with pytest.raises(ConfigError, match="--overwrite"):
        kind.run(KindRequest(kind="instance", spec=str(ckpt), inputs=images, out=out))
    with pytest.raises(ConfigError, match="--param min_distance does not apply"):
        kind.run(
            KindRequest(
                kind="instance", spec=str(ckpt), inputs=images, out=tmp / "o2", params={"min_distance": "3"}
            )
        )
    metrics = evaluate_predictions(out, data, "val", tmp / "eval")
    assert metrics["num_dt"] == len(results) and metrics["num_images"] == 2 and 0.0 <= metrics["map"] <= 1.0
    assert json.loads((tmp / "eval" / "metrics.json").read_text())["map"] == metrics["map"]


def test_semantic_model_with_watershed_instances(setup):
    from segflow.models import build_meta, create_model, save_model_checkpoint

    tmp, _, images, _ = setup
    torch.manual_seed(0)
    net = create_model("unet", "resnet18", 3, len(CLASSES), encoder_weights=None, encoder_depth=3,
                       decoder_channels=(32, 16, 8))  # fmt: skip
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = build_meta(net, CLASSES, None, 255, None, policy, None, {})
    semantic = save_model_checkpoint(tmp / "unet.pt", net, meta)
    out = tmp / "watershed"
    params = {"method": "watershed", "min_distance": "3", "min_area": "4", "things": "circle,star"}
    written, _ = get_kind("instance").run(
        KindRequest(kind="instance", spec=str(semantic), inputs=images, out=out, params=params)
    )
    assert written == 2
    results = json.loads((out / "instances.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 4}
    for path in images:
        ids = read_png(out / f"{path.stem}_instances.png")
        mine = [r for r in results if r["image_id"] == path.stem]
        for record in mine:
            mask = decode_mask(record["segmentation"])
            np.testing.assert_array_equal(mask, ids == record["id"])
            assert mask.sum() >= 4
    with pytest.raises(ConfigError, match="add --instances"):
        get_kind("instance").run(
            KindRequest(kind="instance", spec=str(semantic), inputs=images, out=tmp / "o3")
        )
    with pytest.raises(ConfigError, match="things='dog'"):
        get_kind("instance").run(
            KindRequest(
                kind="instance",
                spec=str(semantic),
                inputs=images,
                out=tmp / "o4",
                params={"method": "components", "things": "dog"},
            )  # fmt: skip
        )


def test_serve_answers_instances(setup):
    from fastapi.testclient import TestClient

    from segflow.serving.app import create_app
    from segflow.serving.settings import ServeSettings

    _, ckpt, images, _ = setup
    app = create_app(ServeSettings(model=ckpt))
    body = images[0].read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.05)
        answer = client.post("/v1/segment?format=json", content=body, headers={"content-type": "image/png"})
        assert answer.status_code == 200, answer.text
        found = answer.json()["instances"]
        assert found and {item["class"] for item in found} <= set(CLASSES[1:])
        assert all(item["segmentation"]["size"] == [64, 64] for item in found)
        tiled = client.post(
            "/v1/segment?format=json&tile=64", content=body, headers={"content-type": "image/png"}
        )
        assert tiled.status_code in (400, 422) and "do not apply to instance" in tiled.text
        png = client.post("/v1/segment", content=body, headers={"content-type": "image/png"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
