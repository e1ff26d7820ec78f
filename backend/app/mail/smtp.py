"""The SMTP mailer: one connection per message, through the standard library's smtplib.

The envelope names one recipient, so the server's answer is about that recipient alone:
a 5xx to ``RCPT``/``DATA`` (or ``MAIL``) is permanent, a 4xx, a refused or dropped
connection, a timeout, a TLS or login failure are temporary (the notify step tries again
with backoff). The server's reply to the message is returned for the ledger.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import parseaddr
from typing import Literal

from app.core.settings.delivery import MailSettings
from app.domain.mail import MailFailed

Security = Literal["none", "starttls", "tls"]


class SmtpMailer:
    """:class:`~app.domain.mail.Mailer` over SMTP (plain, STARTTLS or implicit TLS)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "none",
        user: str = "",
        password: str = "",
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.security = security
        self._user, self._password = user, password
        self._timeout = timeout
        self._tls = tls

    @classmethod
    def of(cls, mail: MailSettings) -> SmtpMailer:
        """The SMTP server ``mail`` names (SMTP_HOST, SMTP_PORT, its security and login)."""
        return cls(
            mail.smtp_host,
            mail.smtp_port,
            security=mail.smtp_security,
            user=mail.smtp_user,
            password=mail.smtp_password,
            timeout=mail.smtp_timeout,
        )

    def send(self, message: EmailMessage, *, recipient: str) -> str:
        """Send the message to ``recipient`` over a new connection; returns the server's reply.

        Raises:
            MailFailed: permanent for a 5xx reply, or an internationalised address the
                server cannot take; temporary for a 4xx, a refused login, or a connection,
                timeout or TLS failure.
        """
        sender = parseaddr(str(message["From"]))[1]
        try:
            with self._connect() as smtp:
                return self._transact(smtp, message, sender, recipient)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailFailed(f"SMTP login refused: {_reply(exc)}", permanent=False) from exc
        except smtplib.SMTPResponseException as exc:  # MAIL, RCPT or DATA refused
            permanent = 500 <= exc.smtp_code < 600
            raise MailFailed(_reply(exc), permanent=permanent) from exc
        except (OSError, smtplib.SMTPException) as exc:  # refused, dropped, timed out, TLS
            where = f"{self.host}:{self.port}"
            raise MailFailed(f"SMTP {where}: {type(exc).__name__}: {exc}", permanent=False) from exc

    def _connect(self) -> smtplib.SMTP:
        context = self._tls or ssl.create_default_context()
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout, context=context)
        return smtplib.SMTP(self.host, self.port, timeout=self._timeout)

    def _transact(
        self, smtp: smtplib.SMTP, message: EmailMessage, sender: str, recipient: str
    ) -> str:
        if self.security == "starttls":
            smtp.starttls(context=self._tls or ssl.create_default_context())
        if self._user:
            smtp.login(self._user, self._password)
        smtp.ehlo_or_helo_if_needed()
        international = not (sender + recipient).isascii()
        if international and not smtp.has_extn("smtputf8"):
            raise MailFailed(
                f"{recipient}: the server does not take internationalised addresses (SMTPUTF8).",
                permanent=True,
            )
        options = ["SMTPUTF8", "BODY=8BITMIME"] if international else []
        code, text = smtp.mail(sender, options)
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        code, text = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPResponseException(code, text)
        data = message.as_bytes(policy=SMTPUTF8 if international else SMTP)
        code, text = smtp.data(data)  # raises SMTPDataError (a response exception) if refused
        return f"{code} {text.decode(errors='replace')}"


def _reply(exc: smtplib.SMTPResponseException) -> str:
    error = exc.smtp_error
    text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
    return f"{exc.smtp_code} {text}"
