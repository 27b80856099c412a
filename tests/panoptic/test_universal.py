"""Mask2Former (transformers, tiny random config): targets, post-processing on hand-built
outputs, training steps, checkpoints, the predictor, scores and a torch.export parity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segflow.errors import CheckpointError, ConfigError, InferenceError
from segflow.inference.options import InferenceOptions
from segflow.instance.rle import decode_mask
from segflow.panoptic.universal import (
    UniversalOptions,
    UniversalPredictor,
    segment_map,
    segments_of,
    universal_outputs,
)

IGNORE = 255
SHAPES_THINGS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def shapes_spec(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from segflow.data import load_data_spec

    cache = tmp_path_factory.mktemp("shapes")
    return load_data_spec(
        {
            "format": "shapes",
            "options": {
                "size": 64,
                "num_images": {"train": 8, "val": 3, "test": 1},
                "seed": 1,
                "cache_dir": str(cache),
            },
        }
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, shapes_spec: Any) -> Any:
    from segflow.config import build_config

    return build_config(
        {
            "name": "m2f",
            "task": "panoptic",
            "output_dir": str(tmp_path_factory.mktemp("runs")),
            "seed": 0,
            "data": {"format": "shapes", "options": dict(shapes_spec.options)},
            "model": {"arch": "mask2former", "encoder": "tiny", "kwargs": {"num_queries": 8}},
            "optimizer": {"name": "adamw", "lr": 0.001},
            "scheduler": {"name": "cosine", "warmup_epochs": 0},
            "trainer": {
                "max_epochs": 1,
                "batch_size": 4,
                "val_batch_size": 2,
                "num_workers": 0,
                "precision": "32",
                "progress_bar": False,
            },
            "augment": {"preset": "none"},
        }
    )


@pytest.fixture(scope="module")
def trained(config: Any, shapes_spec: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``build_universal`` run for one epoch by Lightning, saved as a slim checkpoint."""
    import lightning.pytorch as pl

    from segflow.models.checkpoint import save_model_checkpoint
    from segflow.panoptic.universal import build_universal

    pl.seed_everything(0, verbose=False)
    module, datamodule = build_universal(config, shapes_spec, [])
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    path = save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "m2f.pt", module.net, module.meta)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"module": module, "datamodule": datamodule, "path": path, "logged": logged}


# --- targets and post-processing on known inputs -------------------------------------------


def test_segments_of_things_then_one_segment_per_stuff_class() -> None:
    class_mask = np.zeros((4, 6), np.int64)
    class_mask[0, :] = 3  # stuff class 3 (a row)
    class_mask[2:, :2] = 1  # thing class 1: instance a
    class_mask[2:, 4:] = 1  # thing class 1: instance b (crowd)
    class_mask[1, 5] = IGNORE
    masks = np.zeros((2, 4, 6), np.uint8)
    masks[0, 2:, :2] = 1
    masks[1, 2:, 4:] = 1
    target = {"masks": masks, "labels": np.array([1, 1]), "iscrowd": np.array([0, 1])}
    got, labels, crowd = segments_of(class_mask, target, [1, 2], IGNORE)
    assert labels.tolist() == [1, 0, 3] and crowd.tolist() == [0, 0, 0]
    assert got[0].sum() == 4 and got[1].sum() == 24 - 6 - 4 - 4 - 1 and got[2].sum() == 6
    assert not got[1][1, 5] and not got[1][2:, 4:].any()  # ignore and the crowd thing are in no segment
    with_crowd, labels, crowd = segments_of(class_mask, target, [1, 2], IGNORE, with_crowd=True)
    assert labels.tolist() == [1, 1, 0, 3] and crowd.tolist() == [0, 1, 0, 0]
    ids, info = segment_map(with_crowd, labels, [1, 2], crowd)
    assert ids[3, 5] == 2 and ids[1, 5] == 0 and ids[0, 0] == 4
    assert info[1] == {
        "id": 2,
        "category_id": 1,
        "isthing": True,
        "area": 4,
        "bbox": [4, 2, 2, 2],
        "iscrowd": 1,
    }


def _logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()


def test_universal_outputs_on_hand_built_queries() -> None:
    # K = 3 classes: 0 stuff, 1 and 2 things; Q = 4 queries on a 4x4 image.
    class_logits = _logits(
        [
            [0.90, 0.04, 0.03, 0.03],  # stuff 0, left half
            [0.02, 0.95, 0.02, 0.01],  # thing 1, top-right 2x2 plus (2, 2)
            [0.05, 0.05, 0.85, 0.05],  # thing 2, its own mask (2,2) (2,3) (3,2); loses (2, 2) to query 1
            [0.10, 0.10, 0.10, 0.70],  # no object
        ]
    )
    masks = torch.zeros(4, 4, 4)
    masks[0, :, :2] = 0.9
    masks[1, :2, 2:] = 0.95
    masks[1, 2, 2] = 0.99  # 0.95 * 0.99 > 0.85 * 0.6
    masks[2, 2:, 2:] = 0.6
    masks[2, 3, 3] = 0.0
    # Query 2 keeps 2 of its 3 own pixels: 0.67 < overlap_threshold 0.8, so it is dropped.
    result = universal_outputs(class_logits, masks, things=[1, 2])
    assert [(s["category_id"], s["isthing"]) for s in result.segments_info] == [(0, False), (1, True)]
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(result.segment_ids, expected)
    info = {seg["id"]: seg for seg in result.segments_info}
    assert info[1]["area"] == 8 and info[1]["bbox"] == [0, 0, 2, 4]
    assert info[2]["area"] == 5 and info[2]["bbox"] == [2, 0, 2, 3]
    assert info[2]["score"] == pytest.approx(0.95, abs=1e-6)
    loose = universal_outputs(
        class_logits, masks, things=[1, 2], options=UniversalOptions(overlap_threshold=0.6)
    )
    assert [s["category_id"] for s in loose.segments_info] == [0, 1, 2]
    expected[2, 3] = expected[3, 2] = 3
    np.testing.assert_array_equal(loose.segment_ids, expected)
    assert loose.segments_info[2]["score"] == pytest.approx(0.85, abs=1e-6)
    confident = universal_outputs(class_logits, masks, [1, 2], UniversalOptions(score_threshold=0.92))
    assert [seg["category_id"] for seg in confident.segments_info] == [1]  # only query 1 scores above
    large = universal_outputs(class_logits, masks, [1, 2], UniversalOptions(min_area=6))
    assert [seg["category_id"] for seg in large.segments_info] == [0]  # query 1 has 5 pixels
    # semantic: S[k] = sum_q p_q(k) m_q(pixel); argmax per pixel, S normalised over k
    assert result.labels.dtype == np.uint8
    assert result.labels[0, 0] == 0 and result.labels[0, 3] == 1 and result.labels[2, 3] == 2
    s_00 = np.array([0.90 * 0.9, 0.04 * 0.9, 0.03 * 0.9])
    np.testing.assert_allclose(result.probs[:, 0, 0], s_00 / s_00.sum(), rtol=1e-5)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.probs[:, 3, 3], 1 / 3)  # no mask covers it: uniform


def test_nothing_above_threshold_is_all_void() -> None:
    result = universal_outputs(_logits([[0.3, 0.3, 0.4]]), torch.ones(1, 5, 7), things=[1])
    assert result.segments_info == [] and not result.segment_ids.any()
    assert result.labels.shape == (5, 7)


# --- model, training, checkpoints ----------------------------------------------------------


def test_mask2former_config_errors_are_one_line(tmp_path: Path) -> None:
    from segflow.models.mask2former import create_mask2former

    cases: list[tuple[dict[str, Any], str]] = [
        ({"encoder": "swin-huge"}, "not a Mask2Former preset: use one of tiny"),
        ({"encoder_weights": "imagenet"}, "never downloaded"),
        ({"encoder_weights": str(tmp_path / "nope")}, "do not exist"),
        ({"num_querys": 4}, r"\['num_querys'\] are not Mask2FormerConfig fields"),
        ({"backbone": {"embed_dim": "wide"}}, "embed_dim"),
        ({"encoder_weights": str(tmp_path)}, "needs config.json"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            create_mask2former(**{"encoder": "tiny", "num_classes": 3, **kwargs})
        assert "\n" not in str(info.value)


def test_local_weights_folder_and_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from segflow.models.mask2former import create_mask2former

    torch.manual_seed(0)
    net = create_mask2former("tiny", 3, 5, num_queries=4).eval()
    x = torch.rand(1, 3, 64, 64)
    hf_model: Any = net.model
    hf_model.save_pretrained(tmp_path / "folder")
    from_folder = create_mask2former("ignored", 3, 5, encoder_weights=str(tmp_path / "folder")).eval()
    assert from_folder.encoder == "pretrained"
    with torch.no_grad():
        assert torch.equal(from_folder(x)[1], net(x)[1])
    save_file({k: v.contiguous() for k, v in net.model.state_dict().items()}, tmp_path / "m2f.safetensors")
    other_k = create_mask2former(
        "tiny", 3, 7, encoder_weights=str(tmp_path / "m2f.safetensors"), num_queries=4
    )
    with torch.no_grad():  # masks equal, class layer re-initialised for 7 classes
        assert torch.equal(other_k.eval()(x)[1], net(x)[1])
        assert other_k(x)[0].shape == (1, 4, 8)


def test_training_steps_decrease_the_loss_on_a_fixed_batch(shapes_spec: Any) -> None:
    from segflow.models.mask2former import create_mask2former
    from segflow.panoptic.universal import UniversalDataset, collate_segments

    torch.manual_seed(0)
    dataset = UniversalDataset(shapes_spec, "train")
    batch = collate_segments([dataset[i] for i in range(4)], dataset.ignore_index)
    assert batch["image"].shape == (4, 3, 64, 64)
    assert all(
        m.shape[1:] == (64, 64) and len(m) == len(c)
        for m, c in zip(batch["mask_labels"], batch["class_labels"], strict=True)
    )
    net = create_mask2former("tiny", 3, 5)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, _ = net.loss(batch["image"], batch["mask_labels"], batch["class_labels"])
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] * 0.95, losses


def test_training_logs_panoptic_and_semantic_scores(trained: dict[str, Any]) -> None:
    logged = trained["logged"]
    for key in ("val/loss", "val/miou", "val/pq", "val/pq_things", "val/pq_stuff", "train/loss"):
        assert key in logged and np.isfinite(logged[key]), key
    meta = trained["module"].meta
    assert meta.task == "panoptic" and meta.model.arch == "mask2former" and meta.stride == 32
    assert meta.task_options["things"] == SHAPES_THINGS and meta.task_options["stuff"] == [0]


def test_checkpoint_reload_gives_identical_outputs(trained: dict[str, Any]) -> None:
    from segflow.panoptic.universal import load_universal

    net = trained["module"].net.eval()
    loaded, meta = load_universal(trained["path"])  # torch.load(weights_only=True) inside
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(net(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    assert meta.class_names == ["background", "circle", "rectangle", "triangle", "star"]


def test_predictor_outputs_semantic_instances_and_panoptic(trained: dict[str, Any]) -> None:
    predictor = UniversalPredictor.from_path(trained["path"], thresholds={"score_threshold": 0.0})
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not a multiple of 32
    prediction = predictor.predict(image, return_probs=True)
    assert prediction.labels.shape == (50, 70) and prediction.labels.dtype == np.uint8
    assert prediction.probs is not None and prediction.probs.shape == (5, 50, 70)
    assert prediction.class_share.shape == (5,) and prediction.class_share.sum() == pytest.approx(1.0)
    assert 0.0 < prediction.confidence <= 1.0
    assert prediction.panoptic is not None
    segment_ids, segments = prediction.panoptic
    assert segment_ids.shape == (50, 70) and segment_ids.dtype == np.int32
    assert sorted(np.unique(segment_ids[segment_ids > 0]).tolist()) == sorted(s["id"] for s in segments)
    assert prediction.instances is not None
    things = {s["id"] for s in segments if s["isthing"]}
    assert {r["id"] for r in prediction.instances} == things
    for record in prediction.instances:
        assert record["category_id"] in SHAPES_THINGS and 0.0 <= record["score"] <= 1.0
        np.testing.assert_array_equal(decode_mask(record["segmentation"]), segment_ids == record["id"])
    batch = predictor.predict_batch([image, image[:40]])
    # a batch pads its images to one size: float sums reorder, a near-tie pixel may flip (1 in 3500 seen)
    assert (batch[0].labels == prediction.labels).mean() >= 0.999
    assert batch[1].labels.shape == (40, 70)
    overlapping = predictor.predict_instances(image, top_k=10)
    assert len(overlapping) <= 10 and all(r["category_id"] in SHAPES_THINGS for r in overlapping)
    assert [r["score"] for r in overlapping] == sorted((r["score"] for r in overlapping), reverse=True)


def test_predictor_answers_like_a_predictor_for_the_server(trained: dict[str, Any]) -> None:
    from segflow.serving.runner import PredictorLike

    predictor = UniversalPredictor.from_path(trained["path"])
    assert isinstance(predictor.classes, list) and len(predictor.palette) == predictor.num_classes == 5
    assert predictor.meta.in_channels == predictor.in_channels == 3 and predictor.tile_spec is None
    variant = predictor.with_options(InferenceOptions(probs=True, pad_mode="constant"))
    assert variant.net is predictor.net
    _: PredictorLike = predictor
    with pytest.raises(InferenceError, match="tile do not apply to Mask2Former"):
        predictor.with_options(tile=64)
    with pytest.raises(ConfigError, match="torch backend only"):
        UniversalPredictor.from_path(trained["path"], backend="onnx")
    with pytest.raises(InferenceError, match="score_threshold=2.0 must be in"):
        UniversalPredictor.from_path(trained["path"], score_threshold=2.0)


def test_missing_or_foreign_checkpoint_is_one_line(tmp_path: Path) -> None:
    from segflow.models import build_meta, create_model, save_model_checkpoint

    with pytest.raises(CheckpointError, match="does not exist"):
        UniversalPredictor.from_path(tmp_path / "none.pt")
    net = create_model("unet", "resnet18", num_classes=2, encoder_depth=3, decoder_channels=(8, 8, 8))
    meta = build_meta(net, ["a", "b"], None, IGNORE, {"max_value": 255.0}, None, None, None)
    path = save_model_checkpoint(tmp_path / "unet.pt", net, meta)
    with pytest.raises(CheckpointError, match="not a mask2former checkpoint"):
        UniversalPredictor.from_path(path)


def test_final_metrics_write_pq_and_miou(trained: dict[str, Any], shapes_spec: Any, tmp_path: Path) -> None:
    from segflow.panoptic.universal import final_metrics_universal

    metrics = final_metrics_universal(trained["path"], shapes_spec, None, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou", "pixel_accuracy", "per_class"):
        assert key in written
    assert written["task"] == "panoptic" and written["split"] == "val" and written["num_images"] == 3
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= (metrics["pq"] or 0.0) <= 1.0
    assert set(written["per_class"]["circle"]) >= {"iou", "pq", "sq", "rq"}
    with pytest.raises(ConfigError, match="no test-time augmentation"):
        final_metrics_universal(trained["path"], shapes_spec, "flip", tmp_path)


@pytest.mark.slow
def test_torch_export_parity(trained: dict[str, Any], tmp_path: Path) -> None:
    """A ``torch.export`` program, saved as ``.pt2`` and loaded back, answers exactly like the
    eager network on new pixels.

    ONNX is not an option: ONNX Runtime 1.32 has no kernel for the ``GridSample`` node the
    deformable attention exports to (``NOT_IMPLEMENTED`` at session creation). A
    ``torch.jit.trace`` also matches (in ~3 s), but TorchScript is deprecated in torch 2.14.
    The program is exported at one input size (64x96).
    """
    net = trained["module"].net.eval()
    program = torch.export.export(net, (torch.rand(1, 3, 64, 96),))
    torch.export.save(program, tmp_path / "m2f.pt2")
    loaded = torch.export.load(tmp_path / "m2f.pt2").module()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(loaded(x), net(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_engine_run_then_loader_and_server_answer(config: Any) -> None:
    """``segflow train`` with ``task: panoptic`` (the panoptic task builds through
    ``build_universal``), then the one loader and the HTTP service on its checkpoint."""
    import io
    import time

    from fastapi.testclient import TestClient
    from PIL import Image

    from segflow.inference.loader import load_predictor
    from segflow.serving.app import create_app
    from segflow.serving.settings import ServeSettings
    from segflow.training.engine import train

    result = train(config, overwrite=True)
    assert result is not None
    written = json.loads((result.run_dir / "metrics.json").read_text())
    assert written["task"] == "panoptic" and "pq" in written and "miou" in written
    assert (result.run_dir / "model_card.md").is_file()
    predictor = load_predictor(result.best_checkpoint)
    assert isinstance(predictor, UniversalPredictor)
    app = create_app(ServeSettings.model_validate({"model": result.best_checkpoint}), predictor)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(buffer, format="PNG")
    with TestClient(app) as client:
        for _ in range(200):  # the runner warms the model up first
            if app.state.service.ready:
                break
            time.sleep(0.05)
        response = client.post(
            "/v1/segment?format=json", files={"file": ("a.png", buffer.getvalue(), "image/png")}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["width"], answer["height"]) == (56, 40)
        assert isinstance(answer["instances"], list) and isinstance(answer["segments_info"], list)
        assert client.get("/v1/model").json()["architecture"] == "mask2former"
