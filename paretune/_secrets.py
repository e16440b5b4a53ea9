"""Keeping passwords out of what paretune writes and prints.

Storage and tracking URLs may carry credentials (``postgresql://user:PASSWORD@db/optuna``,
``http://user:PASSWORD@mlflow:5000``, ``...?password=PASSWORD``). paretune needs them to
connect, but never shows them: every URL that goes into a message, a log line, an MLflow tag or
artifact, an export or a report goes through :func:`redact_url` or :func:`redact` first.

:func:`redact` also replaces the passwords of the URLs this process was configured with
(:func:`remember_secrets_of`) wherever they occur, so an error text from a database driver
that quotes a password outside a URL is caught too.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import unquote

__all__ = ["MASK", "redact", "redact_url", "remember_secrets_of"]

MASK = "***"

# scheme://user:password@host: the password is whatever runs to the last "@" before the host.
_USERINFO = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s'\"]*:)"
    r"(?P<secret>[^\s'\"]*?)"
    r"(?=@[^@\s'\"/]*(?:[/?#'\"\s]|$))"
)
# password=..., token=... in a query string or an options text.
_QUERY = re.compile(
    r"(?P<head>(?:[?&;\s]|^)(?:password|passwd|pwd|token|access_token|secret|api_key)=)"
    r"(?P<secret>[^&;\s'\"]+)",
    re.IGNORECASE,
)
_MIN_SECRET_CHARS = 4  # shorter "passwords" would mask ordinary words

_known: set[str] = set()
_lock = threading.Lock()
_factory_installed = False


def redact_url(url: str) -> str:
    """``url`` with its password (user info or a secret query parameter) replaced by ``***``."""
    return redact(url)


def redact(text: str) -> str:
    """``text`` with every URL password, secret query parameter and remembered secret masked."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: m.group("head") + MASK if m.group("secret") else m.group(0), text)
    out = _QUERY.sub(lambda m: m.group("head") + MASK, out)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def remember_secrets_of(*urls: str | None) -> None:
    """Remember the passwords of ``urls`` (raw and URL-decoded), masked by :func:`redact`."""
    found: set[str] = set()
    for url in urls:
        if not url:
            continue
        for pattern in (_USERINFO, _QUERY):
            for match in pattern.finditer(url):
                secret = match.group("secret")
                for form in (secret, unquote(secret)):
                    if len(form) >= _MIN_SECRET_CHARS:
                        found.add(form)
    if found:
        with _lock:
            _known.update(found)
            _redact_log_records()


def _redact_log_records() -> None:
    """Mask secrets in every log record's message from now on (any library's: MLflow, for
    one, quotes its request URLs in errors). Installed once, when a secret is first known;
    called under ``_lock``."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it when the record is emitted
            return record
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True
