"""FastAPI dependencies: the services' dependencies and the caller, from the app state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from app.api.ratelimit import RateLimiter
from app.bootstrap import Container
from app.domain.auth import Principal, Role
from app.domain.errors import RateLimited
from app.services.auth import authenticate, require_operator
from app.services.deps import Deps

#: The caller of every request while authentication is off (development only).
DEVELOPER = Principal(owner="development", role=Role.OPERATOR, key_id="development")

_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="`python manage.py api-key create --owner NAME --role submitter|operator`",
)


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_deps(request: Request) -> Deps:
    return get_container(request).deps


def get_principal(request: Request, key: Annotated[str | None, Security(_api_key)]) -> Principal:
    container = get_container(request)
    if not container.settings.auth_required:
        return DEVELOPER
    return authenticate(container.api_keys, key)


def get_operator(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    return require_operator(principal)


def get_rate_limited_caller(
    request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> Principal:
    """The caller of an enqueue route, once its key's token bucket allows one more job."""
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.hit(principal.key_id)
    if wait is not None:
        raise RateLimited(wait)
    return principal


ServiceDeps = Annotated[Deps, Depends(get_deps)]
Caller = Annotated[Principal, Depends(get_principal)]
Operator = Annotated[Principal, Depends(get_operator)]
RateLimitedCaller = Annotated[Principal, Depends(get_rate_limited_caller)]
