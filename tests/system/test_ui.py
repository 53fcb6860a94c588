"""``tgdp-study ui``: the URL is printed once the MLflow server answers, and SIGTERM, SIGHUP or SIGINT sent to
the CLI alone stops the server's whole process group (the port is free, no process of it is left)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.study_util import SMOKE

SCRIPT = Path(sys.executable).with_name("tgdp-study")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
# SIGTERM in the default suite (an MLflow server start: ~10 s idle, ~50 s on a loaded 2-core box); the others slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=lambda s: s.name)
def test_ui_prints_url_when_up_and_stops_its_server_on_a_signal(tmp_path, sig):
    from study.paths import study_paths
    from study.spec import load_spec, write_spec

    spec = load_spec(SMOKE)
    paths = study_paths(tmp_path / "studies", spec.name)
    write_spec(spec, paths)
    port = free_port()
    proc = subprocess.Popen([str(SCRIPT), "ui", str(paths.root), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline, seen = time.time() + 180, []
        while not any(f"http://127.0.0.1:{port}" in line for line in seen):
            assert proc.poll() is None and time.time() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        assert answers(port)  # printed only once the server answers
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "no mlflow server child"
        pgid = os.getpgid(int(children[0]))
        assert pgid != os.getpgid(proc.pid)  # the server has its own group: a signal to the CLI never reaches it
        os.kill(proc.pid, sig)  # the CLI alone, as `kill`, a closed terminal or a service manager would
        assert proc.wait(timeout=60) in (0, 128 + sig)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not group_alive(pgid), "a process of the mlflow server outlived `tgdp-study ui`"
    with socket.socket() as s:  # the port is free again
        assert s.connect_ex(("127.0.0.1", port)) != 0
