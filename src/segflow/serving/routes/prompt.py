"""``POST /v1/prompt``: points, a box or a coarse mask in, masks out; ``POST /v1/prompt/export``:
accepted masks in, an index PNG, COCO JSON or LabelMe JSON file out; ``GET /prompt``: the
annotation page.

Prompting is on when the server starts with ``--prompt-backend`` (``grabcut``, ``sam:PATH``,
``sam2:PATH``; :func:`segflow.prompt.base.create_prompt_backend`); otherwise ``/v1/prompt``
answers 409 with the option to set. A request gives its image once, as the multipart field
``file`` (the same size, pixel and decoding rules as ``/v1/segment``), with the prompt as the
form field ``prompt`` (JSON, at most 1 KiB, as every form field) or none (the image is
only embedded). The answer's ``image_key`` then stands for the image: later clicks send JSON
``{"image_key": ..., "points": [[x, y, label], ...], "box": [x0, y0, x1, y1], "mask": RLE,
"multimask": false}``, so they cost the backend's decoder only. A key the cache no longer holds
(evicted, or cached by another worker process) is a 404 that says to send the image again.

All prompt work runs on one thread of its own (:class:`PromptRunner`): the backends' models are
not shared between threads, the event loop never waits on them, and work whose request timed
out or whose client left is dropped before it starts. Each request reserves
:data:`PROMPT_BYTES_PER_PX` bytes per image pixel from the service's memory pool, which at start
already set aside the embedding cache at its full size (``--prompt-cache-mb``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from segflow.errors import DataError, InferenceError, SegflowError
from segflow.serving.codecs import decode_upload, encode_png
from segflow.serving.cost import BadOption
from segflow.serving.deps import ApiKeyDep, ServiceDep
from segflow.serving.errors import (
    BadImage,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unavailable,
    UnsupportedImage,
)
from segflow.serving.limits import check_content_length, check_pixel_count, read_limited
from segflow.serving.memory import Reservation
from segflow.serving.routes.page import STATIC_DIR
from segflow.serving.routes.segment import (
    FILE_FIELD,
    MULTIPART,
    PNG_MEDIA_TYPE,
    read_header,
    read_upload,
    until_disconnected,
)
from segflow.serving.service import RETRY_AFTER_S, Service

if TYPE_CHECKING:
    from segflow.prompt.base import Prompt, PromptBackend

PROMPT_HTML = STATIC_DIR / "prompt.html"
PROMPT_FIELD = "prompt"
JSON_MEDIA_TYPE = "application/json"
PROMPT_BYTES_PER_PX = 256
"""Estimated peak bytes per image pixel of one prompt request: the decoded image and its cached
copy (6), the answer's masks, and GrabCut's graph and GMM buffers (OpenCV ``GCGraph``; measured
184 bytes/px of peak RSS growth for a 1500x1500 box prompt). SAM resizes to a 1024-px side, so
its encoder's activations do not grow with the image."""
MAX_PROMPT_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON prompt body (a coarse mask as RLE of a large image included)."""
EXPORT_BYTES_PER_PX = 16
"""Bytes per pixel of an export besides one byte per decoded mask: the label map, the visible
masks and OpenCV's contour buffers."""
MAX_EXPORT_MASKS = 1000
"""Most accepted masks one export may hold."""
SHAPE_MEMORY = 4096
"""Image sizes remembered per image key (a key the cache still holds needs its size)."""
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 128
DEFAULT_IMAGE_NAME = "image.png"
UPLOAD_SOURCE, KEY_SOURCE = "upload", "key"
SUCCESS = HTTPStatus.OK.value

router = APIRouter(tags=["prompt"], dependencies=[ApiKeyDep])
page_router = APIRouter(tags=["page"])

Result = TypeVar("Result")


class PromptingOff(ServiceError):
    """The server runs without ``--prompt-backend`` (409)."""

    status_code = HTTPStatus.CONFLICT


class UnknownImage(ServiceError):
    """An ``image_key`` the embedding cache does not hold (404): the client sends the image again."""

    status_code = HTTPStatus.NOT_FOUND


class BadPrompt(ServiceError):
    """A prompt or export body that is not JSON, or not an object (400)."""

    status_code = HTTPStatus.BAD_REQUEST


class PromptBody(BaseModel):
    """The JSON of a prompt request (``image_key`` only in a JSON body, never with a file)."""

    model_config = ConfigDict(extra="forbid")

    image_key: str | None = Field(None, description="Key of an image sent before (its answer's image_key).")
    points: list[Any] = Field(default_factory=list, description="[[x, y, label], ...]; label 1 on, 0 off.")
    box: list[Any] | None = Field(None, description="[x0, y0, x1, y1] in pixels.")
    mask: dict[str, Any] | None = Field(None, description="Coarse mask as COCO RLE at the image's size.")
    multimask: bool = Field(False, description="Several candidate masks (SAM: 3), best first.")

    @property
    def empty(self) -> bool:
        """The body gives no points, box or mask."""
        return not self.points and self.box is None and self.mask is None

    def prompt(self, shape: tuple[int, int]) -> Prompt | None:
        """The backend's :class:`Prompt` for an image of ``shape`` ``(H, W)``; None when the body
        gives no points, box or mask.

        Raises:
            InferenceError: A malformed field, or a mask RLE that is not one of ``shape`` (422),
                named by :meth:`Prompt.from_json`.
        """
        if self.empty:
            return None
        from segflow.prompt.base import Prompt

        entry = self.model_dump(include={"points", "box", "mask"})
        return Prompt.from_json(entry, where="prompt", shape=shape)


class AcceptedMask(BaseModel):
    """One accepted mask of an export."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    segmentation: dict[str, Any] = Field(description="COCO RLE ({size: [H, W], counts}) of the mask.")
    class_: int | str = Field(alias="class", description="Class index or name of the served model.")


class ExportBody(BaseModel):
    """The JSON of ``POST /v1/prompt/export``: the image's name and size and its accepted masks in order
    (later masks are drawn over earlier ones)."""

    model_config = ConfigDict(extra="forbid")

    image_name: str = Field(DEFAULT_IMAGE_NAME, max_length=1024)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    masks: list[AcceptedMask] = Field(default_factory=list, max_length=MAX_EXPORT_MASKS)


ExportFormat = Literal["png", "coco", "labelme"]


class PromptCacheCollector(Collector):
    """The embedding cache of a backend as Prometheus metrics, read at each scrape."""

    def __init__(self, backend: PromptBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Any]:
        stats = self.backend.cache.stats()
        yield GaugeMetricFamily(
            "segflow_prompt_cache_bytes", "Bytes the prompt embedding cache holds now.", value=stats["nbytes"]
        )
        yield GaugeMetricFamily(
            "segflow_prompt_cache_max_bytes",
            "Budget of the prompt embedding cache (--prompt-cache-mb), set aside from the memory budget.",
            value=stats["max_bytes"],
        )
        yield GaugeMetricFamily(
            "segflow_prompt_cache_entries", "Images in the prompt embedding cache.", value=stats["entries"]
        )
        for name in ("hits", "misses", "evictions"):
            yield CounterMetricFamily(
                f"segflow_prompt_cache_{name}", f"Prompt embedding cache {name}.", value=stats[name]
            )


class PromptRunner:
    """Runs prompt work on one thread of its own, at most ``queue_size`` jobs waiting.

    Args:
        backend: The prompt backend.
        queue_size: Jobs that may wait; beyond, 503 + ``Retry-After``.
    """

    def __init__(self, backend: PromptBackend, queue_size: int) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segflow-prompt")
        self._pending = 0
        self._lock = threading.Lock()
        self._shapes: OrderedDict[str, tuple[int, int]] = OrderedDict()

    async def run(self, reservation: Reservation | None, work: Callable[..., Result], *args: Any) -> Result:
        """Awaits ``work(*args)`` on the prompt thread; a cancelled await drops the job if it has not
        started, and ``reservation`` stays held until a started one ends.

        Raises:
            Unavailable: ``queue_size`` jobs are already waiting (503).
        """
        with self._lock:
            waiting = self._pending
            if waiting < self.queue_size:
                self._pending += 1
        if waiting >= self.queue_size:
            raise Unavailable(
                f"server busy: {waiting} prompt requests are waiting; retry after {RETRY_AFTER_S} s",
                RETRY_AFTER_S,
            )
        future: Future[Result] = self._executor.submit(work, *args)
        future.add_done_callback(lambda _done: self._finished())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            if reservation is not None:
                reservation.hold_until(future)
            raise

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1

    def remember(self, key: str, shape: tuple[int, int]) -> None:
        """Keeps ``(H, W)`` of an embedded image (the newest :data:`SHAPE_MEMORY` keys)."""
        self._shapes[key] = shape
        self._shapes.move_to_end(key)
        while len(self._shapes) > SHAPE_MEMORY:
            self._shapes.popitem(last=False)

    def shape_of(self, key: str) -> tuple[int, int]:
        """``(H, W)`` of a cached image.

        Raises:
            UnknownImage: The cache does not hold ``key`` (404).
        """
        shape = self._shapes.get(key)
        if shape is None or key not in self.backend.cache:
            raise UnknownImage(
                f"image_key {key[:12]!r} is not in the server's {self.backend.name} cache (evicted, or sent "
                f"to another worker); send the image again as multipart field '{FILE_FIELD}'"
            )
        return shape

    def close(self) -> None:
        """Drops the waiting jobs and waits for the running one."""
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class PromptState:
    """What the app keeps for prompting (``app.state.prompt``)."""

    runner: PromptRunner | None
    requests: Counter


def install(app: FastAPI, service: Service) -> None:
    """Adds the prompt routes, the page and the metrics to ``app``; the runner when prompting is on."""
    app.include_router(router)
    app.include_router(page_router)
    requests = Counter(
        "segflow_prompt_requests",
        "Requests to /v1/prompt by how the image came (upload, key, none) and HTTP status.",
        ["image", "status"],
        registry=service.metrics.registry,
    )
    runner = None
    if service.prompt is not None:
        runner = PromptRunner(service.prompt, service.settings.queue_size)
        service.metrics.registry.register(PromptCacheCollector(service.prompt))
    app.state.prompt = PromptState(runner, requests)


def close(app: FastAPI) -> None:
    """Stops the prompt thread (the app's lifespan calls this once the service stopped)."""
    state: PromptState | None = getattr(app.state, "prompt", None)
    if state is not None and state.runner is not None:
        state.runner.close()


def prompt_state(request: Request) -> PromptState:
    state: PromptState = request.app.state.prompt
    return state


def require_runner(state: PromptState) -> PromptRunner:
    """The runner, or 409 saying how to turn prompting on."""
    if state.runner is None:
        raise PromptingOff(
            "prompting is off on this server; start it with --prompt-backend grabcut (no weights), "
            "sam:PATH or sam2:PATH (env SEGFLOW_PROMPT_BACKEND)"
        )
    return state.runner


@page_router.get("/prompt", include_in_schema=False)
async def prompt_page() -> FileResponse:
    """The annotation page (holds no data, so no API key; it asks for one like ``/``)."""
    return FileResponse(PROMPT_HTML, media_type="text/html")


@router.post(
    "/v1/prompt",
    responses={
        200: {"content": {JSON_MEDIA_TYPE: {}, PNG_MEDIA_TYPE: {}}},
        400: {"description": "Not an image, or a body that is not JSON."},
        404: {"description": "image_key not cached: send the image again."},
        409: {"description": "Prompting is off (--prompt-backend)."},
        413: {"description": "Upload, pixel count or memory above the server's limits."},
        422: {"description": "Malformed prompt field or option; the detail names it."},
        503: {"description": "Prompt queue full or memory busy; see Retry-After."},
        504: {"description": "Not answered within the server's timeout."},
    },
    response_class=Response,
)
async def prompt(
    request: Request,
    service: ServiceDep,
    format: Annotated[Literal["json", "png"], Query(description="json: RLE masks; png: best mask.")] = "json",
) -> Response:
    """Masks for a prompt on an uploaded (multipart ``file`` + form field ``prompt``) or cached
    (JSON body with ``image_key``) image.

    JSON answer: ``{image_key, width, height, masks: [{segmentation: COCO RLE, score, area}]}``,
    best mask first (``masks`` is empty when the request gave no prompt). ``format=png``: the best
    mask as a 0/255 gray PNG, its key and score in ``X-Segflow-Image-Key`` / ``X-Segflow-Score``.
    """
    state = prompt_state(request)
    source = "none"
    try:
        runner = require_runner(state)
        async with asyncio.timeout(service.settings.timeout_s):
            source = request_source(request)
            answer = await _answer(request, service, runner, format == "png")
    except TimeoutError:
        state.requests.labels(image=source, status=str(HTTPStatus.GATEWAY_TIMEOUT.value)).inc()
        raise RequestTimeout(
            f"no prompt answer within the server's limit of {service.settings.timeout_s:g} s "
            "(--timeout-s); the work was cancelled; retry later or send a smaller image"
        ) from None
    except Exception as err:
        state.requests.labels(image=source, status=str(error_status(err))).inc()
        raise
    state.requests.labels(image=source, status=str(SUCCESS)).inc()
    if format == "png":
        return Response(answer["png"], media_type=PNG_MEDIA_TYPE, headers=answer["headers"])
    return Response(json.dumps(answer), media_type=JSON_MEDIA_TYPE)


def prompt_max_pixels(service: Service) -> int:
    """Largest ``width * height`` of a prompt image: ``max_pixels`` or ``prompt_max_pixels``, if less."""
    return min(service.settings.max_pixels, service.settings.prompt_max_pixels)


def check_prompt_pixels(width: int, height: int, service: Service) -> None:
    """Refuses a prompt or export image above :func:`prompt_max_pixels`, naming the setting that
    limits (``--max-pixels``, or ``prompt_max_pixels`` when it is the smaller).

    Raises:
        PayloadTooLarge: ``width * height`` above the limit (413).
    """
    settings = service.settings
    if settings.prompt_max_pixels < settings.max_pixels:
        if width * height > settings.prompt_max_pixels:
            raise PayloadTooLarge(
                f"image declares {width}x{height} = {width * height} pixels, more than the server's prompt "
                f"limit of {settings.prompt_max_pixels} (setting prompt_max_pixels, env "
                f"SEGFLOW_PROMPT_MAX_PIXELS or --config); downscale it"
            )
    else:
        check_pixel_count(width, height, settings.max_pixels)


def request_source(request: Request) -> str:
    """How a prompt request gives its image: ``key`` (a JSON body) or ``upload`` (anything else)."""
    return (
        KEY_SOURCE
        if request.headers.get("content-type", "").lower().startswith(JSON_MEDIA_TYPE)
        else UPLOAD_SOURCE
    )


def error_status(err: BaseException) -> int:
    """The HTTP status the app's error handlers give ``err`` (for the request counter)."""
    if isinstance(err, ServiceError):
        return int(err.status_code)
    if isinstance(err, SegflowError):
        return (
            HTTPStatus.UNPROCESSABLE_ENTITY if isinstance(err, InferenceError) else HTTPStatus.BAD_REQUEST
        ).value
    return HTTPStatus.INTERNAL_SERVER_ERROR.value


async def _answer(request: Request, service: Service, runner: PromptRunner, as_png: bool) -> dict[str, Any]:
    """The answer of one prompt request (JSON, or ``{"png", "headers"}`` with ``as_png``)."""
    if request_source(request) == KEY_SOURCE:
        body = parse_prompt_body(await read_body(request, MAX_PROMPT_JSON_BYTES))
        if body.image_key is None:
            raise BadOption(
                f"a JSON prompt needs the image_key of an image sent before; send a new image as multipart "
                f"field '{FILE_FIELD}' with the prompt in field '{PROMPT_FIELD}'"
            )
        if body.empty:
            raise BadOption("the prompt is empty: give points, a box or a mask with the image_key")
        height, width = runner.shape_of(body.image_key)
        prompt = body.prompt((height, width))
        with service.pool.reserve(
            height * width * PROMPT_BYTES_PER_PX, False, f"{width}x{height} prompt"
        ) as held:
            work = runner.run(held, run_prompt, runner, body.image_key, prompt, body.multimask, as_png)
            return await until_disconnected(request, work)
    if not request.headers.get("content-type", "").lower().startswith(MULTIPART):
        raise BadImage(
            f"send the image as multipart field '{FILE_FIELD}' (prompt JSON in field '{PROMPT_FIELD}'), "
            f"or a {JSON_MEDIA_TYPE} body with an image_key"
        )
    upload = await read_upload(request, service.settings.max_upload_bytes)
    unknown = sorted(set(upload.fields) - {PROMPT_FIELD})
    if unknown:
        raise BadOption(f"unknown form field(s) {', '.join(unknown)}; valid: {FILE_FIELD}, {PROMPT_FIELD}")
    body = parse_prompt_body(upload.fields.get(PROMPT_FIELD, "{}").encode())
    if body.image_key is not None:
        raise BadOption("give either an image file or an image_key, not both")
    max_pixels = prompt_max_pixels(service)
    if as_png and body.empty:
        raise BadOption("format=png needs a prompt (points, a box or a mask)")
    header = await run_in_threadpool(read_header, upload.data, service.settings.max_pixels)
    check_prompt_pixels(header.width, header.height, service)
    prompt = body.prompt((header.height, header.width))
    cost = header.width * header.height * PROMPT_BYTES_PER_PX
    with service.pool.reserve(cost, False, f"{header.width}x{header.height} prompt image") as held:
        image = await run_in_threadpool(decode_prompt_image, upload.data, max_pixels)
        del upload
        work = runner.run(held, run_prompt, runner, image, prompt, body.multimask, as_png)
        return await until_disconnected(request, work)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, within ``max_bytes``.

    Raises:
        PayloadTooLarge: Declared or received size above ``max_bytes`` (413).
    """
    check_content_length(request.headers.get("content-length"), max_bytes)
    return await read_limited(request.stream(), max_bytes)


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    """``data`` as a JSON object.

    Raises:
        BadPrompt: Not JSON, or not an object (one line naming ``what``).
    """
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadPrompt(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadPrompt(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_prompt_body(data: bytes) -> PromptBody:
    """The prompt JSON as :class:`PromptBody`.

    Raises:
        BadPrompt: Not a JSON object (400).
        BadOption: An unknown or mistyped field (422), with the valid fields.
    """
    try:
        return PromptBody.model_validate(parse_json(data, "the prompt"))
    except ValidationError as err:
        raise BadOption(f"invalid prompt: {describe_errors(err, PromptBody)}") from None


def describe_errors(err: ValidationError, model: type[BaseModel]) -> str:
    """One line for the validation errors of a request body: each field, value and rule."""
    problems = []
    for item in err.errors():
        name = ".".join(str(part) for part in item.get("loc", ())) or "body"
        if item.get("type") == "extra_forbidden":
            problems.append(f"unknown field {name!r}; valid fields: {', '.join(model.model_fields)}")
        else:
            shown = repr(item.get("input"))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            problems.append(f"{name}={shown}: {item.get('msg')}")
    return "; ".join(problems)


def decode_prompt_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The upload as ``(H, W, 3)`` uint8 RGB, decoded as ``/v1/segment`` decodes it (gray repeated,
    alpha dropped); 16-bit images are scaled by their maximum to 0..255.

    Raises:
        BadImage, UnsupportedImage, PayloadTooLarge: As :func:`segflow.serving.codecs.decode_upload`.
    """
    decoded = decode_upload(data, max_pixels, 3)
    if decoded.pixel_order is not None:
        raise UnsupportedImage("DICOM is not accepted by /v1/prompt; send the slice as PNG or TIFF")
    image = decoded.image
    if image.dtype != np.uint8:
        top = float(image.max()) or 1.0
        image = np.round(image.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    return np.ascontiguousarray(image)


def run_prompt(
    runner: PromptRunner,
    image_or_key: np.ndarray | str,
    prompt: Prompt | None,
    multimask: bool,
    as_png: bool,
) -> dict[str, Any]:
    """The prompt work, on the prompt thread: embed (an upload), decode, encode the answer.

    Returns:
        The JSON answer, or with ``as_png`` ``{"png": bytes, "headers": {...}}``.

    Raises:
        UnknownImage: ``key`` was evicted (404).
        InferenceError: A prompt outside the image (422).
    """
    from segflow.instance.rle import encode_mask

    backend = runner.backend
    if isinstance(image_or_key, str):
        key = image_or_key
    else:
        key = backend.set_image(image_or_key)
        runner.remember(key, (int(image_or_key.shape[0]), int(image_or_key.shape[1])))
    height, width = runner.shape_of(key)
    masks: list[dict[str, Any]] = []
    if prompt is not None:
        result = backend.predict(key, prompt, multimask=multimask)
        order = np.argsort(-result.scores, kind="stable")
        if as_png:
            best = order[0]
            return {
                "png": encode_png(result.masks[best].astype(np.uint8) * np.uint8(255)),
                "headers": {
                    "X-Segflow-Image-Key": key,
                    "X-Segflow-Score": f"{float(result.scores[best]):.4f}",
                },
            }
        masks = [
            {
                "segmentation": encode_mask(result.masks[i]),
                "score": float(result.scores[i]),
                "area": int(result.masks[i].sum()),
            }
            for i in order
        ]
    return {"image_key": key, "width": width, "height": height, "masks": masks}


@router.post(
    "/v1/prompt/export",
    responses={
        200: {"content": {PNG_MEDIA_TYPE: {}, JSON_MEDIA_TYPE: {}}},
        400: {"description": "Body is not JSON."},
        413: {"description": "Image or memory above the server's limits."},
        422: {"description": "Malformed mask, class or option; the detail names it."},
    },
    response_class=Response,
)
async def export(
    request: Request,
    service: ServiceDep,
    format: Annotated[
        ExportFormat, Query(description="png: index PNG; coco: COCO JSON; labelme: LabelMe JSON.")
    ],
) -> Response:
    """The accepted masks of one image as a file: an index PNG (pixel = class index, the model's
    palette), a COCO instances JSON or a LabelMe JSON, with the served model's classes."""
    raw = await read_body(request, service.settings.max_upload_bytes)
    try:
        body = ExportBody.model_validate(parse_json(raw, "the export body"))
    except ValidationError as err:
        raise BadOption(f"invalid export: {describe_errors(err, ExportBody)}") from None
    check_prompt_pixels(body.width, body.height, service)
    class_ids = [class_index(item.class_, service.classes, i) for i, item in enumerate(body.masks)]
    name = safe_name(body.image_name)
    cost = body.width * body.height * (len(body.masks) + EXPORT_BYTES_PER_PX)
    with service.pool.reserve(cost, False, f"export of {len(body.masks)} {body.width}x{body.height} masks"):
        content, media_type, filename = await run_in_threadpool(
            export_file, body, class_ids, name, format, service.classes, service.palette
        )
    disposition = f'attachment; filename="{filename}"'
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


def class_index(value: int | str, classes: list[str], position: int) -> int:
    """The class index of an accepted mask's ``class`` (an index or a name of the served model).

    Raises:
        BadOption: No such class (422, with the valid ones).
    """
    if isinstance(value, int) and 0 <= value < len(classes):
        return value
    if isinstance(value, str) and value in classes:
        return classes.index(value)
    raise BadOption(
        f"masks[{position}].class {value!r} is not a class of the served model; use an index "
        f"0..{len(classes) - 1} or a name: {', '.join(classes)}"
    )


def safe_name(name: str) -> str:
    """``name``'s file name with only ``[A-Za-z0-9._-]`` (others become ``_``), for files and headers."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = SAFE_NAME.sub("_", base).strip("._")[:MAX_NAME_CHARS]
    return cleaned or DEFAULT_IMAGE_NAME


def export_file(
    body: ExportBody,
    class_ids: list[int],
    name: str,
    format: ExportFormat,
    classes: list[str],
    palette: list[tuple[int, int, int]],
) -> tuple[bytes, str, str]:
    """``(content, media type, file name)`` of an export, by :mod:`segflow.prompt.export`.

    Raises:
        BadOption: A mask that is not a COCO RLE of the image's size (422).
    """
    from segflow.instance.rle import decode_mask
    from segflow.prompt import export as writers

    shape = (body.height, body.width)
    masks = np.zeros((len(body.masks), *shape), dtype=bool)
    for index, item in enumerate(body.masks):
        try:
            masks[index] = decode_mask(item.segmentation, shape=shape)
        except DataError as err:
            raise BadOption(f"masks[{index}].segmentation: {err}") from None
        except Exception as err:  # pycocotools raises TypeError/ValueError/KeyError alike
            raise BadOption(f"masks[{index}].segmentation is not a COCO RLE: {err}") from None
    stem = PurePath(name).stem or "image"
    if format == "png":
        return writers.index_png(masks, class_ids, palette, shape), PNG_MEDIA_TYPE, f"{stem}_mask.png"
    if format == "coco":
        document = writers.coco_json(name, shape, masks, class_ids, classes)
        return json.dumps(document).encode(), JSON_MEDIA_TYPE, f"{stem}_coco.json"
    document = writers.labelme_json(name, shape, masks, class_ids, classes)
    return json.dumps(document, indent=1).encode(), JSON_MEDIA_TYPE, f"{stem}.json"
