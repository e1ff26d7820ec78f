"""A real S3-compatible server for the storage tests, and a gate to cut it off.

:class:`MotoServer` is moto's standalone server (``python -m moto.server``), a subprocess
on a free loopback port speaking the S3 HTTP protocol. :class:`Gate` is a TCP relay in
front of it: the platform's processes talk to the gate, and a test closes it (connections
refused, open ones cut) to stop the storage as those processes see it, or slows it down to
catch an upload halfway, then opens it again with the bucket still there.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.e2e.server import free_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
PART_MIN = 64 * 1024  # moto's smallest part (AWS: 5 MiB): small reports go in parts


@dataclass
class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; ``auth``: refuse unknown credentials."""

    log_path: Path
    auth: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(PART_MIN)}
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited: {self.log_path.read_text()[-2000:]}")
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto not ready after {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class Gate:
    """A TCP relay to ``upstream`` on a port of its own, that a test can close, open and
    slow down (``delay`` seconds per 16 KiB relayed towards the storage)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self.delay = 0.0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        """Accept connections again (nothing to do when open)."""
        if self._server is not None:
            return
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def close(self) -> None:
        """New connections are refused, open ones are cut: the storage is gone."""
        server, self._server = self._server, None
        if server is not None:
            with suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(16384):
                if outbound and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def s3_client(url: str, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    """A boto3 client of ``url`` for the tests' own look (not the platform's adapter)."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def new_bucket(client: Any) -> str:
    name = f"reports-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


def storage_env(url: str, bucket: str, **extra: str) -> dict[str, str]:
    """What a platform process needs to keep its reports in ``bucket`` at ``url``."""
    return {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": url,
        "S3_BUCKET": bucket,
        "S3_REGION": "us-east-1",
        "S3_MULTIPART_THRESHOLD": str(PART_MIN),
        "S3_TIMEOUT": "3",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        **extra,
    }


def object_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def open_uploads(client: Any, bucket: str, prefix: str = "") -> list[str]:
    answer = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in answer.get("Uploads", []))


def read_object(client: Any, bucket: str, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body
