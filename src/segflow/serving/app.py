"""The FastAPI application factory of ``segflow serve``.

``create_app()`` with no argument reads ``SEGFLOW_*`` variables, which is how uvicorn's worker
processes build their own app (``uvicorn.run("segflow.serving.app:create_app", factory=True)``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from segflow import __version__
from segflow.errors import InferenceError, SegflowError
from segflow.serving.deps import ApiKeyDep
from segflow.serving.errors import ServiceError
from segflow.serving.routes import health, metrics, model, page, prompt, segment
from segflow.serving.routes.segment import describe_option_errors
from segflow.serving.runner import PredictorLike, VariantFactory, load_predictor
from segflow.serving.service import Service
from segflow.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"
"""Route label of requests that matched no route (keeps the metric's label set bounded)."""
CORS_HEADERS = ["X-API-Key", "Authorization", "Content-Type"]
OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
"""An internal object's default repr (``<_io.BytesIO object at 0x7f...>``, ``<function f at
0x7f...>``), never shown to clients."""


def _add_docs(app: FastAPI) -> None:
    """OpenAPI schema and UI, under the API key like every data route (open when no key is set)."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[ApiKeyDep])
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[ApiKeyDep])
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="segflow API")


def create_app(
    settings: ServeSettings | None = None,
    predictor: PredictorLike | None = None,
    variant: VariantFactory | None = None,
) -> FastAPI:
    """Builds the service app; the model runner starts with the app's lifespan.

    Args:
        settings: Service settings; None reads them from ``SEGFLOW_*`` variables.
        predictor: An already loaded predictor; None loads ``settings.model``.
        variant: Predictor for given per-request options; None caches ``predictor.with_options``
            variants (bounded, see ``variant_cache_size``).

    Returns:
        The FastAPI app. Its :class:`Service` is ``app.state.service``.

    Raises:
        ConfigError: Invalid settings.
        CheckpointError: The model file cannot be loaded.
    """
    settings = settings or ServeSettings.load()
    if predictor is None:
        predictor = load_predictor(settings.model, settings.backend)
    service = Service(settings, predictor, variant)
    app = FastAPI(
        title="segflow",
        version=__version__,
        description="Image segmentation service. See docs/serving.md.",
        lifespan=_lifespan(service),
        docs_url=None,  # re-added below behind the API key
        openapi_url=None,
    )
    app.state.service = service
    for router in (health.router, model.router, segment.router, metrics.router, page.router):
        app.include_router(router)
    prompt.install(app, service)  # /v1/prompt (409 without --prompt-backend), its export, /prompt
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    _add_docs(app)
    _add_error_handlers(app)
    _add_request_metrics(app, service)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_HEADERS,
            expose_headers=["Server-Timing"],
        )
    return app


def _lifespan(service: Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # uvicorn runs this after the in-flight requests were answered; the runner then
            # finishes whatever is still queued before its thread ends.
            await run_in_threadpool(service.stop)
            await run_in_threadpool(prompt.close, _app)

    return lifespan


def _add_request_metrics(app: FastAPI, service: Service) -> None:
    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.monotonic()
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", UNMATCHED_ROUTE)
            service.metrics.observe_request(route, status, time.monotonic() - started)


def client_message(err: BaseException) -> str:
    """The one line a client sees for ``err``: whitespace collapsed, internal object reprs removed.

    Library messages sometimes embed the repr of an internal object (Pillow's "cannot identify
    image file <_io.BytesIO object at 0x...>"); every error answer goes through here, so none
    reaches a client whatever module raised it.
    """
    return " ".join(strip_reprs(str(err), "the upload").split())


def strip_reprs(text: str, replacement: str) -> str:
    """``text`` with every internal object repr (nested ones too) replaced by ``replacement``."""
    previous = None
    while previous != text:
        previous, text = text, OBJECT_REPR.sub(replacement, text)
    return text


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse(
            {"detail": client_message(err)}, status_code=int(err.status_code), headers=err.headers
        )

    @app.exception_handler(SegflowError)
    async def segflow_error(_request: Request, err: SegflowError) -> JSONResponse:
        status = (
            HTTPStatus.UNPROCESSABLE_ENTITY if isinstance(err, InferenceError) else HTTPStatus.BAD_REQUEST
        )
        return JSONResponse({"detail": client_message(err)}, status_code=status.value)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        detail = f"invalid option: {describe_option_errors(err.errors())}"
        return JSONResponse({"detail": strip_reprs(detail, "?")}, status_code=HTTPStatus.UNPROCESSABLE_ENTITY)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=err)
        return JSONResponse({"detail": "internal server error; see the server log"}, status_code=500)
