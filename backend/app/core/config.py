"""All settings, read from the environment (and an optional ``.env``) in one place."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Platform settings. Every field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    data_dir: Path = Path("data")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means a SQLite file under DATA_DIR."
    )
    artifact_dir: Path | None = Field(None, description="Defaults to DATA_DIR/artifacts.")
    db_pool_size: int = Field(5, ge=1, le=100)
    db_max_overflow: int = Field(10, ge=0, le=100)

    redis_url: str = "redis://localhost:6379/0"
    dispatch_backend: Literal["auto", "celery", "rq", "inline"] = "auto"
    inline_workers: int = Field(2, ge=1, le=64, description="Threads running inline jobs.")

    max_attempts: int = Field(3, ge=1, le=10)
    retry_backoff_base: float = Field(2.0, gt=0, le=600)
    retry_backoff_max: float = Field(300.0, gt=0, le=3600)
    progress_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between two progress writes of one job."
    )

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'reports.db').resolve()}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        return self

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
