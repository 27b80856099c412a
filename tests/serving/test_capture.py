"""Capture: low-confidence requests go to the bounded review queue, confident ones do not."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry

from segflow.errors import ConfigError
from segflow.serving import capture as capture_module
from segflow.serving.app import create_app
from segflow.serving.capture import Capture, CaptureRule, _Item, read_capture_queue
from segflow.serving.codecs import decode_label_png
from segflow.serving.monitoring import CaptureMetrics
from segflow.serving.settings import ServeSettings
from segflow.viz.png import read_label_png

from .fakes import CLASSES, PALETTE, FakePredictor, png_bytes, sample_image, serving, wait_ready

WRITE_TIMEOUT_S = 20.0


def wait_saved(client: TestClient, count: int) -> None:
    metrics = client.app.state.service.capture.metrics  # type: ignore[attr-defined]
    deadline = time.monotonic() + WRITE_TIMEOUT_S
    while metrics.saved._value.get() < count:
        assert time.monotonic() < deadline, "capture not written"
        time.sleep(0.02)


def test_low_confidence_real_model_is_captured_confident_is_not(tmp_path: Path) -> None:
    """A real network whose last layer is zeroed predicts uniform probabilities (1/3 < 0.6): captured;
    with a bias of 10 on class 0 it is confident (~1.0): not captured."""
    import torch

    from segflow import models

    net = models.create_model("unet", "resnet18", 3, 3, encoder_weights=None)
    head = net.segmentation_head[0] if hasattr(net, "segmentation_head") else None
    if head is None:  # segflow wraps the smp model
        head = next(m for m in reversed(list(net.modules())) if isinstance(m, torch.nn.Conv2d))
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = models.build_meta(net, CLASSES, None, 255, None, policy, [0.4, 0.3, 0.3], {})
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    uniform = models.save_model_checkpoint(tmp_path / "uniform.pt", net, meta)
    with torch.no_grad():
        head.bias[0] = 10.0
    confident = models.save_model_checkpoint(tmp_path / "confident.pt", net, meta)
    image = sample_image(32, 32, seed=3)
    for model, folder in ((confident, tmp_path / "c1"), (uniform, tmp_path / "c2")):
        settings = ServeSettings(model=model, capture=folder, capture_below=0.6, warmup=False)
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            answer = client.post("/v1/segment", content=png_bytes(image))
            assert answer.status_code == 200
            if model == uniform:
                wait_saved(client, 1)
        entries = read_capture_queue(folder)
        if model == confident:
            assert entries == []
            continue
        [entry] = entries
        assert np.array_equal(np.asarray(Image.open(entry.image)), image)
        np.testing.assert_array_equal(read_label_png(entry.mask), decode_label_png(answer.content))
        assert entry.meta["confidence"] == pytest.approx(1 / 3, abs=1e-6)
        assert entry.meta["classes"] == CLASSES and entry.meta["model"].startswith("uniform-")
        assert entry.meta["low_confidence_share"] is None  # --capture-area not set


def test_area_rule_uses_pixel_probabilities(tmp_path: Path) -> None:
    """The fake's top probability is 0.8 everywhere: mean rule off at 0.5; with pixels below 0.9
    low-confidence, the share is 1.0 > 0.3 (captured); below 0.5 it is 0 (not captured)."""
    for pixel_below, expected in ((0.5, 0), (0.9, 1)):
        folder = tmp_path / f"c{pixel_below}"
        opts = {"capture_below": 0.5, "capture_area": 0.3, "capture_pixel_below": pixel_below}
        with serving(FakePredictor(), capture=folder, **opts) as client:
            answer = client.post("/v1/segment", content=png_bytes(sample_image(seed=1)))
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            if expected:
                wait_saved(client, 1)
        entries = read_capture_queue(folder)
        assert len(entries) == expected
        if expected:
            assert entries[0].meta["low_confidence_share"] == 1.0


def _item(seconds: int, seed: int = 0) -> _Item:
    image = sample_image(24, 32, seed=seed)
    received = datetime(2026, 11, 30, tzinfo=UTC) + timedelta(seconds=seconds)
    return _Item(image, (image[..., 0] // 86).astype(np.uint8), 0.4, None, received)


def _capture(folder: Path, max_bytes: int) -> Capture:
    metrics = CaptureMetrics(CollectorRegistry())
    return Capture(folder, CaptureRule(0.6, None, 0.5), max_bytes, "m", CLASSES, list(PALETTE), metrics)


def test_oldest_dropped_over_limit_and_queue_order(tmp_path: Path) -> None:
    capture = _capture(tmp_path / "q", 10**9)
    ids = [capture.write(_item(seconds)) for seconds in (20, 10, 30)]
    assert [e.id for e in read_capture_queue(tmp_path / "q")] == [ids[1], ids[0], ids[2]]  # oldest first
    size = sum(f.stat().st_size for f in (tmp_path / "q").iterdir()) // 3
    capture.max_bytes = int(size * 2.5)
    remaining = capture.enforce_limit()
    assert [e.id for e in read_capture_queue(tmp_path / "q")] == [ids[0], ids[2]]  # the oldest went
    assert remaining <= capture.max_bytes
    assert capture.metrics.dropped.labels(reason="evicted")._value.get() == 1
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == sorted(
        [
            ".segflow-capture",
            *(f"{i}{suffix}" for i in (ids[0], ids[2]) for suffix in (".png", ".mask.png", ".json")),
        ]
    )


def test_json_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[str] = []
    real_replace = os.replace

    def recording_replace(src, dst):  # the rename that makes each atomic file appear
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    entry_id = _capture(tmp_path / "q", 10**9).write(_item(0))
    assert renamed == [f"{entry_id}.png", f"{entry_id}.mask.png", f"{entry_id}.json"]
    meta = json.loads((tmp_path / "q" / f"{entry_id}.json").read_text())
    assert set(meta) == {
        "id",
        "received",
        "confidence",
        "low_confidence_share",
        "model",
        "classes",
        "segflow_capture",
    }
    assert meta["received"] == "2026-11-30T00:00:00.000000Z"


def test_full_writer_queue_drops_and_counts(tmp_path: Path) -> None:
    capture = _capture(tmp_path / "q", 10**9)  # writer not started: nothing drains
    image = sample_image(seed=2)
    labels = np.zeros(image.shape[:2], np.uint8)
    for _ in range(capture_module.PENDING_ITEMS + 3):
        capture.inspect(image, labels, 0.1, None)
    assert capture.metrics.dropped.labels(reason="queue_full")._value.get() == 3
    capture.inspect(image, labels, 0.9, None)  # confident: not even queued
    assert capture.metrics.dropped.labels(reason="queue_full")._value.get() == 3


def test_write_errors_are_counted_and_requests_still_answer(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    with serving(FakePredictor(), capture=folder, capture_below=0.9) as client:
        (folder / ".segflow-capture").unlink()
        folder.rmdir()
        folder.write_text("not a folder")  # every write now fails
        assert client.post("/v1/segment", content=png_bytes(sample_image(seed=4))).status_code == 200
        metrics = client.app.state.service.capture.metrics  # type: ignore[attr-defined]
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while metrics.errors._value.get() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post("/v1/segment", content=png_bytes(sample_image(seed=5))).status_code == 200


def test_capture_is_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with serving(FakePredictor()) as client:
        assert client.app.state.service.capture is None  # type: ignore[attr-defined]
        assert client.post("/v1/segment", content=png_bytes(sample_image(seed=6))).status_code == 200
        assert "segflow_capture_" not in client.get("/metrics").text
    assert list(tmp_path.iterdir()) == []


def _old(path: Path, content: bytes | str = b"x") -> Path:
    """Writes a file and dates it an hour back (older than the crash-leftover age)."""
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    return path


def test_a_folder_of_the_users_own_files_is_refused_and_left_untouched(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _old(photos / "holiday.png")
    _old(photos / "holiday.json", "{}")
    with pytest.raises(ConfigError) as err:
        _capture(photos, 1)
    message = str(err.value)
    assert message.startswith(f"serve option --capture {photos}: the folder holds other files (holiday.")
    assert message.endswith(
        ", ...) and is not a segflow capture folder; give an empty folder or one that segflow serve "
        "--capture made"
    )
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.json", "holiday.png"]
    assert (
        ServeSettings.load(model=tmp_path / "m.pt", capture=photos).capture == photos
    )  # refused at start only


def test_foreign_files_in_a_capture_folder_survive_eviction_and_are_not_listed(tmp_path: Path) -> None:
    """A marked folder the user also put files in: files not named and marked like entries are
    never counted, evicted, removed as leftovers or listed, even at a tiny size limit."""
    folder = tmp_path / "q"
    capture = _capture(folder, 10**9)
    ids = [capture.write(_item(seconds, seed=seconds)) for seconds in (1, 2)]
    foreign = {
        "settings.json": '{"id": "settings"}',
        "holiday.json": "{}",
        "holiday.png": b"png",
        "notes.mask.png": b"m",
        "20261130T000000000000Z-abc.png": b"short id",  # not the 8-hex form: never an orphan
        "20261130T000000000000Z-0badf00d.json": '{"id": "20261130T000000000000Z-0badf00d"}',  # no marker key
        "20261130T000000000000Z-0badf00d.png": b"its image",
        "20261130T000000000000Z-0badf00d.mask.png": b"its mask",
        ".hidden.png": b"h",
    }
    for name, content in foreign.items():
        _old(folder / name, content)
    _old(folder / "20261130T000000000001Z-0000aaaa.png", b"a crash leftover of ours")  # removed
    capture.max_bytes = 1  # far below: every entry of ours goes
    remaining = capture.enforce_limit()
    assert remaining == 0
    assert capture.metrics.dropped.labels(reason="evicted")._value.get() == len(ids)
    assert sorted(p.name for p in folder.iterdir()) == sorted([".segflow-capture", *foreign])
    for name, content in foreign.items():
        data = (folder / name).read_bytes()
        assert data == (content.encode() if isinstance(content, str) else content)
    # the reader only reads, so it also lists hand-made entries (matching id, no marker key)
    assert [e.id for e in read_capture_queue(folder)] == ["20261130T000000000000Z-0badf00d"]
    again = _capture(folder, 10**9)  # a restart on the same (marked) folder is fine and keeps them
    again.enforce_limit()
    assert sorted(p.name for p in folder.iterdir()) == sorted([".segflow-capture", *foreign])


def test_read_capture_queue_ignores_foreign_files(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    entry = _capture(folder, 10**9).write(_item(5))
    (folder / "settings.json").write_text("[1, 2]")
    (folder / "broken.json").write_text("{not json")
    (folder / "20261130T000000000000Z-0badf00d.json").write_text('{"id": "something else"}')
    assert [e.id for e in read_capture_queue(folder)] == [entry]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("capture_max_mb", 0, "greater than 0"),
        ("capture_max_mb", -1, "greater than 0"),
        ("capture_max_mb", float("nan"), "finite number"),
        ("capture_max_mb", float("inf"), "finite number"),
        ("capture_max_mb", 1e300, "less than or equal to 16777216"),
        ("capture_below", 2, "less than or equal to 1"),
        ("capture_below", -0.1, "greater than or equal to 0"),
        ("capture_area", 1.5, "less than or equal to 1"),
        ("capture_pixel_below", float("nan"), "finite number"),
        ("canary_every", 1e300, "less than or equal to 604800"),
        ("canary_every", 0.5, "greater than or equal to 1"),
        ("canary_every", float("inf"), "finite number"),
    ],
)
def test_numeric_capture_and_canary_settings_are_bounded(
    tmp_path: Path, option: str, value: float, message: str
) -> None:
    from segflow.serving.settings import CLI_OPTIONS

    with pytest.raises(ConfigError, match=message) as err:
        ServeSettings.load(model=tmp_path / "m.pt", **{option: value})
    assert str(err.value).startswith(f"serve option {CLI_OPTIONS[option]} = ") and "\n" not in str(err.value)


def test_cli_refuses_a_bad_capture_size_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segflow.cli.main import main

    for value in ("0", "nan", "-1"):
        assert (
            main(
                ["serve", str(tmp_path / "m.pt"), "--capture", str(tmp_path / "q"), "--capture-max-mb", value]
            )
            == 1
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: serve option --capture-max-mb = "), lines
    assert not (tmp_path / "q").exists()
