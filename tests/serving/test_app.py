"""App-wide rules: the API key, CORS, OpenAPI docs, no stack traces."""

from __future__ import annotations

import pytest

from .fakes import png_bytes, sample_image, serving

KEY = "s3cret-key"
PROTECTED = [
    ("GET", "/v1/model"),
    ("GET", "/metrics"),
    ("POST", "/v1/segment"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]
OPEN = ["/healthz", "/readyz", "/", "/static/app.js", "/static/style.css"]


@pytest.fixture(scope="module")
def keyed():
    with serving(api_key=KEY) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_need_the_key(keyed, method, path):
    body = png_bytes(sample_image()) if method == "POST" else None
    assert keyed.request(method, path, content=body).status_code == 401
    wrong = keyed.request(method, path, content=body, headers={"X-API-Key": KEY + "x"})
    assert wrong.status_code == 401
    assert "API key" in wrong.json()["detail"]
    assert keyed.request(method, path, content=body, headers={"X-API-Key": KEY}).status_code == 200
    bearer = keyed.request(method, path, content=body, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_probes_and_static_page_need_no_key(keyed, path):
    assert keyed.get(path).status_code == 200


def test_cors_is_off_unless_configured():
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with serving() as client:
        response = client.options("/v1/segment", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with serving(cors_origins=["https://app.example"]) as client:
        response = client.options("/v1/segment", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_unknown_route_is_404_json(keyed):
    response = keyed.get("/nope", headers={"X-API-Key": KEY})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_page_is_offline_html_without_external_urls(keyed):
    page = keyed.get("/").text
    script = keyed.get("/static/app.js").text
    assert '<input id="file" type="file"' in page
    for text in (page, script, keyed.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d9f80>",
            "cannot identify image file the upload",
        ),
        ("bad <function decode at 0x7F00AB>\n  here", "bad the upload here"),
        ("size <64 x 64> is fine", "size <64 x 64> is fine"),
    ],
)
def test_client_messages_never_show_object_reprs(message, expected):
    from segflow.serving.app import client_message

    assert client_message(ValueError(message)) == expected
