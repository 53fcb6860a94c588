"""Study names and the on-disk layout of a study directory.

A study lives in ``<dir>/<name>/``::

    spec.yaml      the resolved spec (defaults filled in), written once at creation
    spec.sha256    its semantic hash (``study.spec.spec_hash``); resume refuses a changed spec
    optuna.db      Optuna storage (one Optuna study per target size n)
    mlflow.db      MLflow tracking store (sqlite)
    mlartifacts/   MLflow artefacts (file store, absolute location)
    ray/           Ray Tune / Train storage (``storage_path``)
    cache/         stage cache (source model, baselines), keyed by content hash
    report/        reports, tables and figures
    trials/<label>/<tune trial id>/result.pt
                   a finished trial's final evaluation (``RESULT_FILE``); ``trials/<label>/DONE`` marks a unit
                   whose Tune run finished
    state.json     cache directory and tracking URI chosen at creation (resume and report reuse them)
    lock           held while a process drives the study

A unit is one (n, seed) of the spec's factors, labelled ``n<n>`` (``n<n>-s<seed>`` with several seeds); its
tgdp Optuna study and Tune run are both named ``<study>-<label>`` (``run_name``); each other tuned method
(the spec's ``methods:``) has its own, ``<study>-<label>-<method>``, and ``trials/<label>-<method>/``
(``method_label``).

The paths of ``StudyPaths`` are absolute (Ray workers and MLflow may run in other working directories);
``state.json`` stores paths inside the study directory relative to it, so a study can be moved or copied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import UserError
from study.safe_io import write_text

# Safe study name: starts alphanumeric, then letters, digits, "_", ".", "-"; at most 64 characters.
STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STUDY_NAME_RULE = "1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit, no '..'"
DEFAULT_STUDIES_DIR = "studies"  # default --dir, relative to the working directory
RESULT_FILE = "result.pt"  # a finished trial's final evaluation, written by study.trial.trial_loop
STATE_FILE = "state.json"
_SQLITE = "sqlite:///"  # + an absolute path gives four slashes; + a relative one is relative to the study
# SQLAlchemy reads "?" in sqlite:///PATH as the start of a query ("#" and "%" are URL syntax too): the study's
# Optuna and MLflow databases would be opened elsewhere, e.g. /tmp/a?b/optuna.db as /tmp/a
URL_UNSAFE = "?#%"


class StudyPathError(UserError):
    """A bad study name or a path that is not a usable study directory."""


def is_safe_name(name: object) -> bool:
    """True for a name that is a single, harmless path component (no traversal, no slashes)."""
    return isinstance(name, str) and bool(STUDY_NAME_RE.fullmatch(name)) and ".." not in name


def check_url_safe(root: Path, what: str) -> Path:
    """``root`` if its path can sit in the study's sqlite URLs, else a ``StudyPathError`` naming the character."""
    bad = sorted({c for c in str(root) if c in URL_UNSAFE})
    if bad:
        raise StudyPathError(f"{what} {root}: contains {' '.join(repr(c) for c in bad)}, which the study's sqlite "
                             f"URLs (Optuna, MLflow) cannot carry; allowed: a path without {' '.join(URL_UNSAFE)}")
    return root


def validate_study_name(name: object) -> str:
    """Return ``name`` if it is a safe study name, else raise ``StudyPathError``."""
    if not is_safe_name(name):
        raise StudyPathError(f"invalid study name {name!r}; allowed: {STUDY_NAME_RULE}")
    return name  # type: ignore[return-value]


@dataclass(frozen=True)
class StudyPaths:
    """Absolute paths of one study directory (nothing is created by constructing this)."""

    root: Path  # <dir>/<name>, absolute

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def spec_sha(self) -> Path:
        return self.root / "spec.sha256"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    def trials_dir(self, label: str) -> Path:
        """The result files of one unit's trials (``<trial id>/result.pt``) and its ``DONE`` marker."""
        return self.root / "trials" / label

    def result(self, label: str, trial_id: str) -> Path:
        """Where the trial's final evaluation is saved (``study.trial.trial_loop`` writes it)."""
        return self.trials_dir(label) / trial_id / RESULT_FILE

    def done_marker(self, label: str) -> Path:
        """Present once the unit's Tune run finished (resume then skips the unit)."""
        return self.trials_dir(label) / "DONE"

    def read_state(self) -> dict[str, str]:
        """``state.json`` ({} before the first run) with its paths absolute again. Older studies stored
        absolute paths: those are read as they are."""
        try:
            state = json.loads(self.state.read_text()) if self.state.is_file() else {}
        except (ValueError, UnicodeDecodeError) as e:  # truncated or overwritten: a message, never a traceback
            raise StudyPathError(f"{self.state}: not valid JSON ({e}); restore it from a backup, or delete it to "
                                 "fall back to the study's own mlflow.db and cache/") from None
        if not isinstance(state, dict) or not all(isinstance(v, str) for v in state.values()):
            raise StudyPathError(f"{self.state}: expected an object of strings (cache_dir, tracking_uri); "
                                 "restore it from a backup, or delete it")
        if "cache_dir" in state:
            state["cache_dir"] = str(self.root / state["cache_dir"])  # an absolute value stays itself
        uri = state.get("tracking_uri", "")
        if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
            state["tracking_uri"] = _SQLITE + str(self.root / uri[len(_SQLITE):])
        return state

    def write_state(self, state: dict[str, str]) -> None:
        """Write ``state.json`` (atomically), with paths inside the study directory relative to it."""
        out = dict(state)
        if "cache_dir" in out:
            out["cache_dir"] = self._relative(Path(out["cache_dir"]))
        uri = out.get("tracking_uri", "")
        if uri.startswith(_SQLITE + "/"):
            out["tracking_uri"] = _SQLITE + self._relative(Path(uri[len(_SQLITE):]))
        write_text(self.state, json.dumps(out, indent=1), root=self.root)

    @staticmethod
    def absolute_uri(uri: str) -> str:
        """A user-given tracking URI with a relative sqlite path made absolute (relative to the working
        directory, as MLflow reads it): in state.json a relative path means relative to the study."""
        if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
            return _SQLITE + str(Path(uri[len(_SQLITE):]).resolve())
        return uri

    def _relative(self, path: Path) -> str:
        """``path`` relative to the study directory when it lies inside it, else absolute."""
        try:
            return path.resolve().relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)

    @property
    def optuna_url(self) -> str:
        """SQLAlchemy URL of the Optuna storage."""
        return f"sqlite:///{self.optuna_db}"

    @property
    def mlflow_url(self) -> str:
        """Default MLflow tracking URI (``--tracking-uri`` overrides it)."""
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifact_location(self) -> str:
        """Absolute artefact location for the MLflow experiment."""
        return self.mlartifacts.as_uri()

    def exists(self) -> bool:
        """True when this directory already holds a study (its spec.yaml)."""
        return self.spec.is_file()

    def make_dirs(self) -> None:
        """Create the directory tree (the caller writes spec.yaml first; see ``study.spec.write_spec``)."""
        for d in (self.root, self.mlartifacts, self.ray, self.cache, self.report):
            d.mkdir(parents=True, exist_ok=True)


def unit_label(spec: Any, n: int, seed: int) -> str:
    """``n<n>``, or ``n<n>-s<seed>`` when the spec (a ``study.spec.StudySpec``) has several seeds."""
    return f"n{n}" if len(spec.factors.seeds) == 1 else f"n{n}-s{seed}"


def units(spec: Any) -> list[tuple[int, int, str]]:
    """Every unit (n, seed, label) of the spec, in run order (n outer, seed inner)."""
    return [(n, s, unit_label(spec, n, s)) for n in spec.factors.n for s in spec.factors.seeds]


def method_label(label: str, method: str) -> str:
    """The label of tuned ``method``'s Optuna study, Tune run and trials directory in unit ``label``: the unit's
    own for tgdp (studies made before ``methods:`` resume under their names), ``<label>-<method>`` otherwise."""
    return label if method == "tgdp" else f"{label}-{method}"


def method_runs(spec: Any) -> list[tuple[int, int, str, str, str]]:
    """Every tuned method's run (n, seed, unit label, method, run label) of the spec, unit by unit."""
    return [(n, s, label, m, method_label(label, m)) for n, s, label in units(spec) for m in spec.tuned_methods]


def run_name(spec: Any, label: str) -> str:
    """Name of a unit's Optuna study and of its Tune run."""
    return f"{spec.name}-{label}"


def study_paths(base_dir: str | Path, name: str) -> StudyPaths:
    """Layout of the (possibly not yet existing) study ``<base_dir>/<name>``; validates the name."""
    validate_study_name(name)
    base = Path(base_dir).expanduser().resolve()
    if base.exists() and not base.is_dir():
        raise StudyPathError(f"--dir {base}: not a directory (a study directory is created inside it)")
    if StudyPaths(base).exists():  # `run --dir` takes the parent; every other verb takes the study itself
        raise StudyPathError(f"--dir {base}: is a study directory; --dir takes the parent the study is created in "
                             f"(e.g. --dir {base.parent}); to continue this study: tgdp-study resume {base}")
    root = (check_url_safe(base, "--dir") / name).resolve()
    if root.parent != base:  # belt and braces: the name regex already forbids traversal
        raise StudyPathError(f"study name {name!r} escapes the study directory {base}")
    return StudyPaths(root)


def open_study_dir(path: str | Path) -> StudyPaths:
    """An existing study directory; it must contain spec.yaml (what ``run`` wrote)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        why = "not a directory" if root.exists() else "no such directory"
        raise StudyPathError(f"not a study directory: {root} ({why})")
    paths = StudyPaths(check_url_safe(root, "study directory"))
    if not paths.spec.is_file():
        inside = [Path(path) / p.name for p in list_studies(root)]  # given the parent (e.g. studies/)? name them
        hint = "" if not inside else (f"; did you mean {inside[0]}?" if len(inside) == 1 else
                                      f"; it holds studies, did you mean one of {', '.join(map(str, inside))}?")
        raise StudyPathError(f"not a study directory: {root} (no spec.yaml){hint}")
    return paths


def list_studies(base_dir: str | Path) -> list[StudyPaths]:
    """Studies directly under ``base_dir`` (or ``base_dir`` itself if it is one), sorted by name."""
    base = Path(base_dir).expanduser().resolve()
    if not base.is_dir():
        raise StudyPathError(f"{'not a directory' if base.exists() else 'no such directory'}: {base}")
    if StudyPaths(base).exists():
        return [StudyPaths(check_url_safe(base, "study directory"))]
    return sorted(
        (StudyPaths(check_url_safe(d, "study directory")) for d in base.iterdir()
         if d.is_dir() and StudyPaths(d).exists()),
        key=lambda p: p.name,
    )
