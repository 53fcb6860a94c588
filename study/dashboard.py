"""``tgdp-study dashboard DIR``: optuna-dashboard on the study's ``optuna.db``, bound to 127.0.0.1.

optuna-dashboard (and plotly, which ``optuna.visualization`` needs) form the optional extra ``dashboard``
(``pip install -e '.[dashboard]'``); without them the verb names the extra and exits 2. The server is wsgiref in
this process (what ``optuna_dashboard.run_server`` uses), with its socket bound before the URL is printed, so the
URL answers once it is shown. Ctrl-C, SIGTERM and SIGHUP stop it with exit 0; no process is left behind. Every
Optuna study of the study's units and tuned methods (``<study>-n10``, ``<study>-n10-vanilla``, ...) is listed.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from study import UserError
from study.paths import StudyPaths

EXTRA = "dashboard"  # [project.optional-dependencies] in pyproject.toml
HOST = "127.0.0.1"  # never another interface: the dashboard can edit the study (notes, trial states)


def require_extra() -> None:
    """Raise a UserError naming the extra when optuna-dashboard or plotly is not installed."""
    import importlib.util

    missing = [m for m in ("optuna_dashboard", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"dashboard: {', '.join(missing)} not installed; they are the optional extra "
                        f"'{EXTRA}': pip install -e '.[{EXTRA}]' (or pip install optuna-dashboard plotly)")


def make_server(study_dir: str | Path, port: int) -> tuple[Any, str]:
    """The bound (not yet serving) WSGI server of the study's dashboard, and its URL."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server as wsgi_server

    require_extra()
    paths = StudyPaths(Path(study_dir).resolve())
    if not paths.optuna_db.is_file():
        raise UserError(f"{paths.root}: no optuna.db yet (the study has not started a unit); "
                        f"see `tgdp-study status {paths.root}`")
    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - a line per request drowns the URL
            pass

    app = optuna_dashboard.wsgi(paths.optuna_url)
    try:
        server = wsgi_server(HOST, port, app, handler_class=Quiet)
    except OSError as e:
        raise UserError(f"--port {port}: cannot listen on {HOST}:{port} ({e.strerror or e}); "
                        "choose another port") from None
    return server, f"http://{HOST}:{server.server_port}"


def serve(study_dir: str | Path, port: int = 8080) -> int:
    """Serve the dashboard until Ctrl-C, SIGTERM or SIGHUP; returns 0.

    The server runs in a thread and the main thread waits for a signal: raised inside a request, a
    KeyboardInterrupt is swallowed by wsgiref's error handler and the server would go on."""
    import threading

    server, url = make_server(study_dir, port)
    stop = threading.Event()
    before = {s: signal.signal(s, lambda signum, frame: stop.set())
              for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    worker = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    worker.start()
    print(f"optuna-dashboard of {Path(study_dir).resolve()}: {url}  (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait: the signal handlers run between waits
            pass
    finally:
        server.shutdown()
        server.server_close()
        for s, h in before.items():
            signal.signal(s, h)
    return 0


__all__ = ["EXTRA", "HOST", "make_server", "require_extra", "serve"]
