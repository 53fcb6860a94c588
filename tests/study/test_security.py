"""The study directory as a trust boundary (issue 16), without Ray: signed Tune state, no write through a
symlink, the study's own files checked, ``status`` read-only, ``report`` serialised, ``run`` checks first.
The end-to-end cases on a real study (a planted tuner.pkl, a moved or copied study, Ray's token) are in
tests/system/test_security.py; the input errors are rows of tests/study/test_bad_input.py."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from study.cli import main
from study.paths import StudyPaths
from study.safe_io import UnsafePathError
from tests.study.test_bad_input import existing_study

SIGNING_SECRET = "TGDP_STUDY_SECRET_FILE"


@pytest.fixture
def secret(tmp_path, monkeypatch) -> Path:
    """A fresh signing secret for the test, outside its study directories."""
    path = tmp_path / "home" / "secret"
    monkeypatch.setenv(SIGNING_SECRET, str(path))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """{path: (mtime_ns, size, content)} of everything under ``root`` (directories too, links not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size, p.read_bytes() if p.is_file() else None)
    return out


# --- signed Tune state (study.signing) ------------------------------------------------------------------------

def fake_experiment(root: Path) -> tuple[StudyPaths, Path]:
    paths = StudyPaths(root)
    exp = root / "ray" / "s-n10"
    (exp / "trial_1").mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"tuner v1")
    (exp / "experiment_state-1.json").write_text('{"trial_data": []}')
    (exp / "trial_1" / "params.pkl").write_bytes(b"params")
    (exp / "trial_1" / "result.json").write_text("{}")  # JSON below the top level: read with json, not signed
    return paths, exp


def test_secret_is_created_private_and_outside_the_study(tmp_path, secret):
    from study.signing import load_secret

    key = load_secret(StudyPaths(tmp_path / "study"))
    assert len(key) == 64 and secret.stat().st_mode & 0o777 == 0o600  # only its owner may read it
    assert load_secret(StudyPaths(tmp_path / "study")) == key  # created once, then reused


@pytest.mark.parametrize("problem", ["group-readable", "symlink", "inside-study"])
def test_an_unsafe_secret_is_refused(tmp_path, secret, monkeypatch, problem):
    from study.signing import SignatureError, load_secret

    study = tmp_path / "study"
    study.mkdir()
    secret.parent.mkdir()
    if problem == "group-readable":
        secret.write_text("x" * 64)
        secret.chmod(0o640)
        why = "mode 640 lets others read or write it"
    elif problem == "symlink":
        (tmp_path / "elsewhere").write_text("x" * 64)
        secret.symlink_to(tmp_path / "elsewhere")
        why = "unusable signing secret \\(a symbolic link\\)"
    else:
        monkeypatch.setenv(SIGNING_SECRET, str(study / "secret"))
        why = "the secret lies inside the study directory"
    with pytest.raises(SignatureError, match=why):
        load_secret(StudyPaths(study))


def test_signed_state_verifies_and_any_change_is_refused(tmp_path, secret):
    from study.signing import MANIFEST, SignatureError, sign, verify

    paths, exp = fake_experiment(tmp_path / "study")
    missing = r"s-n10/\w+.*: not verified, refusing to restore it: the signature manifest .* is missing"
    with pytest.raises(SignatureError, match=missing):
        verify(paths, exp)  # nothing signed yet: a study from before signing, or a planted directory
    sign(paths, exp)
    verify(paths, exp)  # what the driver wrote passes
    (exp / "tuner.pkl").write_bytes(b"tuner v2")
    with pytest.raises(SignatureError, match=r"s-n10/tuner.pkl: signature check failed"):
        verify(paths, exp)
    sign(paths, exp)  # the driver's next checkpoint: both recent contents are trusted (Tune copies lazily)
    (exp / "tuner.pkl").write_bytes(b"tuner v1")
    verify(paths, exp)
    (exp / "searcher-state-2.pkl").write_bytes(b"planted")  # a new file nobody signed
    with pytest.raises(SignatureError, match="searcher-state-2.pkl: signature check failed"):
        verify(paths, exp)
    (exp / "searcher-state-2.pkl").unlink()
    manifest = paths.root / MANIFEST
    manifest.write_text(manifest.read_text().replace("tuner.pkl", "tuner.pk1"))  # an edited manifest
    with pytest.raises(SignatureError, match="fails its HMAC"):
        verify(paths, exp)


def test_state_signed_with_another_secret_is_refused(tmp_path, secret, monkeypatch):
    from study.signing import SignatureError, load_secret, sign, verify

    paths, exp = fake_experiment(tmp_path / "study")
    sign(paths, exp)
    monkeypatch.setenv(SIGNING_SECRET, str(tmp_path / "other" / "secret"))
    load_secret(paths)  # another user's (or machine's) secret
    with pytest.raises(SignatureError, match="fails its HMAC"):  # their manifest cannot vouch for our files
        verify(paths, exp)


def test_only_named_files_are_signed_for_a_new_tuner(tmp_path, secret):
    """A new Tuner signs just its tuner.pkl: a file planted beside it stays untrusted."""
    from study.signing import SignatureError, sign, verify

    paths, exp = fake_experiment(tmp_path / "study")
    sign(paths, exp, only=("tuner.pkl",))
    with pytest.raises(SignatureError, match="experiment_state-1.json: signature check failed"):
        verify(paths, exp)


# --- no write through a symlink -------------------------------------------------------------------------------

def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim.txt"
    v.write_text("precious\n")
    return v


def test_a_symlinked_lock_is_refused_and_its_target_kept(tmp_path):
    from study.runner import study_lock

    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    victim = _victim(tmp_path)
    paths.lock.symlink_to(victim)
    with pytest.raises(UnsafePathError, match=f"{paths.lock}: is a symbolic link"):
        with study_lock(paths):
            pass
    assert victim.read_text() == "precious\n"  # not truncated, no pid written


@pytest.mark.parametrize("what", ["state.json", "spec.yaml", "DONE marker", "figure", "report dir"])
def test_study_writes_never_follow_a_symlink(tmp_path, what):
    import matplotlib.pyplot as plt

    from study import plots
    from study.safe_io import write_text
    from study.spec import load_spec, write_spec
    from tests.study_util import SMOKE

    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    victim = _victim(tmp_path)
    target = {"state.json": paths.state, "spec.yaml": paths.spec_sha, "DONE marker": paths.done_marker("n10"),
              "figure": paths.report / "samples_grid.png", "report dir": paths.report}[what]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(tmp_path if what == "report dir" else victim)
    with pytest.raises(UnsafePathError, match=f"{target}: is a symbolic link"):
        if what == "state.json":
            paths.write_state({"tracking_uri": paths.mlflow_url})
        elif what == "spec.yaml":
            write_spec(load_spec(SMOKE), paths)
        elif what == "DONE marker":
            write_text(target, "2 trials\n", root=paths.root)
        elif what == "figure":
            plots.save_figure(plt.figure(), target, dpi=10)
        else:
            write_text(paths.report / "summary.md", "# table\n", root=paths.root)
    assert victim.read_text() == "precious\n" and sorted(p.name for p in tmp_path.iterdir()) == ["study", "victim.txt"]


def test_corrupt_log_symlink_is_not_appended_through(tmp_path):
    from study.cache import StageCache

    cache = StageCache(tmp_path / "cache")
    cache.root.mkdir()
    victim = _victim(tmp_path)
    (cache.root / "corrupt.log").symlink_to(victim)
    cache.path("source", "k").write_bytes(b"not a torch file")
    assert cache.get("source", "k") is None  # the corrupt entry is still moved aside ...
    assert (cache.root / "source-k.pt.corrupt").is_file()
    assert victim.read_text() == "precious\n"  # ... and the log line never reaches the link's target


def test_report_refuses_a_symlinked_trials_csv(tmp_path, capsys):
    root = existing_study(tmp_path)
    victim = _victim(tmp_path)
    (root / "report" / "trials.csv").symlink_to(victim)
    assert main(["report", str(root)]) == 2
    assert f"{root}/report/trials.csv: is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"


# --- the study's own files --------------------------------------------------------------------------------------

def test_status_never_writes(tmp_path, capsys):
    """Contents, sizes and mtimes of every file and directory are unchanged (optuna.db opened read-only)."""
    root = existing_study(tmp_path)
    before = snapshot(root)
    time.sleep(0.01)
    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"n10: +0 finished, 1 stopped early", out) and "best: trial #0" in out  # it read optuna.db
    assert snapshot(root) == before


def test_concurrent_reports_run_one_after_the_other(tmp_path):
    from study.report import report_lock, write_report

    root = existing_study(tmp_path)
    done: list[str] = []
    with report_lock(StudyPaths(root)):  # another `report` holds the lock
        t = threading.Thread(target=lambda: done.append(write_report(root)))
        t.start()
        time.sleep(3)
        assert not done and not (root / "report" / "trials.csv").exists()  # waiting, nothing written yet
    t.join(timeout=300)
    assert done and (root / "report" / "trials.csv").is_file()


# --- run checks before it creates anything ------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused


@pytest.mark.parametrize("option", ["--tracking-uri", "--address"])
def test_unreachable_services_fail_fast_and_leave_nothing(tmp_path, capsys, option):
    from tests.study_util import SMOKE

    port = _closed_port()
    value = f"http://127.0.0.1:{port}" if option == "--tracking-uri" else f"127.0.0.1:{port}"
    t0 = time.time()
    assert main(["run", str(SMOKE), "--dir", str(tmp_path / "studies"), option, value]) == 2
    assert time.time() - t0 < 30  # a clear message within 30 s (Ray and MLflow retry for minutes)
    err = capsys.readouterr().err
    why = "no MLflow server answered within 10 s" if option == "--tracking-uri" else "not reachable within 10 s"
    assert f"{option} {value}: " in err and why in err, err
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").iterdir())


def test_a_failed_creation_leaves_no_study_behind(tmp_path):
    from study.preflight import new_study_dir, remove_if_unused
    from study.spec import load_spec, write_spec
    from tests.study_util import SMOKE

    paths = StudyPaths(tmp_path / "studies" / "s")
    with pytest.raises(RuntimeError):
        with new_study_dir(paths) as staging:
            write_spec(load_spec(SMOKE), staging)
            raise RuntimeError("disk full")
    assert list((tmp_path / "studies").iterdir()) == []  # staging removed; the next run starts afresh
    with new_study_dir(paths) as staging:
        write_spec(load_spec(SMOKE), staging)
    assert paths.exists() and [p.name for p in (tmp_path / "studies").iterdir()] == ["s"]
    assert remove_if_unused(paths) and not paths.root.exists()  # a first start that failed before any work
    with new_study_dir(paths) as staging:
        write_spec(load_spec(SMOKE), staging)
    (paths.root / "optuna.db").write_bytes(b"")  # trials may exist: never removed
    assert not remove_if_unused(paths) and paths.exists()


def test_os_errors_become_one_line_naming_the_path(capsys):
    import errno

    from study.cli import os_error_message

    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/studies/s/optuna.db")
    assert os_error_message(e) == "/data/studies/s/optuna.db: No space left on device"


def test_a_local_study_ray_starts_with_token_auth_from_a_clean_environment():
    """The CLI's path: ``ray`` is imported (and reads its auth config) before the runner turns token
    authentication on; the driver must still connect to the Ray it starts. The tests' own environment sets
    RAY_AUTH_MODE before ray is imported, which hid this: so a clean subprocess."""
    import subprocess
    import sys

    from tests.study_util import ROOT, SMOKE

    code = ("import ray, os\n"  # imported first, as `tgdp-study run` does through its modules
            "from study.runner import _init_ray\n"
            "from study.spec import load_spec\n"
            f"started, _ = _init_ray(load_spec({str(SMOKE)!r}), None)\n"
            "assert started and os.environ['RAY_AUTH_MODE'] == 'token'\n"
            "assert ray.get(ray.remote(lambda: 7).remote()) == 7\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
