"""predictions.json: atomic, throttled per-input updates; resume checks; the folder rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from segflow.errors import ConfigError
from segflow.inference import InferenceOptions
from segflow.inference.manifest import (
    MANIFEST_NAME,
    PredictionManifest,
    file_sha256,
    model_record,
    open_prediction_dir,
)

MODEL = {"spec": "unet:resnet18:3", "backend": "torch"}


def _input(tmp_path: Path, name: str, data: bytes = b"pixels") -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_file_sha256_reads_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_model_record_of_a_file_and_of_a_spec(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    assert model_record(tmp_path / "m.onnx") == {
        "path": str((tmp_path / "m.onnx").resolve()),
        "sha256": hashlib.sha256(b"onnx").hexdigest(),
        "backend": "onnx",
    }
    assert model_record("unet:resnet18:3", "torch") == MODEL


def test_model_record_hashes_the_files_the_backend_reads(tmp_path: Path) -> None:
    """An IR's .bin and an INT8 sibling identify the model as much as the file given."""
    (tmp_path / "m.xml").write_bytes(b"graph")
    (tmp_path / "m.bin").write_bytes(b"weights A")
    first = model_record(tmp_path / "m.xml")
    assert first["backend"] == "openvino"
    (tmp_path / "m.bin").write_bytes(b"weights B")  # same .xml, other weights
    assert model_record(tmp_path / "m.xml")["sha256"] != first["sha256"]
    (tmp_path / "m.onnx").write_bytes(b"fp32")
    (tmp_path / "m.int8.onnx").write_bytes(b"int8 A")
    int8 = model_record(tmp_path / "m.onnx", "onnx-int8")
    assert int8["sha256"] == hashlib.sha256(b"int8 A").hexdigest()  # the file that runs
    assert model_record(tmp_path / "m.onnx")["sha256"] == hashlib.sha256(b"fp32").hexdigest()


def test_each_finished_input_is_on_disk_at_once_with_interval_zero(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = _input(tmp_path, "a.png"), _input(tmp_path, "b.png", b"other")
    manifest = open_prediction_dir(out, [a, b], MODEL, InferenceOptions(), flush_interval_s=0.0)
    manifest.begin()
    (out / "a.png").write_bytes(b"labels")
    manifest.record(a, file_sha256(a), [out / "a.png"])
    stored = json.loads((out / MANIFEST_NAME).read_text())
    assert stored["inputs"] == [{"path": str(a.resolve()), "sha256": file_sha256(a), "outputs": ["a.png"]}]
    assert stored["model"] == MODEL and stored["options"] == InferenceOptions().to_json()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", MANIFEST_NAME]  # no temporary file left


def test_overwrite_replaces_a_broken_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{not json")
    (out / "mine.txt").write_text("user")
    a = _input(tmp_path, "a.png")
    manifest = open_prediction_dir(out, [a], MODEL, InferenceOptions(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and manifest.inputs == {}
    with pytest.raises(ConfigError, match="is not empty"):
        (out / MANIFEST_NAME).write_text("{not json")
        open_prediction_dir(out, [a], MODEL, InferenceOptions())


def test_updates_are_throttled_and_close_writes_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = [_input(tmp_path, f"{i}.png", bytes([i])) for i in range(3)]
    manifest = open_prediction_dir(out, inputs, MODEL, InferenceOptions(), flush_interval_s=3600.0)
    manifest.begin()
    for path in inputs:
        manifest.record(path, file_sha256(path), [])
    assert json.loads((out / MANIFEST_NAME).read_text())["inputs"] == []  # within the interval
    manifest.close()
    assert len(json.loads((out / MANIFEST_NAME).read_text())["inputs"]) == 3


def test_is_finished_needs_same_bytes_and_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = _input(tmp_path, "a.png")
    manifest = open_prediction_dir(out, [a], MODEL, InferenceOptions(), flush_interval_s=0.0)
    (out / "a.png").write_bytes(b"labels")
    (out / "a_overlay.png").write_bytes(b"overlay")
    manifest.record(a, file_sha256(a), [out / "a.png", out / "a_overlay.png"])
    assert manifest.is_finished(a, file_sha256(a))
    assert not manifest.is_finished(a, "0" * 64)
    (out / "a_overlay.png").unlink()
    assert not manifest.is_finished(a, file_sha256(a))


def test_resume_reloads_the_run_and_checks_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = _input(tmp_path, "a.png")
    options = InferenceOptions(tile=64)
    first = open_prediction_dir(out, [a], MODEL, options, flush_interval_s=0.0)
    (out / "a.png").write_bytes(b"labels")
    first.record(a, file_sha256(a), [out / "a.png"])
    resumed = open_prediction_dir(out, [a], MODEL, options.replace(tile_batch=1), resume=True)
    assert resumed.is_finished(a, file_sha256(a))
    with pytest.raises(ConfigError, match=r"the options differ .*\(tile: 64 -> 32\)"):
        open_prediction_dir(out, [a], MODEL, options.replace(tile=32), resume=True)
    with pytest.raises(ConfigError, match="was written with model unet:resnet18:3 .*not fpn:resnet18:3"):
        open_prediction_dir(out, [a], {**MODEL, "spec": "fpn:resnet18:3"}, options, resume=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a readable predictions manifest"),
        ("[]", "is not a segflow predictions manifest (no 'inputs' list)"),
        ('{"inputs": [], "model": {}, "options": {"tile": 0}}', "options: tile=0 is outside [1, 4096]"),
    ],
)
def test_a_broken_manifest_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(content)
    with pytest.raises(ConfigError) as caught:
        open_prediction_dir(out, [_input(tmp_path, "a.png")], MODEL, InferenceOptions(), resume=True)
    assert message in str(caught.value) and "use --overwrite" in str(caught.value)


def test_load_of_a_folder_without_manifest_is_none(tmp_path: Path) -> None:
    assert PredictionManifest.load(tmp_path) is None


def test_an_input_whose_outputs_another_overwrote_is_no_longer_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _input(tmp_path, "a.png")
    second = tmp_path / "other" / "a.png"
    second.parent.mkdir()
    second.write_bytes(b"other pixels")
    manifest = open_prediction_dir(out, [first], MODEL, InferenceOptions(), flush_interval_s=0.0)
    (out / "a.png").write_bytes(b"labels of first")
    manifest.record(first, file_sha256(first), [out / "a.png"])
    (out / "a.png").write_bytes(b"labels of second")
    manifest.record(second, file_sha256(second), [out / "a.png"])
    assert not manifest.is_finished(first, file_sha256(first))
    assert manifest.is_finished(second, file_sha256(second))
    assert [entry["path"] for entry in manifest.inputs.values()] == [str(second.resolve())]


def test_a_failure_is_recorded_kept_and_cleared_by_a_later_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = _input(tmp_path, "a.png"), _input(tmp_path, "b.png", b"broken")
    manifest = open_prediction_dir(out, [a, b], MODEL, InferenceOptions(), flush_interval_s=0.0)
    manifest.begin()
    manifest.record_failure(b, file_sha256(b), "b.png is not a readable image:\n  truncated")
    assert not manifest.is_finished(b, file_sha256(b))
    manifest.close()  # nothing finished, but the failure is kept
    stored = json.loads((out / MANIFEST_NAME).read_text())
    assert stored["inputs"] == []
    error = "b.png is not a readable image: truncated"  # one line
    assert stored["failed"] == [{"path": str(b.resolve()), "sha256": file_sha256(b), "error": error}]
    resumed = open_prediction_dir(out, [a, b], MODEL, InferenceOptions(), resume=True, flush_interval_s=0.0)
    assert list(resumed.failed) == [str(b.resolve())] and not resumed.is_finished(b, file_sha256(b))
    (out / "b.png").write_bytes(b"labels")
    resumed.record(b, file_sha256(b), [out / "b.png"])
    stored = json.loads((out / MANIFEST_NAME).read_text())
    assert "failed" not in stored and resumed.is_finished(b, file_sha256(b))


def test_resume_drops_failures_of_inputs_no_longer_given(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = _input(tmp_path, "a.png"), _input(tmp_path, "b.png", b"broken")
    url = "file:///data/c.png"
    manifest = open_prediction_dir(out, [a, b, url], MODEL, InferenceOptions(), flush_interval_s=0.0)
    manifest.begin()
    manifest.record_failure(b, file_sha256(b), "b.png is not a readable image")
    manifest.record_failure(url, "", "c.png is not a readable image")
    manifest.close()
    resumed = open_prediction_dir(out, [a, url], MODEL, InferenceOptions(), resume=True, flush_interval_s=0.0)
    assert list(resumed.failed) == [url]  # b was removed from the run; the URL keeps its "://"
    resumed.begin()
    assert [entry["path"] for entry in json.loads((out / MANIFEST_NAME).read_text())["failed"]] == [url]
