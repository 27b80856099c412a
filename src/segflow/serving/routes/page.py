"""``GET /``: the web page. It and its static files hold no data, so they need no API key;
the page asks for the key and sends it with its API calls."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(str(files("segflow.serving").joinpath("static")))
INDEX_HTML = STATIC_DIR / "index.html"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The single-page web client."""
    return FileResponse(INDEX_HTML, media_type="text/html")
