"""What ``run`` and ``resume`` check before they create or change anything, each within seconds.

Without these a bad ``--tracking-uri``, an unreachable ``--address`` or an unwritable ``--dir`` left a
half-created study that blocked the next ``run`` (and ``resume`` reused the bad URI); an unreachable
MLflow server gave minutes of silence then a traceback. Checked here:

- the tracking URI: a scheme MLflow serves (``TRACKING_SCHEMES``); a sqlite or file store's directory
  exists and is writable; an http(s) server answers (any HTTP status) and a database server accepts a
  TCP connection, within ``TIMEOUT_S``;
- the Ray address: ``auto`` / ``local``, or ``[ray://]host:port`` accepting a TCP connection within
  ``TIMEOUT_S`` (Ray's own connect retries for minutes);
- the study's parent directory can be created and written (``new_study_dir`` then builds the study in a
  staging directory beside it and renames it into place).

Each problem is a ``PreflightError`` (a ``UserError``) naming the option, the value and what is allowed.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from study import UserError
from study.paths import StudyPaths

TIMEOUT_S = 10.0  # per network check; a clear message well within 30 s
TRACKING_SCHEMES = {"sqlite": None, "file": None, "http": 80, "https": 443, "postgresql": 5432, "mysql": 3306,
                    "mssql": 1433}
DB_SCHEME_SUFFIX = "+"  # e.g. postgresql+psycopg2: the part before "+" is the database


class PreflightError(UserError):
    """A ``run`` / ``resume`` option that cannot work (checked before anything is created)."""


def _tcp(host: str, port: int, what: str, timeout: float) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise PreflightError(f"{what}: {host}:{port} not reachable within {timeout:g} s "
                             f"({e.strerror or type(e).__name__})") from None


def _writable_dir(d: Path, what: str) -> None:
    if not d.is_dir():
        raise PreflightError(f"{what}: directory {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK):
        raise PreflightError(f"{what}: directory {d} is not writable")


def check_tracking_uri(uri: str | None, timeout: float = TIMEOUT_S) -> None:
    """Refuse a tracking URI that cannot work (None: the study's own mlflow.db, always fine)."""
    if uri is None:
        return
    what = f"--tracking-uri {uri}"
    parts = urlsplit(uri)
    scheme = parts.scheme.split(DB_SCHEME_SUFFIX, 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(f"{what}: unsupported scheme {parts.scheme or '(none)'!r}; allowed: "
                             f"{', '.join(f'{s}://' for s in TRACKING_SCHEMES)}")
    if scheme == "sqlite":
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not db:
            raise PreflightError(f"{what}: expected sqlite:///PATH (a relative or absolute file path)")
        _writable_dir(Path(db).expanduser().absolute().parent, what)
    elif scheme == "file":
        _writable_dir(Path(parts.path).expanduser().absolute().parent, what)
    elif scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # a server answered
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise PreflightError(f"{what}: no MLflow server answered within {timeout:g} s ({reason})") from None
    else:
        if not parts.hostname:
            raise PreflightError(f"{what}: no host in the database URL")
        _tcp(parts.hostname, parts.port or TRACKING_SCHEMES[scheme], what, timeout)


def check_ray_address(address: str | None, timeout: float = TIMEOUT_S) -> None:
    """Refuse a Ray address that is malformed or does not accept a connection (None: a local Ray)."""
    if address is None or address in ("auto", "local"):
        return
    what = f"--address {address}"
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PreflightError(f"{what}: expected HOST:PORT (the head's GCS, e.g. 10.0.0.1:6379), ray://HOST:PORT, "
                             "auto or local")
    _tcp(host.strip("[]"), int(port), what, timeout)


@contextmanager
def new_study_dir(paths: StudyPaths) -> Iterator[StudyPaths]:
    """A staging directory beside ``paths.root`` to build the new study in; renamed into place when the
    block succeeds, removed when it fails, so a failed ``run`` never leaves a study that blocks the next."""
    base = paths.root.parent
    base.mkdir(parents=True, exist_ok=True)  # an OSError (read-only, /proc) becomes one line in the CLI
    _writable_dir(base, f"--dir {base}")
    stage = Path(tempfile.mkdtemp(prefix=f".{paths.name}.staging-", dir=base))
    try:
        yield StudyPaths(stage)
        try:
            os.rename(stage, paths.root)  # atomic; over an empty directory too, never over a study
        except OSError:
            raise PreflightError(f"study already exists: {paths.root} (choose another --name)") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def remove_if_unused(paths: StudyPaths) -> bool:
    """After a failed first start: remove the study when nothing was computed in it yet (no Optuna trial,
    nothing in ray/ or cache/), so that the same ``run`` can be repeated; True when removed."""
    used = paths.optuna_db.exists() or any(
        d.is_dir() and any(d.iterdir()) for d in (paths.ray, paths.cache, paths.root / "trials"))
    if used:
        return False
    shutil.rmtree(paths.root, ignore_errors=True)
    return True


__all__ = ["PreflightError", "check_ray_address", "check_tracking_uri", "new_study_dir", "remove_if_unused"]
