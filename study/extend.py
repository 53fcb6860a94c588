"""When a study's runs are finished, and extending a finished study (``resume --add-trials K``).

A tuned method's run in a unit (``study.paths.method_runs``) is finished when its ``trials/<run>/DONE`` marker
records a budget (``trials_per_n <k>``) at least the spec's ``budget.trials_per_n``. Markers written before
budgets were recorded (``<k> trials`` only) count as finished: their study has never been extended (
``add_trials`` stamps them with the old budget first).

``add_trials`` raises ``budget.trials_per_n`` of a finished study by K and writes the new spec.yaml and
spec.sha256 (validated like any spec: a spec edited by hand is still refused by ``read_study_spec``). The
runner then sees every run unfinished and runs the K more trials of each as a new Tune run
``<study>-<run>-to<trials_per_n>`` (``tune_run``) on the run's *same* Optuna study, so the sampler
continues from every trial already told; Tune cannot raise a finished run's ``num_samples`` on restore.

``resume_finished`` is ``resume`` of a finished study: no Ray, no lock; the report is rewritten only when
it is older than the newest DONE marker or spec.yaml (or missing), and printed.
"""

from __future__ import annotations

import re
from pathlib import Path

from study import UserError
from study.paths import StudyPaths, method_runs, run_name
from study.safe_io import write_text
from study.spec import StudySpec, dump_spec, parse_spec, read_study_spec, spec_dict, spec_hash

PROG = "tgdp-study"
_BUDGET = re.compile(r"^trials_per_n (\d+)$", re.M)
REPORT_FILE = "summary.md"  # the report's Markdown (study.report.write_report); its age says if it is stale


def done_budget(paths: StudyPaths, run: str) -> int | None:
    """The budget recorded in run's DONE marker; None without a marker, 0 for a marker that records none."""
    marker = paths.done_marker(run)
    if not marker.is_file():
        return None
    m = _BUDGET.search(marker.read_text())
    return int(m.group(1)) if m else 0


def run_finished(paths: StudyPaths, run: str, spec: StudySpec) -> bool:
    """True when ``run``'s Tune runs reached the spec's trials_per_n (a DONE marker without a budget: True)."""
    budget = done_budget(paths, run)
    return budget is not None and (budget == 0 or budget >= spec.budget.trials_per_n)


def study_finished(paths: StudyPaths, spec: StudySpec) -> bool:
    """True when every tuned method's run in every unit is finished."""
    return all(run_finished(paths, run, spec) for *_, run in method_runs(spec))


def mark_done(paths: StudyPaths, run: str, spec: StudySpec, trials: int) -> None:
    """Write run's DONE marker: the trials its Tune runs ran in all and the budget they reached."""
    done = paths.done_marker(run)
    done.parent.mkdir(parents=True, exist_ok=True)
    write_text(done, f"{trials} trials\ntrials_per_n {spec.budget.trials_per_n}\n", root=paths.root)


def done_trials(paths: StudyPaths, run: str) -> int:
    """The trial count in run's DONE marker (0 without one)."""
    marker = paths.done_marker(run)
    m = re.match(r"(\d+) trials", marker.read_text()) if marker.is_file() else None
    return int(m.group(1)) if m else 0


def tune_run(spec: StudySpec, paths: StudyPaths, run: str) -> tuple[str, StudySpec]:
    """(Tune experiment name, spec whose ``trials_per_n`` is that Tune run's ``num_samples``) of ``run``:
    ``<study>-<run>`` with the whole budget, or, for a run finished at a smaller budget (the study was
    extended), ``<study>-<run>-to<budget>`` with the trials still to run."""
    done = done_budget(paths, run)
    if not done:
        return run_name(spec, run), spec
    budget = spec.budget.model_copy(update={"trials_per_n": spec.budget.trials_per_n - done})
    return f"{run_name(spec, run)}-to{spec.budget.trials_per_n}", spec.model_copy(update={"budget": budget})


def add_trials(paths: StudyPaths, k: int) -> StudySpec:
    """Raise ``budget.trials_per_n`` of the finished study at ``paths`` by ``k``; returns the new spec.

    Refuses a study with an unfinished run (a restored Tune run keeps its old ``num_samples``: resume it
    first) and a spec.yaml edited since creation (``read_study_spec``). Existing DONE markers without a budget
    are stamped with the old one, so they read as finished at the old budget only."""
    spec = read_study_spec(paths)
    if k < 1:
        raise UserError(f"--add-trials {k}: allowed: an integer >= 1")
    unfinished = [run for *_, run in method_runs(spec) if not run_finished(paths, run, spec)]
    if unfinished:
        raise UserError(f"--add-trials: study {paths.root} has unfinished runs ({', '.join(unfinished)}); "
                        f"finish them first with `{PROG} resume {paths.root}`, then add trials")
    old = spec.budget.trials_per_n
    data = spec_dict(spec)
    data["budget"]["trials_per_n"] = old + k
    new = parse_spec(data, f"{paths.spec} + --add-trials {k}")
    for *_, run in method_runs(spec):
        if done_budget(paths, run) == 0:
            mark_done(paths, run, spec, done_trials(paths, run))
    # each replaced atomically, never through a symlink: a crash between them leaves a pair resume refuses
    for target, text in ((paths.spec_sha, spec_hash(new) + "\n"), (paths.spec, dump_spec(new))):
        write_text(target, text, root=paths.root)
    print(f"study {spec.name}: budget.trials_per_n {old} -> {old + k} (spec.yaml and spec.sha256 updated)",
          flush=True)
    return new


def _stale(paths: StudyPaths) -> bool:
    """True when report/summary.md is missing or older than spec.yaml or a DONE marker."""
    report = paths.report / REPORT_FILE
    if not report.is_file():
        return True
    inputs = [paths.spec, *Path(paths.root, "trials").glob("*/DONE")]
    return report.stat().st_mtime < max(p.stat().st_mtime for p in inputs)


def resume_finished(paths: StudyPaths, spec: StudySpec) -> int:
    """``resume`` of a finished study: print that it is finished and its report (rewritten when stale)."""
    print(f"study {spec.name}: finished ({spec.budget.trials_per_n} trials per unit and method); nothing to "
          f"resume. More trials: `{PROG} resume {paths.root} --add-trials K`", flush=True)
    if _stale(paths):
        from study.report import write_report

        print(write_report(paths.root))
    else:
        print((paths.report / REPORT_FILE).read_text())
    return 0


__all__ = ["add_trials", "done_budget", "mark_done", "resume_finished", "run_finished", "study_finished",
           "tune_run"]
