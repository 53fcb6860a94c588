"""What became of each trial of a study, read from ``optuna.db`` and the result files: finished, stopped early
(at which epoch), failed, running or waiting; the words ``status``, ``trials.csv`` and the live progress share.

A trial *finished* when it ran to its final evaluation (its ``result.pt`` exists; Optuna: COMPLETE). A trial ASHA
or the time budget stopped is *stopped early*: Optuna PRUNED (``study.search.TaggingOptunaSearch``) with its last
in-training value as its last intermediate value and the guidance epoch it reached as the user attribute
``stop_epoch``. Studies run before that stored such trials COMPLETE without a result file: they count as stopped
early too (their stop epoch is then the last reported step, which for a study trial is its guidance epoch, since
only epoch reports reach Tune). FAIL is *failed*; RUNNING and WAITING keep their names.
"""

from __future__ import annotations

import math
from typing import Any, Callable

FINISHED, STOPPED, FAILED, RUNNING, WAITING = "finished", "stopped early", "failed", "running", "waiting"
OUTCOMES = (FINISHED, STOPPED, FAILED, RUNNING, WAITING)
STOP_EPOCH = "stop_epoch"  # Optuna user attribute of a stopped trial: the last guidance epoch it reported


def outcome(trial: Any, finished: Callable[[Any], bool]) -> str:
    """The outcome of Optuna ``trial``; ``finished(trial)``: whether its result file exists."""
    state = trial.state.name
    if state == "COMPLETE":
        return FINISHED if finished(trial) else STOPPED
    return {"PRUNED": STOPPED, "FAIL": FAILED, "RUNNING": RUNNING, "WAITING": WAITING}.get(state, state.lower())


def stop_epoch(trial: Any) -> int | None:
    """The guidance epoch at which a stopped trial ended (None when it reported no epoch)."""
    if STOP_EPOCH in trial.user_attrs:
        return int(trial.user_attrs[STOP_EPOCH])
    return trial.last_step  # older studies: the last intermediate step (the epoch, see the module docstring)


def duration_s(trial: Any) -> float | None:
    """Wall time from the trial's start to its end in seconds (None while it runs or before it starts)."""
    d = trial.duration
    return None if d is None else round(d.total_seconds(), 1)


def counts_line(trials: list[Any], finished: Callable[[Any], bool]) -> str:
    """``"3 finished, 2 stopped early (epoch 1-4), 0 failed"`` (running and waiting only when there are any)."""
    counts = {o: 0 for o in OUTCOMES}
    epochs = []
    for t in trials:
        o = outcome(t, finished)
        counts[o] = counts.get(o, 0) + 1
        if o == STOPPED and (e := stop_epoch(t)) is not None:
            epochs.append(e)
    span = "" if not epochs else (f" (epoch {min(epochs)})" if min(epochs) == max(epochs)
                                  else f" (epoch {min(epochs)}-{max(epochs)})")
    parts = [f"{counts[FINISHED]} {FINISHED}", f"{counts[STOPPED]} {STOPPED}{span}", f"{counts[FAILED]} {FAILED}"]
    parts += [f"{c} {o}" for o, c in counts.items() if o not in (FINISHED, STOPPED, FAILED) and c]
    return ", ".join(parts)


def outcome_columns(trial: Any, finished: Callable[[Any], bool], test: dict[str, float] | None,
                    metrics: list[str]) -> dict[str, Any]:
    """The trials.csv columns of ``trial``: outcome, stop epoch, duration, and the test-draw value of each
    objective metric (``test``: the result file's test metrics, None when it has none)."""
    o = outcome(trial, finished)
    row: dict[str, Any] = {"outcome": o, "stop_epoch": stop_epoch(trial) if o == STOPPED else "",
                           "duration_s": duration_s(trial) if duration_s(trial) is not None else ""}
    for m in metrics:
        v = (test or {}).get(m)
        row[f"test_{m}"] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return row


def short_params(params: dict[str, Any]) -> str:
    """``k=v, ...`` with floats at 4 significant digits; an off-switch shows as ``path=off`` instead of its
    ``<path>:switch`` pseudo-parameter (Optuna's params) or next to its off value (the Tune config)."""
    from study.space import SWITCH_SUFFIX

    cut = len(SWITCH_SUFFIX)
    off = {k[:-cut] for k, v in params.items() if k.endswith(SWITCH_SUFFIX) and v == "off"}
    shown = []
    for k, v in params.items():
        if k.endswith(SWITCH_SUFFIX):
            if k[:-cut] not in params and v == "off":
                shown.append(f"{k[:-cut]}=off")
            continue
        shown.append(f"{k}=off" if k in off else f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(shown)


__all__ = ["FAILED", "FINISHED", "OUTCOMES", "RUNNING", "STOPPED", "STOP_EPOCH", "WAITING", "counts_line",
           "duration_s", "outcome", "outcome_columns", "short_params", "stop_epoch"]
