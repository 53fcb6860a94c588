"""tgdp-study: the Ray / Optuna / MLflow study system around ``tgdp``.

One concept per module:

    spec layer (no Ray, no MLflow)
    study.spec          the study spec (YAML -> validated frozen ``StudySpec``), hashing, spec.yaml files
    study.spec_issues   pydantic errors as ``Issue``s; whether the trials fit a machine or cluster
    study.space         the ``space:`` section: parameter schema, checks, trial params -> config overrides
    study.method_spaces the ``methods:`` section: other methods tuned on the same budget, each in its own space
    study.yaml_io       the one YAML reader and writer
    study.paths         study names, the on-disk layout (unit labels, trial results, state.json)
    study.experiments   the experiment registry (one ``Experiment`` per testbed)
    study.cli           the ``tgdp-study`` command line (study.cli_help: examples, --version)
    study.overrides     ``--set KEY=VALUE`` (``run --set`` on a spec, ``gmm --set`` on a config)
    study.plan          ``run --dry-run`` (study.layout: what a study writes; study.estimate, study.estimate_gpu: run time)
    study directory as a trust boundary (docs/security.md)
    study.safe_io       writes that never follow a symlink; study.integrity: the study's own files checked
    study.signing       HMAC manifest of the Ray Tune state that resume unpickles
    study.preflight     what run / resume check before creating anything; the staging directory
    study.relocate      moved or copied studies work on themselves; study.ray_auth: Ray token authentication
    running a study (driver)
    study.runner        run / resume: the lock, Ray, one Tune run per unit, reconciliation
    study.extend        when a study is finished; ``resume --add-trials`` (a finished study extended)
    study.search        Optuna inside Tune (define-by-run, samplers, initial trials) and ASHA
    study.callback      the Tune callback: progress lines and the trials' MLflow runs
    study.runtime       the trial contract that crosses Ray (``TrialRuntime``, ``resolve``)
    study.cache         the stage cache (source model, classifier, shared methods)
    study.tracking      the MLflow layout (``Tracker``); study.trial_records: trials finalised there
    study.report        status, report and best, from the study's files
    study.evaluate      the protocol's final table: frozen best configs on evaluation seeds (``evaluate``)
    inside Ray
    study.trial         the Tune trainable and the Train loops of a trial and of the shared stages
    study.ray_reporter  reports and checkpoints to Ray Train / Tune
    around
    study.plots, study.ui, study.docgen, study.results_doc, study.statistics, study.programs

This package imports nothing heavy at import time (no ray, no mlflow); the execution modules
(``study.runner``, ``study.report``, ``study.ui``) are imported lazily by the CLI.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Issue", "SpecError", "UserError"]


class UserError(ValueError):
    """An error the user can fix (bad spec, bad path, wrong command); the CLI prints it and exits 2."""


class _Unset(enum.Enum):  # an enum member pickles by reference (errors may cross Ray processes)
    UNSET = 0


_UNSET: Any = _Unset.UNSET


@dataclass(frozen=True)
class Issue:
    """One problem in a spec: where (dotted key path), what, the offending value and what is allowed."""

    path: str  # dotted key path, e.g. "space.guidance.width.low" ("" = the whole document)
    problem: str  # what is wrong, e.g. "empty range (low >= high)"
    value: Any = _UNSET  # the bad value (omitted from the message when unset)
    allowed: str = ""  # what would be accepted

    def format(self, file: str) -> str:
        parts = [f"{file}: {self.path or '<document>'}: {self.problem}"]
        if self.value is not _UNSET:
            parts.append(f"got {self.value!r}")
        msg = "; ".join(parts)
        return f"{msg}; allowed: {self.allowed}" if self.allowed else msg


class SpecError(UserError):
    """An invalid study spec. ``str(err)`` names the file, key path, bad value and what is allowed."""

    def __init__(self, file: str, issues: list[Issue] | Issue) -> None:
        self.file = str(file)
        self.issues: tuple[Issue, ...] = (issues,) if isinstance(issues, Issue) else tuple(issues)
        lines = [i.format(self.file) for i in self.issues]
        if len(lines) > 1:
            msg = f"{self.file}: {len(lines)} problems in the study spec:\n  " + "\n  ".join(lines)
        else:
            msg = lines[0] if lines else f"{self.file}: invalid study spec"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, list(self.issues)))
