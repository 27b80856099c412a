"""``POST /v1/segment``: an image in, a mask (PNG, RLE, overlay or class summary) out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from segflow.serving.batcher import PredictOptions
from segflow.serving.codecs import class_summary, decode_image, encode_png
from segflow.serving.deps import ApiKeyDep, ServiceDep
from segflow.serving.errors import BadImage, RequestTimeout, ServiceError
from segflow.serving.limits import check_content_length, read_limited
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


class SegmentOptions(BaseModel):
    """Options of one request, from the query string or multipart form fields (form wins)."""

    model_config = ConfigDict(extra="forbid")

    format: Format = Field(
        "png",
        description="png: index PNG with palette; rle: COCO RLE per class; "
        "overlay: blended PNG; json: class areas and confidences.",
    )
    tta: bool = Field(False, description="Test-time augmentation (flips).")
    tile: int | None = Field(None, ge=1, description="Tile size in pixels for large images.")
    overlap: float | None = Field(None, ge=0, description="Overlap between tiles.")
    min_object_size: int = Field(0, ge=0, description="Remove regions smaller than this many pixels.")
    alpha: float | None = Field(None, ge=0, le=1, description="Mask opacity of format=overlay.")

    def predict_options(self) -> PredictOptions:
        """The part of the options the model runner sees (batching key)."""
        return PredictOptions(
            tta=self.tta,
            tile=self.tile,
            overlap=self.overlap,
            min_object_size=self.min_object_size,
            keep_probs=self.format in SUMMARY_FORMATS,
        )


class BadOption(ServiceError):
    """A form field holds an invalid option value."""

    status_code = 422


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
    413: {"description": "Upload or pixel count above the server's limits."},
    415: {"description": "Image format or mode not accepted."},
    422: {"description": "Invalid option."},
    503: {"description": "Queue full or model not ready; see Retry-After."},
    504: {"description": "Not answered within the server's timeout."},
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
            upload = await read_upload(request, service.settings.max_upload_bytes)
            options = merge_options(query, upload.fields)
            image = await run_in_threadpool(
                decode_image, upload.data, service.settings.max_pixels, service.channels
            )
            timed = await service.predict(image, options.predict_options())
            body, media_type = await run_in_threadpool(encode_answer, service, image, timed, options)
    except TimeoutError:
        raise RequestTimeout(
            f"no answer within the server's limit of {service.settings.timeout_s:g} s (--timeout-s); "
            f"retry later or send a smaller image"
        ) from None
    prediction = timed.prediction
    service.metrics.observe_prediction(prediction.class_share, prediction.labels.size, prediction.confidence)
    return Response(body, media_type=media_type, headers=timing_headers(service, timed, arrived))


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
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in err.errors()
        )
        raise BadOption(f"invalid form field: {problems}") from None


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
    return {
        "model_id": service.model_id,
        "width": int(width),
        "height": int(height),
        "confidence": float(prediction.confidence),
        "classes": class_summary(labels, top, service.classes, with_rle=with_rle),
    }


def timing_headers(service: Service, timed: Timed, arrived: float) -> dict[str, str]:
    """``Server-Timing`` (queue, model, total in ms) and the model id, for clients and the page."""
    total_ms = (time.monotonic() - arrived) * MS_PER_S
    queue_ms = timed.queue_s * MS_PER_S
    model_ms = (timed.total_s - timed.queue_s) * MS_PER_S
    return {
        "Server-Timing": f"queue;dur={queue_ms:.1f}, model;dur={model_ms:.1f}, total;dur={total_ms:.1f}",
        "X-Segflow-Model": service.model_id,
    }
