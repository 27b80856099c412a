"""FastAPI dependencies, written as ``Annotated`` aliases so a handler's signature says what it needs."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from segflow.serving.service import Service

API_KEY_HEADER = "X-API-Key"
MISSING_KEY = f"missing or wrong API key: send it as header '{API_KEY_HEADER}' or 'Authorization: Bearer'"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The server's API key.")
bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")


def get_service(request: Request) -> Service:
    """The :class:`Service` of the app that received ``request``."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_api_key(
    service: ServiceDep,
    header_key: Annotated[str | None, Security(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """Refuses the request with 401 unless the service has no key or the right one is presented.

    The key is read from ``X-API-Key`` or ``Authorization: Bearer <key>``. The comparison takes
    the same time whatever the presented key (``hmac.compare_digest``), so the key cannot be
    guessed byte by byte from response times.
    """
    expected = service.settings.api_key
    if expected is None:
        return
    presented = header_key or (credentials.credentials if credentials is not None else None)
    if presented is None or not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=MISSING_KEY,
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKeyDep = Depends(require_api_key)
