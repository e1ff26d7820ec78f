"""FastAPI dependencies: the services' dependencies live on the app state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.bootstrap import Container
from app.services.deps import Deps


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_deps(request: Request) -> Deps:
    return get_container(request).deps


ServiceDeps = Annotated[Deps, Depends(get_deps)]
