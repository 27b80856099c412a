"""Python client of ``segflow serve``, and ``segflow predict --server`` built on it.

Example:
    >>> from segflow.serving.client import Client
    >>> with Client("http://127.0.0.1:8000", api_key="secret") as client:
    ...     labels = client.segment("street.png")            # (H, W) uint8 class indices
    ...     answer = client.segment("street.png", format="rle")
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import numpy as np
from PIL import Image

from segflow.errors import DataError, InferenceError, SegflowError
from segflow.io_utils import atomic_write

Format = Literal["png", "rle", "overlay", "json"]
FORMATS = ("png", "rle", "overlay", "json")
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3
"""Times a 503 answer (queue full, model warming up) is retried after its Retry-After."""
MAX_RETRY_WAIT_S = 10.0
API_KEY_HEADER = "X-API-Key"
OVERLAY_SUFFIX = "_overlay"


class ServerError(SegflowError):
    """The server refused or failed a request.

    Attributes:
        status_code: HTTP status of the answer.
        detail: The server's explanation.
    """

    def __init__(self, status_code: int, detail: str, url: str) -> None:
        super().__init__(f"{url} answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class Client:
    """Talks to one ``segflow serve`` instance.

    Args:
        url: Base URL, for example ``http://127.0.0.1:8000``.
        api_key: The server's API key, if it has one (sent as ``X-API-Key``).
        timeout: Seconds per request.
        retries: How often a 503 answer is retried, waiting its ``Retry-After``.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def health(self) -> dict[str, Any]:
        """``{"alive": bool, "ready": bool}`` from ``/healthz`` and ``/readyz`` (never raises for 503)."""
        alive = self._http.get("/healthz").status_code == httpx.codes.OK
        ready = self._http.get("/readyz").status_code == httpx.codes.OK
        return {"alive": alive, "ready": ready}

    def model_info(self) -> dict[str, Any]:
        """Classes, palette, input policy, backend and model id (``GET /v1/model``)."""
        result: dict[str, Any] = self._request("GET", "/v1/model").json()
        return result

    def segment(
        self, image: str | Path | np.ndarray | bytes, format: Format = "png", **options: Any
    ) -> np.ndarray | dict[str, Any]:
        """Segments one image on the server.

        Args:
            image: Image file path, encoded image bytes, or an ``(H, W[, C])`` uint8 array.
            format: ``png`` -> ``(H, W)`` uint8 class indices; ``overlay`` -> ``(H, W, 3)`` uint8
                RGB; ``rle`` / ``json`` -> the decoded JSON answer (see docs/serving.md).
            **options: ``tta``, ``tile``, ``overlap``, ``min_object_size``, ``alpha``.

        Raises:
            ServerError: The server answered with an error status.
            DataError: ``image`` cannot be read or encoded.
        """
        response = self.segment_raw(image, format, **options)
        if format in ("rle", "json"):
            answer: dict[str, Any] = response.json()
            return answer
        with Image.open(io.BytesIO(response.content)) as decoded:
            return np.asarray(decoded.convert("RGB") if format == "overlay" else decoded, dtype=np.uint8)

    def segment_raw(
        self, image: str | Path | np.ndarray | bytes, format: Format = "png", **options: Any
    ) -> httpx.Response:
        """Like :meth:`segment`, returning the HTTP response undecoded."""
        if format not in FORMATS:
            raise InferenceError(f"format={format!r} is invalid; choose one of {', '.join(FORMATS)}")
        params = {
            "format": format,
            **{key: _query_value(value) for key, value in options.items() if value is not None},
        }
        return self._request(
            "POST",
            "/v1/segment",
            params=params,
            content=encode_input(image),
            headers={"Content-Type": "application/octet-stream"},
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            if response.status_code != httpx.codes.SERVICE_UNAVAILABLE or attempt == self.retries:
                break
            time.sleep(min(float(response.headers.get("Retry-After", 1)), MAX_RETRY_WAIT_S))
        if response.is_error:
            raise ServerError(response.status_code, _detail(response), f"{method} {self.url}{path}")
        return response


def encode_input(image: str | Path | np.ndarray | bytes) -> bytes:
    """Request body for ``image``: file bytes as they are, arrays as PNG.

    Raises:
        DataError: Missing file or array of an unsupported shape/dtype.
    """
    if isinstance(image, bytes):
        return image
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise DataError(f"image file {path} does not exist")
        return path.read_bytes()
    array = np.asarray(image)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (1, 3, 4))
    ):
        raise DataError(
            f"image array of shape {array.shape} and dtype {array.dtype} cannot be sent; "
            f"use (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8"
        )
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def predict_via_server(
    url: str, inputs: list[Path], out_dir: Path, overlay: bool = False, api_key: str | None = None
) -> list[Path]:
    """``segflow predict --server URL``: writes what local prediction writes, computed remotely.

    For each input: ``<out_dir>/<stem>.png`` (index PNG with the class palette) and, with
    ``overlay``, ``<out_dir>/<stem>_overlay.png`` (a second request, ``format=overlay``).

    Args:
        url: Server base URL.
        inputs: Image files.
        out_dir: Output folder (created).
        overlay: Also write the blended overlay.
        api_key: The server's API key, if any.

    Returns:
        Paths written, in input order.

    Raises:
        ServerError: The server refused an image (the message names the status and reason).
        DataError: An input file does not exist.
    """
    written: list[Path] = []
    with Client(url, api_key=api_key) as client:
        for path in inputs:
            written.append(_write(out_dir / f"{path.stem}.png", client.segment_raw(path, "png").content))
            if overlay:
                overlay_path = out_dir / f"{path.stem}{OVERLAY_SUFFIX}.png"
                written.append(_write(overlay_path, client.segment_raw(path, "overlay").content))
    return written


def _write(path: Path, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


def _query_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text or response.reason_phrase
