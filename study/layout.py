"""``run --dry-run``: what a study will write, as the paths of this spec (the layout of ``study.paths``)."""

from __future__ import annotations

from typing import Any

from study.paths import StudyPaths, method_runs, run_name


def describe_layout(spec: Any, paths: StudyPaths) -> str:
    """The study directory's files and folders for ``spec`` (a ``StudySpec``), one per line, named for its units
    and tuned methods (text, no trailing newline)."""
    runs = [run for *_, run in method_runs(spec)]
    shown = runs if len(runs) <= 4 else [*runs[:3], "...", runs[-1]]
    lines = [
        f"== what it will write: {paths.root}/ ==",
        "  spec.yaml, spec.sha256   the resolved spec and its hash (resume refuses a changed spec)",
        f"  optuna.db                one Optuna study per unit and tuned method: "
        f"{', '.join(run_name(spec, r) if r != '...' else r for r in shown)}",
        "  mlflow.db, mlartifacts/  MLflow runs (a parent per unit, trials, baselines, summary) and artefacts",
        f"  ray/                     Tune/Train storage: {run_name(spec, '<run>')} per run",
        "  cache/                   stage cache (source model, classifier, shared methods), reused across runs",
        f"  trials/                  per run ({', '.join(shown)}): <trial>/result.pt, DONE when finished",
        "  report/                  summary.csv/.md, trials.csv, figures (tgdp-study report)",
        "  state.json, lock         cache directory and tracking URI; held while a process drives the study",
    ]
    return "\n".join(lines)


__all__ = ["describe_layout"]
