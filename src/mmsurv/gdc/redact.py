"""One redaction step for everything that can carry a GDC token: messages, logs, exceptions.

For the GDC client and command line. Secrets are registered once (:func:`register_secret`, done by
``GdcConfig`` and the token loader); :func:`redact` replaces every registered secret wherever it
occurs, and any ``X-Auth-Token`` header value echoed in a text, BEFORE anything is shortened, so a
copy of the token that would cross a truncation point, or a token longer than any limit, is
never printed. :class:`RedactingFilter` applies the same step to log records (message, arguments
and formatted traceback) as a second line of defence.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "<token>"
_HEADER_ECHO = re.compile(r"(?i)(x-auth-token[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}\]]+)")
_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` so every later :func:`redact` removes it (empty values are ignored)."""
    if secret and secret.strip():
        with _LOCK:
            _SECRETS.add(secret)
            stripped = secret.strip()
            if stripped != secret:
                _SECRETS.add(stripped)


def redact(text: object, *extra: str | None) -> str:
    """``text`` as a string with every registered secret, the ``extra`` ones and echoed
    ``X-Auth-Token`` header values replaced by ``<token>``."""
    text = str(text)
    with _LOCK:
        secrets = sorted({*_SECRETS, *(s for s in extra if s)}, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _HEADER_ECHO.sub(lambda m: m.group(1) + MASK, text)


def shorten(text: str, limit: int) -> str:
    """Redacted first, then cut to ``limit`` characters (with an ellipsis)."""
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RedactingFilter(logging.Filter):
    """Redacts a record's final message and traceback text (install on handlers and loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
