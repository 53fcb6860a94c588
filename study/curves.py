"""Learning curves of a unit's trials: the validation metric per guidance epoch, read from the study's files.

The source is the ``result.json`` that Ray Tune writes per trial under ``<study>/ray/<run>/trial_<id>/`` (one
JSON line per Tune-bound report: ``epoch``, the metrics, ``final`` on the final evaluation), not the Optuna
study: Optuna keeps no intermediate values for multi-objective studies, and its step is Tune's report counter
rather than the epoch. An ECG proxy report (``proxy``) has a NaN objective and is left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Curve:
    """One trial's curve. ``points``: (epoch, value) of the in-training evaluations; ``final``: (epoch, value) of
    its final evaluation (None when it has none); ``stopped_early``: ASHA or the time budget ended it first."""

    number: int  # the Optuna trial number
    points: list[tuple[int, float]] = field(default_factory=list)
    final: tuple[int, float] | None = None
    stopped_early: bool = False


def read_result_lines(path: Path) -> list[dict[str, Any]]:
    """The reports of one Tune trial (an unreadable last line, from a killed trial, is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def trial_curves(ray_run_dir: Path, study: Any, metric: str, finished: Callable[[Any], bool]) -> list[Curve]:
    """The curve of every trial of Optuna ``study`` that has a Tune result file under ``ray_run_dir``.

    ``finished(trial)``: whether the trial ran to its final evaluation (its result file exists); a COMPLETE or
    PRUNED trial without one was stopped early, and its last point is where it stopped."""
    out = []
    for t in study.trials:
        tid = t.user_attrs.get("tune_trial_id")
        files = sorted(ray_run_dir.glob(f"*{tid}*/result.json")) if tid else []
        if not files:
            continue
        points, final = [], None
        for row in read_result_lines(files[0]):
            v = row.get(metric)
            if "epoch" not in row or row.get("proxy") or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            if row.get("final"):
                final = (int(row["epoch"]), float(v))
            else:
                points.append((int(row["epoch"]), float(v)))
        stopped = t.state.name in ("COMPLETE", "PRUNED") and not finished(t) and final is None
        if points or final:
            out.append(Curve(t.number, points, final, stopped))
    return out


__all__ = ["Curve", "read_result_lines", "trial_curves"]
