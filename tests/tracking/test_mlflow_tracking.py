"""Tracking and the registry against a real ``mlflow server`` (SQLite store, local artefact root)
started on 127.0.0.1 by this module: one epoch tracked and registered, queried back with
``MlflowClient``, promoted, and predicted from ``models:/NAME@champion``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

pytest.importorskip("mlflow", reason="mlflow is not installed (make test installs it)")

from mlflow import MlflowClient  # noqa: E402

import segflow  # noqa: E402
from segflow.cli.main import main  # noqa: E402
from segflow.viz import read_label_png  # noqa: E402
from segflow_test_configs import tiny_training_raw  # noqa: E402

MODEL_NAME = "tiny-shapes"
EXPERIMENT = "segflow-tests"


@pytest.fixture(scope="module")
def server(mlflow_server: str) -> str:
    """The session's real tracking server (tests/conftest.py::mlflow_server)."""
    return mlflow_server


def tiny_training_config(tmp_path: Path, tracking: dict[str, Any]) -> dict[str, Any]:
    """conftest's tiny config (64x64 shapes, one epoch): module-scoped fixtures cannot take it."""
    data = {
        "format": "shapes",
        "options": {
            "size": 64,
            "num_images": {"train": 16, "val": 8, "test": 4},
            "seed": 1,
            "cache_dir": str(tmp_path / "shapes"),
        },
    }
    return {**tiny_training_raw(tmp_path / "runs", data), "tracking": tracking}


def write_config(folder: Path, tracking: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_training_config(folder, tracking)))
    return path


@pytest.fixture(scope="module")
def tracked_run(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch trained with tracking to the server and registration as MODEL_NAME."""
    folder = tmp_path_factory.mktemp("tracked")
    tracking = {"backend": "mlflow", "uri": server, "experiment": EXPERIMENT, "register_as": MODEL_NAME}
    assert main(["train", str(write_config(folder, tracking))]) == 0
    return folder / "runs" / "tiny"


def test_run_params_metrics_and_artefacts_are_on_the_server(server: str, tracked_run: Path) -> None:
    record = json.loads((tracked_run / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    run = client.get_run(record["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.run_name == "tiny"
    params = run.data.params
    assert params["model.encoder"] == "resnet18"
    assert params["model.kwargs.decoder_channels"] == "[32, 16, 16, 8, 8]"
    assert params["trainer.max_epochs"] == "1"
    assert params["tracking.register_as"] == MODEL_NAME
    fingerprint = json.loads((tracked_run / "fingerprint.json").read_text())
    assert params["data.fingerprint"] == fingerprint["combined"]
    history = client.get_metric_history(run.info.run_id, "val/miou")
    assert len(history) == 1  # one point per epoch
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert run.data.metrics["final/miou"] == pytest.approx(metrics["miou"], abs=1e-12)
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    expected = {"model_card.md", "metrics.json", "curves.png", "confusion.png", "config.yaml", "samples"}
    assert expected <= logged
    assert {item.path for item in client.list_artifacts(run.info.run_id, "model")} == {
        "model/model.ckpt",
        "model/model.onnx",
    }


def test_best_model_is_a_tagged_registered_version(server: str, tracked_run: Path) -> None:
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    record = json.loads((tracked_run / "tracking.json").read_text())
    assert record["registered"]["name"] == MODEL_NAME and record["registered"]["version"] == "1"
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == record["run_id"]
    assert version.source == f"{record['artifact_uri']}/model"
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert float(version.tags["val_miou"]) == metrics["miou"]
    assert version.tags["segflow_version"] == segflow.__version__
    assert version.tags["onnx"] == "model.onnx"


def test_promote_then_predict_from_the_registry(
    server: str,
    tracked_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    promote = ["registry", "promote", MODEL_NAME, "1", "--alias", "champion", "--tracking-uri", server]
    assert main(promote) == 0
    assert f"models:/{MODEL_NAME}@champion" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
    assert main(["registry", "list", MODEL_NAME, "--tracking-uri", server]) == 0
    listed = capsys.readouterr().out
    assert "champion" in listed and segflow.__version__ in listed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    image = str(tmp_path / "img.png")
    assert main(["predict", f"models:/{MODEL_NAME}@champion", image, "--out", str(tmp_path / "reg")]) == 0
    best = tracked_run / "checkpoints" / "best.ckpt"
    assert main(["predict", str(best), image, "--out", str(tmp_path / "local")]) == 0
    np.testing.assert_array_equal(
        read_label_png(tmp_path / "reg" / "img.png"), read_label_png(tmp_path / "local" / "img.png")
    )
    cached = list((tmp_path / "cache" / "registry").rglob("*.ckpt"))
    assert len(cached) == 1 and cached[0].read_bytes() == best.read_bytes()
    stamp = cached[0].stat().st_mtime_ns
    assert main(["predict", f"models:/{MODEL_NAME}/1", image, "--out", str(tmp_path / "again")]) == 0
    assert list((tmp_path / "cache" / "registry").rglob("*.ckpt")) == cached  # version 1: the same file
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not downloaded again


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"models:/{MODEL_NAME}@nope", f"registered model '{MODEL_NAME}' has no alias 'nope' (versions: 1)"),
        (f"models:/{MODEL_NAME}/9", f"registered model '{MODEL_NAME}' has no version 9 (versions: 1)"),
        ("models:/no-such-model/1", "has no model named 'no-such-model'"),
    ],
)
def test_unknown_registry_models_are_one_line(
    server: str,
    tracked_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    model: str,
    message: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    (tmp_path / "img.png").write_bytes(b"")
    assert main(["predict", model, str(tmp_path / "img.png"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message in " ".join(err.split())
    assert not (tmp_path / "out").exists()


def test_unreachable_server_stops_the_run_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens there
    config = write_config(tmp_path, {"backend": "mlflow", "uri": uri})
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"error: MLflow tracking server {uri} is not reachable" in err
    assert not (tmp_path / "runs" / "tiny").exists()  # nothing written


def test_no_uri_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = write_config(tmp_path, {"backend": "mlflow"})
    assert main(["train", str(config)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        "error: no MLflow tracking server: set tracking.uri (e.g. http://127.0.0.1:5000) or the "
        "environment variable MLFLOW_TRACKING_URI"
    )
    assert not (tmp_path / "runs" / "tiny").exists()
