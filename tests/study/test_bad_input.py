"""Bad input, end to end: each case is one input a user can get wrong (spec, data, command line), the
specific message it must produce (naming the file / key / record), the exit code (2 for the CLI), and
that nothing on disk changed (every file under the test's directory hashed before and after).

Cases already covered elsewhere are not repeated here: spec keys/values in tests/study/test_spec.py
(``BAD``), record-level ECG errors (truncated signal, unknown label code, missing lead, wrong sampling
rate, header/signal mismatch) in tests/tgdp/test_ecg_data.py, hostile ECG data (paths outside the data
root, invalid samples, bad rows) in tests/tgdp/test_ecg_hostile.py, the usage errors in tests/study/test_cli.py.
docs/bad_input.md is generated from ``CASES`` (``TGDP_WRITE_DOCS=1 pytest tests/study/test_bad_input.py``)
and checked against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from study.cli import main
from study.paths import study_paths
from study.spec import load_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"
ECG_FIXTURES = ROOT / "tests" / "data" / "ecg"
DOC = ROOT / "docs" / "bad_input.md"


def tree_hash(path: Path) -> dict[str, str]:
    """{relative path: sha256 (files) or 'dir'} of everything under ``path``."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        # a FIFO or device is never read (reading would block): its presence is what counts
        out[rel] = "dir" if p.is_dir() else "special" if not p.is_file() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def smoke(**changes) -> dict:
    d = yaml.safe_load(SMOKE.read_text())
    for k, v in changes.items():
        if callable(v):
            v(d)
        else:
            d[k] = v
    return d


def write_yaml(tmp: Path, data: dict | str | bytes, name: str = "spec.yaml") -> Path:
    p = tmp / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def existing_study(tmp: Path) -> Path:
    """A study with results: spec.yaml, optuna.db (n10: one COMPLETE trial; n100: one FAILed trial), a report."""
    import optuna

    spec = load_spec(SMOKE)
    paths = study_paths(tmp / "studies", spec.name)
    write_spec(spec, paths)
    storage = optuna.storages.RDBStorage(paths.optuna_url)
    for label, value in (("n10", 0.25), ("n100", None)):
        s = optuna.create_study(study_name=f"{spec.name}-{label}", storage=storage)
        t = s.ask()
        t.suggest_categorical("guidance.width", [16, 32])
        t.set_user_attr("tune_trial_id", f"abc_{label}")
        s.tell(t, value) if value is not None else s.tell(t, state=optuna.trial.TrialState.FAIL)
    storage.engine.dispose()
    paths.report.mkdir()
    (paths.report / "summary.md").write_text("| method | n |\n")
    return paths.root


def ecg_copy(tmp: Path) -> Path:
    shutil.copytree(ECG_FIXTURES, tmp / "ecg")
    for p in (tmp / "ecg").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return tmp / "ecg"


@dataclass(frozen=True)
class Case:
    id: str
    input: str  # what the user got wrong (documentation)
    command: str  # how it was given (documentation)
    setup: Callable[[Path], list[str] | Callable[[], object]]  # -> argv of `tgdp-study`, or a loader call
    expect: list[str] = field(default_factory=list)  # substrings of the message ({tmp} = the test directory)
    code: int | None = 2  # exit code (None: a loader API call that must raise ECGDataError)


def _spec_run(data, name: str = "spec.yaml", extra: tuple[str, ...] = ()):
    def setup(tmp: Path) -> list[str]:
        return ["run", str(write_yaml(tmp, data, name)), "--dir", str(tmp / "studies"), *extra]
    return setup


def _changed_spec(tmp: Path) -> list[str]:
    root = existing_study(tmp)
    spec = root / "spec.yaml"
    spec.write_text(spec.read_text().replace("trials_per_n: 2", "trials_per_n: 5"))
    return ["resume", str(root)]


def _broken_spec_yaml(tmp: Path) -> list[str]:
    root = existing_study(tmp)
    (root / "spec.yaml").write_text("name: gmm-smoke\nfactors: {n: [10\n")
    return ["resume", str(root)]


def _moved_study(tmp: Path) -> list[str]:
    """An ``existing_study`` moved into a directory whose name holds "#" (as a URL: a fragment)."""
    root = existing_study(tmp)
    (tmp / "a#b").mkdir()
    return ["status", str(root.rename(tmp / "a#b" / root.name))]


def _corrupt_optuna(command: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        root = existing_study(tmp)
        (root / "optuna.db").write_bytes(b"this is not sqlite\n" * 10)
        return [command, str(root)] + (["--n", "10"] if command == "best" else [])
    return setup


def _study_edit(edit: Callable[[Path], object], command: str) -> Callable[[Path], list[str]]:
    """An ``existing_study`` damaged by ``edit(root)``, then ``command`` on it."""
    def setup(tmp: Path) -> list[str]:
        root = existing_study(tmp)
        edit(root)
        return [command, str(root)]
    return setup


def _foreign_sqlite(name: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        import sqlite3

        (root / name).unlink(missing_ok=True)
        con = sqlite3.connect(root / name)
        con.execute("CREATE TABLE notes (text TEXT)")
        con.commit()
        con.close()
    return edit


def _file(tmp: Path) -> Path:
    p = tmp / "notes.txt"
    p.write_text("not a directory\n")
    return p


def _loader(fn: str, sub: str, edit: Callable[[Path], None] | None = None):
    def setup(tmp: Path):
        from tgdp.data.cpsc import load_cpsc
        from tgdp.data.ptbxl import load_ptbxl

        root = ecg_copy(tmp) / sub if edit is not None else tmp / "no-such-dir"
        if edit is not None:
            edit(root)
        load = load_cpsc if fn == "cpsc" else load_ptbxl
        return lambda: load(str(root))
    return setup


def _ref(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "REFERENCE.csv").write_text(text)


CASES: list[Case] = [
    # --- spec files (`run`; nothing may be created) ----------------------------------------------------------
    Case("spec-is-directory", "spec path is a directory", "tgdp-study run DIR",
         lambda tmp: (tmp / "specs").mkdir() or ["run", str(tmp / "specs"), "--dir", str(tmp / "studies")],
         ["{tmp}/specs", "cannot read the spec file (Is a directory)"]),
    Case("spec-empty", "empty spec file", "tgdp-study run SPEC", _spec_run(""),
         ["spec.yaml: <document>: the spec must be a YAML mapping", "'NoneType'", "name, experiment"]),
    Case("spec-not-utf8", "spec file that is not UTF-8 text", "tgdp-study run SPEC",
         _spec_run(b"name: gmm\xff-smoke\n"), ["spec.yaml: <document>: not UTF-8 text (byte 0xff at offset 9)"]),
    Case("spec-fixed-not-mapping", "`fixed:` is a list", "tgdp-study run SPEC", _spec_run(smoke(fixed=[1, 2])),
         ["spec.yaml: fixed: expected a mapping; got [1, 2]"]),
    Case("spec-negative-time-budget", "negative time budget", "tgdp-study run SPEC",
         _spec_run(smoke(budget={"trials_per_n": 2, "time_budget_s": -5})),
         ["spec.yaml: budget.time_budget_s: invalid value; got -5; allowed: greater than 0"]),
    Case("spec-reduction-factor-1", "ASHA reduction factor 1", "tgdp-study run SPEC",
         _spec_run(smoke(early_stopping={"reduction_factor": 1})),
         ["spec.yaml: early_stopping.reduction_factor", "got 1", "greater than 1"]),
    Case("spec-gpus-without-workers", "GPUs per worker with in-process trials", "tgdp-study run SPEC",
         _spec_run(smoke(resources={"workers_per_trial": 0, "gpus_per_worker": 1})),
         ["spec.yaml: resources.gpus_per_worker: GPUs need Train workers", "workers_per_trial >= 1"]),
    Case("spec-concurrency-deadlock", "more concurrent trials than CPUs", "tgdp-study run SPEC",
         _spec_run(smoke(resources={"max_concurrent_trials": 3, "num_cpus": 2})),
         ["spec.yaml: resources.max_concurrent_trials", "exceed the 2 CPUs", "got 3; allowed: <= 2"]),
    Case("spec-data-dimension", "source means of the wrong dimension", "tgdp-study run SPEC",
         _spec_run(smoke(data={"m": 2000, "mu_source": [0.5, 0.5, 0.5]})),
         ["spec.yaml: data.mu_source: has 3 coordinates; allowed: dim = 2"]),
    Case("spec-same-metric-twice", "the same objective metric twice", "tgdp-study run SPEC",
         _spec_run(smoke(sampler="nsga2", objective=[{"metric": "sliced_w2", "direction": "minimize"},
                                                     {"metric": "sliced_w2", "direction": "maximize"}])),
         ["spec.yaml: objective: the same metric twice", "['sliced_w2', 'sliced_w2']"]),
    Case("spec-negative-seed", "negative seed", "tgdp-study run SPEC",
         _spec_run(smoke(factors={"n": [10], "seeds": [-1]})), ["spec.yaml: factors.seeds.0", "got -1"]),
    Case("spec-ecg-without-data-dirs", "ECG study on real data without data directories", "tgdp-study run SPEC",
         _spec_run(smoke(experiment="ecg", data={"simulate": False},
                         objective={"metric": "macro_auroc", "direction": "maximize"})),
         ["spec.yaml: data.source_root: real data needs source_root and target_root", "simulate: true"]),
    Case("spec-zero-step", "search step 0", "tgdp-study run SPEC",
         _spec_run(smoke(space={"guidance.lr": {"kind": "float", "low": 1e-4, "high": 1e-2, "step": 0}})),
         ["spec.yaml: space.guidance.lr.step: step must be positive", "step > 0"]),
    # --- command line -----------------------------------------------------------------------------------------
    Case("run-absolute-name", "`--name` an absolute path", "tgdp-study run SPEC --name /abs",
         lambda tmp: ["run", str(SMOKE), "--name", str(tmp / "elsewhere"), "--dir", str(tmp / "studies")],
         ["invalid study name '{tmp}/elsewhere'", "A-Z a-z 0-9"]),
    Case("run-dir-is-file", "`--dir` is a file", "tgdp-study run SPEC --dir FILE",
         lambda tmp: ["run", str(SMOKE), "--dir", str(_file(tmp))],
         ["--dir {tmp}/notes.txt: not a directory"]),
    Case("run-dir-url-syntax", "`--dir` with \"?\" in its path", "tgdp-study run SPEC --dir 'a?b'",
         lambda tmp: ["run", str(SMOKE), "--dir", str(tmp / "a?b")],
         ["--dir {tmp}/a?b: contains '?', which the study's sqlite URLs (Optuna, MLflow) cannot carry",
          "allowed: a path without ? # %"]),
    Case("status-dir-url-syntax", "a study moved to a path with \"#\"", "tgdp-study status STUDY", _moved_study,
         ["study directory {tmp}/a#b/gmm-smoke: contains '#'", "allowed: a path without ? # %"]),
    Case("resume-missing-dir", "resume of a directory that does not exist", "tgdp-study resume DIR",
         lambda tmp: ["resume", str(tmp / "gone")], ["not a study directory: {tmp}/gone (no such directory)"]),
    Case("resume-file", "resume of a file", "tgdp-study resume FILE", lambda tmp: ["resume", str(_file(tmp))],
         ["not a study directory: {tmp}/notes.txt (not a directory)"]),
    Case("resume-non-study-dir", "resume of a directory that is not a study", "tgdp-study resume DIR",
         lambda tmp: (tmp / "data").mkdir() or ["resume", str(tmp / "data")],
         ["not a study directory: {tmp}/data (no spec.yaml)"]),
    Case("resume-changed-spec", "resume after editing the study's spec.yaml", "tgdp-study resume STUDY",
         _changed_spec, ["{tmp}/studies/gmm-smoke/spec.yaml: changed since the study was created",
                         "start a new study instead"]),
    Case("resume-broken-spec", "resume with a syntax error in the study's spec.yaml", "tgdp-study resume STUDY",
         _broken_spec_yaml, ["{tmp}/studies/gmm-smoke/spec.yaml: line 3, column 1: YAML error"]),
    Case("best-no-finished-trial", "`best` for an n whose trials all failed (none finished)",
         "tgdp-study best STUDY --n 100", lambda tmp: ["best", str(existing_study(tmp)), "--n", "100"],
         ["no finished trial for n=100 in {tmp}/studies/gmm-smoke yet", "tgdp-study status"]),
    Case("best-unknown-n", "`best` for an n the study does not have", "tgdp-study best STUDY --n 7",
         lambda tmp: ["best", str(existing_study(tmp)), "--n", "7"],
         ["n=7 is not a target size of study gmm-smoke; allowed: [10, 100]"]),
    Case("status-corrupt-optuna", "`status` with a corrupt optuna.db", "tgdp-study status STUDY",
         _corrupt_optuna("status"),
         ["{tmp}/studies/gmm-smoke/optuna.db: not an SQLite database; expected the study's Optuna store"]),
    Case("report-corrupt-optuna", "`report` with a corrupt optuna.db", "tgdp-study report STUDY",
         _corrupt_optuna("report"),
         ["{tmp}/studies/gmm-smoke/optuna.db: not an SQLite database; expected the study's Optuna store"]),
    Case("best-corrupt-optuna", "`best` with a corrupt optuna.db", "tgdp-study best STUDY --n 10",
         _corrupt_optuna("best"),
         ["{tmp}/studies/gmm-smoke/optuna.db: not an SQLite database; expected the study's Optuna store"]),
    # --- the study's own files (study.integrity, study.safe_io) and options checked before `run` creates anything --
    Case("resume-no-spec-sha256", "resume after spec.sha256 was deleted", "tgdp-study resume STUDY",
         _study_edit(lambda root: (root / "spec.sha256").unlink(), "resume"),
         ["{tmp}/studies/gmm-smoke/spec.sha256: missing", "restore the file"]),
    Case("status-truncated-state", "`status` with a truncated state.json", "tgdp-study status STUDY",
         _study_edit(lambda root: (root / "state.json").write_text('{"cache_dir": "ca'), "status"),
         ["{tmp}/studies/gmm-smoke/state.json: not valid JSON"]),
    Case("status-empty-optuna", "`status` with a 0-byte optuna.db", "tgdp-study status STUDY",
         _study_edit(lambda root: (root / "optuna.db").write_bytes(b""), "status"),
         ["{tmp}/studies/gmm-smoke/optuna.db: empty (0 bytes); expected the study's Optuna store"]),
    Case("status-foreign-optuna", "`status` with another program's SQLite file as optuna.db", "tgdp-study status STUDY",
         _study_edit(_foreign_sqlite("optuna.db"), "status"),
         ["{tmp}/studies/gmm-smoke/optuna.db: not this store's database (no table studies, trials, version_info)"]),
    Case("report-broken-mlflow", "`report` with a broken mlflow.db", "tgdp-study report STUDY",
         _study_edit(lambda root: (root / "mlflow.db").write_bytes(b"\0" * 100), "report"),
         ["{tmp}/studies/gmm-smoke/mlflow.db: not an SQLite database; expected the study's MLflow store"]),
    Case("resume-symlinked-lock", "a study's lock is a symlink (to a file of the user's)", "tgdp-study resume STUDY",
         _study_edit(lambda root: (root / "lock").symlink_to(_file(root.parent.parent)), "resume"),
         ["{tmp}/studies/gmm-smoke/lock: is a symbolic link"]),
    Case("best-out-in-study", "`best --out` inside the study directory",
         "tgdp-study best STUDY --n 10 --out STUDY/spec.yaml",
         lambda tmp: ["best", str(r := existing_study(tmp)), "--n", "10", "--out", str(r / "spec.yaml")],
         ["--out {tmp}/studies/gmm-smoke/spec.yaml: inside the study directory {tmp}/studies/gmm-smoke"]),
    Case("best-out-exists", "`best --out` an existing file without --force", "tgdp-study best STUDY --n 10 --out FILE",
         lambda tmp: ["best", str(existing_study(tmp)), "--n", "10", "--out", str(_file(tmp))],
         ["--out {tmp}/notes.txt: exists; add --force to overwrite it"]),
    Case("run-tracking-uri-scheme", "`--tracking-uri` with a scheme MLflow does not serve",
         "tgdp-study run SPEC --tracking-uri URI",
         _spec_run(smoke(), extra=("--tracking-uri", "ftp://host/mlruns")),
         ["--tracking-uri ftp://host/mlruns: unsupported scheme 'ftp'", "allowed: sqlite://, file://, http://"]),
    Case("run-tracking-uri-unreachable", "`--tracking-uri` of a server that is not there",
         "tgdp-study run SPEC --tracking-uri URI",
         _spec_run(smoke(), extra=("--tracking-uri", "http://127.0.0.1:9")),
         ["--tracking-uri http://127.0.0.1:9: no MLflow server answered within 10 s"]),
    Case("run-address-unreachable", "`--address` where no Ray cluster listens", "tgdp-study run SPEC --address ADDR",
         _spec_run(smoke(), extra=("--address", "127.0.0.1:9")),
         ["--address 127.0.0.1:9: 127.0.0.1:9 not reachable within 10 s"]),
    Case("run-address-malformed", "`--address` that is not HOST:PORT", "tgdp-study run SPEC --address ADDR",
         _spec_run(smoke(), extra=("--address", "headnode")),
         ["--address headnode: expected HOST:PORT", "auto or local"]),
    Case("run-dir-procfs", "`--dir` on procfs", "tgdp-study run SPEC --dir /proc/self/studies",
         lambda tmp: ["run", str(SMOKE), "--dir", "/proc/self/studies"], ["/studies: No such file or directory"]),
    Case("run-dir-read-only", "`--dir` on a read-only file system (sysfs)", "tgdp-study run SPEC --dir /sys/studies",
         lambda tmp: ["run", str(SMOKE), "--dir", "/sys/tgdp-studies"], ["/sys/tgdp-studies: "]),
    Case("ls-file", "`ls` of a file", "tgdp-study ls FILE", lambda tmp: ["ls", str(_file(tmp))],
         ["not a directory: {tmp}/notes.txt"]),
    Case("ui-bad-port", "`ui --port` out of range", "tgdp-study ui STUDY --port 70000",
         lambda tmp: ["ui", str(existing_study(tmp)), "--port", "70000"],
         ["argument --port: invalid port '70000'; allowed: an integer 1-65535"]),
    Case("make-ecg-sim-zero-records", "simulated data set of 0 records", "tgdp-study make-ecg-sim OUT --records 0",
         lambda tmp: ["make-ecg-sim", str(tmp / "sim"), "--domain", "source", "--records", "0", "--seed", "0"],
         ["argument --records: invalid count '0'; allowed: an integer 1-100000"]),
    Case("make-ecg-sim-huge-records", "simulated data set of a billion records",
         "tgdp-study make-ecg-sim OUT --records 1000000000",
         lambda tmp: ["make-ecg-sim", str(tmp / "sim"), "--domain", "source", "--records", "1000000000"],
         ["argument --records: invalid count '1000000000'; allowed: an integer 1-100000"]),
    Case("make-ecg-sim-shift-type", "`--shift` field of the wrong type", "tgdp-study make-ecg-sim OUT --shift JSON",
         lambda tmp: ["make-ecg-sim", str(tmp / "sim"), "--domain", "target", "--shift", '{"noise_std": "high"}'],
         ["--shift: noise_std: got 'high'; allowed: a finite number"]),
    Case("make-ecg-sim-shift-length", "`--shift` list of the wrong length", "tgdp-study make-ecg-sim OUT --shift JSON",
         lambda tmp: ["make-ecg-sim", str(tmp / "sim"), "--domain", "target", "--shift", '{"lead_gains": [1, 2]}'],
         ["--shift: lead_gains: got [1, 2]; allowed: a list of 8 finite numbers"]),
    Case("make-ecg-sim-shift-not-json", "`--shift` that is not a JSON object",
         "tgdp-study make-ecg-sim OUT --shift JSON",
         lambda tmp: ["make-ecg-sim", str(tmp / "sim"), "--domain", "target", "--shift", "noise_std=1"],
         ["--shift: not JSON", "allowed: an object such as"]),
    # --- ECG data (loader API: tgdp.data.cpsc.load_cpsc / tgdp.data.ptbxl.load_ptbxl) --------------------------
    Case("data-missing-directory", "CPSC directory that does not exist", "load_cpsc(DIR)", _loader("cpsc", ""),
         ["REFERENCE.csv: missing file {tmp}/no-such-dir/REFERENCE.csv"], None),
    Case("data-missing-ptbxl-database", "PTB-XL without ptbxl_database.csv", "load_ptbxl(DIR)",
         _loader("ptbxl", "ptbxl", lambda r: (r / "ptbxl_database.csv").unlink()),
         ["ptbxl_database.csv: missing file {tmp}/ecg/ptbxl/ptbxl_database.csv"], None),
    Case("data-missing-header", "CPSC record without its WFDB header (.hea)", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", lambda r: (r / "A0003.hea").unlink()),
         ["A0003: {tmp}/ecg/cpsc2018/A0003.mat has no header"], None),
    Case("data-corrupt-header", "WFDB header with garbage", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", lambda r: (r / "A0003.hea").write_text("garbage header !!\n")),
         ["A0003: unreadable header {tmp}/ecg/cpsc2018/A0003.hea"], None),
    Case("data-empty-header", "empty WFDB header", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", lambda r: (r / "A0002.hea").write_text("")),
         ["A0002: unreadable header {tmp}/ecg/cpsc2018/A0002.hea"], None),
    Case("data-empty-signal", "empty signal file", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", lambda r: (r / "A0002.mat").write_bytes(b"")),
         ["A0002: truncated signal: {tmp}/ecg/cpsc2018/A0002.mat has 0 bytes"], None),
    Case("data-reference-columns", "REFERENCE.csv with the wrong columns", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", _ref("foo,bar\n1,2\n")),
         ["REFERENCE.csv: expected columns Recording,First_label", "got ['foo', 'bar']"], None),
    Case("data-label-not-a-code", "non-numeric label in REFERENCE.csv", "load_cpsc(DIR)",
         _loader("cpsc", "cpsc2018", _ref("Recording,First_label,Second_label,Third_label\nA0002,x,,\n")),
         ["A0002: unknown label code 'x' in First_label"], None),
]


# --- arrays data (experiment arrays: the user's .npy / .npz files, read when the spec is validated) -----------

import numpy as np  # noqa: E402  (appended section: its rows build arrays)


def _arrays_run(change: Callable[[Path, dict], dict] | None = None, labels: bool = False, **spec_changes):
    """`run` of arrays_smoke.yaml on .npz files written into {tmp}/arrays (source 400 x 3, target 300 x 3);
    ``change(arrays dir, data section)`` returns the data section to use."""
    from tests.study.test_arrays import arrays_spec, write_arrays

    def setup(tmp: Path) -> list[str]:
        data = write_arrays(tmp / "arrays", labels=labels)
        data = change(tmp / "arrays", data) if change else data
        return ["run", str(write_yaml(tmp, arrays_spec(data, **spec_changes))), "--dir", str(tmp / "studies")]
    return setup


def _npy(name: str, array, **kw) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        np.save(folder / name, array, **kw)
        return str(folder / name)
    return write


def _arrays_changed_since_creation(tmp: Path) -> list[str]:
    from study.spec import parse_spec
    from tests.study.test_arrays import arrays_spec, write_arrays

    spec = parse_spec(arrays_spec(write_arrays(tmp / "arrays")), str(tmp / "spec.yaml"))
    paths = study_paths(tmp / "studies", spec.name)
    write_spec(spec, paths)
    np.savez(tmp / "arrays" / "target.npz", x=np.zeros((300, 3)))  # the user overwrites a file
    return ["resume", str(paths.root)]


def _csv(folder: Path) -> str:
    (folder / "rows.csv").write_text("1,2,3\n")
    return str(folder / "rows.csv")


CASES += [
    Case("arrays-missing-file", "arrays: a data file that does not exist", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source": str(a / "gone.npy")}),
         ["{tmp}/spec.yaml: data.source: {tmp}/arrays/gone.npy: missing file"]),
    Case("arrays-not-npy", "arrays: a data file that is not .npy / .npz", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target": _csv(a)}),
         ["data.target: {tmp}/arrays/rows.csv: not a .npy or .npz file (suffix '.csv')", "allowed: a .npy file"]),
    Case("arrays-pickled-object", "arrays: a pickled object array", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source": _npy("obj.npy", np.array([{}], dtype=object), allow_pickle=True)(a)}),
         ["data.source: {tmp}/arrays/obj.npy: holds a pickled object array (never loaded: allow_pickle is off)"]),
    Case("arrays-wrong-shape", "arrays: rows that are not a 2-D (rows, d) array", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source": _npy("flat.npy", np.zeros(400))(a)}),
         ["data.source: {tmp}/arrays/flat.npy: shape (400,) is not a 2-D (rows, d) array"]),
    Case("arrays-dimension-mismatch", "arrays: target rows of another dimension than the source's",
         "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target": _npy("d4.npy", np.ones((300, 4)))(a)}),
         ["data.target: {tmp}/arrays/d4.npy: 4 columns but the source has 3"]),
    Case("arrays-non-numeric", "arrays: a non-numeric (string) array", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target": _npy("s.npy", np.full((300, 3), "a"))(a)}),
         ["data.target: {tmp}/arrays/s.npy: non-numeric dtype <U1", "allowed: a float, integer or bool array"]),
    Case("arrays-nan", "arrays: NaN or inf in the rows", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target": _npy("nan.npy", np.where(np.eye(300, 3) > 0, np.nan, 1.0))(a)}),
         ["data.target: {tmp}/arrays/nan.npy: 3 NaN/inf values in 3 rows (first at row 0)", "finite numbers only"]),
    Case("arrays-npz-key", "arrays: a .npz without the named array", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source_key": "rows"}),
         ["data.source: {tmp}/arrays/source.npz: no array 'rows'", "one of ['x']"]),
    Case("arrays-labels-length", "arrays: labels of the wrong length", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target_labels": _npy("yt.npy", np.zeros(299, int))(a)}, labels=True),
         ["data.target_labels: {tmp}/arrays/yt.npy: labels of shape (299,) for 300 target rows"]),
    Case("arrays-labels-float", "arrays: labels that are not integers", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source_labels": _npy("ys.npy", np.zeros(400))(a)}, labels=True),
         ["data.source_labels: {tmp}/arrays/ys.npy: labels of dtype float64 (not integers)"]),
    Case("arrays-labels-negative", "arrays: a negative label", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "source_labels": _npy("ys.npy", -np.ones(400, int))(a)}, labels=True),
         ["data.source_labels: {tmp}/arrays/ys.npy: negative label -1 (row 0)", "class indices >= 0"]),
    Case("arrays-labels-beyond-source", "arrays: a target label the source does not have", "tgdp-study run SPEC",
         _arrays_run(lambda a, d: {**d, "target_labels": _npy("yt.npy", np.full(300, 7))(a)}, labels=True),
         ["data.target_labels: {tmp}/arrays/yt.npy: target labels [7] do not occur in the source labels"]),
    Case("arrays-too-few-target-rows", "arrays: fewer target rows than n + val + test", "tgdp-study run SPEC",
         _arrays_run(factors={"n": [50, 150], "seeds": [0]}),
         ["data.target: {tmp}/arrays/target.npz: 300 rows, fewer than n + val + test = 150 + 100 + 100 = 350"]),
    Case("arrays-labels-unconditional", "arrays: labels given but the stages unconditional", "tgdp-study run SPEC",
         _arrays_run(labels=True),
         ["fixed.source.conditional: labels are given", "conditional: true in every one of"]),
    Case("arrays-files-changed", "arrays: resume after the data files changed", "tgdp-study resume STUDY",
         _arrays_changed_since_creation,
         ["{tmp}/studies/arrays-smoke/spec.yaml: data.fingerprint: {tmp}/arrays/source.npz: the files changed"]),
]


# --- tuned methods (`methods:`) and the protocol's `evaluate` ----------------------------------------------------

VANILLA_LR = {"vanilla.lr": {"kind": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}

CASES += [
    Case("spec-methods-unknown", "`methods:` names a method that cannot be tuned", "tgdp-study run SPEC",
         _spec_run(smoke(methods={"oracle_target": {"space": VANILLA_LR}})),
         ["spec.yaml: methods.oracle_target: unknown or untunable method; got 'oracle_target'",
          "allowed: tgdp_reg, vanilla, finetune, domain_guidance"]),
    Case("spec-methods-tgdp", "`methods:` lists tgdp (its space is the top-level `space:`)", "tgdp-study run SPEC",
         _spec_run(smoke(methods={"tgdp": {"space": VANILLA_LR}})),
         ["spec.yaml: methods.tgdp: tgdp's search space is the top-level `space:`"]),
    Case("spec-methods-foreign-path", "a tuned method's space searches another method's config",
         "tgdp-study run SPEC", _spec_run(smoke(methods={"finetune": {"space": VANILLA_LR}})),
         ["spec.yaml: methods.finetune.space.vanilla.lr: not a config path finetune trains or samples with",
          "allowed: <section>.<field> with section in ['finetune', 'sample']"]),
    Case("spec-methods-bad-range", "a tuned method's parameter with an empty range", "tgdp-study run SPEC",
         _spec_run(smoke(methods={"vanilla": {"space": {"vanilla.steps": {"kind": "int", "low": 50, "high": 5}}}})),
         ["spec.yaml: methods.vanilla.space.vanilla.steps.low: empty range (low >= high = 5); got 50"]),
    Case("evaluate-dev-seeds", "`evaluate` on seeds the study was tuned on", "tgdp-study evaluate STUDY --seeds 0-9",
         lambda tmp: ["evaluate", str(existing_study(tmp)), "--seeds", "0-9"],
         ["evaluation seeds [0] are development seeds of study gmm-smoke (factors.seeds [0])"]),
    Case("evaluate-bad-seeds", "`evaluate --seeds` that are not seeds", "tgdp-study evaluate STUDY --seeds 9-3",
         lambda tmp: ["evaluate", str(existing_study(tmp)), "--seeds", "9-3"],
         ["--seeds: bad seed or range '9-3'", "ranges like 100-109"]),
]

def _frozen_eval(change=lambda f: None, out: bool = True, target: str = "spec", text: str | None = None):
    """`evaluate SPEC --frozen FILE`: the smoke spec and a valid frozen.json for it, then ``change``d (or
    ``text`` as the file)."""
    def setup(tmp: Path) -> list[str]:
        params = {"guidance.eta_cycle:switch": "on", "guidance.eta_cycle": 0.1, "guidance.eta_consistency:switch": "off",
                  "guidance.width": 16, "sample.guidance_scale": 1.0}
        frozen = {"tgdp": {n: {"params": dict(params), "dev_seed": 0, "trial": 0} for n in ("10", "100")}}
        change(frozen)
        f = tmp / "frozen.json"
        f.write_text(json.dumps(frozen) if text is None else text)
        what = str(existing_study(tmp)) if target == "study" else str(SMOKE)
        return ["evaluate", what, "--frozen", str(f), "--seeds", "100", *(["--out", str(tmp / "eval")] if out else [])]
    return setup


def _set(path: str, value):
    def change(f: dict) -> None:
        *keys, last = path.split("/")
        d = f
        for k in keys:
            d = d[k]
        if value is None:
            del d[last]
        else:
            d[last] = value
    return change


CASES += [
    Case("frozen-unknown-param", "`evaluate --frozen`: a parameter the method does not search",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR", _frozen_eval(_set("tgdp/10/params/vanilla.lr", 1e-3)),
         ["{tmp}/frozen.json: tgdp.10.params.vanilla.lr: not a parameter of the method's space",
          "allowed: one of ['guidance.eta_cycle', 'guidance.eta_consistency'"]),
    Case("frozen-out-of-range", "`evaluate --frozen`: a value outside the parameter's range",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR",
         _frozen_eval(_set("tgdp/100/params/sample.guidance_scale", 9.0)),
         ["{tmp}/frozen.json: tgdp.100.params.sample.guidance_scale: a value sample.guidance_scale cannot take; got 9.0",
          "allowed: a number in [0.5, 1.5]"]),
    Case("frozen-missing-param", "`evaluate --frozen`: a searched parameter left out (it would run its default)",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR", _frozen_eval(_set("tgdp/10/params/guidance.width", None)),
         ["{tmp}/frozen.json: tgdp.10.params.guidance.width: missing: the configuration would silently run its "
          "default"]),
    Case("frozen-missing-n", "`evaluate --frozen`: no configuration for one n of the spec",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR", _frozen_eval(_set("tgdp/100", None)),
         ["{tmp}/frozen.json: tgdp.100: missing, or without a `params` object"]),
    Case("frozen-other-method", "`evaluate --frozen`: a method the spec does not tune",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR", _frozen_eval(_set("vanilla", {})),
         ["{tmp}/frozen.json: vanilla: not a tuned method of the spec", "allowed: one of ['tgdp']"]),
    Case("frozen-not-dev-seed", "`evaluate --frozen`: a configuration not selected on a development seed",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR", _frozen_eval(_set("tgdp/10/dev_seed", 100)),
         ["{tmp}/frozen.json: tgdp.10.dev_seed: not a development seed of the spec; got 100", "allowed: one of [0]"]),
    Case("frozen-not-json", "`evaluate --frozen`: a file that is not JSON",
         "tgdp-study evaluate SPEC --frozen FILE --out DIR",
         _frozen_eval(text="{tgdp: "),
         ["{tmp}/frozen.json: not JSON (", "allowed: the frozen.json an evaluation wrote"]),
    Case("frozen-no-out", "`evaluate --frozen` without --out", "tgdp-study evaluate SPEC --frozen FILE",
         _frozen_eval(out=False), ["--out: required with --frozen"]),
    Case("frozen-with-study", "`evaluate --frozen` given a study directory", "tgdp-study evaluate STUDY --frozen FILE",
         _frozen_eval(target="study"), ["--frozen: given with the study directory {tmp}/studies/gmm-smoke"]),
]

# --- hostile spec files (issue 16): the reader is bounded, every number checked ----------------------------------

def _fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "spec.yaml")  # nobody writes to it: opening it for reading would block forever
    return ["run", str(tmp / "spec.yaml"), "--dir", str(tmp / "studies")]


def _alias_bomb() -> str:
    """1.2 KB of YAML that expands to 9^9 strings ("billion laughs") in `description`."""
    names = "abcdefghi"
    lines = ["  a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"  {n}: &{n} [" + ", ".join([f"*{names[i]}"] * 9) + "]" for i, n in enumerate(names[1:])]
    return SMOKE.read_text() + "description:\n" + "\n".join(lines) + "\n"


CASES += [
    Case("spec-fifo", "spec path is a FIFO (would block)", "tgdp-study run FIFO", _fifo,
         ["{tmp}/spec.yaml: <document>: cannot read the spec file (not a regular file: a FIFO)"]),
    Case("spec-device", "spec path is an endless device (/dev/zero)", "tgdp-study run /dev/zero",
         lambda tmp: ["run", "/dev/zero", "--dir", str(tmp / "studies")],
         ["/dev/zero: <document>: cannot read the spec file (not a regular file: a device)"]),
    Case("spec-too-large", "spec file over 1 MB", "tgdp-study run SPEC",
         _spec_run(SMOKE.read_text() + "description: '" + "x" * 1_000_000 + "'\n"),
         ["spec.yaml: <document>: spec file too large: more than 1000000 bytes"]),
    Case("spec-alias-bomb", "1.2 KB alias bomb (billion laughs)", "tgdp-study run SPEC --dry-run",
         _spec_run(_alias_bomb(), extra=("--dry-run",)),
         ["spec.yaml: line", "aliases expand the document to more than 100000 nodes"]),
    Case("spec-recursive-alias", "an alias inside its own anchor", "tgdp-study run SPEC",
         _spec_run(SMOKE.read_text() + "description: &d [1, *d]\n"), ["recursive alias"]),
    Case("spec-deep-nesting", "100 000 nested `[`", "tgdp-study run SPEC", _spec_run("[" * 100_000),
         ["spec.yaml: line 1, column 65: YAML error: nesting deeper than 64 levels"]),
    Case("spec-merge-not-mapping", "merge key `<<:` with a scalar", "tgdp-study run SPEC",
         _spec_run(SMOKE.read_text() + "evaluation: {<<: 3}\n"),
         ["spec.yaml: line", "expected a mapping or list of mappings for merging, but found scalar"]),
    # --- numbers (study.spec_numbers): finite, seeds numpy/torch accept, sane sizes, bounded grids -----------
    Case("spec-1e400-fixed", "`1e400` (inf) as a fixed value", "tgdp-study run SPEC",
         _spec_run(SMOKE.read_text().replace("epochs: 2, batch_size: 512}", "epochs: 2, batch_size: 512, lr: 1e400}")),
         ["spec.yaml: fixed.guidance.lr: not a finite number; got inf", "a finite number (.inf, .nan and 1e400"]),
    Case("spec-nan-range", "`.nan` as a range bound", "tgdp-study run SPEC",
         _spec_run(smoke(space={"sample.guidance_scale": {"kind": "float", "low": float("nan"), "high": 1.5}})),
         ["spec.yaml: space.sample.guidance_scale.low: not a finite number; got nan"]),
    Case("spec-inf-initial-trial", "`.inf` in an initial trial", "tgdp-study run SPEC",
         _spec_run(smoke(initial_trials=[{"sample.guidance_scale": float("inf")}])),
         ["spec.yaml: initial_trials.0.sample.guidance_scale: not a finite number; got inf"]),
    Case("spec-inf-num-cpus", "`num_cpus: .inf`", "tgdp-study run SPEC",
         _spec_run(smoke(resources={"num_cpus": float("inf")})),
         ["spec.yaml: resources.num_cpus: not a finite number; got inf"]),
    Case("spec-inf-time-budget", "`time_budget_s: .inf`", "tgdp-study run SPEC",
         _spec_run(smoke(budget={"trials_per_n": 2, "time_budget_s": float("inf")})),
         ["spec.yaml: budget.time_budget_s: not a finite number; got inf"]),
    Case("spec-seed-1e23", "seed 1e23 (torch.manual_seed overflows)", "tgdp-study run SPEC",
         _spec_run(SMOKE.read_text().replace("seeds: [0]", "seeds: [100000000000000000000000]")),
         ["spec.yaml: factors.seeds.0: seed out of range; got 100000000000000000000000",
          "0 <= seed < 2**32 (4294967296)"]),
    Case("spec-fixed-seed-2-32", "a stage seed of 2**32 in `fixed`", "tgdp-study run SPEC",
         _spec_run(smoke(fixed={"source": {"seed": 2**32}})), ["spec.yaml: fixed.source.seed: seed out of range"]),
    Case("spec-sampler-seed-negative", "negative `sampler_seed`", "tgdp-study run SPEC", _spec_run(smoke(sampler_seed=-1)),
         ["spec.yaml: sampler_seed: seed out of range; got -1"]),
    Case("spec-m-huge", "`data.m` of 10^12 source samples", "tgdp-study run SPEC", _spec_run(smoke(data={"m": 10**12})),
         ["spec.yaml: data.m: m out of the sane range; got 1000000000000; allowed: 1 <= value <= 1e+08"]),
    Case("spec-n-huge", "target size n of 10^9", "tgdp-study run SPEC",
         _spec_run(smoke(factors={"n": [10**9], "seeds": [0]})), ["spec.yaml: factors.n.0: n out of the sane range"]),
    Case("spec-num-cpus-huge", "`num_cpus: 1e6`", "tgdp-study run SPEC", _spec_run(smoke(resources={"num_cpus": 1e6})),
         ["spec.yaml: resources.num_cpus: num_cpus out of the sane range; got 1000000.0; allowed: 0.001 <= value <= 4096"]),
    Case("spec-time-budget-huge", "a time budget of 10^12 s", "tgdp-study run SPEC",
         _spec_run(smoke(budget={"trials_per_n": 2, "time_budget_s": 1e12})),
         ["spec.yaml: budget.time_budget_s: time_budget_s out of the sane range"]),
    Case("spec-reduction-factor-huge", "ASHA reduction factor 1000", "tgdp-study run SPEC",
         _spec_run(smoke(early_stopping={"reduction_factor": 1000.0})),
         ["spec.yaml: early_stopping.reduction_factor: reduction_factor out of the sane range", "1 <= value <= 100"]),
    Case("spec-grace-period-huge", "ASHA grace period 10^9", "tgdp-study run SPEC",
         _spec_run(smoke(early_stopping={"grace_period": 10**9})),
         ["spec.yaml: early_stopping.grace_period: grace_period out of the sane range"]),
    Case("spec-log-int-low-0", "log-scale int range with low 0", "tgdp-study run SPEC",
         _spec_run(smoke(space={"guidance.width": {"kind": "int", "low": 0, "high": 64, "log": True}})),
         ["space.guidance.width.low: log scale needs a positive lower bound; got 0; allowed: low > 0 with log: true",
          "value does not fit config field guidance.width; got 0; allowed: > 0"]),
    Case("spec-grid-tiny-step", "grid sampler with a float step of 1e-9", "tgdp-study run SPEC",
         _spec_run(smoke(sampler="grid", space={"guidance.lr": {"kind": "float", "low": 1e-9, "high": 1.0, "step": 1e-9}})),
         ["spec.yaml: space.guidance.lr: the grid sampler would list 1e+09 points", "at most 1000000 grid points"]),
    Case("spec-choices-equal-values", "categorical choices `[1, 1.0]` (one value twice)", "tgdp-study run SPEC",
         _spec_run(smoke(space={"sample.guidance_scale": {"kind": "categorical", "choices": [1, 1.0]}})),
         ["spec.yaml: space.sample.guidance_scale.choices: duplicate choices (equal values: [1.0]); got [1, 1.0]"]),
    Case("gmm-set-deep", "`--set` value nested 2000 deep", "tgdp-study gmm --set KEY=[[[...",
         lambda tmp: ["gmm", "--set", "guidance.width=" + "[" * 2000, "--out", str(tmp / "out")],
         ["--set guidance.width=[[[", "nesting deeper than 64 levels"]),
]


# Covered in other test files (listed in the table, not run twice).
ELSEWHERE = [
    ("truncated signal file", "load_ptbxl", "`2: truncated signal ...`", "tests/tgdp/test_ecg_data.py::test_truncated_signal"),
    ("unknown label code", "load_cpsc / load_ptbxl", "`A0003: unknown label code '10' ...`",
     "tests/tgdp/test_ecg_data.py::test_unknown_label_codes"),
    ("missing lead", "load_ptbxl", "`1: missing lead(s) ['V4'] ...`", "tests/tgdp/test_ecg_data.py::test_missing_lead"),
    ("wrong sampling rate", "load_cpsc / load_ptbxl", "`A0002: wrong sampling rate: header says 250 ...`",
     "tests/tgdp/test_ecg_data.py::test_wrong_sampling_rate"),
    ("missing signal file", "load_cpsc", "`A0003: missing file .../A0003.mat`",
     "tests/tgdp/test_ecg_data.py::test_missing_signal_file"),
    ("header/signal mismatch", "load_cpsc", "`A0010: header/signal mismatch ...`",
     "tests/tgdp/test_ecg_data.py::test_header_signal_mismatch_length_and_checksum"),
    ("bad spec keys and values (30 cases)", "load_spec", "`<file>: <key path>: <problem>; got ...; allowed: ...`",
     "tests/study/test_spec.py::test_bad_spec_message"),
    ("`!!python/object/apply` spec", "load_spec", "`<file>: line 1 ...: YAML error ...`",
     "tests/study/test_spec.py::test_python_tags_are_refused, tests/system/test_security.py"),
    ("`run` on an existing study", "tgdp-study run", "`study already exists: <dir> (resume it with ...)`",
     "tests/study/test_cli.py::test_run_refuses_an_existing_study"),
    ("second driver on a running study", "tgdp-study resume", "`study <dir> is in use by another process (pid N)`",
     "tests/system/faults/test_lock_sigint.py"),
    ("ECG paths outside the data root (`.hea` signal file `../x` or absolute, filename_lr/hr `../` or absolute, "
     "CPSC record id `../x`), a `.hea` naming another record or its signal file (7 cases; each also "
     "skipped with skip_bad)", "load_cpsc / load_ptbxl",
     "`A0002: signal file '../outside/A0002.mat' in ... is not a file name ...`",
     "tests/tgdp/test_ecg_hostile.py::test_bad_record_is_an_error_naming_it_and_skippable"),
    ("ECG values: duplicate lead names, WFDB invalid-sample marker -32768, gain 1e400 or negative, flat lead, "
     "label `inf`/`nan`, scp likelihood not a number, nested or 200 KB scp_codes, strat_fold 11 / 3.7 / text / "
     "empty, text ecg_id (16 cases; each also skipped with skip_bad)", "load_cpsc / load_ptbxl", "`A0002: lead name 'V1' appears twice ...`",
     "tests/tgdp/test_ecg_hostile.py::test_bad_record_is_an_error_naming_it_and_skippable"),
    ("empty (0-byte) or header-only REFERENCE.csv, empty scp_statements.csv", "load_cpsc / load_ptbxl",
     "`REFERENCE.csv: empty file ...`, `... lists no records (header only)`",
     "tests/tgdp/test_ecg_hostile.py::test_empty_reference_csv"),
    ("an ecg_id listed twice", "load_ptbxl", "`2: listed twice in ptbxl_database.csv`",
     "tests/tgdp/test_ecg_hostile.py::test_duplicate_ecg_id_always_raises"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, capsys):
    from tgdp.data.ecg import ECGDataError

    tmp = tmp_path.resolve()
    action = case.setup(tmp)
    before = tree_hash(tmp)
    capsys.readouterr()
    if case.code is None:
        with pytest.raises(ECGDataError) as err:
            action()
        msg = str(err.value)
    else:
        assert main(action) == case.code
        msg = capsys.readouterr().err
        assert "Traceback" not in msg
    for part in case.expect:
        part = part.replace("{tmp}", str(tmp))
        assert part in msg, f"{part!r} missing from:\n{msg}"
    assert tree_hash(tmp) == before, "bad input changed files on disk"


def doc_table() -> str:
    lines = [
        "# Bad input: what the user gets wrong, and the message",
        "",
        "Generated from `tests/study/test_bad_input.py` (`CASES`); each row is a test asserting the message",
        "(it must contain every listed part; `{tmp}` is the directory the test works in), the exit code",
        "(command line: 2; loader API: an `ECGDataError` whose message starts with the file or record) and",
        "that no file on disk changed. Regenerate: `TGDP_WRITE_DOCS=1 .venv/bin/pytest tests/study/test_bad_input.py`.",
        "",
        "| case | input | given as | exit | message contains |",
        "|---|---|---|---|---|",
    ]
    for c in CASES:
        parts = "<br>".join(f"`{p}`" for p in c.expect).replace("|", "\\|")
        lines.append(f"| {c.id} | {c.input} | `{c.command}` | {c.code if c.code is not None else 'ECGDataError'} "
                     f"| {parts} |")
    lines += ["", "## Covered by other tests", "", "| input | given as | message | test |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {m} | `{t}` |" for a, b, m, t in ELSEWHERE]
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    text = doc_table()
    if os.environ.get("TGDP_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, \
        "docs/bad_input.md is out of date: TGDP_WRITE_DOCS=1 pytest tests/study/test_bad_input.py"


def test_case_ids_are_unique():
    # docs/bad_input.md is keyed by case id: a duplicated id would hide one case's row
    ids = [c.id for c in CASES]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []
