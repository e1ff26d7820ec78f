"""Mailers: adapters of :class:`~app.domain.mail.Mailer` (SMTP, ``.eml`` files)."""
