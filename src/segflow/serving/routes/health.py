"""``GET /healthz`` (the process answers) and ``GET /readyz`` (the model is loaded and warm).

Both are open without the API key so that load balancers and orchestrators can probe them.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from segflow.serving.deps import ServiceDep
from segflow.serving.service import RETRY_AFTER_S

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: 200 as long as the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Model still loading or warming up."}})
async def readyz(service: ServiceDep) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up and its runner thread is alive."""
    if not service.ready:
        return JSONResponse(
            {"status": "not ready", "detail": "the model is loading or warming up"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return JSONResponse({"status": "ready", "model_id": service.model_id})
