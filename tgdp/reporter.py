"""The seam between a stage and whatever runs it (a notebook, a test, a Ray Train worker).

A stage never imports ray or mlflow. It reports metrics, and optionally a checkpoint state, at epoch
boundaries, and asks the reporter for the last state of its own stage so that it can continue where
it stopped. ``Reporter.report`` may be a collective barrier (Ray Train): every rank must call it with
the same stage and epoch; only rank 0's ``state`` is kept.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol


class Reporter(Protocol):
    def report(self, metrics: dict[str, float], *, stage: str, epoch: int, state: dict[str, Any] | None = None) -> None:
        """Record ``metrics`` of ``stage`` after ``epoch``; ``state`` (if given) is a resumable checkpoint."""

    def restore(self, stage: str) -> dict[str, Any] | None:
        """The latest checkpoint state saved by ``stage``, or None to start it from scratch."""

    def should_stop(self) -> bool:
        """True when the runner wants the stage to stop early (e.g. a time budget)."""


class MemoryReporter:
    """Keeps every reported metric row and the latest state per stage in memory."""

    def __init__(self, verbose: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.verbose = verbose

    def report(self, metrics: dict[str, float], *, stage: str, epoch: int, state: dict[str, Any] | None = None) -> None:
        self.rows.append({"stage": stage, "epoch": epoch, **metrics})
        if state is not None:
            self.states[stage] = copy.deepcopy(state)
        if self.verbose:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"[{stage}] epoch {epoch}: {shown}", flush=True)

    def restore(self, stage: str) -> dict[str, Any] | None:
        return self.states.get(stage)

    def should_stop(self) -> bool:
        return False

    def history(self, stage: str, key: str) -> list[float]:
        """The reported values of ``key`` for ``stage``, in order."""
        return [r[key] for r in self.rows if r["stage"] == stage and key in r]
