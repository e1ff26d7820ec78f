"""The multiprocess value class of RQ workers: after a fork, a value goes back to its file on
its own first use, and no other value is read again (a horse touches few of many series)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app.core import metrics_export
from prometheus_client.mmap_dict import MmapedDict


def _keys(path: Path) -> dict[str, float]:
    entries = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    return {key: value for key, value, _, _ in entries}


def _in_child(work: object) -> None:
    """Run ``work()`` in a forked child and wait for it; its failure fails the test."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_children_in_turn_go_on_from_the_last_ones_values_and_read_only_what_they_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics_export.ENV, str(tmp_path))
    master = os.getpid()
    value_class = metrics_export.children_in_turn_values(master)
    series = [
        value_class("counter", "jobs", f"jobs_{i}_total", ("n",), (str(i),), "jobs")
        for i in range(50)
    ]
    series[0].inc(5)  # the master's own
    for _ in range(3):  # three horses in turn, each counting one job of series 7
        _in_child(lambda: series[7].inc(1))
    shared = _keys(tmp_path / f"counter_{master}h.db")
    own = _keys(tmp_path / f"counter_{master}.db")
    assert list(shared.values()) == [3.0]  # each horse went on from the last one's count
    assert len(shared) == 1  # and read nothing else again
    assert len(own) == 50
    assert sum(own.values()) == 5.0
    assert series[7].get() == 0.0  # the master's value of it never moved
