"""Reports in an S3-compatible bucket, on a real server (moto's), with no shared disk.

The API process, the Celery worker, the RQ worker and each enqueuing container have a
``DATA_DIR`` of their own: a report rendered anywhere is downloaded through the API from
the bucket. Every platform process reaches the storage through a :class:`Gate` that a
test closes (the storage stops) or slows down (an upload is caught halfway); the test
itself looks at the bucket directly.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from app import bootstrap
from app.domain.auth import Role
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import parse_params
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.auth import create_api_key
from app.services.cancel import cancel_job
from app.services.enqueue import enqueue_report
from app.services.housekeeping import cleanup_expired
from app.services.postprocess import postprocess_report
from app.services.run_report import run_report
from pypdf import PdfReader

from tests.e2e.server import LiveServer, free_port, launch, stop
from tests.integration.s3 import (
    Gate,
    MotoServer,
    new_bucket,
    object_keys,
    open_uploads,
    read_object,
    s3_client,
    storage_env,
)
from tests.integration.test_contract import SCENARIO, reference_sha256
from tests.integration.workers import (
    CallbackReceiver,
    WorkerProcess,
    celery_worker,
    own_ledger,
    rq_worker,
    run_cli,
    settings_from,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

API = "/api/v1/reports"
BIG_EXCEL = (ReportType.EXCEL, {"rows": 20_000, "sheets": 1, "seed": 9})  # ~1 MB: 17 parts


@dataclass
class Stack:
    """One ledger, one bucket behind a gate, and processes that share no disk."""

    env: dict[str, str]
    root: Path
    gate: Gate
    s3: Any
    bucket: str
    api: LiveServer
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    built: dict[str, bootstrap.Container] = field(default_factory=dict)

    def container(self, backend: str) -> bootstrap.Container:
        """An enqueuing container forced to ``backend``, with a DATA_DIR of its own."""
        if backend not in self.built:
            self.built[backend] = bootstrap.build(
                settings_from(
                    self.env,
                    data_dir=str(self.root / f"enqueue-{backend}"),
                    dispatch_backend=backend,
                )
            )
        return self.built[backend]

    def keys(self, job: ReportJob) -> list[str]:
        return object_keys(self.s3, self.bucket, f"{job.id}/")

    def uploads(self, job: ReportJob) -> list[str]:
        return open_uploads(self.s3, self.bucket, f"{job.id}/")


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, log_dir: Path) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="s3-stack-"))
    s3 = s3_client(moto_server.url)
    bucket = new_bucket(s3)
    gate = Gate(moto_server.port)
    with pytest.MonkeyPatch.context() as patch, own_ledger(root, "s3") as ledger:
        env = {**ledger, **storage_env(gate.url, bucket)}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, env[name])  # this process's containers: boto3's credential chain
        api_env = {
            **env,
            "DATA_DIR": str(root / "api"),
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "DISPATCH_BACKEND": "celery",
        }
        (root / "api").mkdir()
        api = launch(api_env, root / "api.log", "--grace", "1")
        workers = {
            "celery": celery_worker({**env, "DATA_DIR": str(root / "celery")}, log_dir),
            "rq": rq_worker({**env, "DATA_DIR": str(root / "rq")}, log_dir),
        }
        built = Stack(env, root, gate, s3, bucket, api)
        try:
            built.workers = {name: next(gen) for name, gen in workers.items()}
            yield built
        finally:
            for gen in workers.values():
                gen.close()
            for container in built.built.values():
                container.close()
            stop(api)
            gate.close()
    shutil.rmtree(root, ignore_errors=True)


def download(stack: Stack, job: ReportJob, **headers: str) -> httpx.Response:
    with stack.api.client() as client:
        return client.get(f"{API}/jobs/{job.id}/download", headers=headers)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("backend", ["inline", "celery", "rq"])
def test_contract_on_s3_every_report_downloads_through_the_api(
    stack: Stack, backend: str, tmp_path: Path, receiver: CallbackReceiver
) -> None:
    deps = stack.container(backend).deps
    scenario = [*SCENARIO, BIG_EXCEL]
    jobs = [
        enqueue_report(deps=deps, report_type=t, params=p, callback_url=receiver.url).job
        for t, p in scenario
    ]
    retried = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"simulate_failures": 2}
    ).job
    assert {j.backend.value for j in [*jobs, retried] if j.backend} == {backend}

    for job, (report_type, params) in zip(jobs, scenario, strict=True):
        done = wait_for(deps.repo, job.id, lambda j: j.notification is not None, timeout=60)
        assert (done.status, done.attempts, done.progress, done.error) == (
            JobStatus.COMPLETED,
            1,
            100,
            None,
        )
        artifact, document = done.artifact, done.document
        assert artifact is not None
        assert document is not None
        assert artifact.sha256 == reference_sha256(tmp_path, report_type, params)
        assert artifact.key == f"{job.id}/1/{artifact.filename}"
        assert stack.keys(job) == sorted([artifact.key, document.key])
        assert stack.uploads(job) == []

        body = download(stack, done)
        assert body.status_code == 200, body.text
        assert sha256(body.content) == artifact.sha256
        assert body.headers["content-type"].startswith(artifact.content_type)
        assert f'filename="{artifact.filename}"' in body.headers["content-disposition"]
        if report_type is ReportType.PDF:
            assert len(PdfReader(io.BytesIO(body.content)).pages) == params["pages"]
        package = zipfile.ZipFile(io.BytesIO(read_object(stack.s3, stack.bucket, document.key)))
        assert package.read(artifact.filename) == body.content
        assert f'"sha256": "{artifact.sha256}"' in package.read("metadata.json").decode()
        [(_, sent, _)] = receiver.for_job(job.id)
        assert sent["job"]["artifact"]["sha256"] == artifact.sha256
        assert sha256(read_object(stack.s3, stack.bucket, document.key)) == document.sha256

    retried_done = wait_for(deps.repo, retried.id, timeout=60)
    assert (retried_done.status, retried_done.attempts) == (JobStatus.COMPLETED, 3)
    assert retried_done.artifact is not None
    assert retried_done.artifact.key.startswith(f"{retried.id}/3/")
    # No shared disk: nothing of a report stays on a process's own disk.
    local = [
        p for p in stack.root.rglob("*") if p.is_file() and any(str(j.id) in p.name for j in jobs)
    ]
    assert local == []


def test_head_and_ranges_through_the_api(stack: Stack) -> None:
    deps = stack.container("rq").deps
    job = enqueue_report(deps=deps, report_type=ReportType.PDF, params={"pages": 3}).job
    done = wait_for(deps.repo, job.id, timeout=60)
    assert done.artifact is not None
    whole = download(stack, done).content
    assert len(whole) == done.artifact.size_bytes
    with stack.api.client() as client:
        head = client.head(f"{API}/jobs/{job.id}/download")
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) == done.artifact.size_bytes
    assert head.headers["accept-ranges"] == "bytes"
    first = download(stack, done, Range="bytes=0-99")
    assert (first.status_code, first.content) == (206, whole[:100])
    assert first.content.startswith(b"%PDF-")
    assert first.headers["content-range"] == f"bytes 0-99/{len(whole)}"
    middle = download(stack, done, Range="bytes=1000-")
    assert (middle.status_code, middle.content) == (206, whole[1000:])
    tail = download(stack, done, Range="bytes=-50")
    assert (tail.status_code, tail.content) == (206, whole[-50:])
    past = download(stack, done, Range=f"bytes={len(whole)}-")
    assert past.status_code == 416


def test_presigned_redirect_serves_the_same_bytes_after_the_ownership_check(
    stack: Stack,
) -> None:
    deps = stack.container("celery").deps
    job = enqueue_report(
        deps=deps, report_type=ReportType.PDF, params={"pages": 2}, owner="alice"
    ).job
    done = wait_for(deps.repo, job.id, timeout=60)
    assert done.artifact is not None
    env = {**stack.api.env, "PORT": str(free_port()), "DOWNLOAD_REDIRECT": "true"}
    env["DOWNLOAD_URL_SECONDS"] = "30"
    # Clients reach the storage at another address than the API does (a public name).
    public = stack.gate.url.replace("127.0.0.1", "localhost")
    env["S3_PUBLIC_URL"] = public
    api = launch(env, stack.root / "api-redirect.log", "--grace", "1")
    try:
        keys = stack.container("celery").api_keys  # in-process: no CLI start-up per key
        alice = create_api_key(keys, owner="alice", role=Role.SUBMITTER, now=utcnow())[1]
        mallory = create_api_key(keys, owner="mallory", role=Role.SUBMITTER, now=utcnow())[1]
        with api.client(api_key=mallory) as client:
            assert client.get(f"{API}/jobs/{job.id}/download").status_code == 404
        with api.client(api_key=alice) as client:
            answer = client.get(f"{API}/jobs/{job.id}/download")
            assert answer.status_code == 307
            location = answer.headers["location"]
            assert location.startswith(f"{public}/")
            assert "X-Amz-Expires=30" in location
            followed = client.get(f"{API}/jobs/{job.id}/download", follow_redirects=True)
        assert followed.status_code == 200
        assert sha256(followed.content) == done.artifact.sha256
        assert len(PdfReader(io.BytesIO(followed.content)).pages) == 2
        assert httpx.get(location, timeout=10).content == followed.content  # no API key needed
    finally:
        stop(api)


def test_a_render_cancelled_during_its_upload_leaves_no_object_and_no_upload(
    stack: Stack,
) -> None:
    deps = stack.container("celery").deps
    stack.gate.delay = 0.05  # ~3 s for the ~1 MB report: the cancel lands halfway
    try:
        job = enqueue_report(deps=deps, report_type=BIG_EXCEL[0], params=BIG_EXCEL[1]).job
        deadline = time.monotonic() + 30
        while not stack.uploads(job):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
        cancel_job(deps=deps, job_id=job.id)
        final = wait_for(deps.repo, job.id, timeout=30)
        assert final.status is JobStatus.CANCELLED
        deadline = time.monotonic() + 10
        while stack.uploads(job) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stack.gate.delay = 0.0
    assert stack.uploads(job) == []
    assert stack.keys(job) == []


def test_storage_stopped_mid_upload_retries_the_attempt_and_shows_nothing_partial(
    stack: Stack, receiver: CallbackReceiver
) -> None:
    deps = stack.container("rq").deps
    stack.gate.delay = 0.05
    try:
        job = enqueue_report(
            deps=deps, report_type=BIG_EXCEL[0], params=BIG_EXCEL[1], callback_url=receiver.url
        ).job
        deadline = time.monotonic() + 30
        while not stack.uploads(job):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
        stack.gate.close()
        retrying = wait_for(deps.repo, job.id, lambda j: j.status is not JobStatus.RUNNING)
        assert retrying.status is JobStatus.RETRYING, retrying
        assert retrying.error is not None
        assert retrying.error.code == "STORAGE_UNAVAILABLE"
        assert stack.keys(job) == []  # the half-sent upload is no object
    finally:
        stack.gate.delay = 0.0
        stack.gate.open()
    done = wait_for(deps.repo, job.id, lambda j: j.notification is not None, timeout=60)
    assert (done.status, done.attempts, done.error) == (JobStatus.COMPLETED, 2, None)
    assert done.artifact is not None
    assert done.document is not None
    assert stack.keys(job) == sorted([done.artifact.key, done.document.key])
    assert done.artifact.key.startswith(f"{job.id}/2/")
    assert sha256(download(stack, done).content) == done.artifact.sha256


def test_storage_stopped_during_a_download_answers_503_storage_unavailable(
    stack: Stack,
) -> None:
    deps = stack.container("inline").deps
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 4}).job
    done = wait_for(deps.repo, job.id, timeout=30)
    assert done.artifact is not None
    assert download(stack, done).status_code == 200
    stack.gate.close()
    try:
        answer = download(stack, done)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "STORAGE_UNAVAILABLE"
        ready = httpx.get(f"{stack.api.url}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["components"]["storage"]["status"] == "down"
    finally:
        stack.gate.open()
    again = download(stack, done)
    assert (again.status_code, sha256(again.content)) == (200, done.artifact.sha256)
    assert httpx.get(f"{stack.api.url}/health/ready", timeout=10).status_code == 200


def test_retention_cleanup_deletes_objects_before_rows(stack: Stack) -> None:
    base = stack.container("inline").deps
    t0 = datetime(2020, 3, 10, 12, 0, tzinfo=UTC)
    then = replace(base, clock=lambda: t0 - timedelta(days=9))
    jobs = []
    for seed in range(2):
        job = ReportJob.new(
            report_type=ReportType.DUMMY,
            params=parse_params(ReportType.DUMMY, {"seed": seed}),
            max_attempts=3,
            now=t0 - timedelta(days=9),
        )
        base.repo.add(job)
        assert run_report(deps=then, job_id=job.id).kind == "completed"
        assert postprocess_report(deps=then, job_id=job.id).kind == "packaged"
        assert len(stack.keys(job)) == 2
        jobs.append(job)
    kit = stack.container("inline").housekeeping

    stack.gate.close()  # the objects cannot go: the rows stay, for the next run
    try:
        kept = cleanup_expired(deps=replace(base, clock=lambda: t0), kit=kit)
    finally:
        stack.gate.open()
    assert kept.result["kept"] == 2
    assert all(base.repo.get(job.id) is not None for job in jobs)

    outcome = cleanup_expired(deps=replace(base, clock=lambda: t0 + timedelta(hours=1)), kit=kit)
    assert outcome.result["deleted"] == 2
    assert outcome.result["files"] == 4
    assert all(base.repo.get(job.id) is None for job in jobs)
    assert all(stack.keys(job) == [] for job in jobs)


@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "serve"],
        ["manage.py", "rq-worker", "all"],
        ["celery_manager.py", "worker", "reports", "1"],
    ],
    ids=["api", "rq", "celery"],
)
def test_a_missing_bucket_stops_start_up_with_misconfigured(
    stack: Stack, command: list[str]
) -> None:
    env = {**stack.env, "S3_BUCKET": "no-such-bucket", "PORT": str(free_port())}
    result = run_cli(command, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MISCONFIGURED: S3_BUCKET 'no-such-bucket' does not exist" in result.stderr


def test_migrate_creates_the_missing_bucket_once(stack: Stack) -> None:
    """The compose stacks' one-shot start: schema, then the bucket the API will require."""
    bucket = f"made-{secrets.token_hex(3)}"
    env = {**stack.env, "S3_BUCKET": bucket}
    first = run_cli(["manage.py", "migrate", "--create-bucket"], env)
    again = run_cli(["manage.py", "migrate", "--create-bucket"], env)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert f"bucket {bucket} created" in first.stdout
    assert f"bucket {bucket} already there" in again.stdout
    stack.s3.head_bucket(Bucket=bucket)  # raises if it is not there


@pytest.mark.parametrize(
    "command",
    [["manage.py", "serve"], ["manage.py", "migrate", "--create-bucket"]],
    ids=["api", "create-bucket"],
)
def test_refused_credentials_stop_start_up_with_misconfigured(
    stack: Stack, log_dir: Path, command: list[str]
) -> None:
    """Only a missing bucket is created; refused credentials stop even ``--create-bucket``."""
    strict = MotoServer(log_dir / "moto-auth.log", auth=True).start()
    try:
        env = {**stack.env, **storage_env(strict.url, "reports"), "PORT": str(free_port())}
        result = run_cli(command, env)
    finally:
        strict.stop()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MISCONFIGURED: The storage refused the credentials" in result.stderr
    assert "created" not in result.stdout
