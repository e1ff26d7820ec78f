"""The report API under load, as its clients use it (Locust).

Two kinds of user, by weight (``SubmitterUser.weight`` : ``ReaderUser.weight``):

``SubmitterUser``  enqueues a report — mostly ``dummy`` with ``processing_time: 0`` so that
                   the API and the ledger, not the renderers, are measured; now and then a
                   small pdf, excel or analysis report — a quarter of them with an
                   ``Idempotency-Key`` (some of those sent twice: the replay must answer
                   the same job), then polls its job and downloads the report once the job
                   has completed.
``ReaderUser``     lists its jobs and reads the queue status (an operator route).

Every request is named by its route template (``/api/v1/reports/jobs/[id]``), so Locust's
statistics group per route. The key comes from ``LOADTEST_API_KEY`` (an operator key: the
queue status needs one); the host from ``--host``. ``make loadtest`` runs this file through
``loadtests/run.py``; by hand::

    LOADTEST_API_KEY=... .venv/bin/locust -f loadtests/locustfile.py --headless \\
        --host http://127.0.0.1:8000 --users 30 --spawn-rate 30 --run-time 30s
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

API = "/api/v1/reports"
#: The request names: the app's route templates, ``{param}`` written ``[param]``.
DUMMY = f"{API}/dummy"
HEAVY = f"{API}/heavy"
JOB = f"{API}/jobs/[id]"
DOWNLOAD = f"{API}/jobs/[id]/download"
JOBS = f"{API}/jobs"
QUEUES = f"{API}/queues/status"

#: What a submitter enqueues: (weight, route, body). The heavy reports stay small and rare:
#: one Celery process renders them, and the run measures the API.
MIX: list[tuple[int, str, dict[str, Any]]] = [
    (90, DUMMY, {"processing_time": 0}),
    (4, HEAVY, {"report_type": "pdf", "pages": 2}),
    (3, HEAVY, {"report_type": "excel", "rows": 200, "sheets": 1}),
    (3, HEAVY, {"report_type": "analysis", "rows": 100}),
]
#: Share of enqueues carrying an Idempotency-Key, and of those sent a second time.
IDEMPOTENT_SHARE = 0.25
REPLAY_SHARE = 0.2
#: A submitter polls its job every POLL_SECONDS, at most MAX_POLLS times, then moves on.
POLL_SECONDS = float(os.environ.get("LOADTEST_POLL_SECONDS", "0.1"))
MAX_POLLS = 40
#: Think time between two tasks of a user, seconds (small: the run looks for capacity).
THINK_SECONDS = float(os.environ.get("LOADTEST_THINK_SECONDS", "0.05"))
TERMINAL = {"completed", "failed", "cancelled"}


def api_key() -> str:
    key = os.environ.get("LOADTEST_API_KEY", "")
    if not key:
        raise RuntimeError("set LOADTEST_API_KEY to an operator API key")
    return key


class ApiUser(FastHttpUser):
    """Shared by both users: the key on every request."""

    abstract = True
    wait_time = between(0, THINK_SECONDS)

    def on_start(self) -> None:
        self.headers = {"X-API-Key": api_key()}

    def get(self, path: str, name: str, **kwargs: Any) -> Any:
        return self.client.get(path, name=name, headers=self.headers, **kwargs)


class SubmitterUser(ApiUser):
    """Enqueue, poll until done, download."""

    weight = 3

    @task
    def submit(self) -> None:
        weights = [weight for weight, _, _ in MIX]
        _, route, body = random.choices(MIX, weights)[0]
        headers = dict(self.headers)
        keyed = random.random() < IDEMPOTENT_SHARE
        if keyed:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        job_id = self.enqueue(route, body, headers)
        if job_id is None:
            return
        if keyed and random.random() < REPLAY_SHARE:
            again = self.enqueue(route, body, headers)
            if again is not None and again != job_id:
                self.environment.events.request.fire(
                    request_type="POST",
                    name=f"{route} (replay answered another job)",
                    response_time=0,
                    response_length=0,
                    exception=AssertionError(f"{job_id} then {again}"),
                    context={},
                )
        self.follow(job_id)

    def enqueue(self, route: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self.client.post(
            route, json=body, headers=headers, name=route, catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
                return None
            job_id: str = answer.json()["id"]
            return job_id

    def follow(self, job_id: str) -> None:
        """Poll the job until it ends (or MAX_POLLS), then download it if it completed."""
        for _ in range(MAX_POLLS):
            time.sleep(POLL_SECONDS)  # gevent's sleep: Locust patches time
            answer = self.get(f"{API}/jobs/{job_id}", JOB)
            if answer.status_code != 200:
                return
            status = answer.json()["status"]
            if status in TERMINAL:
                if status == "completed":
                    self.get(f"{API}/jobs/{job_id}/download", DOWNLOAD)
                return


class ReaderUser(ApiUser):
    """A dashboard: the latest jobs, now and then the queues."""

    weight = 1

    @task(3)
    def list_jobs(self) -> None:
        self.get(f"{JOBS}?limit=20", JOBS)

    @task(1)
    def queue_status(self) -> None:
        self.get(QUEUES, QUEUES)
