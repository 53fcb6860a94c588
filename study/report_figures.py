"""The report's figures and what its text says about them: per unit and tuned method the Optuna figures and the
learning curves; the comparison panels' titles (with the test value) and the methods whose panel is flagged.

``study.report`` calls these; the drawing is ``study.plots``, the curves' data ``study.curves``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from study.curves import trial_curves
from study.paths import StudyPaths, run_name
from study.spec import StudySpec


def unit_figures(paths: StudyPaths, spec: StudySpec, label: str, study: Any,
                 finished: Callable[[Any], bool]) -> tuple[list[Path], list[str]]:
    """The figures of one Tune run (unit and tuned method ``label``) in ``<study>/report/``, and a note per figure
    left out (Markdown list items)."""
    from study import plots

    metric = spec.metrics[0]
    figures, notes = plots.optuna_plots(study, paths.report, label, metric)
    curves = trial_curves(paths.ray / run_name(spec, label), study, metric, finished)
    if (p := plots.learning_curves(curves, paths.report / f"{label}_learning_curves.png", metric,
                                   f"{label}: learning curves")) is not None:
        figures.append(p)
    return figures, notes


def panel_title(name: str, n: int, test: dict[str, Any], metric: str) -> str:
    """``vanilla n=10`` over ``test energy_distance 0.0123`` (``failed`` for a NaN: too many non-finite samples)."""
    v = test.get(metric)
    shown = "failed" if isinstance(v, float) and math.isnan(v) else (f"{v:.4g}" if isinstance(v, float) else v)
    return f"{name} n={n}\ntest {metric} {shown}"


def flagged_panels(panels: list[tuple[str, torch.Tensor, dict[str, Any]]]) -> list[str]:
    """A note per comparison panel that ``study.plots`` flags (its samples diverged or left the window)."""
    from study import plots

    out = []
    for title, samples, data in panels:
        off = plots.off_axes(samples, data)
        if off >= plots.OFF_AXES_FLAG:
            out.append(f"- {title.splitlines()[0]}: {100 * off:.0f}% of its samples are non-finite or outside the "
                       "comparison figure's window" + (" (diverged)" if off > 0.5 else ""))
    return out


__all__ = ["flagged_panels", "panel_title", "unit_figures"]
