"""A real SMTP server for tests: aiosmtpd on loopback, keeping what it receives.

It listens on one port for its whole life: :meth:`SmtpServer.stop` closes it (clients are
refused) and :meth:`SmtpServer.start` opens it again on the same port, so workers started
with its address keep it. Recipients in :attr:`SmtpServer.refused` are answered 550.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    """One message as the server took it: its envelope and the parsed message."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes

    @property
    def job_id(self) -> str:
        return str(self.message["X-Report-Job"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    """aiosmtpd's controller on 127.0.0.1 (a thread of this process)."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    refused: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpServer:
        controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        controller.start()  # waits until it answers
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def take(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)

    def for_job(self, job_id: object) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.job_id == str(job_id)]

    def wait_for_job(self, job_id: object, count: int, timeout: float = 30) -> list[Received]:
        """The job's messages once there are ``count`` of them (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(found := self.for_job(job_id)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} messages for {job_id} in {timeout}s")
            time.sleep(0.05)
        return found


class _Handler:
    """aiosmtpd's hooks: refuse chosen recipients at RCPT, keep each message at DATA."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.count = 0

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook name)
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in {r.lower() for r in self.server.refused}:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, smtp: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw: Any = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        parsed = message_from_bytes(data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.server.take(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), parsed, data))
        self.count += 1
        return f"250 2.0.0 OK queued as test-{self.count}"
