"""Checks of what a study writes to, made before anything is created.

A search that cannot write its run directory or reach its tracking server should say so at
once, in one line, and leave nothing behind: not a new study whose first trial then fails, and
not four minutes of MLflow's HTTP retries.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from paretune._errors import StudyError
from paretune._secrets import redact_url

__all__ = ["PROBE_TIMEOUT_S", "check_writable_dir", "missing_sqlite_file", "probe_tracking_server"]

#: Seconds the tracking server has to answer the first request.
PROBE_TIMEOUT_S = 5.0


def check_writable_dir(path: Path) -> None:
    """Create ``path`` (with its parents) if needed and check that files can be written in it.

    Raises:
        StudyError: It cannot be created, or it is not writable.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".paretune-write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise StudyError(
            f"cannot write to the run directory {str(path)!r}: {reason}. Choose a writable "
            "`run_dir` in the spec (or give `storage` and `tracking_uri` on servers)."
        ) from None


def probe_tracking_server(uri: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check that an MLflow tracking server answers at ``uri`` (http and https URIs only).

    Any HTTP answer counts (a server that rejects the probe is there); no answer within
    ``timeout`` seconds, a refused connection or an unknown host is an error.

    Raises:
        StudyError: The server does not answer.
    """
    if not uri.startswith(("http://", "https://")):
        return
    # urllib takes no credentials in the URL; any answer counts, so none are sent.
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    url += "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise StudyError(
            f"the MLflow tracking server {redact_url(uri)!r} does not answer ({reason}); start "
            "it, or fix "
            "`tracking_uri` in the spec"
        ) from None


def missing_sqlite_file(url: str) -> Path | None:
    """The file of an SQLite storage ``url`` if it does not exist, else ``None``.

    Opening such a URL would create the file (or fail when its directory is missing): a study
    that must already exist (``status``, ``export``, ``resume``) is known to be absent first.
    """
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # in memory, or a URI whose file SQLite resolves itself
    path = Path(database)
    return None if path.exists() else path.absolute()
