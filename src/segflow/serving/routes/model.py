"""``GET /v1/model``: what the served model predicts and how."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from segflow.serving.deps import ApiKeyDep, ServiceDep

router = APIRouter(tags=["model"], dependencies=[ApiKeyDep])


@router.get("/v1/model")
async def model_info(service: ServiceDep) -> dict[str, Any]:
    """Classes, palette, input policy, backend, model id and version, and the service limits."""
    return service.model_info()
