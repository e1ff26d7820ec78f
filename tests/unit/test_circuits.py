"""Circuit breakers made visible: names, the state listener, the gauge and counter, and the
per-host breaker of outbound callbacks against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from app.bootstrap import adapters
from app.core.circuit import CircuitBreaker, CircuitState
from app.core.config import Settings
from app.core.metrics import record_circuit
from app.domain.errors import CallbackFailed
from app.services.notify import notify_callback
from app.webhooks import HttpCallbackSender
from prometheus_client import REGISTRY

from tests.unit.fakes import MemoryRepository
from tests.unit.test_followups import deps_with, finished_job


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("report_circuit_state", {"circuit": name})


def opened(name: str) -> float | None:
    return REGISTRY.get_sample_value("report_circuit_opened_total", {"circuit": name})


def openings_since(name: str) -> Callable[[], float]:
    """Openings counted from now on: the registry is the process's, shared by every test."""
    before = opened(name) or 0.0
    return lambda: (opened(name) or 0.0) - before


# --------------------------------------------------------------------------- the breaker


def test_listener_hears_the_initial_state_then_every_change_in_order() -> None:
    clock = Clock()
    heard: list[tuple[str, CircuitState]] = []
    breaker = CircuitBreaker(
        failures=2,
        reset_after=10,
        clock=clock,
        name="broker.test",
        listener=lambda *e: heard.append(e),
    )
    assert breaker.name == "broker.test"
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    clock.now = 10.5  # time alone: nothing reported until someone looks
    assert breaker.refresh() is CircuitState.HALF_OPEN
    assert breaker.allow()  # the trial
    breaker.failure()
    clock.now = 21
    assert breaker.available()
    breaker.success()
    breaker.success()  # no change, no event
    assert heard == [
        ("broker.test", CircuitState.CLOSED),
        ("broker.test", CircuitState.OPEN),
        ("broker.test", CircuitState.HALF_OPEN),
        ("broker.test", CircuitState.OPEN),
        ("broker.test", CircuitState.HALF_OPEN),
        ("broker.test", CircuitState.CLOSED),
    ]


def test_gauge_reads_0_1_2_and_counter_counts_each_opening() -> None:
    clock = Clock()
    name = "broker.gauge-test"
    breaker = CircuitBreaker(2, 10, clock, name=name, listener=record_circuit)
    assert opened(name) is not None  # both series exist from the start
    openings = openings_since(name)
    assert gauge(name) == 0
    breaker.failure()
    assert gauge(name) == 0
    breaker.failure()
    assert (gauge(name), openings()) == (2, 1)
    clock.now = 11
    assert breaker.allow()
    assert gauge(name) == 1
    breaker.failure()  # the trial failed: open again, counted again
    assert (gauge(name), openings()) == (2, 2)
    clock.now = 22
    breaker.refresh()
    breaker.success()
    assert (gauge(name), openings()) == (0, 2)


def test_open_turns_half_open_in_the_gauge_by_time_alone() -> None:
    name = "broker.timer-test"
    breaker = CircuitBreaker(1, 0.2, name=name, listener=record_circuit)
    breaker.failure()
    assert gauge(name) == 2
    deadline = time.monotonic() + 4
    while gauge(name) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # no call to the breaker at all: its timer reports the change
    assert gauge(name) == 1
    assert breaker._state() is CircuitState.HALF_OPEN


def test_a_failing_listener_never_breaks_the_guarded_call() -> None:
    def broken(name: str, state: CircuitState) -> None:
        raise RuntimeError("metrics are down")

    breaker = CircuitBreaker(1, 10, name="broker.broken", listener=broken)
    breaker.failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_the_composition_root_names_the_brokers_breakers_and_wires_the_metrics() -> None:
    s = Settings(_env_file=None, dispatch_backend="auto", celery_enabled=True, rq_enabled=True)
    brokers = adapters.brokers(s)
    assert [b.circuit.name for b in brokers] == ["broker.celery", "broker.rq"]
    assert all(b.circuit.state is CircuitState.CLOSED for b in brokers)
    assert gauge("broker.rq") == 0


# --------------------------------------------------------------------------- callbacks


@dataclass
class Hooks:
    """A real HTTP server answering the scripted statuses in turn (the last one forever)."""

    statuses: list[int]
    received: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@contextmanager
def hook_server(*statuses: int) -> Iterator[Hooks]:
    """A real HTTP server on 127.0.0.1 in a thread; see :class:`Hooks`."""
    state = Hooks(list(statuses or (200,)))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append(self.path)
            self.send_response(state.answer())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    with hook_server() as state:
        yield state


def sender(reset: float = 0.3) -> HttpCallbackSender:
    return HttpCallbackSender(
        allowed_hosts=["127.0.0.1"],
        secret="k",
        timeout=2,
        circuit_failures=2,
        circuit_reset_seconds=reset,
        on_circuit=record_circuit,
    )


def send(callbacks: HttpCallbackSender, url: str) -> None:
    callbacks.send(url, b"{}", delivery_id="d-1")


def fails(callbacks: HttpCallbackSender, url: str, *, retryable: bool = True) -> CallbackFailed:
    with pytest.raises(CallbackFailed) as failed:
        send(callbacks, url)
    assert failed.value.retryable is retryable
    return failed.value


def test_callback_circuit_opens_on_5xx_refuses_without_a_request_then_closes(
    hooks: Hooks,
) -> None:
    hooks.statuses = [503, 503, 200]
    callbacks = sender(reset=1.0)  # long enough to read the open state under a loaded suite
    name = "callback.127.0.0.1"
    openings = openings_since(name)
    fails(callbacks, hooks.url)
    fails(callbacks, hooks.url)
    assert len(hooks.received) == 2
    assert callbacks.breaker("127.0.0.1").state is CircuitState.OPEN
    assert (gauge(name), openings()) == (2, 1)

    for _ in range(5):
        assert "circuit" in fails(callbacks, hooks.url).message
    assert len(hooks.received) == 2  # the server saw nothing while the circuit was open

    deadline = time.monotonic() + 3
    while gauge(name) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gauge(name) == 1  # half-open, reported by time alone
    send(callbacks, hooks.url)  # the trial succeeds
    assert len(hooks.received) == 3
    assert [c.name for c in callbacks.circuits] == [name]
    assert callbacks.circuits[0].state is CircuitState.CLOSED
    assert (gauge(name), openings()) == (0, 1)


def test_non_retryable_4xx_never_opens_the_circuit(hooks: Hooks) -> None:
    hooks.statuses = [404]
    callbacks = sender()
    for _ in range(4):
        fails(callbacks, hooks.url, retryable=False)
    assert len(hooks.received) == 4
    assert callbacks.breaker("127.0.0.1").state is CircuitState.CLOSED


def test_a_half_open_trial_answered_4xx_closes_the_circuit(hooks: Hooks) -> None:
    hooks.statuses = [503, 503, 404, 200]
    callbacks = sender(reset=0.2)
    fails(callbacks, hooks.url)
    fails(callbacks, hooks.url)
    time.sleep(0.25)
    fails(callbacks, hooks.url, retryable=False)  # the trial: the host answers
    send(callbacks, hooks.url)  # not stuck waiting for a trial that never ended
    assert len(hooks.received) == 4


@pytest.mark.parametrize("status", [429, 408, 500])
def test_retryable_statuses_count_as_failures(hooks: Hooks, status: int) -> None:
    hooks.statuses = [status]
    callbacks = sender(reset=30)
    for _ in range(4):
        fails(callbacks, hooks.url)
    assert len(hooks.received) == 2


def test_a_host_that_refuses_connections_opens_its_circuit() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    callbacks = sender(reset=30)
    url = f"http://127.0.0.1:{port}/hook"
    assert "ConnectError" in fails(callbacks, url).message
    assert "ConnectError" in fails(callbacks, url).message
    assert callbacks.breaker("127.0.0.1").state is CircuitState.OPEN
    assert "circuit" in fails(callbacks, url).message


def test_notify_retries_later_while_the_hosts_circuit_is_open(hooks: Hooks) -> None:
    hooks.statuses = [503]
    callbacks = sender(reset=30)
    fails(callbacks, hooks.url)
    fails(callbacks, hooks.url)
    deps = deps_with(callbacks)  # type: ignore[arg-type]
    job = finished_job(deps.repo)  # type: ignore[arg-type]
    assert isinstance(deps.repo, MemoryRepository)
    deps.repo.jobs[job.id] = replace(job, callback_url=hooks.url)
    outcome = notify_callback(deps=deps, job_id=job.id)
    assert outcome.kind == "retry"
    assert outcome.retry_in is not None
    assert len(hooks.received) == 2  # refused at once, retried later with the usual backoff
