"""``--init-from models:/NAME@alias``: the next round's ``rounds.json`` carries the history from the
registered version's MLflow run (its ``rounds.json`` artefact), against a real ``mlflow server``
(SQLite store, local artefact root) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="mlflow is not installed (make test installs it)")

from test_rounds import make_source, tiny_raw, union  # noqa: E402

from segflow.config import build_config  # noqa: E402

MODEL_NAME = "rounds-mem"


@pytest.fixture(scope="module")
def server(mlflow_server: str) -> str:
    """The session's real tracking server (tests/conftest.py::mlflow_server)."""
    return mlflow_server


def register_run(uri: str, run_dir: Path, checkpoint: Path) -> None:
    """What ``tracking: {backend: mlflow, register_as}`` leaves on the server, minus the ONNX export
    (slow, and not what this test is about): a run tagged with its folder, its run-folder
    artefacts, and the checkpoint registered as a version of :data:`MODEL_NAME`."""
    from mlflow import MlflowClient

    from segflow.tracking.mlflow_run import TAG_RUN_DIR, log_run_folder
    from segflow.tracking.registry import register_model_version

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("rounds")
    run = client.create_run(experiment, tags={TAG_RUN_DIR: str(run_dir.resolve())})
    assert "rounds.json" in log_run_folder(client, run.info.run_id, run_dir)
    register_model_version(client, uri, MODEL_NAME, run.info.run_id, run.info.artifact_uri, checkpoint, {})


@pytest.mark.slow
def test_history_is_carried_from_a_registered_version(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 is trained and registered; its run folder is then moved away (as on another
    machine), and round 2 starts from ``models:/NAME@champion``: round 1's run, checkpoint and val
    metrics still come through, from the registered version's run on the server."""
    from segflow.tracking.registry import promote
    from segflow.training.engine import train

    data = tmp_path / "data"
    make_source(data / "base", {"train": ["a", "b", "c"], "val": ["v", "w"]}, pulled=False, seed=0)
    make_source(data / "round1", {"train": ["d"]}, pulled=True, seed=1)
    make_source(data / "round2", {"train": ["e"]}, pulled=True, seed=2)
    first = union(data, "r1.yaml", ["base/data.yaml", "round1/data.yaml"])
    second = union(data, "r2.yaml", ["base/data.yaml", "round1/data.yaml", "round2/data.yaml"])
    run1 = train(build_config(tiny_raw(tmp_path, "round1", first)))
    assert run1 is not None  # the main process's result
    round1 = json.loads((run1.run_dir / "rounds.json").read_text())["rounds"][0]
    assert round1["val"]["miou"] is not None and round1["run_dir"] == str(run1.run_dir.resolve())
    register_run(server, run1.run_dir, run1.best_checkpoint)
    promote(server, MODEL_NAME, "1", "champion")
    shutil.move(run1.run_dir, tmp_path / "elsewhere")  # neither the checkpoint's folder nor the tag's

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    raw2 = {**tiny_raw(tmp_path, "round2", second), "init_from": f"models:/{MODEL_NAME}@champion"}
    run2 = train(build_config(raw2))
    assert run2 is not None
    rounds = json.loads((run2.run_dir / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0] == round1  # run_dir, checkpoint and val of round 1, as its run recorded them
    assert rounds[1]["source"] == str((data / "round2" / "data.yaml").resolve())
    assert rounds[1]["run_dir"] == str(run2.run_dir.resolve())
    card = (run2.run_dir / "model_card.md").read_text()
    assert f"| 1 | `{round1['source']}` | `ranking.csv` | 1 | 4 | {round1['val']['miou']:.4f} |" in card
