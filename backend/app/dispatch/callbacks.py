"""Callbacks over HTTP: allow-listed hosts, HMAC-SHA256 signed bodies, bounded time.

The receiver checks ``X-Report-Signature: sha256=<hex>`` where the hex digest is
``HMAC(CALLBACK_SECRET, "<X-Report-Timestamp>." + body)``, and may deduplicate on
``X-Report-Delivery`` (stable across retries of the same job's callback).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from app.domain.errors import CallbackFailed, CallbackNotAllowed

MAX_URL = 2048
_RETRYABLE_STATUS = {408, 425, 429}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``timestamp + "." + body`` keyed by ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class HttpCallbackSender:
    """:class:`~app.domain.ports.CallbackSender` with httpx; no redirects are followed."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str],
        secret: str,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._secret = secret
        self._timeout = timeout
        self._clock = clock

    def validate(self, url: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not host:
            raise CallbackNotAllowed(
                f"callback_url must be an http(s) URL of at most {MAX_URL} characters."
            )
        if "*" not in self._allowed and host not in self._allowed:
            raise CallbackNotAllowed(
                f"Callbacks to {host} are not allowed (see CALLBACK_ALLOWED_HOSTS)."
            )

    def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        self.validate(url)  # the allow-list may have changed since the job was created
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "report-jobs-callback/1",
            "X-Report-Delivery": delivery_id,
            "X-Report-Timestamp": timestamp,
        }
        if self._secret:
            headers["X-Report-Signature"] = signature(self._secret, timestamp, body)
        try:
            response = httpx.post(
                url, content=body, headers=headers, timeout=self._timeout, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise CallbackFailed(f"{type(exc).__name__}: {exc}"[:500]) from exc
        if response.is_success:
            return
        status = response.status_code
        raise CallbackFailed(
            f"The callback answered HTTP {status}.",
            retryable=status >= 500 or status in _RETRYABLE_STATUS,
        )
