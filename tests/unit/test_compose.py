"""The compose stacks, without a Docker engine: they parse, the services the issue lists are
there, healthchecks gate the start order, no database/Redis/Flower port is published on all
interfaces, and every command they run exists here and answers ``--help``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RQ_STACK = ROOT / "docker-compose.yml"
CELERY_STACK = ROOT / "docker-compose.celery.yml"
STACKS = [RQ_STACK, CELERY_STACK]

EXPECTED = {
    RQ_STACK: {"backend", "rq-worker", "redis", "db"},
    CELERY_STACK: {
        "backend",
        "celery-worker-reports",
        "celery-worker-documents",
        "celery-worker-notifications",
        "celery-worker-general",
        "celery-beat",
        "celery-flower",
        "db",
        "redis",
        "prometheus",
        "grafana",
    },
}
PRIVATE = {"db", "redis", "celery-flower", "prometheus", "grafana"}


def services(path: Path) -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded["services"]


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_stack_has_the_listed_services(path: Path) -> None:
    assert EXPECTED[path] <= set(services(path))


def test_reports_workers_run_twice() -> None:
    assert services(CELERY_STACK)["celery-worker-reports"]["deploy"]["replicas"] == 2


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_start_order_waits_for_health(path: Path) -> None:
    stack = services(path)
    for name, service in stack.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            if dependency == "migrate":
                assert condition == "service_completed_successfully", name
            else:
                assert condition == "service_healthy", (name, dependency)
                assert "healthcheck" in stack[dependency], dependency
    long_running = set(stack) - {"migrate", "celery-beat"}
    assert all("healthcheck" in stack[name] for name in long_running)


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_no_private_port_on_all_interfaces(path: Path) -> None:
    for name, service in services(path).items():
        for port in service.get("ports", []):
            spec = str(port)
            if name in PRIVATE:
                assert spec.startswith("127.0.0.1:"), (name, spec)
            else:
                assert name == "backend", f"{name} publishes {spec}"


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """(service, argv) of every command and healthcheck the stack runs."""
    found = []
    for name, service in services(path).items():
        entrypoint = list(service.get("entrypoint") or [])
        command = list(service.get("command") or [])
        if entrypoint or command:
            found.append((name, entrypoint + command))
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            assert test[0] == "CMD", f"{name}: exec-form healthchecks only"
            found.append((f"{name} healthcheck", list(test[1:])))
    return found


ALL_COMMANDS = [(f"{p.name}:{name}", argv) for p in STACKS for name, argv in commands(p)]


@cache
def answers_help(argv: tuple[str, ...]) -> tuple[int, str]:
    result = subprocess.run(
        [*argv, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def local(argv: list[str]) -> tuple[str, ...]:
    """The command as this machine runs it: the venv's python, binaries found on PATH."""
    program = Path(argv[0]).name
    if program == "python":
        script_and_subcommand = [a for a in argv[1:3] if not a.startswith("-")]
        return (sys.executable, *script_and_subcommand)
    binary = shutil.which(program)
    assert binary, f"{program} is not installed here"
    return (binary,)


@pytest.mark.parametrize(("where", "argv"), ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_every_command_exists_and_answers_help(where: str, argv: list[str]) -> None:
    command = local(argv)
    code, output = answers_help(command)
    described = "usage" in output.lower() or "options" in output.lower()
    assert described, f"{where}: {' '.join(argv)} --help\n{output[-2000:]}"
    if command[0] == sys.executable:  # our CLIs: argparse's --help exits 0
        assert code == 0, f"{where}: {' '.join(argv)} --help\n{output[-2000:]}"
    else:  # redis-server prints its usage and exits 1
        assert code in (0, 1), f"{where}: {' '.join(argv)} --help\n{output[-2000:]}"
