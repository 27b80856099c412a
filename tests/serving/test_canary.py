"""The canary: exact mIoU (equal to ``segflow evaluate``'s), its gauges, yielding to requests,
and bad canary data refused before serving."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from segflow.cli.main import main
from segflow.errors import SegflowError
from segflow.serving.app import create_app
from segflow.serving.settings import ServeSettings

from .fakes import CLASSES, FakePredictor, expected_labels, png_bytes, sample_image, serving, wait_ready

RUN_TIMEOUT_S = 40.0
IGNORE = 255


def folder_dataset(root: Path, classes: list[str], count: int, labels_of=None, seed: int = 0) -> Path:
    """A folder dataset (val split of ``count`` 32x32 RGB images); masks are ``labels_of(image)``
    or random classes with some ignored pixels. Returns its data YAML."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count if split == "val" else 1):
            image = sample_image(32, 32, seed=seed * 100 + index)
            if labels_of is not None:
                mask = labels_of(image)
            else:
                mask = rng.integers(0, len(classes), (32, 32), dtype=np.uint8)
                mask[:4] = IGNORE
            Image.fromarray(image).save(root / "images" / split / f"im{index:02d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"im{index:02d}.png")
    path = root / "data.yaml"
    path.write_text(f"format: folder\nroot: .\nclasses: [{', '.join(classes)}]\nignore_index: {IGNORE}\n")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segflow import models

    net = models.create_model("unet", "resnet18", 3, len(CLASSES), encoder_weights=None)
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = models.build_meta(net, CLASSES, None, IGNORE, None, policy, [0.4, 0.3, 0.3], {})
    return Path(models.save_model_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", net, meta))


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_run(client: TestClient) -> None:
    canary = client.app.state.service.canary  # type: ignore[attr-defined]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while canary.last is None:
        assert time.monotonic() < deadline, "canary run did not finish"
        time.sleep(0.05)


def test_canary_miou_equals_evaluate_and_is_exported(checkpoint: Path, tmp_path: Path) -> None:
    from segflow.data import load_data_spec
    from segflow.metrics.evaluate import evaluate_model

    data = folder_dataset(tmp_path / "canary", CLASSES, 6)
    settings = ServeSettings(model=checkpoint, canary=data, canary_every=3600)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        wait_for_run(client)
        text = client.get("/metrics").text
    expected = evaluate_model(checkpoint, load_data_spec(data), "val")
    values = metric_values(text)
    assert values[("segflow_canary_miou", ())] == expected["miou"]  # exact: the same confusion matrix
    for name in CLASSES:
        got = values[("segflow_canary_class_iou", (("class_name", name),))]
        assert got == expected["per_class"][name]["iou"] or (
            np.isnan(got) and np.isnan(expected["per_class"][name]["iou"])
        )
    assert values[("segflow_canary_images", ())] == 6
    assert values[("segflow_canary_runs_total", ())] == 1
    assert values[("segflow_canary_last_run_timestamp_seconds", ())] > time.time() - 300
    assert values[("segflow_canary_duration_seconds", ())] > 0


def test_canary_yields_to_requests(tmp_path: Path) -> None:
    """Each canary image takes 0.3 s; a request sent mid-run is answered before the run ends
    (it waits at most one canary image, not the 12-image run)."""
    data = folder_dataset(tmp_path / "canary", CLASSES, 12, labels_of=expected_labels)
    predictor = FakePredictor(delay_s=0.3)
    with serving(predictor, canary=data, canary_every=3600) as client:
        canary = client.app.state.service.canary  # type: ignore[attr-defined]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while canary.progress < 2:
            assert time.monotonic() < deadline, "canary did not start"
            time.sleep(0.01)
        answer = client.post("/v1/segment", content=png_bytes(sample_image(seed=9)))
        assert answer.status_code == 200
        assert canary.last is None and canary.progress < 12  # the run still goes on
        wait_for_run(client)
        assert canary.last["miou"] == 1.0  # the fake predicts exactly these masks


def test_bad_canary_refused_before_serving(checkpoint: Path, tmp_path: Path) -> None:
    data = folder_dataset(tmp_path / "canary", CLASSES, 2)
    with pytest.raises(SegflowError, match=r"^serve option --canary .*split test"):
        create_app(ServeSettings(model=checkpoint, canary=data, canary_split="test"))
    other = folder_dataset(tmp_path / "other", ["a", "b", "c"], 2)
    with pytest.raises(SegflowError, match="--canary"):
        create_app(ServeSettings(model=checkpoint, canary=other))


def test_cli_refuses_bad_canary_in_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """The model loads, then the canary data is refused before uvicorn starts: one line, exit 1."""
    assert main(["serve", str(checkpoint), "--canary", str(tmp_path / "missing.yaml"), "--port", "0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: serve option --canary"), lines


def test_serve_help_says_capture_stores_user_images(capsys) -> None:
    main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--canary", "--canary-every", "--canary-split", "--capture-below", "--capture-max-mb"):
        assert option in out
    assert "STORES USER IMAGES" in out


def test_an_endless_period_neither_overflows_nor_kills_the_canary_thread(tmp_path: Path) -> None:
    """``Event.wait(1e300)`` raises OverflowError; the canary clamps its wait, keeps its thread
    alive after the run, and stops promptly."""
    import threading

    from segflow.serving.canary import FALLBACK_S, next_wait_s

    from .fakes import make_app

    assert next_wait_s(1e300, 5.0) == threading.TIMEOUT_MAX
    assert next_wait_s(float("nan"), 0.0) == FALLBACK_S
    assert next_wait_s(10.0, 12.5) == 0.0 and next_wait_s(10.0, 2.5) == 7.5
    data = folder_dataset(tmp_path / "canary", CLASSES, 2, labels_of=expected_labels)
    app = make_app(FakePredictor(), canary=data, canary_every=3600)
    canary = app.state.service.canary
    canary.every_s = 1e300  # as a caller that bypasses the settings' bound could
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        wait_for_run(client)
        time.sleep(0.2)  # now in the long wait
        assert canary._thread.is_alive() and canary.metrics.failures._value.get() == 0
        started = time.monotonic()
    assert not canary._thread.is_alive() and time.monotonic() - started < 10


def test_cli_refuses_a_capture_folder_of_other_files_in_one_line(
    checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """``--capture`` on a folder of the user's own files: refused before serving, nothing removed."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.png").write_bytes(b"png")
    (photos / "holiday.json").write_text("{}")
    assert main(["serve", str(checkpoint), "--capture", str(photos), "--port", "0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: serve option --capture {photos}: the folder holds"
    ), lines
    assert "give an empty folder or one that segflow serve --capture made" in lines[0]
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.json", "holiday.png"]
