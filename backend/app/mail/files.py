"""The development mailer: each message becomes an ``.eml`` file in the outbox.

Nothing is sent. A file opens in any mail client (or ``less``): its name starts with the
time it was written (UTC), then the recipient, then the message's own id (job and
recipient), so ``ls`` lists the outbox in the order it was written.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from app.domain.jobs import utcnow
from app.domain.mail import MailFailed

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")


class FileMailer:
    """:class:`~app.domain.mail.Mailer` writing ``outbox/<when>_<recipient>_<id>.eml``."""

    def __init__(self, outbox: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.outbox = outbox
        self._clock = clock

    def send(self, message: EmailMessage, *, recipient: str) -> str:
        """Write the message to the outbox as one ``.eml`` file; returns where it went.

        Raises:
            MailFailed: the outbox cannot be written (temporary).
        """
        ident = str(message.get("Message-ID", "")).strip("<>").split("@")[0] or "message"
        name = f"{self._clock():%Y%m%dT%H%M%SZ}_{_safe(recipient)}_{_safe(ident)}.eml"
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            path = self.outbox / name
            fd, temp = tempfile.mkstemp(dir=self.outbox, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(message.as_bytes(policy=SMTP))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)  # whole or absent: a reader never sees half of it
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            error = f"Cannot write to the outbox {self.outbox}: {exc}"
            raise MailFailed(error, permanent=False) from exc
        return f"written to {path}"


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)[:120]
