"""``POST /v1/segment``: an image in, a mask (PNG, RLE, overlay or class summary) out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from segflow.inference.predictor import Prediction
from segflow.models.meta import TTA_FROM_CHECKPOINT
from segflow.serving.codecs import Decoded, class_summary, decode_upload, encode_png, open_lazily
from segflow.serving.cost import BadOption, ImageHeader
from segflow.serving.deps import ApiKeyDep, ServiceDep
from segflow.serving.errors import BadImage, ClientGone, RequestTimeout
from segflow.serving.limits import check_content_length, check_pixel_count, read_limited
from segflow.serving.service import Service, Timed
from segflow.viz import overlay

router = APIRouter(tags=["segment"], dependencies=[ApiKeyDep])

FILE_FIELD = "file"
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
MS_PER_S = 1000.0
MAX_FORM_FIELD_BYTES = 1024
PNG_MEDIA_TYPE = "image/png"

Format = Literal["png", "rle", "overlay", "json"]
SUMMARY_FORMATS = ("rle", "json")
"""Formats that report per-class confidences, hence need the probabilities."""


def tta_value(given: str | None) -> str:
    """The ``InferenceOptions.tta`` value of the request's ``tta``: absent means ``"checkpoint"``
    (the default of ``segflow predict`` too); any word goes as written to ``InferenceOptions``,
    whose one parser (:func:`segflow.inference.tta.parse_tta_option`) accepts the same words
    as ``segflow predict --tta``."""
    return TTA_FROM_CHECKPOINT if given is None else given


class SegmentOptions(BaseModel):
    """Options of one request, from the query string or multipart form fields (form wins).

    The numeric inference options are only typed here; their ranges (which depend on the
    model's stride and the server's memory budget) are checked by
    :meth:`segflow.serving.service.Service.inference_options`, which builds the same
    :class:`~segflow.inference.options.InferenceOptions` the CLI and the Python API build.
    """

    model_config = ConfigDict(extra="forbid")

    format: Format = Field(
        "png",
        description="png: index PNG with palette; rle: COCO RLE per class; "
        "overlay: blended PNG; json: class areas and confidences.",
    )
    tta: str | None = Field(
        None,
        description="Test-time augmentation, as `segflow predict --tta`: checkpoint (the views the "
        "model was validated with; the default), none, hflip, vflip, flip, true (= flip), "
        "false (= none); exactly these lower-case words.",
    )
    tile: int | None = Field(
        None, description="Tile size in pixels (a multiple of the model's stride; see /v1/model limits)."
    )
    overlap: float | None = Field(None, description="Overlap between tiles, in [0, 0.9).")
    tile_batch: int | None = Field(None, description="Tiles per forward pass (see /v1/model limits).")
    min_object_size: int | None = Field(None, description="Remove regions smaller than this many pixels.")
    fill_holes: int | None = Field(None, description="Fill enclosed holes smaller than this many pixels.")
    alpha: float | None = Field(None, ge=0, le=1, description="Mask opacity of format=overlay, in [0, 1].")

    def inference_fields(self) -> dict[str, Any]:
        """The :class:`InferenceOptions` fields these options set (None: not given)."""
        return {
            "tta": tta_value(self.tta),
            "tile": self.tile,
            "overlap": self.overlap,
            "tile_batch": self.tile_batch,
            "min_object_size": self.min_object_size,
            "fill_holes": self.fill_holes,
            "probs": self.format in SUMMARY_FORMATS,
            "overlay": self.format == "overlay",
        }


@dataclass(frozen=True)
class Upload:
    """The image bytes of a request and the form fields that came with them."""

    data: bytes
    fields: dict[str, str]


IMAGE_BODY = {
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        MULTIPART: {
            "schema": {
                "type": "object",
                "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                "required": [FILE_FIELD],
            }
        },
    },
    "required": True,
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not an image, truncated image, malformed request."},
    401: {"description": "Missing or wrong API key."},
    413: {"description": "Upload, pixel count or estimated memory cost above the server's limits."},
    415: {"description": "Image format or mode not accepted."},
    422: {"description": "Invalid option; the detail names its allowed range."},
    503: {"description": "Queue full, memory busy or model not ready; see Retry-After."},
    504: {"description": "Not answered within the server's timeout; the work was cancelled."},
}


@router.post(
    "/v1/segment",
    openapi_extra={"requestBody": IMAGE_BODY},
    responses={200: {"content": {PNG_MEDIA_TYPE: {}, "application/json": {}}}, **ERRORS},
    response_class=Response,
)
async def segment(
    request: Request, service: ServiceDep, query: Annotated[SegmentOptions, Query()]
) -> Response:
    """Segments the uploaded image (multipart field ``file``, or the raw body)."""
    arrived = time.monotonic()
    try:
        async with asyncio.timeout(service.settings.timeout_s):
            service.check_ready()
            upload = await read_upload(request, service.settings.max_upload_bytes)
            options = merge_options(query, upload.fields)
            inference = service.inference_options(**options.inference_fields())
            header = await run_in_threadpool(read_header, upload.data, service.settings.max_pixels)
            plan = service.plan(header, inference)
            with service.reserve(plan) as reservation:  # released once the answer is encoded
                decoded = await run_in_threadpool(
                    decode_upload,
                    upload.data,
                    service.settings.max_pixels,
                    service.channels,
                    service.intensity,
                    service.slice_context,
                )
                del upload
                timed = await until_disconnected(request, service.predict(decoded.image, plan, reservation))
                image, timed = on_stored_grid(decoded, timed)
                del decoded
                body, media_type = await run_in_threadpool(encode_answer, service, image, timed, options)
                del image
    except TimeoutError:
        raise RequestTimeout(
            f"no answer within the server's limit of {service.settings.timeout_s:g} s (--timeout-s); "
            f"the work was cancelled; retry later or send a smaller image"
        ) from None
    prediction = timed.prediction
    service.metrics.observe_prediction(prediction.class_share, prediction.labels.size, prediction.confidence)
    return Response(body, media_type=media_type, headers=timing_headers(service, timed, arrived))


Result = TypeVar("Result")


def on_stored_grid(decoded: Decoded, timed: Timed) -> tuple[np.ndarray, Timed]:
    """The input and the answer on the upload's own pixel grid (a DICOM slice was read in the
    model's RAS layout; its labels and probabilities are put back where its pixels were)."""
    order = decoded.pixel_order
    if order is None:
        return decoded.image, timed
    prediction = timed.prediction
    probs = None if prediction.probs is None else order.to_stored(prediction.probs)
    labels = order.to_stored(prediction.labels)
    stored = Prediction(labels, probs, prediction.confidence, prediction.class_share)
    image = np.moveaxis(order.to_stored(np.moveaxis(decoded.image, -1, 0)), 0, -1)
    return image, dataclasses.replace(timed, prediction=stored)


async def until_disconnected(request: Request, work: Coroutine[Any, Any, Result]) -> Result:
    """Awaits ``work`` unless the client disconnects first; then ``work`` is cancelled.

    Call it only after the body was read: it listens for the ASGI ``http.disconnect`` message
    (a client that timed out and closed the connection), so the job behind ``work`` stops
    instead of running for nobody.

    Raises:
        ClientGone: The client disconnected before ``work`` finished.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # our own cancellation (the request timeout): stop both
        task.cancel()
        watcher.cancel()
        # Let ``work`` see its cancellation (it cancels its job and ties the memory
        # reservation to it) before the caller's ``with`` block releases that reservation.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone("the client closed the connection; its job was cancelled")


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def read_header(data: bytes, max_pixels: int) -> ImageHeader:
    """Size and sample depth from the image header alone, within ``max_pixels``; no pixel is decoded.

    Raises:
        BadImage: Not an image.
        UnsupportedImage: A format the service does not take.
        PayloadTooLarge: More than ``max_pixels`` pixels (or a decompression bomb).
    """
    with open_lazily(data) as image:
        (width, height), mode = image.size, str(image.mode)
        rawmode = " ".join(str(tile.args) for tile in getattr(image, "tile", None) or [])
    check_pixel_count(width, height, max_pixels)
    return ImageHeader.of(width, height, mode, rawmode)


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """Reads the body within ``max_bytes``; unpacks multipart uploads.

    Raises:
        PayloadTooLarge: Declared or received size above ``max_bytes``.
        BadImage: Malformed multipart body, missing file field, or a url-encoded form.
    """
    check_content_length(request.headers.get("content-length"), max_bytes)
    body = await read_limited(request.stream(), max_bytes)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(URLENCODED):
        raise BadImage(
            "url-encoded forms cannot carry an image: send multipart/form-data or the raw image body"
        )
    if not content_type.startswith(MULTIPART):
        return Upload(data=body, fields={})
    return await parse_multipart(request, body)


async def parse_multipart(request: Request, body: bytes) -> Upload:
    """Splits a multipart body into the ``file`` part (or first file) and the text fields."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, chunks(), max_files=1, max_part_size=MAX_FORM_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadImage(f"malformed multipart body: {err.message}") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        if not files:
            raise BadImage(f"multipart body has no file part: send the image as field '{FILE_FIELD}'")
        chosen = form.get(FILE_FIELD)
        upload = chosen if isinstance(chosen, UploadFile) else files[0]
        return Upload(data=await upload.read(), fields=fields)
    finally:
        await form.close()


def merge_options(query: SegmentOptions, fields: dict[str, str]) -> SegmentOptions:
    """Query options overridden by form fields.

    Raises:
        BadOption: A form field is unknown or invalid.
    """
    if not fields:
        return query
    try:
        return SegmentOptions.model_validate({**query.model_dump(exclude_unset=True), **fields})
    except ValidationError as err:
        raise BadOption(f"invalid form field: {describe_option_errors(err.errors())}") from None


def describe_option_errors(errors: Sequence[Any]) -> str:
    """One line for pydantic/FastAPI validation errors of request options: each name, value and rule."""
    problems = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "body")]
        name = ".".join(location) or "options"
        if error.get("type") == "extra_forbidden":
            valid = ", ".join(SegmentOptions.model_fields)
            problems.append(f"unknown option {name!r}; valid options: {valid}")
        else:
            problems.append(f"{name}={error.get('input')!r}: {error.get('msg')}")
    return "; ".join(problems)


def encode_answer(
    service: Service, image: np.ndarray, timed: Timed, options: SegmentOptions
) -> tuple[bytes, str]:
    """The response body and media type for ``options.format``.

    Args:
        service: Service (class names, palette, model id).
        image: ``(H, W, C)`` uint8 decoded input (for overlays, drawn with the legend of
            ``segflow.viz.overlay``, exactly as ``segflow predict --overlay`` draws it).
        timed: The prediction.
        options: Request options.
    """
    labels = timed.prediction.labels
    if options.format == "png":
        return encode_png(labels, service.palette), PNG_MEDIA_TYPE
    if options.format == "overlay":
        alpha = service.settings.overlay_alpha if options.alpha is None else options.alpha
        blended = overlay(image, labels, service.palette, alpha, service.classes)
        return encode_png(blended), PNG_MEDIA_TYPE
    answer = summary_answer(service, timed, with_rle=options.format == "rle")
    return json.dumps(answer).encode(), "application/json"


def summary_answer(service: Service, timed: Timed, with_rle: bool) -> dict[str, Any]:
    """The JSON of ``format=json`` (and, with RLEs, of ``format=rle``)."""
    prediction = timed.prediction
    labels = prediction.labels
    top = None if prediction.probs is None else np.max(prediction.probs, axis=0)
    height, width = labels.shape
    answer = {
        "model_id": service.model_id,
        "width": int(width),
        "height": int(height),
        "confidence": float(prediction.confidence),
        "classes": class_summary(labels, top, service.classes, with_rle=with_rle),
    }
    answer.update(task_answer(prediction, service.classes))
    return answer


def task_answer(prediction: Any, classes: list[str]) -> dict[str, Any]:
    """What instance, panoptic and multi-label models add to the JSON answer.

    ``instances``: one ``{id, category_id, class, score, segmentation}`` per object, the mask a
    COCO RLE (``{"size": [H, W], "counts": str}``, pycocotools' encoding). ``segments_info``:
    a panoptic model's COCO segments (things' pixels are their ``instances`` masks, with ``id``
    the segment id; stuff segments cover their class in the semantic map). ``masks``: a
    multi-label model's ``(H, W, K)`` bits, one COCO RLE per class with its pixel count.
    """
    extra: dict[str, Any] = {}
    instances = getattr(prediction, "instances", None)
    if instances is not None:
        names = dict(enumerate(classes))  # category_id is the class index (segflow.instance)
        extra["instances"] = [{**item, "class": names.get(int(item["category_id"]))} for item in instances]
    panoptic = getattr(prediction, "panoptic", None)
    if panoptic is not None:
        extra["segments_info"] = panoptic[1]
    masks = getattr(prediction, "masks", None)
    if masks is not None:
        from segflow.instance.rle import encode_mask

        extra["masks"] = [
            {"class": name, "pixels": int(masks[..., k].sum()), "segmentation": encode_mask(masks[..., k])}
            for k, name in enumerate(classes)
        ]
    return extra


def timing_headers(service: Service, timed: Timed, arrived: float) -> dict[str, str]:
    """``Server-Timing`` (queue, model, total in ms) and the model id, for clients and the page."""
    total_ms = (time.monotonic() - arrived) * MS_PER_S
    queue_ms = timed.queue_s * MS_PER_S
    model_ms = (timed.total_s - timed.queue_s) * MS_PER_S
    return {
        "Server-Timing": f"queue;dur={queue_ms:.1f}, model;dur={model_ms:.1f}, total;dur={total_ms:.1f}",
        "X-Segflow-Model": service.model_id,
    }
