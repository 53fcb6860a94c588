"""tgdp-study: the Ray / Optuna / MLflow study system around ``tgdp``.

One concept per module:

    study.spec    the study spec (YAML -> validated frozen ``StudySpec``), hashing, resource fit
    study.space   the ``space:`` section: parameter schema, Optuna define-by-run, samplers, grid
    study.paths   study names and the on-disk layout of a study directory
    study.cli     the ``tgdp-study`` command line

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
