"""Errors of the service that map onto one HTTP status each.

They are :class:`segflow.errors.SegflowError` subclasses, so code outside HTTP (the client,
tests) can catch them the usual way; ``app.py`` turns each into ``{"detail": message}``
with its :attr:`status_code` and never shows a stack trace.
"""

from __future__ import annotations

from http import HTTPStatus

from segflow.errors import DataError, SegflowError


class ServiceError(SegflowError):
    """Base class: a request the service answers with :attr:`status_code`."""

    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR
    headers: dict[str, str] | None = None


class PayloadTooLarge(ServiceError, DataError):
    """The body is larger than ``max_upload_mb`` or the image has more than ``max_pixels``."""

    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class BadImage(ServiceError, DataError):
    """The body is not a decodable image, is truncated, or the request is malformed."""

    status_code = HTTPStatus.BAD_REQUEST


class UnsupportedImage(ServiceError, DataError):
    """The image format or pixel mode is one the service does not accept."""

    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Unavailable(ServiceError):
    """The queue is full or the model is not ready; the client should retry after a while."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class RequestTimeout(ServiceError):
    """The request was not answered within ``timeout_s``."""

    status_code = HTTPStatus.GATEWAY_TIMEOUT


class ClientGone(ServiceError):
    """The client closed the connection before its answer was ready; the work was cancelled.

    Nobody reads the answer; the status (nginx's 499 "client closed request") only shows in
    the request metrics and logs.
    """

    status_code = 499
