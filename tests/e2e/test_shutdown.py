"""SIGTERM to the API: readiness flips at once, a download in flight still completes."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LiveServer, running, wait_for

DRAIN = 2.0
#: The client's receive buffer: small, so that the server cannot push the file into it.
RCVBUF = 16384
#: Bytes the server side may hold for a response it no longer writes: its socket's send
#: buffer (at most tcp_wmem's maximum) plus uvicorn's transport buffer and a file chunk.
SERVER_BUFFERS = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]) + (1 << 20)


class SlowDownload:
    """``GET path`` on a socket of its own with a small receive buffer, read when asked."""

    def __init__(self, server: LiveServer, path: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before connect
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        if server.api_key:
            request += f"X-API-Key: {server.api_key}\r\n"
        self.sock.sendall(f"{request}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1024)
        raw, self.pending = head.split(b"\r\n\r\n", 1)
        status, *headers = raw.decode("latin-1").split("\r\n")
        assert status.split()[1] == "200", raw
        fields = dict(h.split(": ", 1) for h in headers)
        self.length = int({k.lower(): v for k, v in fields.items()}["content-length"])
        self.digest = hashlib.sha256()
        self.received = 0

    def read(self, limit: int) -> int:
        """Read until ``limit`` body bytes have arrived (or the body ends); bytes so far."""
        while self.received < min(limit, self.length):
            chunk = self.pending or self.sock.recv(min(8192, self.length - self.received))
            self.pending = b""
            if not chunk:
                raise AssertionError(f"connection closed at {self.received}/{self.length}")
            self.digest.update(chunk)
            self.received += len(chunk)
        return self.received

    def close(self) -> None:
        self.sock.close()


def shutdown_began(server: LiveServer) -> float:
    """When uvicorn began its shutdown (stopped accepting), from its log (epoch seconds)."""
    for line in server.logs().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "Shutting down":
            return datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
    raise AssertionError("no 'Shutting down' in the server's log")


@pytest.mark.timeout(120)
def test_sigterm_lets_an_inflight_download_finish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, SHUTDOWN_DRAIN_SECONDS=str(DRAIN)) as server:
        with server.client() as client:
            job = client.post(
                "/api/v1/reports/heavy",
                json={"report_type": "excel", "rows": 300000, "sheets": 2},  # ~10 MB
            ).json()
            done = wait_for(client, job["id"], timeout=90)
        assert done["status"] == "completed", done
        size = done["artifact"]["size_bytes"]
        download = SlowDownload(server, f"/api/v1/reports/jobs/{job['id']}/download")
        try:
            assert download.length == size
            download.read(1 << 16)
            time.sleep(0.5)  # every buffer between the server and this reader fills up
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            at_signal = download.received
            # More is missing than the buffers can hold: the server is still writing it.
            assert size - at_signal > SERVER_BUFFERS + download.rcvbuf, (size, at_signal)
            time.sleep(0.3)
            ready = httpx.get(f"{server.url}/health/ready", timeout=3)
            # Slowly through the drain (about 1 MB in DRAIN + 0.5 s), then the rest at once.
            while (elapsed := time.monotonic() - signalled) < DRAIN + 0.5:
                download.read(at_signal + int((1 << 20) * elapsed / (DRAIN + 0.5)))
                time.sleep(0.02)
            at_shutdown = download.received
            download.read(size)
            finished = time.time()
        finally:
            download.close()
        assert ready.status_code == 503
        assert ready.json() == {"status": "draining"}
        assert download.received == size
        assert download.digest.hexdigest() == done["artifact"]["sha256"]
        # uvicorn's shutdown began while the download still had megabytes to send.
        assert size - at_shutdown > SERVER_BUFFERS + download.rcvbuf, (size, at_shutdown)
        assert shutdown_began(server) < finished
        assert server.process.wait(timeout=30) == 0
        print(f"{size} bytes; {at_signal} read at SIGTERM, {at_shutdown} at the drain's end")
