"""``GET /metrics``: Prometheus text exposition of this app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from segflow.serving.deps import ApiKeyDep, ServiceDep

router = APIRouter(tags=["monitoring"], dependencies=[ApiKeyDep])


@router.get("/metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Every metric documented in docs/serving.md, in Prometheus text format."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
