"""FastAPI dependencies: the services' dependencies and the caller, from the app state.

Every dependency here is ``async`` and does no blocking I/O on the usual path, so FastAPI
runs it on the event loop instead of sending it to the thread pool: a request's one hop to
the pool is its route's blocking work. A key that is not in the :class:`ApiKeyCache` (the
first request of a key in ``AUTH_CACHE_SECONDS``, or every request when the cache is off)
costs one more hop, for the ledger lookup. The rate limit is one Redis round trip made
from the event loop, on every route that knows its caller (the console's pages too, see
:mod:`app.api.console_web`); probes and ``/metrics`` know none and are never limited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from app.bootstrap import Container
from app.domain.auth import Principal, Role
from app.domain.errors import RateLimited
from app.services.auth import ApiKeyCache, authenticate, require_operator
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


async def get_deps(request: Request) -> Deps:
    return get_container(request).deps


async def spend(request: Request, bucket: str) -> None:
    """Take one token of ``bucket`` (a caller's key id, or an address).

    Raises:
        RateLimited: the bucket is empty (429 with ``Retry-After``).
    """
    wait = await get_container(request).rate_limiter.hit_async(bucket)
    if wait is not None:
        raise RateLimited(wait)


async def get_principal(
    request: Request, key: Annotated[str | None, Security(_api_key)]
) -> Principal:
    """The caller, once its key's token bucket allows one more request."""
    principal = await _authenticate(request, key)
    await spend(request, principal.key_id)
    return principal


async def _authenticate(request: Request, key: str | None) -> Principal:
    """The caller: from the key cache on the event loop, else from the ledger (one hop)."""
    container = get_container(request)
    if not container.settings.auth_required:
        return DEVELOPER
    cache: ApiKeyCache = request.app.state.key_cache
    cached = cache.lookup(key)  # refuses a missing, malformed or mismatched key at once
    if cached is not None:
        return cached
    return await run_in_threadpool(authenticate, container.api_keys, key, cache=cache)


async def get_operator(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    return require_operator(principal)


ServiceDeps = Annotated[Deps, Depends(get_deps)]
Caller = Annotated[Principal, Depends(get_principal)]
Operator = Annotated[Principal, Depends(get_operator)]
