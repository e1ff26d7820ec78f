"""The Prometheus configuration, alert rules and dashboards, proven against a real Prometheus.

``promtool`` checks the shipped config and rules and runs the rule unit tests. Then a
Prometheus on loopback scrapes a live API (behind its metrics token) and a live Celery
worker after real jobs, and every dashboard query and every alert expression is evaluated
against it: each must return data, so a misspelled metric or label cannot hide.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from app.bootstrap import celery_app
from app.db.migrations import upgrade
from app.services.housekeeping import HEALTH

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, free_port
from tests.integration.ops import start_api, stop_api, wait_until
from tests.integration.workers import (
    ROOT,
    WorkerProcess,
    base_env,
    celery_worker,
    delete_redis_keys,
    settings_from,
    worker_env,
)

pytestmark = pytest.mark.timeout(180)

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
TOKEN = "scrape-" + secrets.token_hex(8)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: run `bash scripts/ensure-services.sh` (installs prometheus)"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_promtool_checks_config_and_rules() -> None:
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in _yaml(PROMETHEUS / "alerts_test.yml")["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}


# --------------------------------------------------------------------------- live


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every shipped dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m")
                queries.append((panel["title"], expr))
    return queries


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ledger of its own: the Beat slots used here are free whatever ran before."""
    prefix = f"p{secrets.token_hex(3)}-"
    data = tmp_path_factory.mktemp("prometheus-stack")
    with fresh_pg_database("prometheus") as url:
        upgrade(url)
        yield worker_env(
            base_env(url, data, prefix),
            METRICS_PORT=str(free_port()),
            MAX_ATTEMPTS="2",
            METRICS_TOKEN=TOKEN,
            INLINE_FALLBACK="false",
            CELERY_TRAFFIC_OVERRIDES='{"dummy": 0}',  # dummy jobs prefer RQ: it has no worker
        )
        delete_redis_keys(prefix)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    yield from celery_worker(env, log_dir, concurrency=1)


@pytest.fixture(scope="module")
def api(env: dict[str, str], worker: WorkerProcess, log_dir: Path) -> Iterator[LiveServer]:
    server = start_api({**env, "DISPATCH_BACKEND": "auto"}, log_dir / "prom-api.log")
    yield server
    stop_api(server)


def _run_jobs(api: LiveServer) -> None:
    with api.client() as http:
        posted = [http.post("/api/v1/reports/dummy") for _ in range(4)]
        posted.append(http.post("/api/v1/reports/dummy?simulate_failures=1"))
        posted.append(http.post("/api/v1/reports/dummy?simulate_failures=5"))
        posted.append(http.post("/api/v1/reports/heavy?report_type=pdf&pages=1"))
        assert all(r.status_code == 200 for r in posted), [r.text for r in posted]
        for response in posted:
            job_id = response.json()["id"]
            wait_until(
                lambda job_id=job_id: (
                    http.get(f"/api/v1/reports/jobs/{job_id}").json()["status"]
                    in ("completed", "failed")
                ),
                40,
                interval=0.1,
            )


@pytest.fixture(scope="module")
def prometheus(
    env: dict[str, str],
    api: LiveServer,
    worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    _run_jobs(api)
    settings = settings_from(env, celery_traffic_overrides={"dummy": 0})
    celery_app(settings).send_task(HEALTH)
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: run `bash scripts/ensure-services.sh`"
    root = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "report-jobs-api",
                "authorization": {"credentials": TOKEN},
                "static_configs": [{"targets": [api.url.removeprefix("http://")]}],
            },
            {
                "job_name": "report-jobs-workers",
                "static_configs": [{"targets": [f"127.0.0.1:{env['METRICS_PORT']}"]}],
            },
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 30, interval=0.2)
        wait_until(lambda: _query(url, "count(up == 1)") == [2.0], 30, interval=0.2)
        wait_until(lambda: bool(_query(url, "report_component_up")), 30, interval=0.2)
        time.sleep(3)  # a few more scrapes, so that rate() has two samples in its window
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _query(url: str, expr: str) -> list[float]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    return [float(r["value"][1]) for r in body["data"]["result"]]


def test_metrics_endpoint_wants_the_token(api: LiveServer) -> None:
    assert httpx.get(f"{api.url}/metrics", timeout=5).status_code == 401
    wrong = httpx.get(f"{api.url}/metrics", headers={"Authorization": "Bearer no"}, timeout=5)
    assert wrong.status_code == 401
    right = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert right.status_code == 200


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_dashboard_query_returns_data(prometheus: str, title: str, expr: str) -> None:
    assert _query(prometheus, expr), f"{title}: no data for {expr}"


_THRESHOLD = re.compile(r"\s*(>|<|==|!=|>=|<=)\s*[0-9.]+\s*$")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_on_live_data(prometheus: str, rule: dict[str, Any]) -> None:
    _query(prometheus, rule["expr"])  # the whole rule is valid PromQL
    measured = _THRESHOLD.sub("", rule["expr"])
    assert measured != rule["expr"], "alerts compare a measure with a threshold"
    assert _query(prometheus, measured), f"{rule['alert']}: no data for {measured}"


def test_prometheus_evaluates_the_shipped_rules(prometheus: str) -> None:
    def evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        fresh = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        return len(rules) == len(alert_rules()) and fresh

    wait_until(evaluated, 15, interval=0.2)
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert all(rule["health"] == "ok" for g in groups for rule in g["rules"])
    fallbacks = _query(prometheus, 'sum(report_dispatch_fallbacks_total{from="rq",to="celery"})')
    assert fallbacks == [6.0]  # every dummy job preferred RQ and went to Celery
