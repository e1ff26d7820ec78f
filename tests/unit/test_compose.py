"""The compose stacks, without a Docker engine: they parse, the services the issue lists are
there, healthchecks gate the start order, only the balancer is published on all interfaces
(the API runs as replicas behind it), no disk is shared between services, the migration's
phases are expressed, and every command they run exists here and answers ``--help``."""

from __future__ import annotations

import ipaddress
import re
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
    RQ_STACK: {"balancer", "backend", "rq-worker", "rq-cron", "redis", "db", "objects", "migrate"},
    CELERY_STACK: {
        "balancer",
        "backend",
        "rq-worker",
        "objects",
        "migrate",
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
PRIVATE = {"db", "redis", "objects", "celery-flower", "prometheus", "grafana"}
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
#: Images whose programs have no Debian or PyPI package to run here: MinIO's server and its
#: `mc` healthcheck. The tests speak the same S3 protocol to moto's server instead.
FOREIGN_IMAGES = ("minio/minio:",)
#: The services of the platform's own image.
APP = "report-jobs:latest"


def stack(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def services(path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = stack(path)["services"]
    return found


def test_both_stacks_are_one_project_so_phase_0_carries_over() -> None:
    """Same project name: the same ledger, Redis and bucket volumes after the switch."""
    assert stack(RQ_STACK)["name"] == stack(CELERY_STACK)["name"]
    assert set(stack(RQ_STACK)["volumes"]) <= set(stack(CELERY_STACK)["volumes"])
    for name in ("db", "redis", "objects", "balancer"):
        assert services(RQ_STACK)[name] == services(CELERY_STACK)[name], name
    assert stack(RQ_STACK)["networks"] == stack(CELERY_STACK)["networks"]


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_no_disk_is_shared(path: Path) -> None:
    """Reports live in the object store: no service of the platform's image mounts a
    volume, and no volume is mounted by two services (each may run on its own host)."""
    mounts: dict[str, list[str]] = {}
    for name, service in services(path).items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith("."):  # read-only config from the repository
                mounts.setdefault(source, []).append(name)
        if service.get("image") == APP:
            assert not service.get("volumes"), f"{name} mounts {service['volumes']}"
            assert service["environment"]["STORAGE_BACKEND"] == "s3", name
    assert all(len(users) == 1 for users in mounts.values()), mounts


def test_phases_are_set_from_the_environment() -> None:
    """Phase 0: the RQ stack, Celery off. Phases 1-2: the Celery stack with the `rq`
    profile, RQ_ENABLED=true and CELERY_TRAFFIC_PERCENT given. Phase 3: its defaults."""
    rq_era = services(RQ_STACK)["backend"]["environment"]
    assert (rq_era["CELERY_ENABLED"], rq_era["DISPATCH_BACKEND"]) == ("false", "auto")
    celery = services(CELERY_STACK)
    env = celery["backend"]["environment"]
    assert env["RQ_ENABLED"] == "${RQ_ENABLED:-false}"
    assert env["CELERY_TRAFFIC_PERCENT"] == "${CELERY_TRAFFIC_PERCENT:-100}"
    assert celery["rq-worker"]["profiles"] == ["rq"]
    assert celery["rq-worker"]["command"] == services(RQ_STACK)["rq-worker"]["command"]
    assert all("profiles" not in s for n, s in celery.items() if n != "rq-worker")


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_stack_has_the_listed_services(path: Path) -> None:
    assert EXPECTED[path] <= set(services(path))


def test_reports_workers_run_twice() -> None:
    assert services(CELERY_STACK)["celery-worker-reports"]["deploy"]["replicas"] == 2


def test_each_queue_gets_the_seeds_worker_count_in_all() -> None:
    """Replicas x processes per replica: reports 2, documents, notifications, celery 1."""
    stack = services(CELERY_STACK)
    table = {"reports": 2, "documents": 1, "notifications": 1, "celery": 1}
    for name, service in stack.items():
        command = service.get("command") or []
        if command[1:3] != ["celery_manager.py", "worker"]:
            continue
        queue, processes = command[3], int(command[4])
        replicas = (service.get("deploy") or {}).get("replicas", 1)
        assert replicas * processes == table.pop(queue), name
    assert not table, f"no worker for {sorted(table)}"


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
    long_running = set(stack) - {"migrate", "celery-beat", "rq-cron"}  # schedulers: no port
    assert all("healthcheck" in stack[name] for name in long_running)


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_no_private_port_on_all_interfaces(path: Path) -> None:
    for name, service in services(path).items():
        for port in service.get("ports", []):
            spec = str(port)
            if name in PRIVATE:
                assert spec.startswith("127.0.0.1:"), (name, spec)
            else:
                assert name == "balancer", f"{name} publishes {spec}"


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_api_replicas_sit_behind_the_balancer(path: Path) -> None:
    """Two or more `backend` replicas, none published; the balancer runs the committed
    haproxy.cfg (valid for this machine's HAProxy), whose servers are the `backend` service
    on the port the replicas listen on, and the replicas believe X-Forwarded-For from the
    balancer's fixed address alone, an address Docker gives no other container."""
    stack_ = stack(path)
    backend, balancer = stack_["services"]["backend"], stack_["services"]["balancer"]
    assert backend["deploy"]["replicas"] >= 2
    assert "ports" not in backend
    assert "container_name" not in backend  # replicas need names of their own
    command = backend["command"]
    port = command[command.index("--port") + 1]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in balancer["volumes"]}
    config_path = balancer["command"][balancer["command"].index("-f") + 1]
    assert (ROOT / mounted[config_path]).resolve() == HAPROXY_CFG
    assert balancer["ports"] == [f"{port}:{port}"]
    check = subprocess.run(
        ["haproxy", "-c", "-q", "-f", str(HAPROXY_CFG)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    config = HAPROXY_CFG.read_text()
    assert re.search(rf"^\s*server-template \S+ \d+ backend:{port} ", config, re.M)
    assert re.search(rf"^\s*bind :{port}$", config, re.M)
    probe = balancer["healthcheck"]["test"][-1]
    monitor = re.search(r"^\s*monitor-uri (\S+)$", config, re.M)
    assert monitor
    assert probe == f"http://127.0.0.1:{port}{monitor[1]}"
    address = ipaddress.ip_address(balancer["networks"]["default"]["ipv4_address"])
    assert backend["environment"]["FORWARDED_ALLOW_IPS"] == str(address)
    (ipam,) = stack_["networks"]["default"]["ipam"]["config"]
    assert address in ipaddress.ip_network(ipam["subnet"])
    assert address not in ipaddress.ip_network(ipam["ip_range"])


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """(service, argv) of every command and healthcheck the stack runs."""
    found = []
    for name, service in services(path).items():
        if str(service.get("image", "")).startswith(FOREIGN_IMAGES):
            continue
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
