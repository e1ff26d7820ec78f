"""The Kubernetes manifests (deploy/kubernetes), without a cluster: every one the
kustomization lists validates against the Kubernetes schemas (kubernetes-validate's bundled
copies, strict), the kustomization lists every file, the probes name routes the API
serves, the API's grace period covers its drain, each Celery queue runs the table's
concurrency, Beat runs once, the ConfigMap holds only real, non-secret settings, and every
command the pods run exists here and answers ``--help``."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from app.cli.celery_manager import build_parser as celery_parser
from app.cli.manage import build_parser as manage_parser
from app.core.config import Settings
from app.domain.queues import Queue
from app.main import create_app
from starlette.routing import Match

from tests.unit.test_compose import CELERY_STACK, answers_help, local, services

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = HERE / "kustomization.yaml"
EXAMPLE_SECRET = HERE / "secret.example.yaml"
#: The oldest Kubernetes the manifests are for (preStop `sleep`: 1.30) and the newest whose
#: schemas kubernetes-validate 1.37 bundles. Fixed: a newer library changes nothing here.
VERSIONS = ("1.30.0", "1.37.0")
CONFIG = "report-jobs-config"
SECRET = "report-jobs-secrets"
PROBES = {
    "startupProbe": "/health/startup",
    "livenessProbe": "/health/live",
    "readinessProbe": "/health/ready",
}
MIB = 1024 * 1024
#: What a worker's master process takes beside its children (memory limit check).
MASTER_MIB = 256


def listed() -> list[str]:
    resources: list[str] = yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    return resources


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file, object) of every object the kustomization applies."""
    return tuple((name, doc) for name in listed() for doc in documents(HERE / name))


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def deployment(name: str) -> dict[str, Any]:
    return objects("Deployment")[name]


def pod_specs() -> dict[str, dict[str, Any]]:
    """The pod template of every Deployment and Job, by its object's name."""
    specs = {}
    for _, doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return specs


def container(name: str) -> dict[str, Any]:
    """The one container of a Deployment or Job."""
    (only,) = pod_specs()[name]["containers"]
    found: dict[str, Any] = only
    return found


def config() -> dict[str, str]:
    data: dict[str, str] = objects("ConfigMap")[CONFIG]["data"]
    return data


@cache
def pod_settings() -> Settings:
    """The settings as the pods read them: the ConfigMap's values over the defaults."""
    return Settings(**{key.lower(): value for key, value in config().items()})


def celery_workers() -> dict[str, tuple[Queue, int]]:
    """Deployment name → (queue, processes) of every ``celery_manager.py worker``."""
    found = {}
    for name in objects("Deployment"):
        command = container(name)["command"]
        if command[1:3] == ["celery_manager.py", "worker"]:
            args, extra = celery_parser().parse_known_args(command[2:])
            assert not extra, (name, extra)
            found[name] = (Queue(args.queue), args.concurrency)
    return found


def quantity(value: str) -> float:
    """A Kubernetes quantity (``512Mi``, ``1Gi``, ``500m``, ``2``) as a number."""
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "m": 0.001}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


# --- the files and their schemas -----------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    """Every YAML file here is applied, except the example Secret; no listed file is
    missing; no object is listed twice."""
    on_disk = {p.name for p in HERE.glob("*.y*ml")} - {KUSTOMIZATION.name, EXAMPLE_SECRET.name}
    assert sorted(listed()) == sorted(on_disk)
    assert len(listed()) == len(set(listed()))
    keys = [(d["kind"], d["metadata"]["name"]) for _, d in manifests()]
    assert len(keys) == len(set(keys)), keys


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [*listed(), EXAMPLE_SECRET.name])
def test_manifest_validates_against_the_kubernetes_schemas(name: str, version: str) -> None:
    """Strict: an unknown field (a typo, a field of a newer release) fails too."""
    docs = documents(HERE / name)
    assert docs, name
    for doc in docs:
        validated = kubernetes_validate.validate(doc, version, strict=True)
        assert validated == version.rsplit(".", 1)[0], (name, validated)


def test_what_kustomize_builds_validates_too() -> None:
    """The objects `kubectl apply -k` sends (namespace, labels and image set), when kubectl
    is installed here: its embedded kustomize, offline."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the built output is not checked")
    built = subprocess.run(
        [kubectl, "kustomize", str(HERE)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) == len(manifests())
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "report-jobs"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "report-jobs", doc["metadata"]


# --- configuration and secrets -------------------------------------------------------


def test_every_env_name_is_a_setting() -> None:
    """The ConfigMap's keys and each container's own `env` are settings' names (a typo
    would be ignored silently by the settings, which read only their own variables)."""
    names = {name.upper() for name in Settings.fields()}
    assert set(config()) <= names, sorted(set(config()) - names)
    for pod, spec in pod_specs().items():
        for c in spec["containers"]:
            for env in c.get("env", []):
                assert env["name"] in names, (pod, env["name"])


def test_secrets_stay_out_of_the_config_map() -> None:
    """Credentials come from the Secret only, by name; it is not applied from here, and the
    example holds placeholders. Its keys are settings (or boto3's AWS_* variables)."""
    secret_names = {name.upper() for name in Settings.fields()} | {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    (example,) = documents(EXAMPLE_SECRET)
    assert example["kind"] == "Secret"
    assert example["metadata"]["name"] == SECRET
    assert EXAMPLE_SECRET.name not in listed()
    assert not objects("Secret"), "no Secret is applied from the repository"
    keys = set(example["stringData"])
    assert keys <= secret_names, sorted(keys - secret_names)
    assert all(v in ("", "change-me") or "change-me" in v for v in example["stringData"].values())
    assert not keys & set(config()), sorted(keys & set(config()))
    secret_like = ("PASSWORD", "SECRET", "TOKEN", "BASIC_AUTH", "DATABASE_URL", "BROKER_URL")
    assert not [k for k in config() if any(word in k for word in secret_like)]
    assert {"DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "SMTP_PASSWORD", "CALLBACK_SECRET"} <= keys


def test_every_pod_reads_the_config_map_and_the_secret() -> None:
    for pod in pod_specs():
        sources = container(pod)["envFrom"]
        assert {"configMapRef": {"name": CONFIG}} in sources, pod
        assert {"secretRef": {"name": SECRET}} in sources, pod


def test_no_disk_is_shared() -> None:
    """Reports live in the bucket: each pod's volumes are its own scratch (emptyDir)."""
    assert config()["STORAGE_BACKEND"] == "s3"
    assert not objects("PersistentVolumeClaim")
    for pod, spec in pod_specs().items():
        for volume in spec.get("volumes", []):
            assert set(volume) == {"name", "emptyDir"}, (pod, volume)


def test_every_container_has_requests_and_limits() -> None:
    for pod in pod_specs():
        resources = container(pod)["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory"}, (pod, bound)
            for what in ("cpu", "memory"):
                assert quantity(resources["requests"][what]) <= quantity(
                    resources["limits"][what]
                ), (pod, what)


# --- the API -------------------------------------------------------------------------


def served_by_the_api(path: str) -> bool:
    """A GET on ``path`` reaches one of the app's routes (built, not started)."""
    app = create_app(Settings())
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def test_probes_name_the_health_routes_the_api_serves() -> None:
    api = container("api")
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    for probe, path in PROBES.items():
        get = api[probe]["httpGet"]
        assert get["path"] == path, probe
        assert served_by_the_api(get["path"]), f"{probe}: GET {get['path']} is not a route"
        assert get["port"] in ports, probe
    assert ports["http"] == int(api["command"][api["command"].index("--port") + 1])


def test_an_unknown_path_is_not_taken_for_a_route() -> None:
    """The check above can fail: a probe at a path the API does not serve."""
    assert not served_by_the_api("/health/readyz")


def test_readiness_takes_a_draining_pod_out_fast() -> None:
    """One 503 and the pod leaves the endpoints; the probe outlasts the checks it waits
    for (each within HEALTH_TIMEOUT, run at once)."""
    ready = container("api")["readinessProbe"]
    assert ready["failureThreshold"] == 1
    assert ready["periodSeconds"] <= 2
    assert ready["timeoutSeconds"] > pod_settings().operations.health_timeout


def test_api_grace_period_covers_prestop_drain_and_uvicorns_grace() -> None:
    """terminationGracePeriodSeconds > preStop sleep + SHUTDOWN_DRAIN_SECONDS + --grace."""
    api = container("api")
    args, extra = manage_parser().parse_known_args(api["command"][2:])
    assert (args.command, extra) == ("serve", [])
    drain = pod_settings().drain_seconds
    assert drain == float(config()["SHUTDOWN_DRAIN_SECONDS"]) == 5
    sleep = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = sleep + drain + args.grace
    grace_period = pod_specs()["api"]["terminationGracePeriodSeconds"]
    assert grace_period >= needed + 5, (grace_period, sleep, drain, args.grace)


def test_api_rolls_and_scales_without_losing_capacity() -> None:
    spec = deployment("api")["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in spec, "the HPA owns the count"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (hpa,) = objects("HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    (pdb,) = objects("PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    service = objects("Service")["api"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["ports"]} <= {
        p["name"] for p in container("api")["ports"]
    }


# --- workers, Beat, Flower, RQ --------------------------------------------------------


def test_each_queue_has_a_deployment_with_the_tables_concurrency() -> None:
    workers = celery_workers()
    assert sorted(q for q, _ in workers.values()) == sorted(Queue)
    max_child = pod_settings().jobs.celery_max_memory_per_child * 1024  # KiB
    for name, (queue, processes) in workers.items():
        assert processes == queue.concurrency, name
        # a warm shutdown takes seconds (docs/operations.md): a minute is ample
        assert pod_specs()[name]["terminationGracePeriodSeconds"] >= 30, name
        memory = quantity(container(name)["resources"]["limits"]["memory"])
        assert memory >= processes * max_child + MASTER_MIB * MIB, name


def test_worker_metrics_port_is_named_and_scraped() -> None:
    port = int(config()["METRICS_PORT"])
    assert port == 9808
    assert config()["METRICS_HOST"] == "0.0.0.0"
    for name in [*celery_workers(), "rq-worker"]:
        ports = {p["name"]: p["containerPort"] for p in container(name)["ports"]}
        assert ports["metrics"] == port, name
        annotations = deployment(name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port), name
        assert container(name)["livenessProbe"]["httpGet"]["port"] == "metrics", name


def test_beat_runs_once() -> None:
    spec = deployment("celery-beat")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert container("celery-beat")["command"] == services(CELERY_STACK)["celery-beat"]["command"]


def test_flower_is_private() -> None:
    """ClusterIP only, nothing routes in from outside; its credentials from the Secret."""
    for name, service in objects("Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
    assert not objects("Ingress")
    flower = container("celery-flower")
    assert flower["command"] == services(CELERY_STACK)["celery-flower"]["command"]
    assert "FLOWER_BASIC_AUTH" not in config()
    assert "FLOWER_BASIC_AUTH" in yaml.safe_load(EXAMPLE_SECRET.read_text())["stringData"]
    assert objects("Service")["celery-flower"]["spec"]["ports"][0]["targetPort"] == "flower"


def test_rq_tiers_are_off_in_phase_3_and_match_compose() -> None:
    """RQ_ENABLED false and no RQ pod by default; scaled up, they run compose's commands.
    rq-cron is phase 0's ticker (Beat's from phase 1), one at a time."""
    assert config()["RQ_ENABLED"] == "false"
    assert deployment("rq-worker")["spec"]["replicas"] == 0
    assert container("rq-worker")["command"] == services(CELERY_STACK)["rq-worker"]["command"]
    cron = deployment("rq-cron")["spec"]
    assert (cron["replicas"], cron["strategy"]) == (0, {"type": "Recreate"})
    assert "rq-cron" not in services(CELERY_STACK)


def test_migration_job_runs_composes_migrate() -> None:
    assert container("migrate")["command"] == services(CELERY_STACK)["migrate"]["command"]
    assert pod_specs()["migrate"]["restartPolicy"] in ("Never", "OnFailure")


CONTAINERS = sorted((pod, tuple(container(pod)["command"])) for pod in pod_specs())


@pytest.mark.parametrize(("pod", "argv"), CONTAINERS, ids=[p for p, _ in CONTAINERS])
def test_every_command_exists_and_answers_help(pod: str, argv: tuple[str, ...]) -> None:
    code, output = answers_help(local(list(argv)))
    shown = f"{pod}: {' '.join(argv)} --help\n{output[-2000:]}"
    assert code == 0, shown
    assert "usage" in output.lower(), shown
