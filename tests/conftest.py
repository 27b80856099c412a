"""Shared fixtures: a tiny shapes dataset and a tiny training config, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segflow_test_configs import tiny_training_raw

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$SEGFLOW_SHARED_DATA``."""
    return Path(os.environ.get("SEGFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for generated shapes data, shared by the whole session."""
    return tmp_path_factory.mktemp("shapes-cache")


@pytest.fixture
def tiny_data(shapes_cache: Path) -> dict[str, Any]:
    """Inline data spec: 64x64 shapes, 16 train / 8 val / 4 test images."""
    return {
        "format": "shapes",
        "options": {
            "size": 64,
            "num_images": {"train": 16, "val": 8, "test": 4},
            "seed": 1,
            "cache_dir": str(shapes_cache),
        },
    }


@pytest.fixture
def tiny_config(tiny_data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A training config that runs one epoch in a few seconds on a CPU."""
    return tiny_training_raw(tmp_path / "runs", tiny_data)


def _all_ignore_dataset(folder: Path, ignore_index: int = 255) -> Path:
    """A folder dataset (5 classes, 2 train / 2 val 32x32 images) whose every mask pixel is
    ``ignore_index``; returns its data YAML."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            (folder / "masks" / split).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / "images" / split / f"{name}.png")
            mask = np.full((32, 32), ignore_index, np.uint8)
            Image.fromarray(mask).save(folder / "masks" / split / f"{name}.png")
    path = folder / "data.yaml"
    path.write_text(f"format: folder\nroot: .\nclasses: [c0, c1, c2, c3, c4]\nignore_index: {ignore_index}\n")
    return path


@pytest.fixture(scope="session")
def all_ignore_yaml() -> Any:
    """Factory ``(folder, ignore_index=255) -> data YAML`` of a dataset with no labelled pixel."""
    return _all_ignore_dataset


MLFLOW_SERVER_START_S = 180.0
"""The server imports mlflow and migrates its SQLite store: ~40 s on a loaded 2-core machine."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(uri: str, process: Any, log: Path) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + MLFLOW_SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(
        f"mlflow server at {uri} not healthy after {MLFLOW_SERVER_START_S:.0f} s: {log.read_text()[-2000:]}"
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real ``mlflow server`` (SQLite store, local artefact root) on a free 127.0.0.1 port, shared
    by the session's tracking tests (one start, ~30-40 s); its process group is stopped after."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("mlflow", reason="mlflow is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(root / "artifacts")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: lighter
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(uri, process, log)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
