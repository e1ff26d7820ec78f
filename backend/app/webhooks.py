"""Callbacks over HTTP: allow-listed hosts, HMAC-SHA256 signed bodies, bounded time.

The receiver checks ``X-Report-Signature: sha256=<hex>`` where the hex digest is
``HMAC(CALLBACK_SECRET, "<X-Report-Timestamp>." + body)``, and may deduplicate on
``X-Report-Delivery`` (stable across retries of the same job's callback).

Each target host has its own circuit breaker (``callback.<host>``): while it is open,
:meth:`HttpCallbackSender.send` fails at once, retryable, without a network call, and the
notify service tries again later with its usual backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from app.core.circuit import CircuitBreaker, CircuitListener, CircuitPolicy
from app.core.logging import correlation_id_var
from app.core.settings.delivery import CallbackSettings
from app.domain.errors import CallbackFailed, CallbackNotAllowed

MAX_URL = 2048
_RETRYABLE_STATUS = {408, 425, 429}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``timestamp + "." + body`` keyed by ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class HttpCallbackSender:
    """:class:`~app.domain.ports.CallbackSender` with httpx; no redirects are followed.

    One circuit breaker per target host: transport errors and retryable answers (5xx,
    408, 425, 429) count as failures; a success, or a non-retryable 4xx (the host
    answers, the request is wrong), closes it. The sender lives in each process that
    sends (a Celery child, the API for inline jobs), so the breakers are per process: each
    process learns on its own that a host is down. Under RQ every job runs in a fresh
    work horse whose breakers start closed and die with it, so there a breaker only
    guards the calls of one job.
    """

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str],
        secret: str,
        timeout: float,
        clock: Callable[[], float] = time.time,
        circuit_failures: int = 2,
        circuit_reset_seconds: float = 10.0,
        on_circuit: CircuitListener | None = None,
    ) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._secret = secret
        self._timeout = timeout
        self._clock = clock
        self._circuit_failures = circuit_failures
        self._circuit_reset = circuit_reset_seconds
        self._on_circuit = on_circuit
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()

    @classmethod
    def of(
        cls,
        callbacks: CallbackSettings,
        *,
        circuit: CircuitPolicy,
        on_circuit: CircuitListener | None = None,
    ) -> HttpCallbackSender | None:
        """The sender ``callbacks`` ask for (None: no host allowed), breakers per ``circuit``."""
        if not callbacks.callback_allowed_hosts:
            return None
        return cls(
            allowed_hosts=callbacks.callback_allowed_hosts,
            secret=callbacks.callback_secret,
            timeout=callbacks.callback_timeout,
            circuit_failures=circuit.failures,
            circuit_reset_seconds=circuit.reset_after,
            on_circuit=on_circuit,
        )

    @property
    def circuits(self) -> list[CircuitBreaker]:
        """The breakers of the hosts this process has called back, by host name."""
        with self._breakers_lock:
            return [self._breakers[host] for host in sorted(self._breakers)]

    def breaker(self, host: str) -> CircuitBreaker:
        """The breaker of ``host`` (created closed on first use)."""
        host = host.lower()
        with self._breakers_lock:
            found = self._breakers.get(host)
            if found is None:
                found = self._breakers[host] = CircuitBreaker(
                    self._circuit_failures,
                    self._circuit_reset,
                    name=f"callback.{host}",
                    listener=self._on_circuit,
                )
            return found

    def validate(self, url: str) -> None:
        """Refuse a URL whose host is not allowed (see :meth:`_allowed_host`)."""
        self._allowed_host(url)

    def _allowed_host(self, url: str) -> str:
        """The URL's host, once allowed; else CallbackNotAllowed.

        A host named in ``CALLBACK_ALLOWED_HOSTS`` is allowed as it is. Under ``*`` any
        other host is allowed only if every address it resolves to is public: loopback,
        private, link-local (cloud metadata) and reserved addresses are refused.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not host:
            raise CallbackNotAllowed(
                f"callback_url must be an http(s) URL of at most {MAX_URL} characters."
            )
        if host in self._allowed:
            return host
        if "*" not in self._allowed:
            raise CallbackNotAllowed(
                f"Callbacks to {host} are not allowed (see CALLBACK_ALLOWED_HOSTS)."
            )
        internal = _internal_address(host)
        if internal is not None:
            raise CallbackNotAllowed(
                f"Callbacks to internal addresses ({host}: {internal}) are not allowed; "
                "name the host in CALLBACK_ALLOWED_HOSTS to allow it."
            )
        return host

    def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        """POST ``body`` to ``url`` (signed when a secret is set) through the host's breaker.

        Raises:
            CallbackNotAllowed: the host is no longer allowed (checked again at each send).
            CallbackFailed: the circuit is open or the request failed (retryable), or the
                answer was not a 2xx (retryable for a 5xx, 408, 425 or 429).
        """
        host = self._allowed_host(url)  # the allow-list may have changed since the enqueue
        breaker = self.breaker(host)
        if not breaker.allow():
            raise CallbackFailed(
                f"The circuit to {host} is open after failed callbacks; retrying later.",
                retryable=True,
            )
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "report-jobs-callback/1",
            "X-Report-Delivery": delivery_id,
            "X-Report-Timestamp": timestamp,
        }
        if self._secret:
            headers["X-Report-Signature"] = signature(self._secret, timestamp, body)
        correlation_id = correlation_id_var.get()  # the job's: its worker bound it
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        try:
            response = httpx.post(
                url, content=body, headers=headers, timeout=self._timeout, follow_redirects=False
            )
        except Exception as exc:
            breaker.failure()
            if isinstance(exc, httpx.HTTPError):
                raise CallbackFailed(f"{type(exc).__name__}: {exc}"[:500]) from exc
            raise
        status = response.status_code
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        if retryable:
            breaker.failure()
        else:
            breaker.success()  # any other answer: the host is up (a 4xx is our fault)
        if response.is_success:
            return
        raise CallbackFailed(f"The callback answered HTTP {status}.", retryable=retryable)


def _internal_address(host: str) -> str | None:
    """The first non-public address ``host`` is or resolves to; ``None`` if all are public.

    A host that does not resolve counts as internal: nothing is sent where nothing is known.
    """
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return "does not resolve"
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    for address in sorted(addresses, key=str):
        if not address.is_global:
            return str(address)
    return None
