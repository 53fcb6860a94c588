"""Security: specs never execute code (safe YAML, no eval), every torch.load is weights-only, the UI binds
127.0.0.1 by default, study names and paths cannot escape the study directory."""

from __future__ import annotations

import ast
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from study.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"
SCRIPT = Path(sys.executable).with_name("tgdp-study")
SOURCE_DIRS = ("tgdp", "study", "bench")


def source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


@functools.lru_cache(maxsize=1)
def _all_calls() -> tuple[tuple[Path, str, ast.Call], ...]:
    return tuple((f, _dotted(node.func), node) for f in source_files()
                 for node in ast.walk(ast.parse(f.read_text(), str(f))) if isinstance(node, ast.Call))


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    return [(f, node) for f, n, node in _all_calls() if n == name]


# --- no code from specs ------------------------------------------------------------------------------------

def test_python_object_apply_spec_is_refused_by_the_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n" + SMOKE.read_text().split("\n", 2)[2])
    assert main(["run", str(spec), "--dir", str(tmp_path / "studies"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "evil.yaml: line 1" in err and "python/object/apply:os.system" in err
    assert not marker.exists() and not (tmp_path / "studies").exists()


@pytest.mark.parametrize("tag", ["!!python/name:os.system", "!!python/object/new:subprocess.Popen [['true']]",
                                 "!!binary aGVsbG8=", "!!set {a, b}"])
def test_other_yaml_tags_are_refused_or_inert(tmp_path, tag):
    from study import SpecError
    from study.spec import load_spec

    spec = tmp_path / "tagged.yaml"
    spec.write_text(SMOKE.read_text().replace("description", "x").replace("experiment: gmm",
                                                                          f"experiment: gmm\ndescription: {tag}"))
    with pytest.raises(SpecError) as err:  # python tags: YAML error; !!binary / !!set: not a string
        load_spec(spec)
    assert "tagged.yaml" in str(err.value)


def test_spec_strings_are_data_not_code(tmp_path, capsys):
    """Shell and Python in spec values stays text: printed by --dry-run, never run."""
    marker = tmp_path / "pwned"
    d = yaml.safe_load(SMOKE.read_text())
    d["description"] = f"$(touch {marker}); `touch {marker}`; __import__('os').system('touch {marker}')"
    d["fixed"]["guidance"]["arch"] = f"__import__('os').system('touch {marker}')"
    p = tmp_path / "inject.yaml"
    p.write_text(yaml.safe_dump(d))
    main(["run", str(p), "--dir", str(tmp_path / "studies"), "--dry-run"])  # may be refused or shown: never run
    assert "__import__" in capsys.readouterr().out  # shown verbatim
    assert not marker.exists()


def test_yaml_is_only_read_with_safe_loaders():
    from study.yaml_io import _Loader

    assert issubclass(_Loader, yaml.SafeLoader)
    for f, node in calls("yaml.load"):
        loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
        assert isinstance(loader, ast.Name) and loader.id == "_Loader", f"{f}:{node.lineno}: yaml.load without _Loader"
    for name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "pickle.load", "pickle.loads",
                 "eval", "exec", "os.system"):
        assert not calls(name), [f"{f}:{n.lineno}" for f, n in calls(name)]


def test_every_torch_load_is_weights_only():
    found = calls("torch.load")
    assert len(found) >= 4  # cache, runner, report, trial (the grep found them)
    for f, node in found:
        kw = {k.arg: k.value for k in node.keywords}
        ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        assert ok, f"{f.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True"
    for f, node in calls("subprocess.run") + calls("subprocess.Popen") + calls("subprocess.call"):
        shell = next((k.value for k in node.keywords if k.arg == "shell"), None)
        assert shell is None or (isinstance(shell, ast.Constant) and shell.value is False), f"{f}:{node.lineno}"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_a_cache_entry_or_result_is_not_run(tmp_path, caplog):
    """A .pt file carrying a pickled callable (a planted cache entry / trial result) is refused unrun."""
    from study.cache import StageCache

    marker = tmp_path / "pwned"
    cache = StageCache(tmp_path / "cache")
    cache.put("source", "k", {"state": {"w": torch.zeros(2)}, "x": _Evil(marker)})
    with caplog.at_level("WARNING", logger="study.cache"):
        assert cache.get("source", "k") is None  # weights_only: refused, treated as a corrupt entry
    assert not marker.exists()
    assert "corrupt entry" in caplog.text and (tmp_path / "cache" / "source-k.pt.corrupt").is_file()
    torch.save({"x": _Evil(marker)}, tmp_path / "result.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "result.pt", weights_only=True)  # what runner/report/trial call
    assert not marker.exists()


# --- names and paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "/etc/tgdp", "a/../../b", "~root", "x\x00y"])
def test_study_names_cannot_escape(tmp_path, capsys, name):
    assert main(["run", str(SMOKE), "--name", name, "--dir", str(tmp_path / "studies")]) == 2
    assert "invalid study name" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()


def test_symlinked_study_name_out_of_the_dir_is_refused(tmp_path, capsys):
    base, outside = tmp_path / "studies", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "gmm-smoke").symlink_to(outside, target_is_directory=True)
    assert main(["run", str(SMOKE), "--dir", str(base)]) == 2
    assert "escapes the study directory" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


# --- the UI binds 127.0.0.1 ----------------------------------------------------------------------------------

def _listening(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port`` (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state != "0A" or int(p, 16) != port:
                continue
            if v6:
                out.add("::1" if addr == "0" * 31 + "1" or addr.endswith("0000000001000000")
                        else ("::" if set(addr) == {"0"} else addr))
            else:
                out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs /proc/net/tcp")
def test_ui_binds_localhost_by_default(tmp_path):
    from study.paths import study_paths
    from study.spec import load_spec, write_spec

    spec = load_spec(SMOKE)
    root = study_paths(tmp_path / "studies", spec.name).root
    write_spec(spec, study_paths(tmp_path / "studies", spec.name))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(SCRIPT), "ui", str(root), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = ""
        while "http://127.0.0.1:" not in seen:  # `ui` prints its URL once the server answers
            line = proc.stdout.readline()
            assert line, seen[-3000:]  # it exited
            seen += line
        addrs = _listening(port)
        assert addrs == {"127.0.0.1"}, addrs  # not 0.0.0.0, not ::
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # our own process group: the CLI and its mlflow server
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.time() + 30
    while _listening(port) and time.time() < deadline:  # `ui` stops its whole server (workers included)
        time.sleep(0.5)
    assert not _listening(port), "the MLflow server outlived `tgdp-study ui` (Ctrl-C)"
    assert proc.returncode in (0, 130)  # Ctrl-C: the server stopped, a clean exit


# --- the study directory as a trust boundary: planted Tune state, moved and copied studies ---------------------

def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """{path: (mtime_ns, content)} of everything under ``root`` (links not followed)."""
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _cli(*args: str) -> subprocess.CompletedProcess:
    from tests.system.faults import run_cli

    return run_cli(list(args), timeout=600)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A finished one-unit smoke study (n = 10, 2 trials), driven by the CLI as a user would."""
    from tests.system.faults import fault_spec

    tmp = tmp_path_factory.mktemp("finished")
    r = _cli("run", str(fault_spec(tmp, "sec", epochs=2)), "--dir", str(tmp / "studies"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "studies" / "sec"


@pytest.mark.slow
@pytest.mark.ray
def test_resume_refuses_a_planted_tuner_pkl_and_never_runs_it(finished_study, tmp_path):
    import pickle

    copy = tmp_path / "planted"
    subprocess.run(["cp", "-a", str(finished_study), str(copy)], check=True)
    (copy / "trials" / "n10" / "DONE").unlink()  # unfinished: resume would restore the unit's Tune run
    marker = tmp_path / "pwned"
    tuner = copy / "ray" / "sec-n10" / "tuner.pkl"
    tuner.write_bytes(pickle.dumps(_Evil(marker)))  # what an attacker with write access to the study leaves
    r = _cli("resume", str(copy))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{tuner}: signature check failed" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()  # the payload never ran


@pytest.mark.slow
@pytest.mark.ray
def test_moved_and_copied_studies_work_on_themselves(finished_study, tmp_path):
    """report / status / resume of a `cp -a` copy and of a moved study: each works on itself (its Tune
    state verifies, its Optuna and MLflow stores are its own) and the original stays byte-identical."""
    from tests.study_util import runs

    original = _snapshot(finished_study)
    copy, before_move, moved = tmp_path / "copy", tmp_path / "to-move", tmp_path / "moved"
    for target in (copy, before_move):
        subprocess.run(["cp", "-a", str(finished_study), str(target)], check=True)
    before_move.rename(moved)
    for study in (copy, moved):
        (study / "trials" / "n10" / "DONE").unlink()  # resume restores the Tune run from the copy's own files
        r = _cli("resume", str(study))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "tgdp: resuming" in r.stdout and (study / "trials" / "n10" / "DONE").is_file()
        assert _cli("status", str(study)).returncode == 0
        r = _cli("report", str(study))
        assert r.returncode == 0 and "MLflow not updated" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
        rows = (study / "report" / "summary.csv").read_text()
        assert all(m in rows for m in ("tgdp (best)", "vanilla", "source_only", "oracle_target")), rows
        uri = f"sqlite:///{study / 'mlflow.db'}"
        summary = [x for x in runs(uri, "sec") if x.data.tags.get("kind") == "summary"]
        assert len(summary) == 1 and summary[0].info.artifact_uri.startswith((study / "mlartifacts").as_uri())
        assert any((study / "mlartifacts").rglob("summary.csv"))  # artefacts went into the copy
    assert _snapshot(finished_study) == original  # never touched: contents and mtimes
    assert not before_move.exists()  # nothing re-created where the moved study was


# --- Ray token authentication: nobody else drives a study's Ray -----------------------------------------------------

_CLIENT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("CONNECTED", ray.get(ray.remote(lambda: 6 * 7).remote(), timeout=60))
except Exception as e:
    print("REFUSED", type(e).__name__)
"""


@pytest.mark.slow
@pytest.mark.ray
def test_a_client_without_the_token_cannot_use_a_study_ray(tmp_path):
    """The local Ray a study starts (``study.runner._init_ray``) has token authentication on: clients with
    no token, a wrong one or auth disabled cannot join its GCS nor run a task; the right token can."""
    import ray

    from study.runner import _init_ray
    from study.spec import load_spec
    from tests.study_util import tiny_spec

    ray.shutdown()
    try:
        assert _init_ray(load_spec(tiny_spec(tmp_path, "tok", resources={"num_cpus": 1})), None)
        gcs = ray.get_runtime_context().gcs_address
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        base["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
        clients = {"no token": {"RAY_AUTH_MODE": "token"}, "auth disabled": {"RAY_AUTH_MODE": "disabled"},
                   "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                   "the study's token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"]}}
        procs = {k: subprocess.Popen([sys.executable, "-c", _CLIENT, gcs], env={**base, **env}, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for k, env in clients.items()}
        out = {k: p.communicate(timeout=300)[0] for k, p in procs.items()}
    finally:
        ray.shutdown()
    assert "CONNECTED 42" in out.pop("the study's token")  # the check can fail: the right token works
    for who, text in out.items():
        assert "REFUSED" in text and "CONNECTED" not in text, (who, text)
