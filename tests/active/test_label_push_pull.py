"""``segflow label push|pull`` without Label Studio: the checks made before any request, an
address where nothing listens, and a small hostile HTTP server on 127.0.0.1 that answers what a
compromised or wrong server could (path traversal in an export, the key echoed back, oversized
or slow answers). The real server round trip is test_label_studio_loop.py."""

from __future__ import annotations

import csv
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.active.label_studio import (
    API_KEY_ENV,
    CAPTURE_ID_KEY,
    CONFIDENCE_KEY,
    MAX_TOP,
    PALETTE_KEY,
    LabelStudioClient,
    LabelStudioError,
    api_key_from_env,
    check_project_classes,
    check_url,
    config_label_names,
    display_palette,
    inside,
    pull,
    push_capture,
    push_ranking,
    upload_relative_path,
)
from segflow.active.ls_server import LabelStudioServer, LabelStudioServerError, free_port, log_tail
from segflow.annotation.formats.label_studio import brush_results, label_config
from segflow.cli.main import main
from segflow.errors import ConfigError, DataError

SECRET = "0123456789abcdef0123456789abcdef01234567"
CLASSES = ["background", "road", "car"]
PALETTE = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]


def write_ranking(folder: Path, images: list[Path]) -> Path:
    """A ranking.csv in the layout of 'segflow rank' (image, score, rank)."""
    path = folder / "ranking.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "rank"])
        for rank, image in enumerate(images, 1):
            writer.writerow([str(image), f"{1.0 - rank / 10:.3f}", rank])
    return path


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def dead_url() -> str:
    """An address on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def test_missing_key_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    ranking = write_ranking(tmp_path, [write_image(tmp_path / "a.png")])
    with pytest.raises(ConfigError, match=f"^{API_KEY_ENV} is not set"):
        push_ranking(ranking, "model.ckpt", "http://127.0.0.1:8080", "p", 1)
    with pytest.raises(ConfigError, match=API_KEY_ENV):
        pull("http://127.0.0.1:8080", "p", tmp_path / "out")
    code = main(
        [
            "label",
            "pull",
            "--from",
            "label-studio",
            dead_url(),
            "--project",
            "p",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {API_KEY_ENV} is not set") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("url", ["ftp://host/x", "127.0.0.1:8080", "http://", "http://h:1/?a=b", ""])
def test_bad_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="is not an http\\(s\\) address"):
        check_url(url)


def test_good_url_loses_its_trailing_slash() -> None:
    assert check_url(" http://127.0.0.1:8080/ ") == "http://127.0.0.1:8080"
    assert check_url("https://ls.example.com/sub/") == "https://ls.example.com/sub"


def test_unreachable_server_is_one_line_without_the_key(tmp_path: Path) -> None:
    url = dead_url()
    with pytest.raises(LabelStudioError) as caught:
        pull(url, "p", tmp_path / "out", api_key=SECRET)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Label Studio at {url}") and "\n" not in message
    assert SECRET not in message
    assert not (tmp_path / "out").exists()  # nothing written on failure


def test_cli_refuses_unknown_tool_and_bad_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    out = str(tmp_path / "o")
    assert (
        main(["label", "pull", "--from", "cvat", "http://127.0.0.1:1", "--project", "p", "--out", out]) == 1
    )
    assert (
        "--from 'cvat' is not a supported annotation tool; choose one of label-studio"
        in capsys.readouterr().err
    )
    assert (
        main(["label", "pull", "--from", "label-studio", "localhost:8080", "--project", "p", "--out", out])
        == 1
    )
    err = capsys.readouterr().err
    assert "Label Studio URL 'localhost:8080' is not an http(s) address" in err
    assert SECRET not in err


def test_cli_push_needs_ranking_or_capture_model_and_top(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    to = ["--to", "label-studio", dead_url(), "--project", "p"]
    assert main(["label", "push", *to]) == 1
    assert "give either RANKING.csv or --from-capture DIR" in capsys.readouterr().err
    assert main(["label", "push", "r.csv", *to, "--top", "3"]) == 1
    assert "--model MODEL is required" in capsys.readouterr().err
    assert main(["label", "push", "r.csv", *to, "--model", "m.ckpt"]) == 1
    assert "--top K is required" in capsys.readouterr().err


def test_class_mismatch_names_both_lists() -> None:
    config = label_config(CLASSES, PALETTE)
    assert config_label_names(config) == [*CLASSES, "ignore"]
    check_project_classes("roads", config, CLASSES)  # the same classes: accepted
    with pytest.raises(ConfigError) as caught:
        check_project_classes("roads", config, ["background", "car", "road"])
    assert str(caught.value).startswith(
        "Label Studio project 'roads' labels ['background', 'road', 'car'] but the model's classes are "
        "['background', 'car', 'road']"
    )
    with pytest.raises(ConfigError, match="labels \\['background', 'road', 'car'\\] but"):
        check_project_classes("roads", config, CLASSES[:2])


def test_ranking_errors_come_before_any_request(tmp_path: Path) -> None:
    url = dead_url()  # a request would fail with LabelStudioError, not these
    with pytest.raises(DataError, match="ranking file .*missing.csv does not exist"):
        push_ranking(tmp_path / "missing.csv", "m.ckpt", url, "p", 1, api_key=SECRET)
    empty = tmp_path / "empty.csv"
    empty.write_text("image,score,rank\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no rows"):
        push_ranking(empty, "m.ckpt", url, "p", 1, api_key=SECRET)
    gone = write_ranking(tmp_path, [tmp_path / "gone.png"])
    with pytest.raises(DataError, match="image .*gone.png does not exist"):
        push_ranking(gone, "m.ckpt", url, "p", 1, api_key=SECRET)


def test_top_is_bounded(tmp_path: Path) -> None:
    ranking = write_ranking(tmp_path, [write_image(tmp_path / "a.png")])
    for top in (0, MAX_TOP + 1):
        with pytest.raises(ConfigError, match=f"--top {top} is out of range; push 1 to {MAX_TOP}"):
            push_ranking(ranking, "m.ckpt", dead_url(), "p", top, api_key=SECRET)


def test_unsupported_and_clashing_images_are_refused(tmp_path: Path) -> None:
    tif = tmp_path / "x.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tif)
    with pytest.raises(DataError, match="Label Studio shows only .png.*convert it to PNG"):
        push_ranking(write_ranking(tmp_path, [tif]), "m.ckpt", dead_url(), "p", 1, api_key=SECRET)
    twins = [write_image(tmp_path / "one" / "a.png"), write_image(tmp_path / "two" / "a.png")]
    with pytest.raises(DataError, match="share the name a.png; rename one"):
        push_ranking(write_ranking(tmp_path, twins), "m.ckpt", dead_url(), "p", 2, api_key=SECRET)


def test_pull_refuses_a_non_empty_out_before_any_request(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="--out folder .*out is not empty .*--overwrite"):
        pull(dead_url(), "p", out, api_key=SECRET)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_server_refuses_a_foreign_data_folder(tmp_path: Path) -> None:
    (tmp_path / "label_studio.sqlite3").write_bytes(b"")
    server = LabelStudioServer(tmp_path, python=tmp_path / "no-venv" / "bin" / "python")
    with pytest.raises(LabelStudioServerError, match="not empty and was not made by segflow"):
        server.start()
    assert server.process is None


def test_log_tail_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("a\n\nb\nc\nd\ne\nf\n", encoding="utf-8")
    assert log_tail(log) == "b | c | d | e | f"
    assert log_tail(tmp_path / "none.log") == ""


# -- a hostile server ----------------------------------------------------------------------

Route = Callable[[http.server.BaseHTTPRequestHandler], tuple[int, bytes]]
LS_CONFIG = label_config(["background", "circle"], [(0, 0, 0), (255, 0, 0)])
PNG_BYTES = b""


def png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def json_route(body: object, status: int = 200) -> Route:
    return lambda handler: (status, json.dumps(body).encode())


@pytest.fixture
def hostile() -> Iterator[tuple[str, dict[str, Route]]]:
    """``(url, routes)``: a server on 127.0.0.1 answering each GET/POST path prefix in ``routes``
    (longest first; 404 otherwise)."""
    routes: dict[str, Route] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""  # routes may read what was sent
            for prefix in sorted(routes, key=len, reverse=True):
                if self.path.startswith(prefix):
                    status, body = routes[prefix](self)
                    break
            else:
                status, body = 404, b'{"detail": "not found"}'
            if status == 0:  # the route streamed its own answer
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def project_routes(routes: dict[str, Route], references: list[str]) -> None:
    """A project 'p' whose export holds one finished task per reference (ids 5, 6, ...)."""
    routes["/api/projects?"] = json_route(
        {"results": [{"id": 1, "title": "p", "label_config": LS_CONFIG}], "next": None}
    )
    tasks = [
        {"id": 5 + i, "data": {"image": ref}, "annotations": [{"result": []}]}
        for i, ref in enumerate(references)
    ]
    routes["/api/projects/1/export"] = json_route(tasks)
    routes["/data/upload/"] = lambda handler: (200, png_bytes())


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


# -- 1. path traversal ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "/data/upload/../../../../../tmp/x/ESCAPED.png",
        "/data/upload/1/%2e%2e/%2e%2e/%2e%2e/ESCAPED.png",
        "/data/upload//etc/ESCAPED.png",
        "/data/upload/1/..\\..\\ESCAPED.png",
        "/data/upload/1/./ESCAPED.png",
        "/data/upload/",
        "/data/upload/1/ESC%0aAPED.png",
        "/data/local-files/?d=x.png",
    ],
)
def test_upload_reference_must_be_a_plain_relative_path(reference: str) -> None:
    with pytest.raises(DataError) as caught:
        upload_relative_path(reference, "project 'p' task 5")
    message = str(caught.value)
    assert message.startswith("project 'p' task 5: image") and repr(reference) in message
    assert "\n" not in message


def test_upload_reference_keeps_a_plain_name_decoded() -> None:
    assert upload_relative_path("/data/upload/3/ab12-a%20b.png", "t") == Path("3/ab12-a b.png")
    assert upload_relative_path("/data/upload/3/c.png?x=1", "t") == Path("3/c.png")


def test_inside_follows_links_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    assert inside(folder, Path("3/a.png"), "task 5", "/data/upload/3/a.png") == folder / "3" / "a.png"
    with pytest.raises(
        DataError, match="^task 5: image reference '/data/upload/link/a.png' would be written"
    ):
        inside(folder, Path("link/a.png"), "task 5", "/data/upload/link/a.png")


def test_pull_refuses_a_traversal_before_writing_anything(
    tmp_path: Path, hostile: tuple[str, dict[str, Route]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, routes = hostile
    escape = tmp_path / "outside" / "ESCAPED.png"
    escape.parent.mkdir()
    work = tmp_path / "work"
    depth = "../" * (len(work.parts) + 6)
    reference = f"/data/upload/{depth}{str(escape).lstrip('/')}"
    project_routes(routes, ["/data/upload/1/fine.png", reference])
    out = work / "pulled"
    with pytest.raises(DataError) as caught:
        pull(url, "p", out, api_key=SECRET)
    message = str(caught.value)
    assert message.startswith("project 'p' task 6: image reference") and reference[:100] in message
    assert not escape.exists() and not out.exists()
    assert list(work.iterdir()) == []  # no staging folder left
    code = main(
        ["label", "pull", "--from", "label-studio", url, "--project", "p", "--out", str(out)]
    )  # the key from the environment is unset: refused first, as one line
    assert code == 1 and capsys.readouterr().err.count("\n") == 1


# -- 2. secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:PW-s3cret@127.0.0.1:8080",
        "https://PW-s3cret@ls.example.com/",
        "ftp://u:PW-s3cret@host",
        "http://u:PW-s3cret@[::1",
    ],
)
def test_url_with_a_user_or_password_is_refused_without_echo(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    message = str(caught.value)
    assert "PW-s3cret" not in message and API_KEY_ENV in message and "user name or password" in message


@pytest.mark.parametrize("key", ["abc\nXSECRETX", "abcüSECRET", "ab cd-SECRET", "a\tSECRET", "a\x7fSECRET"])
def test_a_key_that_is_not_a_header_token_is_refused_without_echo(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(API_KEY_ENV, key)
    with pytest.raises(ConfigError) as caught:
        api_key_from_env()
    assert "SECRET" not in str(caught.value) and str(caught.value).startswith(f"{API_KEY_ENV} holds")
    with pytest.raises(ConfigError, match=f"^{API_KEY_ENV} holds"):
        pull(dead_url(), "p", tmp_path / "o", api_key=key)
    out = str(tmp_path / "o")
    code = main(["label", "pull", "--from", "label-studio", dead_url(), "--project", "p", "--out", out])
    captured = capsys.readouterr()
    assert code == 1 and "SECRET" not in captured.err + captured.out
    assert captured.err.startswith(f"error: {API_KEY_ENV} holds") and captured.err.count("\n") == 1


def echo_key(status: int) -> Route:
    """Answers ``status`` with the request's Authorization header in the body."""
    return lambda handler: (status, json.dumps({"detail": handler.headers.get("Authorization")}).encode())


def test_key_never_reaches_messages_output_or_files(
    tmp_path: Path,
    hostile: tuple[str, dict[str, Route]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, routes = hostile
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    queue = capture_queue(tmp_path / "queue", [{}])
    out = tmp_path / "pulled"
    pull_args = ["label", "pull", "--from", "label-studio", url, "--project", "p", "--out", str(out)]
    push_args = ["label", "push", "--from-capture", str(queue), "--to", "label-studio", url, "--project", "p"]
    seen = []
    for status in (500, 401, 400):
        routes["/api/projects"] = echo_key(status)
        for args in (pull_args, push_args):
            assert main(args) == 1
            captured = capsys.readouterr()
            seen.append(captured.err)
            assert SECRET not in captured.err + captured.out
            assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "answered 500 to GET /api/projects" in seen[0] and "Token ***" in seen[0]
    assert f"refused the key in {API_KEY_ENV} (401)" in seen[2]
    project_routes(routes, ["/data/upload/1/a.png"])
    routes["/api/projects/1/export"] = echo_key(200)  # an export that is not a list of tasks
    assert main(pull_args) == 1
    assert SECRET not in capsys.readouterr().err
    for dead in (dead_url(),):
        assert (
            main(["label", "pull", "--from", "label-studio", dead, "--project", "p", "--out", str(out)]) == 1
        )
        assert SECRET not in capsys.readouterr().err
    assert files_holding(tmp_path, SECRET) == []


def test_pull_json_records_the_url_without_secrets_and_a_good_pull_works(
    tmp_path: Path, hostile: tuple[str, dict[str, Route]]
) -> None:
    url, routes = hostile
    project_routes(routes, ["/data/upload/1/ab12cd34-fine.png"])
    written = pull(url + "/", "p", tmp_path / "pulled", api_key=SECRET)
    record = json.loads((written.parent / "pull.json").read_text(encoding="utf-8"))
    assert record["url"] == url and record["pulled"] == ["fine.png"]
    assert files_holding(tmp_path, SECRET) == []


# -- 4. malformed URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "is malformed"),
        ("http://127.0.0.1:99999", "is malformed"),
        ("http://127.0.0.1:abc", "is malformed"),
        ("http://127.0.0.1:0", "has port 0, outside 1..65535"),
        ("http://h ost:8080", "holds whitespace or control characters"),
        ("http://host\n:8080", "holds whitespace or control characters"),
    ],
)
def test_malformed_url_is_one_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_malformed_url_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    for url in ("http://[::1", "http://127.0.0.1:99999"):
        code = main(
            ["label", "pull", "--from", "label-studio", url, "--project", "p", "--out", str(tmp_path)]
        )
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: Label Studio URL") and err.count("\n") == 1, err


# -- bounded answers and timeouts ----------------------------------------------------------


def test_answers_are_bounded_in_size_and_time(tmp_path: Path, hostile: tuple[str, dict[str, Route]]) -> None:
    url, routes = hostile
    routes["/big"] = lambda handler: (200, b"[" + b"0," * 20000 + b"0]")

    def drip(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, bytes]:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        for _ in range(100):  # one byte per 0.05 s: each read is quick, the whole takes 5 s
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.05)
        return 0, b""

    routes["/drip"] = drip
    routes["/list"] = json_route([1, 2, 3])
    with LabelStudioClient(url, SECRET, timeout=1.0) as client:
        with pytest.raises(LabelStudioError, match="answered GET /big with over 0 MB; not read"):
            client.json("GET", "/big", limit_mb=0.01)
        assert len(client.json("GET", "/big")) == 20001
        started = time.monotonic()
        with pytest.raises(LabelStudioError, match="did not finish answering GET /drip within 1 s"):
            client.request("GET", "/drip")
        assert time.monotonic() - started < 3.0
        routes["/api/projects?"] = json_route([1, 2, 3])
        with pytest.raises(LabelStudioError, match="answered GET /api/projects with an unexpected body"):
            client.find_project("p")


# -- 5. capture entries --------------------------------------------------------------------


def capture_queue(
    folder: Path, metas: list[dict[str, object]], masks: list[np.ndarray] | None = None
) -> Path:
    """A capture folder of the serve contract: <id>.png, <id>.mask.png, <id>.json (``metas``
    override the defaults of a well-formed entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, extra in enumerate(metas):
        entry = f"20260101T{index:012d}Z-{index:08x}"  # the capture id format
        Image.fromarray(np.full((8, 8, 3), 20 * index, np.uint8)).save(folder / f"{entry}.png")
        mask = masks[index] if masks is not None else np.zeros((8, 8), np.uint8)
        Image.fromarray(mask).save(folder / f"{entry}.mask.png")
        meta = {
            "id": entry,
            "received": f"2026-01-01T00:00:0{index}Z",
            "confidence": 0.5,
            "low_confidence_share": 0.1,
            "model": "m.ckpt",
            "classes": ["background", "circle"],
            **extra,
        }
        (folder / f"{entry}.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def test_malformed_capture_entries_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    bad_metas: list[dict[str, object]] = [
        {"confidence": "abc"},
        {"classes": 5},
        {"confidence": float("nan")},
        {"classes": ["background", 3]},
        {"model": 7},
        {"confidence": True},
        {},  # a mask of the wrong size
        {},  # a mask with class index 9 (two classes)
        {},  # well-formed
    ]
    masks = [np.zeros((8, 8), np.uint8)] * 6 + [
        np.zeros((4, 8), np.uint8),
        np.full((8, 8), 9, np.uint8),
        np.zeros((8, 8), np.uint8),
    ]
    queue = capture_queue(tmp_path / "q", bad_metas, masks)
    warnings: list[str] = []
    with pytest.raises(LabelStudioError, match="^cannot reach Label Studio"):  # the good one is pushed
        push_capture(queue, dead_url(), "p", api_key=SECRET, warn=warnings.append)
    assert len(warnings) == 8 and all(w.startswith("warning: skipped capture entry ") for w in warnings)
    assert all("\n" not in w for w in warnings)
    joined = "\n".join(warnings)
    for text in (
        "00000000.json: confidence 'abc' is not a number",
        "00000001.json: classes '5' is not a list of class names",
        "00000002.json: confidence 'nan' is not a number",
        "00000004.json: model '7' is not text",
        "00000005.json: confidence 'True' is not a number",
        "00000006.json: mask of shape (4, 8) does not match its 8x8 image",
        "00000007.json: mask holds class index 9 but the captures name 2 classes",
    ):
        assert text in joined, joined
    only_bad = capture_queue(tmp_path / "bad", [{"confidence": "abc"}, {"classes": 5}])
    warnings.clear()
    with pytest.raises(DataError, match="holds no well-formed entry \\(2 skipped\\)"):
        push_capture(only_bad, dead_url(), "p", api_key=SECRET, warn=warnings.append)
    assert len(warnings) == 2


# -- unpainted pixels, one summary line, capture confidence, visible colours ----------------


def painted_routes(
    routes: dict[str, Route], classes: list[str], labels: np.ndarray, paint_ignore: bool = False
) -> None:
    """A project 'p' of ``classes`` whose one finished task paints ``labels``; its 255 pixels are
    painted as ``ignore`` with ``paint_ignore``, else left unpainted."""
    height, width = labels.shape
    config = label_config(classes, [(0, 0, 0), (255, 0, 0), (0, 255, 0)][: len(classes)])
    routes["/api/projects?"] = json_route({"results": [{"id": 1, "title": "p", "label_config": config}]})
    results = [
        result
        for result in brush_results(labels, classes, 255)
        if paint_ignore or result["value"]["brushlabels"] != ["ignore"]
    ]
    task = {"id": 5, "data": {"image": "/data/upload/1/cell.png"}, "annotations": [{"result": results}]}
    routes["/api/projects/1/export"] = json_route([task])

    def image(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, bytes]:
        import io

        buffer = io.BytesIO()
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "PNG")
        return 200, buffer.getvalue()

    routes["/data/upload/"] = image


def test_pull_writes_unpainted_pixels_as_ignore(
    tmp_path: Path,
    hostile: tuple[str, dict[str, Route]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only 'cell' painted in a project whose class 0 is 'membrane': the rest is 255, not membrane."""
    url, routes = hostile
    labels = np.full((12, 16), 255, np.uint8)
    labels[2:6, 3:9] = 1
    painted_routes(routes, ["membrane", "cell"], labels)
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    args = ["label", "pull", "--from", "label-studio", url, "--project", "p", "--out"]
    assert main([*args, str(tmp_path / "auto")]) == 0
    captured = capsys.readouterr()
    assert "class 0" not in captured.out + captured.err and "unlabelled" not in captured.out + captured.err
    mask = np.asarray(Image.open(tmp_path / "auto" / "masks" / "train" / "cell.png"))
    np.testing.assert_array_equal(mask, labels)  # 1 where painted, 255 everywhere else
    assert json.loads((tmp_path / "auto" / "pull.json").read_text())["unlabelled"] == "ignore"

    assert main([*args, str(tmp_path / "bg"), "--unlabelled", "background"]) == 0
    captured = capsys.readouterr()
    assert "class 0" not in captured.out + captured.err
    mask = np.asarray(Image.open(tmp_path / "bg" / "masks" / "train" / "cell.png"))
    np.testing.assert_array_equal(mask, np.where(labels == 255, 0, labels))
    assert main([*args, str(tmp_path / "x"), "--unlabelled", "void"]) == 1
    assert "--unlabelled 'void' is not one of auto, background, ignore" in capsys.readouterr().err


def test_pull_auto_keeps_unpainted_background_when_class_0_is_background(
    tmp_path: Path, hostile: tuple[str, dict[str, Route]]
) -> None:
    """Push leaves 'background' unpainted, so there unpainted pixels are background (0)."""
    url, routes = hostile
    labels = np.zeros((12, 16), np.uint8)
    labels[2:6, 3:9] = 1
    labels[0, :4] = 255  # painted as 'ignore'
    painted_routes(routes, ["background", "cell"], labels, paint_ignore=True)
    pull(url, "p", tmp_path / "auto", api_key=SECRET)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "auto/masks/train/cell.png")), labels)
    pull(url, "p", tmp_path / "ignore", api_key=SECRET, unlabelled="ignore")
    expected = np.where(labels == 0, 255, labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ignore/masks/train/cell.png")), expected)


def test_display_palette_shows_near_black_classes_in_a_visible_colour() -> None:
    shown = display_palette([(0, 0, 0), (128, 64, 128), (0, 0, 142), (20, 30, 40), (255, 0, 255)])
    assert shown == [(0, 255, 255), (128, 64, 128), (0, 0, 142), (255, 255, 0), (255, 0, 255)]


def push_routes(routes: dict[str, Route], sent: dict[str, list[object]]) -> None:
    """A server with no project 'p' yet that accepts one created project, uploads and tasks,
    recording each JSON body sent to it under its route."""

    def record(name: str, answer: object) -> Route:
        def route(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, bytes]:
            body = getattr(handler, "body", b"")
            if name != "upload":
                sent.setdefault(name, []).append(json.loads(body))
            return 200, json.dumps(answer).encode()

        return route

    routes["/api/projects?"] = json_route({"results": [], "next": None})
    routes["/api/projects"] = record("project", {"id": 1, "title": "p"})
    routes["/api/tasks"] = json_route({"tasks": [], "total": 0})
    routes["/api/projects/1/import?commit_to_project"] = record("upload", {"file_upload_ids": [11]})
    routes["/api/projects/1/file-uploads"] = json_route(
        {"results": [{"id": 11, "file": "upload/1/ab-x.png"}]}
    )
    routes["/api/projects/1/import?return_task_ids"] = record("tasks", {"task_ids": [7]})


def test_capture_push_prints_one_summary_and_carries_the_confidence(
    tmp_path: Path,
    hostile: tuple[str, dict[str, Route]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, routes = hostile
    sent: dict[str, list[object]] = {}
    push_routes(routes, sent)
    queue = capture_queue(tmp_path / "q", [{"confidence": 0.25}])
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    code = main(
        ["label", "push", "--from-capture", str(queue), "--to", "label-studio", url, "--project", "p"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == ["pushed 1 image(s) to created project 'p' (id 1); 0 already there"]
    ((task,),) = sent["tasks"]
    assert isinstance(task, dict)
    data = task["data"]
    assert data[CONFIDENCE_KEY] == 0.25 and data[CAPTURE_ID_KEY] == "20260101T000000000000Z-00000000"
    assert data[PALETTE_KEY] == [[0, 0, 0], [128, 0, 0]]  # the model's palette (the default one)
    (project,) = sent["project"]
    assert isinstance(project, dict)
    config = project["label_config"]
    assert config_label_names(config) == ["background", "circle", "ignore"]
    assert '<Label value="background" background="#ff00ff"/>' in config  # not invisible black
    assert '<Label value="circle" background="#800000"/>' in config
