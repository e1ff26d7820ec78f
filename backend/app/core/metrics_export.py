"""Serving the metrics: multiprocess mode, the scrape registry, a worker's metrics port.

How prometheus-client's multiprocess mode works (client_python docs, "Multiprocess Mode"):
each process writes its values to mmap files under ``PROMETHEUS_MULTIPROC_DIR``
(``counter_<pid>.db``, ``histogram_<pid>.db``, ``gauge_livesum_<pid>.db``, ...); a scrape
merges every file. Counters and histograms of dead processes stay (so totals never go
down); ``live*`` gauges of a dead process must be removed with ``mark_process_dead``. The
directory must be emptied before the master starts.

Here the master of each process family (``manage.py serve``, ``celery_manager.py worker``,
``manage.py rq-worker``) calls :func:`prepare_multiprocess_dir` before it forks or spawns:
an explicit ``PROMETHEUS_MULTIPROC_DIR`` is emptied (its ``*.db`` files only), otherwise
a private temporary directory is created, removed at exit (or, when a signal ended the
master, by the next master that starts). Children inherit the
variable. A scrape first forgets the live gauges of processes that no longer exist, so a
child killed without a goodbye (hard time limit, OOM) does not leave its gauge behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from app.core.metrics import initialise_series

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PRIVATE = "report-jobs-metrics-"


def multiprocess_dir() -> Path | None:
    """The directory of multiprocess mode, when this process is in it."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(*, children_in_turn: bool = False) -> Path:
    """Called by a master before it starts children: an empty directory, exported in ``ENV``.

    ``children_in_turn``: the master runs one child at a time (an RQ worker's work horses,
    a fork per job); see :func:`children_in_turn_values`.
    """
    configured = multiprocess_dir()
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        for stale in configured.glob("*.db"):
            stale.unlink(missing_ok=True)
        path = configured
    else:
        base = Path(tempfile.gettempdir())
        _remove_orphans(base)
        path = Path(tempfile.mkdtemp(prefix=f"{_PRIVATE}{os.getpid()}-", dir=base))
        atexit.register(shutil.rmtree, path, True)
    enable_multiprocess(path, children_in_turn=children_in_turn)
    return path


def _remove_orphans(base: Path) -> None:
    """Private directories of masters that are gone (a signal skips their ``atexit``)."""
    for orphan in base.glob(f"{_PRIVATE}*-*"):
        pid = orphan.name.removeprefix(_PRIVATE).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(orphan, ignore_errors=True)


def enable_multiprocess(path: Path, *, children_in_turn: bool = False) -> None:
    """Put this process (and the children it will start) in multiprocess mode.

    prometheus-client picks its value class when it is first imported; if that happened
    before the variable was set, switch it now. This is safe because no labelled value
    exists yet in a master that has not run anything.
    """
    os.environ[ENV] = str(path)
    if children_in_turn:
        values.ValueClass = children_in_turn_values(os.getpid())
    elif getattr(values.ValueClass, "__name__", "") != "MmapedValue":
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    initialise_series()  # in this master's files: every scrape has them from the start


def children_in_turn_values(master: int) -> Callable[..., Any]:
    """The value class of a master whose children run one at a time (an RQ work horse per
    job): the children's counters, histograms and non-live gauges share one set of files,
    ``<type>_<master>h.db``, each child going on from the last one's values, instead of a
    new set per child: the directory, and what a scrape reads, no longer grow with every
    job. Live gauges stay per process, so that a dead child's are forgotten by its pid.
    """

    def in_turn() -> str:
        pid = os.getpid()
        return str(pid) if pid == master else f"{master}h"

    shared = read_on_first_use(in_turn)
    own = read_on_first_use(lambda: str(os.getpid()))

    def value(*params: Any, multiprocess_mode: str = "", **kwargs: Any) -> Any:
        chosen = own if multiprocess_mode.startswith("live") else shared
        return chosen(*params, multiprocess_mode=multiprocess_mode, **kwargs)

    return value


def read_on_first_use(process_identifier: Callable[[], str]) -> type:
    """A multiprocess value class like prometheus-client's ``MultiProcessValue``, except
    after a fork: each value goes back to its file (the new process's) on its own first
    use there, instead of every value of the process at the first use of any. A worker
    registers hundreds of series (each exists at 0 from the first scrape); a work horse
    touches a few, and the eager way read them all again in every horse (~10 ms a job
    under cProfile, benchmarks/profiles/rq_horse_before.txt).
    """
    files: dict[str, Any] = {}  # prefix -> MmapedDict (untyped) of this process
    lock = threading.Lock()

    class Current:
        process = process_identifier()
        generation = 0  # how many forks this class has seen

    class ReadOnFirstUse:
        _multiprocess = True

        def __init__(
            self,
            typ: str,
            metric_name: str,
            name: str,
            labelnames: Sequence[str],
            labelvalues: Sequence[str],
            help_text: str,
            multiprocess_mode: str = "",
            **_: Any,
        ) -> None:
            self._prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
            self._key: str = mmap_key(
                metric_name, name, list(labelnames), list(labelvalues), help_text
            )
            self._generation = -1
            self._file: Any = None
            self._value = self._timestamp = 0.0
            with lock:
                self._sync()

        def _sync(self) -> None:
            """Under ``lock``: after a fork, this process's files; this value, read once."""
            process = process_identifier()
            if process != Current.process:
                for file in files.values():
                    file.close()  # this process's copy of the mapping only
                files.clear()
                Current.process, Current.generation = process, Current.generation + 1
            if self._generation != Current.generation:
                if self._prefix not in files:
                    path = Path(os.environ[ENV]) / f"{self._prefix}_{process}.db"
                    files[self._prefix] = MmapedDict(str(path))  # type: ignore[no-untyped-call]
                self._file = files[self._prefix]
                self._value, self._timestamp = self._file.read_value(self._key)
                self._generation = Current.generation

        def inc(self, amount: float) -> None:
            with lock:
                self._sync()
                self._value += amount
                self._timestamp = 0.0
                self._file.write_value(self._key, self._value, self._timestamp)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with lock:
                self._sync()
                self._value, self._timestamp = value, timestamp or 0.0
                self._file.write_value(self._key, self._value, self._timestamp)

        def get(self) -> float:
            with lock:
                self._sync()
                return self._value

        def set_exemplar(self, exemplar: Any) -> None:
            """Exemplars are not kept in multiprocess mode (as in prometheus-client)."""

        def get_exemplar(self) -> None:
            return None

    return ReadOnFirstUse


def forget_process(pid: int | None = None) -> None:
    """``mark_process_dead`` for ``pid`` (default: this process) when in multiprocess mode."""
    path = multiprocess_dir()
    if path is not None and path.is_dir():
        mark_process_dead(os.getpid() if pid is None else pid, str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes(path: Path) -> list[int]:
    """Remove the live gauges of processes that no longer exist; returns their pids."""
    dead: set[int] = set()
    for file in path.glob("gauge_live*_*.db"):
        suffix = file.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and not _alive(int(suffix)):
            dead.add(int(suffix))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


class LiveMultiProcessCollector(MultiProcessCollector):
    """The multiprocess collector, minus the live gauges of dead processes."""

    def __init__(self, path: Path) -> None:
        super().__init__(None, path=str(path))  # type: ignore[no-untyped-call]
        self._dir = path

    def collect(self) -> Iterable[Metric]:
        forget_dead_processes(self._dir)
        return super().collect()  # type: ignore[no-untyped-call,no-any-return]


def scrape_registry(extra: Sequence[Collector] = ()) -> CollectorRegistry:
    """A registry for one scrape: every process's metrics, plus scrape-time collectors.

    The series the dashboards read exist at 0 even in a process started without the CLIs
    (``uvicorn app.main:app``): the scraping process creates them first.
    """
    initialise_series()
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        registry.register(LiveMultiProcessCollector(path))
    else:
        registry.register(REGISTRY)
    for collector in extra:
        registry.register(collector)
    return registry


def serve_metrics(port: int, host: str) -> bool:
    """Serve the merged metrics on ``host:port`` from a daemon thread (a worker's master).

    A port already taken (two workers on one machine) is logged and skipped: the worker
    runs without its metrics port rather than not at all. ``port`` 0 disables it.
    """
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host, registry=_ScrapeEach())
    except OSError as exc:
        log.warning(
            "metrics.server.unavailable", extra={"port": port, "host": host, "error": str(exc)}
        )
        return False
    log.info("metrics.server.started", extra={"port": port, "host": host})
    return True


class _ScrapeEach:
    """A collector that builds a fresh :func:`scrape_registry` on every scrape."""

    def collect(self) -> Iterable[Metric]:
        return scrape_registry().collect()

    def restricted_registry(self, names: Iterable[str]) -> object:
        return scrape_registry().restricted_registry(names)
