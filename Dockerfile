# One image for every process of the platform: API, Celery workers, Beat, Flower, RQ worker,
# migrations. The compose files pick the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    DATA_DIR=/data \
    LOG_FORMAT=json \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

WORKDIR /app
RUN useradd --create-home --uid 10001 app

# Dependencies first (cached while only the code changes), then the code, installed
# editable so that alembic.ini and alembic/ sit where the package expects them.
COPY pyproject.toml README.md ./
COPY backend ./backend
RUN pip install -e .
COPY alembic.ini manage.py celery_manager.py ./
COPY alembic ./alembic

RUN mkdir -p /data /tmp/prometheus && chown -R app:app /data /tmp/prometheus
USER app

# 8000: the API (GET /metrics, /health/*); 9808: a worker's metrics; 5555: Flower.
EXPOSE 8000 9808 5555
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "manage.py", "healthcheck"]
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
