"""``segflow predict --ray`` on a real local Ray cluster (2 CPUs, 127.0.0.1, shared by the module).

Checks: the outputs equal local ``segflow predict`` pixel for pixel (tiled path included), the
manifest lists the same inputs, a corrupt image is recorded as failed while the others finish,
``--resume`` predicts only the failed one, and an actor killed mid-batch is restarted and its
batch rerun (that run reads its inputs through fsspec, from a ``file://`` URL glob). Option
errors are refused in one line before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from segflow.cli.main import main
from segflow.viz import read_label_png

CLASSES = ["background", "thing", "stuff"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 200, 30]]
TILE = ["--tile", "64", "--overlap", "0.25"]
ACTOR_TITLE = "ray::MapWorker(MapBatches(PredictActor)).submit"
"""Process title of a pool actor while it runs a batch (Ray sets it with setproctitle)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("fpn", "resnet18", in_channels=3, num_classes=3).eval()
    meta = build_meta(
        net,
        CLASSES,
        PALETTE,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", net, meta)


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Path:
    """The checkpoint exported to ONNX: actors then start without importing torch (~10 s each
    on a busy 2-core machine)."""
    onnx = checkpoint.with_suffix(".onnx")
    assert main(["export", str(checkpoint), "--out", str(onnx)]) == 0
    return onnx


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One real local Ray for the module (starting one takes 10-20 s here); the CLI joins it."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    yield
    ray.shutdown()


def image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:height, :width]


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> None:
    folder.mkdir(exist_ok=True)
    for seed, (name, (height, width)) in enumerate(sizes.items()):
        Image.fromarray(image(height, width, seed)).save(folder / name)


def manifest(out: Path) -> dict:
    return json.loads((out / "predictions.json").read_text())


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_ray_equals_local_records_a_failure_and_resume_retries_it(
    ray_cluster: None,
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = tmp_path / "in"
    write_images(images, {"a.png": (70, 90), "b.png": (50, 40), "big.png": (200, 260)})  # big: 24 windows
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    good = [str(images / name) for name in ("a.png", "b.png", "big.png")]
    assert main(["predict", str(model), *good, "--out", str(local), "--probs", *TILE]) == 0
    capsys.readouterr()

    args = ["predict", str(model), str(images), "--out", str(distributed), "--probs", *TILE, "--ray"]
    assert main([*args, "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "3 image(s)" in err and "1 failed" in err
    assert errors(err) == [
        f"error: 1 of 4 image(s) failed; their errors are in {distributed / 'predictions.json'}: fix them "
        "and rerun with --resume to predict only those"
    ]
    for name in ("a", "b", "big"):
        np.testing.assert_array_equal(
            read_label_png(distributed / f"{name}.png"), read_label_png(local / f"{name}.png")
        )
        np.testing.assert_array_equal(
            np.load(distributed / f"{name}_probs.npy"), np.load(local / f"{name}_probs.npy")
        )
    stored, expected = manifest(distributed), manifest(local)
    assert stored["options"] == expected["options"] and stored["model"] == expected["model"]
    assert sorted(stored["inputs"], key=lambda e: e["path"]) == sorted(
        expected["inputs"], key=lambda e: e["path"]
    )
    [failure] = stored["failed"]
    assert failure["path"] == str((images / "broken.png").resolve())
    assert failure["sha256"] == hashlib.sha256((images / "broken.png").read_bytes()).hexdigest()
    assert "broken.png" in failure["error"] and "\n" not in failure["error"]
    # one line each, not wrapped at rich's 80 columns of a non-terminal
    assert [line for line in err.splitlines() if line.startswith("failed: ")] == [
        f"failed: {failure['path']}: {failure['error']}"
    ]
    assert any(
        line.startswith("predicted 3 image(s) in ") and line.endswith(str(distributed))
        for line in err.splitlines()
    )
    assert not (distributed / "broken.png").exists()

    Image.fromarray(image(40, 48, 9)).save(images / "broken.png")
    finished = {name: (distributed / name).stat().st_mtime_ns for name in ("a.png", "big.png")}
    assert main([*args, "--resume", "--ray-batch", "2"]) == 0
    err = capsys.readouterr().err
    assert "skipped 3 input(s)" in err and "predicted 1 image(s)" in err and not errors(err)
    assert {name: (distributed / name).stat().st_mtime_ns for name in finished} == finished
    stored = manifest(distributed)
    assert "failed" not in stored and len(stored["inputs"]) == 4
    assert read_label_png(distributed / "broken.png").shape == (40, 48)

    # all finished: --resume starts no Ray, and drops the failure of an input no longer given
    stale = {"path": str(tmp_path / "gone.png"), "sha256": "", "error": "gone.png is not a readable image"}
    (distributed / "predictions.json").write_text(json.dumps({**stored, "failed": [stale]}))

    def no_ray(options: object) -> None:
        raise AssertionError("Ray was started with nothing to predict")

    monkeypatch.setattr("segflow.distributed.ray_predict.ray_session", no_ray)
    assert main([*args, "--resume", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "skipped 4 input(s)" in err and "predicted 0 image(s)" in err and not errors(err)
    assert manifest(distributed) == stored


class ActorKiller(threading.Thread):
    """Kills (SIGKILL) the first pool actor seen running a batch, as a crash would."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for process in psutil.process_iter(["pid", "cmdline"]):
                if (process.info["cmdline"] or [""])[0].startswith(ACTOR_TITLE):
                    os.kill(process.info["pid"], signal.SIGKILL)
                    self.killed = process.info["pid"]
                    return
            time.sleep(0.01)


@pytest.mark.slow
def test_an_actor_killed_mid_batch_is_restarted_and_the_batch_rerun_inputs_by_url(
    ray_cluster: None, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "in"
    names = {f"img{i}.png": (240, 320) for i in range(4)}  # 2 per batch: long enough to be caught
    write_images(images, names)
    out = tmp_path / "out"
    killer = ActorKiller()
    killer.start()
    try:
        code = main(
            [
                "predict",
                str(model),
                f"file://{images}/*.png",
                "--out",
                str(out),
                *TILE,
                "--ray",
                "--ray-batch",
                "2",
            ]
        )
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None, "no actor was seen running a batch"
    assert code == 0, capsys.readouterr().err
    stored = manifest(out)
    assert "failed" not in stored
    assert sorted(entry["path"] for entry in stored["inputs"]) == [
        f"file://{images}/{name}" for name in sorted(names)
    ]
    for name in names:
        assert read_label_png(out / name).shape == (240, 320)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--workers", "0"], "--workers 0 is outside [1, 4096]"),
        (["--ray", "--ray-batch", "0"], "--ray-batch 0 is outside [1, 4096]"),
        (["--ray", "--address", "nowhere"], "--address 'nowhere' is not a Ray address"),
        (["--ray", "--server", "http://127.0.0.1:9"], "--ray and --server exclude each other"),
        (["--workers", "2"], "--workers only apply with --ray"),
    ],
)
def test_ray_options_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    Image.fromarray(image(32, 32, 0)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert (
        main(["predict", str(tmp_path / "no-model.ckpt"), str(tmp_path / "a.png"), "--out", str(out), *extra])
        == 1
    )
    [line] = errors(capsys.readouterr().err)
    assert message in line and not out.exists()


def test_ray_refuses_videos(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "clip.mp4"), "--out", str(out), "--ray"]) == 1
    [line] = errors(capsys.readouterr().err)
    assert "--ray takes images, not videos" in line and not out.exists()


def test_what_an_actor_would_refuse_is_one_line_before_overwrite_removes_anything(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from segflow.errors import ConfigError

    Image.fromarray(image(32, 32, 0)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"an earlier output")
    args = ["predict", str(model), str(tmp_path / "a.png"), "--out", str(out), "--ray", "--overwrite"]
    # a backend the model does not suit: the driver loads it first, as each actor would
    assert main([*args, "--backend", "onnx-int8"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no INT8 model") and (out / "a.png").read_bytes() == b"an earlier output"

    # Ray refusing (no cluster, too few CPUs): before --overwrite clears --out
    def refuse(ray_module: object, options: object) -> None:
        raise ConfigError("--address auto: cannot connect to Ray")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr("segflow.distributed.ray_predict._start_or_connect", refuse)
    assert main([*args, "--address", "auto"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "cannot connect to Ray" in line and (out / "a.png").read_bytes() == b"an earlier output"


def test_a_private_ray_refuses_more_workers_than_cpus_and_a_dead_address_fast() -> None:
    from segflow.distributed.ray_predict import RayOptions, _start_or_connect, probe_address
    from segflow.errors import ConfigError

    class NoRay:
        def init(self, **kwargs: object) -> None:
            raise AssertionError("ray.init was called")

    cpus = os.cpu_count() or 1
    with pytest.raises(ConfigError, match=f"more than the {cpus} CPU"):
        _start_or_connect(NoRay(), RayOptions(workers=cpus + 1))
    started = time.perf_counter()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConfigError, match="nothing accepts connections there"):
            _start_or_connect(NoRay(), RayOptions(address=address))
    assert time.perf_counter() - started < 10
    probe_address("auto")  # left to Ray


def test_a_ray_error_is_its_last_line_and_a_segflow_error_its_message() -> None:
    from segflow.distributed.ray_predict import _first_line

    died = RuntimeError(
        "The actor died because of an error raised in its creation task, ray::MapWorker.__init__()\n"
        "  File x, line 1\nsegflow.errors.CheckpointError: no INT8 model m.int8.onnx for m.onnx"
    )
    assert _first_line(died) == "no INT8 model m.int8.onnx for m.onnx"
    assert _first_line(RuntimeError("ValueError: bad\n")) == "ValueError: bad"
