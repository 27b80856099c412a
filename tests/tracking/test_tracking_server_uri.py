"""Tracking URIs: secrets never shown, /health built from the URI's parts, bad URIs one line."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from segflow.cli.main import main
from segflow.errors import ConfigError
from segflow.tracking.server import check_server, health_url, redact_uri, resolve_tracking_uri, scrub

SECRET = "SECRETQ"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"http://127.0.0.1:9/?token={SECRET}", "http://127.0.0.1:9/?token=***"),
        (f"https://ann:{SECRET}@mlflow.example:443/x", "https://***@mlflow.example:443/x"),
        (f"https://{SECRET}@mlflow.example/x", "https://***@mlflow.example/x"),
        (f"http://h/p?a=1&{SECRET}#{SECRET}", "http://h/p?a=***&***#***"),
        ("http://[::1", "http://<unparsable>"),
        ("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_redact_hides_user_info_query_and_fragment(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_scrub_removes_every_secret_from_a_message() -> None:
    uri = f"http://ann:{SECRET}@h:5000/?token={SECRET}2"
    text = scrub(f"API request to {uri}/api/2.0 failed (auth ann:{SECRET}, token {SECRET}2)", uri)
    assert SECRET not in text and "http://***@h:5000/?token=***/api/2.0" in text


def test_health_url_is_built_from_scheme_host_port_and_path() -> None:
    assert health_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000/health"
    assert health_url("https://ann:pw@mlflow.example/base/") == "https://mlflow.example/base/health"
    assert health_url("http://[::1]:5000/m") == "http://[::1]:5000/m/health"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://[::1", r"--tracking-uri http://<unparsable> is not a valid URI \(Invalid IPv6 URL\)"),
        ("http://h:port/", r"--tracking-uri http://h:port/ is not a valid URI \(Port could not be cast"),
        ("http://", r"--tracking-uri http:// names no host"),
        (
            f"http://127.0.0.1:9/?token={SECRET}",
            r"\?token=\*\*\* has a query or fragment.*MLFLOW_TRACKING_TOKEN",
        ),
    ],
)
def test_bad_uris_are_one_line_without_the_secret(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve_tracking_uri(uri, "--tracking-uri")
    assert SECRET not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("uri", [f"http://127.0.0.1:9/?token={SECRET}", "http://[::1"])
def test_cli_never_prints_the_token(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "list", "roads", "--tracking-uri", uri]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out


@pytest.fixture
def health_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 answering ``/base/health`` with 200 (everything else 404);
    yields its URL and the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            asked.append(self.path)
            ok = self.path == "/base/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_check_server_asks_path_health_without_credentials(health_server: tuple[str, list[str]]) -> None:
    url, asked = health_server
    check_server(f"http://ann:{SECRET}@{url.removeprefix('http://')}/base/")
    assert asked == ["/base/health"]
    with pytest.raises(ConfigError, match=r"answered /health with HTTP 404") as err:
        check_server(f"http://ann:{SECRET}@{url.removeprefix('http://')}/other")
    assert SECRET not in str(err.value) and "http://***@127.0.0.1:" in str(err.value)
