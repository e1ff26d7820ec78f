"""Three API replicas behind HAProxy under steady traffic (tests/e2e/cluster.py).

Five clients drive a mix through the balancer — enqueues of every report type (half with an
``Idempotency-Key``), polling, listing, queue status, downloads checked against their
sha256 — while the test scales the ``reports`` Celery workers from one process to three and
back (one of them losing a render to SIGKILL), restarts every replica in turn (three more
clients enqueueing every 50 ms meanwhile), and
sends one idempotency key to two replicas at once. At the end: no client saw a 5xx or a
connection error, every accepted job completed exactly once (one ledger row per accepted
answer, one object per job in the bucket, attempts only where a render was cut), and one
caller's rate limit held across the replicas.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from app.domain.states import JobStatus

from tests.e2e.cluster import DRAIN_SECONDS, Cluster, cluster
from tests.e2e.server import create_key
from tests.integration.ops import all_jobs, ledger
from tests.integration.s3 import s3_client
from tests.integration.workers import parent_pid, wait_until

pytestmark = pytest.mark.timeout(420)

#: Requests each caller may make per day (the budget the burst at the end exhausts); each
#: mix client stays below it: at most one request every PACE seconds for about a minute, or
#: every SURGE_PACE seconds for the restarts' few seconds.
RATE_LIMIT = 1500
PACE = 0.12
SURGE_PACE = 0.05
#: What the enqueuers send, in turn: every report type, kept small, and a dummy that lasts
#: long enough to be caught running by a SIGKILL.
MIX: list[tuple[str, dict[str, Any]]] = [
    ("dummy", {"processing_time": 1.5}),
    ("heavy", {"report_type": "pdf", "pages": 4}),
    ("heavy", {"report_type": "excel", "rows": 2000, "sheets": 2}),
    ("heavy", {"report_type": "analysis", "rows": 500}),
]


@dataclass
class Traffic:
    """The clients' mix, run in threads until :meth:`stop`; every answer is recorded."""

    url: str
    outcomes: list[tuple[str, int | None, str]] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> route
    downloaded: dict[str, str] = field(default_factory=dict)  # job id -> sha256
    done: threading.Event = field(default_factory=threading.Event)
    surge: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, client: httpx.Client, route: str, method: str, path: str, **kw: Any) -> Any:
        try:
            response = client.request(method, path, **kw)
        except httpx.TransportError as exc:
            with self.lock:
                self.outcomes.append((route, None, repr(exc)))
            return None
        detail = response.text[:300] if response.status_code >= 500 else ""
        with self.lock:
            self.outcomes.append((route, response.status_code, detail))
        return response

    def enqueuer(self, key: str, first: int) -> None:
        mine: list[str] = []
        with self.client(key) as client:
            n = first
            while not self.done.is_set():
                route, body = MIX[n % len(MIX)]
                headers = {"Idempotency-Key": uuid.uuid4().hex} if n % 2 else {}
                n += 1
                answer = self.call(
                    client, f"POST {route}", "POST", f"/api/v1/reports/{route}",
                    json=body, headers=headers,
                )  # fmt: skip
                job_id = self.accept(answer, route)
                if job_id is not None:
                    mine.append(job_id)
                for job_id in list(mine[-3:]):
                    time.sleep(PACE)
                    found = self.call(client, "GET job", "GET", f"/api/v1/reports/jobs/{job_id}")
                    if found is not None and found.json().get("status") == "completed":
                        mine.remove(job_id)
                        self.download(client, job_id)
                time.sleep(PACE)

    def writer(self, key: str) -> None:
        """Enqueues every SURGE_PACE seconds while :attr:`surge` is set (around the
        restarts): the requests that meet a replica between its SIGTERM and the balancer's
        notice."""
        with self.client(key) as client:
            while not self.done.is_set():
                if not self.surge.wait(0.2):
                    continue
                answer = self.call(client, "POST dummy", "POST", "/api/v1/reports/dummy", json={})
                self.accept(answer, "dummy")
                time.sleep(SURGE_PACE)

    def accept(self, answer: httpx.Response | None, route: str) -> str | None:
        """The id of the job an enqueue's ``answer`` accepted (recorded), else None."""
        if answer is None or answer.status_code != 200:
            return None
        job_id: str = answer.json()["id"]
        with self.lock:
            self.accepted[job_id] = route
        return job_id

    def download(self, client: httpx.Client, job_id: str) -> None:
        path = f"/api/v1/reports/jobs/{job_id}/download"
        answer = self.call(client, "GET download", "GET", path)
        if answer is not None and answer.status_code == 200:
            with self.lock:
                self.downloaded[job_id] = hashlib.sha256(answer.content).hexdigest()

    def reader(self, key: str) -> None:
        with self.client(key) as client:
            while not self.done.is_set():
                self.call(client, "GET jobs", "GET", "/api/v1/reports/jobs", params={"limit": 20})
                time.sleep(PACE)
                self.call(client, "GET queues", "GET", "/api/v1/reports/queues/status")
                time.sleep(PACE)

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"X-API-Key": key}, timeout=30, follow_redirects=True
        )

    def failures(self) -> list[tuple[str, int | None, str]]:
        return [o for o in self.outcomes if o[1] is None or o[1] >= 500]


def keys(stack: Cluster, roles: list[str]) -> list[str]:
    """One new API key per role, made at once (each is a `manage.py` process)."""
    with ThreadPoolExecutor(len(roles)) as pool:
        futures = [
            pool.submit(create_key, stack.env, f"client-{n}", role) for n, role in enumerate(roles)
        ]
        return [f.result() for f in futures]


def under(pid: int, roots: set[int]) -> bool:
    """Whether ``pid`` is one of ``roots`` or below one of them."""
    while pid > 1:
        if pid in roots:
            return True
        pid = parent_pid(pid)
    return False


def kill_a_render(stack: Cluster, key: str, workers: list[str]) -> tuple[str, set[str]]:
    """Enqueue four 6 s renders, SIGKILL the pool process running one of them on one of
    ``workers``; the killed job's id and the four ids (a quarter of the jobs go to RQ: all
    four, 1 in 256)."""
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=30) as client:
        long = {
            client.post("/api/v1/reports/dummy", json={"processing_time": 6}).json()["id"]
            for _ in range(4)
        }
    roots = {stack.workers[name].process.pid for name in workers}  # type: ignore[union-attr]
    victim: list[str] = []

    def running_there() -> bool:
        with ledger(stack.database_url) as repo:
            for job_id in long:
                job = repo.get(uuid.UUID(job_id))
                if job is not None and job.status is JobStatus.RUNNING and job.worker:
                    pid = int(job.worker.rsplit(":", 1)[1])
                    if under(pid, roots):
                        os.kill(pid, signal.SIGKILL)
                        victim.append(job_id)
                        return True
        return False

    wait_until(running_there, 60)
    return victim[0], long


def same_key_on_two_replicas(stack: Cluster, key: str) -> list[httpx.Response]:
    idem = uuid.uuid4().hex
    barrier = threading.Barrier(2)

    def send(n: int) -> httpx.Response:
        with httpx.Client(base_url=stack.replicas[n].url, timeout=30) as client:
            barrier.wait()
            return client.post(
                "/api/v1/reports/heavy",
                json={"report_type": "pdf", "pages": 2},
                headers={"X-API-Key": key, "Idempotency-Key": idem},
            )

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(send, [0, 1]))


def burst(stack: Cluster, key: str, requests: int) -> Counter[int]:
    """``requests`` reads by one caller, straight to the replicas in turn, 6 at a time."""

    def one(n: int) -> int:
        replica = stack.replicas[n % len(stack.replicas)]
        return httpx.get(
            f"{replica.url}/api/v1/reports/jobs",
            params={"limit": 1},
            headers={"X-API-Key": key},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(6) as pool:
        return Counter(pool.map(one, range(requests)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        tmp_path_factory.mktemp("replicas"),
        RATE_LIMIT_REQUESTS=str(RATE_LIMIT),
        RATE_LIMIT_WINDOW="86400",  # one token back a minute: none during the burst
        CELERY_TRAFFIC_PERCENT="75",
        MAX_ATTEMPTS="3",
    ) as running:
        yield running


def test_a_console_session_is_valid_on_every_replica_and_clients_claim_nothing(
    stack: Cluster,
) -> None:
    """Signed in through one replica, known to the others, signed out everywhere at once;
    the balancer, not the client, tells the replicas which scheme the client spoke."""
    key = stack.api_key
    first, *others = stack.replicas
    with httpx.Client(base_url=first.url, timeout=10) as browser:
        signed_in = browser.post("/console/sign-in", data={"api_key": key})
        assert signed_in.status_code == 303, signed_in.text
        cookie = browser.cookies["console_session"]
    for replica in others:
        with httpx.Client(base_url=replica.url, timeout=10) as elsewhere:
            elsewhere.cookies.set("console_session", cookie)
            assert elsewhere.get("/console/jobs").status_code == 200
    with httpx.Client(base_url=others[-1].url, timeout=10) as last:
        last.cookies.set("console_session", cookie)
        page = last.get("/console/jobs").text
        assert last.post("/console/sign-out", data={"csrf": csrf_of(page)}).status_code == 303
    with httpx.Client(base_url=first.url, timeout=10) as again:
        again.cookies.set("console_session", cookie)
        assert again.get("/console/jobs").status_code == 303  # back to the sign-in page

    spoofed = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    through = httpx.post(
        f"{stack.url}/console/sign-in", data={"api_key": key}, headers=spoofed, timeout=10
    )
    direct = httpx.post(
        f"{first.url}/console/sign-in", data={"api_key": key}, headers=spoofed, timeout=10
    )
    # The balancer's address is trusted: what it forwards is believed, so it must set the
    # scheme itself (plain HTTP here) rather than pass the client's claim on.
    assert "secure" not in through.headers["set-cookie"].lower()
    assert "secure" in direct.headers["set-cookie"].lower()


def test_the_balancers_own_health_says_whether_any_replica_is_in_rotation(
    stack: Cluster,
) -> None:
    """The compose healthcheck's URL: answered by HAProxy itself, 503 once no replica is
    in rotation, 200 again when one is back."""
    health = f"{stack.url}/balancer/health"
    assert httpx.get(health, timeout=5).status_code == 200
    names = [f"api{n}" for n in range(len(stack.replicas))]
    try:
        for name in names:
            stack.balancer.ask(f"disable server replicas/{name}")
        assert httpx.get(health, timeout=5).status_code == 503
    finally:
        for name in names:
            stack.balancer.ask(f"enable server replicas/{name}")
        for name in names:
            stack.balancer.wait(name, "UP")
    assert httpx.get(health, timeout=5).status_code == 200


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_three_replicas_restarted_and_workers_scaled_under_traffic(stack: Cluster) -> None:
    submitters = keys(stack, ["submitter"] * 7 + ["operator"] * 2)
    traffic = Traffic(stack.url)
    clients = (
        [threading.Thread(target=traffic.enqueuer, args=(submitters[n], n)) for n in range(3)]
        + [threading.Thread(target=traffic.writer, args=(key,)) for key in submitters[4:7]]
        + [threading.Thread(target=traffic.reader, args=(key,)) for key in submitters[7:]]
    )
    for thread in clients:
        thread.start()
    try:
        time.sleep(3)
        # 1. The reports workers scaled from one process to three, one render killed, back
        # to one (the two extra ones stopped warm); before the restarts' surge of enqueues,
        # which the long renders would otherwise wait behind.
        stack.celery_worker("celery-reports-2", "reports")
        stack.celery_worker("celery-reports-3", "reports")
        killed, long = kill_a_render(stack, submitters[3], ["celery-reports-2", "celery-reports-3"])
        time.sleep(2)
        stack.stop_worker("celery-reports-2")
        stack.stop_worker("celery-reports-3")
        # 2. Every replica restarted in turn; each one drains, stops and starts again.
        traffic.surge.set()
        stopped = [stack.restart_replica(n) for n in range(len(stack.replicas))]
        traffic.surge.clear()
        # 3. One idempotency key through two replicas at once.
        twins = same_key_on_two_replicas(stack, submitters[3])
        time.sleep(2)
    finally:
        traffic.done.set()
        for thread in clients:
            thread.join(timeout=60)

    # Each replica left the rotation while it still served (its drain), and exited cleanly.
    for restart in stopped:
        assert restart.running_when_left, stopped
        assert restart.left_rotation < DRAIN_SECONDS, stopped
        assert restart.returncode == 0, stopped
        assert restart.exited < 15, stopped
    assert traffic.failures() == [], traffic.failures()[:10]
    routes = Counter(route for route, _, _ in traffic.outcomes)
    assert {"POST dummy", "POST heavy", "GET job", "GET download", "GET jobs", "GET queues"} <= set(
        routes
    ), routes
    assert [t.status_code for t in twins] == [200, 200], [t.text for t in twins]
    twin = twins[0].json()["id"]
    assert twins[1].json()["id"] == twin
    assert sorted(t.headers.get("idempotent-replayed", "false") for t in twins) == [
        "false",
        "true",
    ]

    # Every accepted job completes, once.
    expected = set(traffic.accepted) | long | {twin}
    with ledger(stack.database_url) as repo:

        def finished() -> bool:
            return all(job.status.terminal for job in all_jobs(repo))

        wait_until(finished, 120, interval=0.5)
        jobs = {str(job.id): job for job in all_jobs(repo)}
    assert set(jobs) == expected
    assert {job.status for job in jobs.values()} == {JobStatus.COMPLETED}
    assert {job.backend.value for job in jobs.values() if job.backend} == {"celery", "rq"}
    cut = {job_id for job_id, job in jobs.items() if job.attempts > 1}
    assert killed in cut
    assert len(cut) <= 3, cut  # the killed render and at most one per worker stopped warm
    for job in jobs.values():
        outcomes = [attempt.outcome for attempt in job.attempt_log]
        assert len(outcomes) == job.attempts, outcomes
        assert outcomes[-1] == "completed", outcomes
    pages = s3_client(stack.env["S3_ENDPOINT_URL"]).get_paginator("list_objects_v2")
    objects = [
        item["Key"]
        for page in pages.paginate(Bucket=stack.env["S3_BUCKET"])
        for item in page.get("Contents", [])
    ]
    assert len(objects) == len(jobs)
    for job_id, digest in traffic.downloaded.items():
        artifact = jobs[job_id].artifact
        assert artifact is not None
        assert artifact.sha256 == digest

    # One caller's budget is one budget, whichever replica counts it.
    answers = burst(stack, submitters[3], RATE_LIMIT + 60)
    # 6 went to the long renders and the twins, about one a minute refilled since.
    assert RATE_LIMIT - 6 <= answers[200] <= RATE_LIMIT, answers
    assert answers[200] + answers[429] == RATE_LIMIT + 60, answers
    print(
        f"{len(traffic.outcomes)} requests ({dict(routes)}), {len(jobs)} jobs "
        f"({Counter(j.backend.value for j in jobs.values() if j.backend)}), "
        f"restarts (out of rotation, exited) "
        f"{[(round(r.left_rotation, 2), round(r.exited, 1)) for r in stopped]} s, "
        f"burst {dict(answers)}"
    )
