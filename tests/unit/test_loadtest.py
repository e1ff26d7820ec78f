"""loadtests/locustfile.py: its users and their weights, and every request it makes names a
route of the app by that route's template. No load: each task runs against a recording
client in a subprocess (importing Locust monkey-patches the interpreter with gevent, which
this test process must not be).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from app.core.config import Settings
from app.main import create_app
from starlette.routing import Match

ROOT = Path(__file__).resolve().parents[2]

#: Runs in the subprocess: each user's tasks, many times, against a client that records
#: (method, url, name) and answers like the API (a job that has completed).
PROBE = r"""
import json, random, sys, uuid
sys.path.insert(0, "loadtests")
import locustfile
from locust.env import Environment

locustfile.POLL_SECONDS = 0

class Answer:
    def __init__(self, method, url):
        self.status_code = 200
        self.text = ""
        self.method, self.url = method, url
    def json(self):
        if self.method == "POST":
            return {"id": str(uuid.uuid4()), "status": "queued"}
        return {"id": "x", "status": "completed", "items": []}
    def success(self): pass
    def failure(self, why): raise AssertionError(why)
    def __enter__(self): return self
    def __exit__(self, *exc): return False

class Recorder:
    def __init__(self):
        self.calls = []
    def request(self, method, url, name=None, **kwargs):
        assert "X-API-Key" in kwargs.get("headers", {}), (method, url)
        self.calls.append((method, url, name))
        return Answer(method, url)
    def get(self, url, **kwargs): return self.request("GET", url, **kwargs)
    def post(self, url, **kwargs): return self.request("POST", url, **kwargs)

users = [locustfile.SubmitterUser, locustfile.ReaderUser]
env = Environment(user_classes=users, host="http://127.0.0.1:9")
random.seed(7)
found = {"users": {}, "calls": []}
for cls in users:
    cls.host = "http://127.0.0.1:9"
    user = cls(env)
    user.client = Recorder()
    user.on_start()
    tasks = [t.__name__ for t in user.tasks]
    for _ in range(300):
        random.choice(user.tasks)(user)
    found["users"][cls.__name__] = {"weight": cls.weight, "tasks": sorted(set(tasks))}
    found["calls"] += user.client.calls
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "LOADTEST_API_KEY": "test-key"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def templates() -> dict[str, set[str]]:
    """The app's route templates (OpenAPI paths), ``{param}`` written ``{}``, with methods."""
    paths = create_app(Settings()).openapi()["paths"]
    return {
        re.sub(r"\{[^}]+\}", "{}", path): {m.upper() for m in ops} for path, ops in paths.items()
    }


def test_users_and_weights(probe: dict[str, Any]) -> None:
    users = probe["users"]
    assert set(users) == {"SubmitterUser", "ReaderUser"}
    assert users["SubmitterUser"]["weight"] > users["ReaderUser"]["weight"] >= 1
    assert users["SubmitterUser"]["tasks"] == ["submit"]
    assert users["ReaderUser"]["tasks"] == ["list_jobs", "queue_status"]


def test_the_mix_reaches_every_route_it_means_to(probe: dict[str, Any]) -> None:
    names = {(method, name) for method, _, name in probe["calls"]}
    api = "/api/v1/reports"
    assert names == {
        ("POST", f"{api}/dummy"),
        ("POST", f"{api}/heavy"),
        ("GET", f"{api}/jobs/[id]"),
        ("GET", f"{api}/jobs/[id]/download"),
        ("GET", f"{api}/jobs"),
        ("GET", f"{api}/queues/status"),
    }


def test_every_request_is_named_by_the_template_of_a_route_it_matches(
    probe: dict[str, Any],
) -> None:
    routes = templates()
    app = create_app(Settings())
    for method, url, name in probe["calls"]:
        template = re.sub(r"\[[^\]]+\]", "{}", name)
        assert method in routes.get(template, set()), f"{method} {name} is not a route"
        path = url.split("?", 1)[0]
        pattern = re.escape(template).replace(r"\{\}", "[^/]+")
        assert re.fullmatch(pattern, path), f"{url} is not an instance of {name}"
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        assert any(r.matches(scope)[0] is Match.FULL for r in app.routes), f"{method} {url}"


def test_a_name_that_is_not_a_route_would_be_caught() -> None:
    """The check above can fail: a misspelt template is no route."""
    assert "GET" not in templates().get("/api/v1/reports/job/{}", set())
