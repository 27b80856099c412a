"""The Label Studio loop against a REAL server started here (127.0.0.1, its own SQLite database,
its own venv built from the lock): rank -> push (pre-annotations) -> the annotator submits
through the REST API -> pull -> the pulled masks equal the submitted ones pixel for pixel.

Skipped, with the reason, only when the label-studio venv cannot be installed (no registry).
The first run builds the venv (minutes) and a migrated template database (minutes); later runs
copy the template and start in about 20 s.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from segflow.active.label_studio import (
    API_KEY_ENV,
    CAPTURE_ID_KEY,
    CONFIDENCE_KEY,
    NAME_KEY,
    PULL_FILE,
    RANKING_KEY,
    SCORE_KEY,
    pull,
    push_ranking,
)
from segflow.annotation.formats.label_studio import brush_results, decode_brush
from segflow.cli.main import main
from segflow.data.io import read_image, read_mask
from segflow.errors import ConfigError

CLASSES = ["background", "road", "car"]
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
PROJECT = "segflow-loop"
IGNORE = 255
HEIGHT, WIDTH = 40, 56
LOOPBACK_HEX = "0100007F"
"""127.0.0.1 as /proc/net/tcp writes it."""


def say(config: pytest.Config, line: str) -> None:
    """Prints past pytest's capture (the venv and template builds take minutes the first time)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[label-studio] {line}", file=sys.stderr, flush=True)


def save_checkpoint(path: Path, classes: list[str]) -> Path:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", in_channels=3, num_classes=len(classes), decoder_channels=[8] * 5)
    meta = build_meta(
        net.eval(),
        classes,
        PALETTE[: len(classes)],
        IGNORE,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    return save_model_checkpoint(path, net, meta)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Any]:
    from segflow.active.ls_server import LabelStudioServer, label_studio_python
    from segflow.export.converter_venv import ConverterEnvError

    started = time.perf_counter()
    try:
        python = label_studio_python(log=lambda line: say(pytestconfig, line))
    except ConverterEnvError as err:
        pytest.skip(f"label-studio cannot be installed on this machine: {err}")
    say(pytestconfig, f"venv ready in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    instance = LabelStudioServer(
        tmp_path_factory.mktemp("label-studio") / "data",
        python=python,
        log=lambda line: say(pytestconfig, line),
    )
    instance.start()
    say(pytestconfig, f"server answering at {instance.url} after {time.perf_counter() - started:.0f} s")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def round_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny random checkpoint, 4 unlabelled images and the ranking of them (top 3)."""
    from segflow.active.rank import rank_images

    folder = tmp_path_factory.mktemp("round")
    model = save_checkpoint(folder / "model.ckpt", CLASSES)
    unlabelled = folder / "unlabelled"
    unlabelled.mkdir()
    for index in range(4):
        rng = np.random.default_rng(index)
        coarse = rng.integers(0, 256, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
        Image.fromarray(np.kron(coarse, np.ones((8, 8, 1), np.uint8))).save(unlabelled / f"street{index}.png")
    rank_images(model, [unlabelled], by="entropy", top=3, out=folder / "rank")
    return {"model": model, "ranking": folder / "rank" / "ranking.csv", "folder": folder}


def api(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"}, timeout=60.0)


def project_tasks(server: Any) -> list[dict[str, Any]]:
    with api(server) as client:
        projects = client.get("/api/projects", params={"title": PROJECT}).json()["results"]
        (project,) = [p for p in projects if p["title"] == PROJECT]
        answer = client.get(
            "/api/tasks", params={"project": project["id"], "fields": "all", "page_size": 100}
        )
        answer.raise_for_status()
        return list(answer.json()["tasks"])


def known_mask(seed: int) -> np.ndarray:
    """What the annotator paints: blocks of each class, and a few ignore pixels."""
    rng = np.random.default_rng(100 + seed)
    labels = rng.integers(0, len(CLASSES), size=(HEIGHT // 4, WIDTH // 4)).astype(np.uint8)
    labels = np.kron(labels, np.ones((4, 4), np.uint8))
    labels[0, : seed + 1] = IGNORE
    return labels


def listening_hosts(port: int) -> set[str]:
    """Hex local addresses (``/proc/net/tcp*``) in LISTEN state on ``port``."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, state = fields[1], fields[3]
            host, hex_port = address.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                hosts.add(host)
    return hosts


def test_server_listens_on_loopback_only(server: Any) -> None:
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("needs /proc/net/tcp (Linux) to list listening sockets")
    assert listening_hosts(server.port) == {LOOPBACK_HEX}
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_push_uploads_the_top_images_with_pre_annotations(server: Any, round_files: dict[str, Any]) -> None:
    from segflow.active.rank import read_ranking
    from segflow.inference import Predictor

    rows = read_ranking(round_files["ranking"])
    result = push_ranking(
        round_files["ranking"], round_files["model"], server.url, PROJECT, 3, api_key=server.token
    )
    assert result.created and sorted(result.pushed) == sorted(row.image.name for row in rows)
    assert len(result.task_ids) == 3 and result.skipped == []
    again = push_ranking(
        round_files["ranking"], round_files["model"], server.url, PROJECT, 3, api_key=server.token
    )
    assert (again.created, again.pushed, sorted(again.skipped)) == (False, [], sorted(result.pushed))

    predictor = Predictor.from_path(round_files["model"])
    scores = {row.image.name: row.score for row in rows}
    tasks = project_tasks(server)
    assert len(tasks) == 3
    for task in tasks:
        data = task["data"]
        name = data[NAME_KEY]
        assert data[RANKING_KEY] == str(round_files["ranking"].resolve())
        assert data[SCORE_KEY] == pytest.approx(scores[name])
        assert data["image"].startswith(f"/data/upload/{result.project_id}/")
        (prediction,) = task["predictions"]
        assert prediction["model_version"].startswith("model.ckpt@")
        expected = predictor.predict(read_image(round_files["folder"] / "unlabelled" / name)).labels
        painted = np.zeros((HEIGHT, WIDTH), np.uint8)  # class 0 (background) is the unpainted rest
        for region in prediction["result"]:
            label = CLASSES.index(region["value"]["brushlabels"][0])
            painted[decode_brush(region["value"]["rle"], WIDTH, HEIGHT)] = label
        np.testing.assert_array_equal(painted, expected)
        with api(server) as client:  # the server serves the uploaded image, byte for byte
            served = client.get(data["image"])
        assert served.status_code == 200
        assert served.content == (round_files["folder"] / "unlabelled" / name).read_bytes()


def test_pull_returns_the_submitted_masks_pixel_for_pixel(
    server: Any, round_files: dict[str, Any], tmp_path: Path
) -> None:
    submitted = {}
    tasks = sorted(project_tasks(server), key=lambda task: task["id"])
    with api(server) as client:  # the annotator: corrects two tasks, leaves the third
        for seed, task in enumerate(tasks[:2]):
            labels = known_mask(seed)
            results = brush_results(labels, CLASSES, IGNORE, key=str(task["id"]))
            body = {"result": results, "was_cancelled": False, "ground_truth": False, "lead_time": 3.0}
            answer = client.post(f"/api/tasks/{task['id']}/annotations/", json=body)
            assert answer.status_code == 201, answer.text
            submitted[task["data"][NAME_KEY]] = labels

    out = tmp_path / "round1"
    written = pull(server.url, PROJECT, out, api_key=server.token)
    assert written == out / "data.yaml"
    record = json.loads((out / PULL_FILE).read_text())
    assert record["project"] == PROJECT and record["url"] == server.url
    assert record["pulled"] == sorted(submitted)  # finished tasks only: not the predicted-only one
    assert record["ranking"] == str(round_files["ranking"].resolve())
    assert record["classes"] == CLASSES and record["palette"] == PALETTE
    assert record["unlabelled"] == "background"  # class 0 is 'background': push leaves it unpainted
    ignored = tmp_path / "ignored"
    pull(server.url, PROJECT, ignored, api_key=server.token, unlabelled="ignore")
    for name, labels in submitted.items():
        pulled = np.asarray(read_mask(out / "masks" / "train" / f"{Path(name).stem}.png"))
        np.testing.assert_array_equal(pulled, labels)
        unpainted = np.asarray(read_mask(ignored / "masks" / "train" / f"{Path(name).stem}.png"))
        np.testing.assert_array_equal(unpainted, np.where(labels == 0, IGNORE, labels))
        image = out / "images" / "train" / name
        assert image.read_bytes() == (round_files["folder"] / "unlabelled" / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    with api(server) as client:  # the config shows background (black in the palette) visibly
        (project,) = [p for p in client.get("/api/projects").json()["results"] if p["title"] == PROJECT]
    assert '<Label value="background" background="#ff00ff"/>' in project["label_config"]


def test_cli_pull_refuses_then_overwrites(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(API_KEY_ENV, server.token)
    out = tmp_path / "pulled"
    command = ["label", "pull", "--from", "label-studio", server.url, "--project", PROJECT, "--out", str(out)]
    assert main(command) == 0
    assert main(command) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0
    assert len(json.loads((out / PULL_FILE).read_text())["pulled"]) == 2
    assert server.token not in capsys.readouterr().out


def test_cli_push_again_skips_what_is_there(
    server: Any,
    round_files: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(API_KEY_ENV, server.token)
    to = ["--to", "label-studio", server.url, "--project", PROJECT, "--top", "3"]
    assert (
        main(["label", "push", str(round_files["ranking"]), "--model", str(round_files["model"]), *to]) == 0
    )
    out = capsys.readouterr().out
    assert f"pushed 0 image(s) to existing project '{PROJECT}'" in out and "3 already there" in out
    assert server.token not in out


def test_class_mismatch_is_refused(server: Any, round_files: dict[str, Any]) -> None:
    other = save_checkpoint(round_files["folder"] / "other.ckpt", ["background", "car", "road"])
    with pytest.raises(ConfigError, match=f"project '{PROJECT}' labels \\['background', 'road', 'car'\\]"):
        push_ranking(round_files["ranking"], other, server.url, PROJECT, 1, api_key=server.token)


def test_push_from_capture_uses_the_captured_prediction(server: Any, tmp_path: Path) -> None:
    """The serve capture queue (DIR/<id>.png, <id>.mask.png, <id>.json) goes out least confident first."""
    from segflow.active.label_studio import push_capture

    queue = tmp_path / "capture"
    queue.mkdir()
    masks = {}
    for index, confidence in enumerate([0.55, 0.3, 0.9]):
        entry = f"20261201T120000{index:06d}Z-{index:04x}"
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * index, np.uint8)).save(queue / f"{entry}.png")
        masks[f"{entry}.png"] = known_mask(10 + index) % len(CLASSES)
        Image.fromarray(masks[f"{entry}.png"]).save(queue / f"{entry}.mask.png")
        meta = {"id": entry, "received": f"2026-12-01T12:00:0{index}Z", "confidence": confidence}
        meta |= {"low_confidence_share": 0.5, "model": "served.onnx", "classes": CLASSES}
        (queue / f"{entry}.json").write_text(json.dumps(meta))
    result = push_capture(queue, server.url, "segflow-capture", 2, api_key=server.token)
    assert result.created and len(result.pushed) == 2
    assert set(result.pushed) == {name for name in masks if "Z-0001" in name or "Z-0000" in name}
    with api(server) as client:
        answer = client.get("/api/tasks", params={"project": result.project_id, "fields": "all"})
    confidences = {f"20261201T120000{i:06d}Z-{i:04x}": c for i, c in enumerate([0.55, 0.3, 0.9])}
    for task in answer.json()["tasks"]:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "served.onnx"
        entry = task["data"][CAPTURE_ID_KEY]
        assert task["data"][NAME_KEY] == f"{entry}.png"
        assert task["data"][CONFIDENCE_KEY] == pytest.approx(confidences[entry])
        painted = np.zeros((HEIGHT, WIDTH), np.uint8)
        for region in prediction["result"]:
            painted[decode_brush(region["value"]["rle"], WIDTH, HEIGHT)] = CLASSES.index(
                region["value"]["brushlabels"][0]
            )
        np.testing.assert_array_equal(painted, masks[task["data"][NAME_KEY]])


def secret_key(data_dir: Path) -> str:
    (line,) = [
        line for line in (data_dir / ".env").read_text().splitlines() if line.startswith("SECRET_KEY=")
    ]
    return line.removeprefix("SECRET_KEY=")


def logs_in(url: str, username: str, password: str) -> bool:
    """Whether the login form accepts ``password`` (a redirect away from it, not the form again)."""
    with httpx.Client(base_url=url, timeout=60.0) as browser:
        browser.get("/user/login/").raise_for_status()
        form = {"email": username, "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        answer = browser.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
        return answer.status_code == 302 and "login" not in answer.headers["location"]


def test_each_data_folder_has_its_own_secrets_and_a_taken_port_is_followed(
    server: Any, tmp_path: Path
) -> None:
    """A copy of the template gets its own SECRET_KEY, API token and password: the template's
    token and password are refused by it, its own work. Label Studio moves to the next free port
    when its port is taken, saying so only in its log."""
    import stat

    from segflow.active.ls_server import (
        CREDENTIALS_FILE,
        LabelStudioServer,
        migrated_template,
        read_credentials,
    )

    template = migrated_template(server.python)
    original = read_credentials(template)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with LabelStudioServer(tmp_path / "data", port, python=server.python) as moved:
            assert moved.port != port and moved.url == f"http://127.0.0.1:{moved.port}"
            first, second = read_credentials(server.data_dir), read_credentials(moved.data_dir)
            assert original is not None and first is not None and second is not None
            assert (
                moved.token == second["token"]
                and len({original["token"], first["token"], second["token"]}) == 3
            )
            assert len({original["password"], first["password"], second["password"]}) == 3
            assert len({secret_key(template), secret_key(server.data_dir), secret_key(moved.data_dir)}) == 3
            for folder in (server.data_dir, moved.data_dir):
                assert stat.S_IMODE((folder / CREDENTIALS_FILE).stat().st_mode) == 0o600
                assert stat.S_IMODE((folder / ".env").stat().st_mode) == 0o600
            with api(moved) as client:
                assert client.get("/api/projects").status_code == 200
            for token in (original["token"], first["token"]):
                headers = {"Authorization": f"Token {token}"}
                assert httpx.get(f"{moved.url}/api/projects", headers=headers, timeout=60).status_code == 401
            assert logs_in(moved.url, second["username"], second["password"])
            assert not logs_in(moved.url, original["username"], original["password"])


def test_server_stops_cleanly(server: Any) -> None:
    process, port = server.process, server.port
    server.stop()
    assert process.poll() is not None
    if Path("/proc/net/tcp").is_file():
        assert listening_hosts(port) == set()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=5)
