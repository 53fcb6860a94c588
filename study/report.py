"""``status``, ``report`` and ``best``: read a study from its files, never from Ray.

Sources: ``optuna.db`` (trial states and validation objectives), ``trials/<label>/<tune id>/result.pt``
(the final validation *and test* metrics of each finished trial; the test ones are read only for the
best trial), and the stage cache (baselines and oracles, with their test metrics).

The report (``<study>/report/``): ``summary.csv`` / ``summary.md`` (method x metric x n on the test
draw: the best trial per n, selected on validation, next to every baseline and oracle),
``trials.csv`` (every trial), ``samples_grid.png``, Optuna figures and learning curves
(``study.report_figures``); the same go to the MLflow summary run, with the best values per n
(``study.metric_names``). MLflow failures do not lose the report: files are written first, and the next
``report`` logs what is missing (runs are found by tags, never duplicated).
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from study import UserError
from study.experiments import experiment_for
from study.integrity import REPORT_LOCK
from study.method_spaces import TGDP
from study.outcomes import counts_line, outcome_columns, short_params
from study.paths import StudyPaths, method_label, method_runs, units
from study.safe_io import no_symlink_below, open_nofollow, write_text
from study.yaml_io import dump_yaml, read_yaml
from study.spec import StudySpec, parse_spec, read_study_spec, spec_dict


def _load_study(paths: StudyPaths, name: str, readonly: bool = False):
    """The Optuna study ``name`` or None; ``readonly``: opened so that nothing is written (``status``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not paths.optuna_db.is_file():
        return None
    from sqlalchemy.exc import DatabaseError

    try:
        url = f"sqlite:///file:{paths.optuna_db}?mode=ro&uri=true" if readonly else paths.optuna_url
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None
    except DatabaseError as e:  # not sqlite (overwritten, truncated): a clean message, never a traceback
        raise UserError(f"{paths.optuna_db}: not a readable Optuna database ({getattr(e, 'orig', e)}); "
                        "restore it from a backup or start a new study") from None


def best_trial(study, spec: StudySpec, finished: Callable[[Any], bool] | None = None, *, strict: bool = False):
    """The best COMPLETE trial (multi-objective: the Pareto trial best on the first objective), or None.

    With ``finished``, only trials that ran to their final evaluation compete when there are any: an
    ASHA-stopped trial's value is an epoch-E' proxy on fewer samples, and it has no test-draw result (older
    studies stored such trials COMPLETE). With no COMPLETE trial, the PRUNED ones (stopped early; their value is
    their last in-training value) stand in: ``status`` shows the best so far, the report no row for it.
    ``strict``: never fall back to stopped trials (None when no trial finished), for choices compared across units."""
    import optuna

    state = optuna.trial.TrialState
    done = [t for t in study.trials if t.state == state.COMPLETE and t.values]
    if finished is not None:
        done = [t for t in done if finished(t)] or ([] if strict else done)
    if not done and not strict:
        done = [t for t in study.trials if t.state == state.PRUNED and t.values]
    if not done:
        return None
    front = {t.number for t in study.best_trials} if spec.multi_objective else set()
    pool = [t for t in done if t.number in front] or done
    sign = 1 if spec.directions[0] == "minimize" else -1
    pool = [t for t in pool if t.values and math.isfinite(t.values[0])] or pool
    return min(pool, key=lambda t: sign * t.values[0])


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# The sample accounting of tgdp.metrics.sample_metrics: a row with failed = 1 (over 1 % non-finite samples) has
# NaN metrics, printed as "failed" in summary.md; summary.csv keeps the NaN and both columns.
ACCOUNTING_KEYS = ("nonfinite_fraction", "failed")


def _cell(row: dict[str, Any], col: str) -> str:
    v = row.get(col, "")
    return "failed" if row.get("failed") and isinstance(v, float) and math.isnan(v) else _fmt(v)


def status(study_dir: str | Path) -> str:
    """Trials per n and their state, and the best so far (from optuna.db and the result files of finished trials)."""
    paths = StudyPaths(Path(study_dir).resolve())
    spec = read_study_spec(paths)
    lines = [f"study {spec.name}  ({paths.root})", f"objective: " +
             ", ".join(f"{o.direction} {o.metric}" for o in spec.objective)]
    width = 1 + max(len(label) for *_, label in method_runs(spec))  # the counts line up as a table
    for n, seed, unit, method, label in method_runs(spec):
        study = _load_study(paths, f"{spec.name}-{label}", readonly=True)  # status never writes
        if study is None:
            lines.append(f"  {label + ':':<{width}} not started")
            continue
        shown = counts_line(study.trials, _finished(paths, label)) if study.trials else "no trials yet"
        lines.append(f"  {label + ':':<{width}} {shown} (of {spec.budget.trials_per_n})"
                     + ("  [done]" if paths.done_marker(label).is_file() else ""))
        b = best_trial(study, spec, _finished(paths, label))
        if b is not None:
            vals = ", ".join(f"{m}={_fmt(v)}" for m, v in zip(spec.metrics, b.values))
            lines.append(f"    best: trial #{b.number} ({b.user_attrs.get('tune_trial_id', '?')}) {vals}  "
                         f"params {short_params(b.params)}")
    return "\n".join(lines)


def _result_path(paths: StudyPaths, label: str, trial) -> Path | None:
    """Where the trial's final evaluation is saved (None for a trial Tune never named)."""
    tid = trial.user_attrs.get("tune_trial_id")
    return paths.result(label, str(tid)) if tid else None


def _finished(paths: StudyPaths, label: str) -> Callable[[Any], bool]:
    return lambda t: (p := _result_path(paths, label, t)) is not None and p.is_file()


def _result(paths: StudyPaths, label: str, trial) -> dict[str, Any] | None:
    import torch

    p = _result_path(paths, label, trial)
    return torch.load(p, map_location="cpu", weights_only=True) if p is not None and p.is_file() else None


def _baselines(spec: StudySpec, cache_dir: Path, n: int, seed: int) -> list[dict[str, Any]]:
    from study.cache import StageCache

    exp = experiment_for(spec)
    cache = StageCache(cache_dir)
    data_cfg, cfg = spec.resolved_config(n, seed)
    out = []
    for m in exp.baselines:
        e = cache.get("baseline", exp.baseline_key(m, data_cfg, cfg))
        if e is not None:
            out.append(e)
    return out


def _table_md(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(_cell(r, c) for c in cols) + " |\n" for r in rows)


def _csv(rows: list[dict[str, Any]], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_report(study_dir: str | Path, tracking_uri: str | None = None, resync: bool = True) -> str:
    """Write report/ (tables, figures), sync MLflow (summary run and anything missing); return the Markdown.
    ``resync=False`` (the driver, right after logging every run itself) skips looking for missing baseline and
    trial runs. Concurrent calls (two shells, or one beside a finishing driver) run one after the other: two MLflow
    syncs at once left mlflow.db half-migrated."""
    paths = StudyPaths(Path(study_dir).resolve())
    with report_lock(paths):
        return _write_report(paths, tracking_uri, resync)


@contextmanager
def report_lock(paths: StudyPaths) -> Iterator[None]:
    """Exclusive ``flock`` on ``<study>/report.lock`` (``REPORT_LOCK``; waits for another ``report`` to finish)."""
    fd = open_nofollow(paths.root / REPORT_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another report of {paths.root} to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_report(paths: StudyPaths, tracking_uri: str | None, resync: bool) -> str:
    from study import metric_names, plots
    from study.report_figures import flagged_panels, panel_title, unit_figures

    spec = read_study_spec(paths)
    state = paths.read_state()
    cache_dir = Path(state.get("cache_dir", paths.cache))
    tracking_uri = tracking_uri or state.get("tracking_uri", paths.mlflow_url)
    out = paths.report
    no_symlink_below(paths.root, out)
    out.mkdir(exist_ok=True)
    summary, trial_rows, panels, figures, studies, missing = [], [], [], [], [], []
    notes, bests, baseline_values = [], [], []  # figure notes; MLflow: (unit, n, best values), (n, test values)
    metric = spec.metrics[0]
    for n, seed, unit in units(spec):
        baselines = _baselines(spec, cache_dir, n, seed)
        best_rows, best_panels = [], []
        for method in spec.tuned_methods:  # ranked within each method on validation; compared on the test draw
            label = method_label(unit, method)
            study = _load_study(paths, f"{spec.name}-{label}")
            if study is None:
                continue
            studies.append((label, study))
            finished = _finished(paths, label)
            for t in study.trials:
                test = (_result(paths, label, t) or {}).get("test") if finished(t) else None
                trial_rows.append({"n": n, "seed": seed, "method": method, "number": t.number,
                                   "tune_trial_id": t.user_attrs.get("tune_trial_id", ""),
                                   "initial": bool(t.user_attrs.get("initial_trial")), "state": t.state.name,
                                   **outcome_columns(t, finished, test, spec.metrics),
                                   **dict(zip(spec.metrics, t.values or [])),
                                   **{f"param.{k}": v for k, v in t.params.items()}})
            b = best_trial(study, spec, _finished(paths, label))
            res = _result(paths, label, b) if b is not None else None
            if res is not None:
                best_rows.append({"method": f"{method} (best)", "n": n, "seed": seed, "trial": res["trial_id"],
                                  **res["test"]})
                best_panels.append((panel_title(f"{'TGDP' if method == TGDP else method} best", n, res["test"],
                                                metric), res["samples"], res["data"]))
                bests.append((unit, n, {**metric_names.best(method, "val", res["validation"]),
                                        **metric_names.best(method, "test", res["test"])}))
            elif b is not None:  # every trial of this n was stopped early (or the run is still going)
                missing.append(f"- {label}: no trial has finished yet; the best so far, #{b.number} "
                               f"({b.user_attrs.get('tune_trial_id', '?')}), has no test-draw result")
            figs, why = unit_figures(paths, spec, label, study, _finished(paths, label))
            figures, notes = figures + figs, notes + why
        summary += best_rows + [{"method": e["method"], "n": n, "seed": seed, "trial": "", **e["test"]}
                                for e in baselines]
        panels += best_panels + [(panel_title(e["method"], n, e["test"], metric), e["samples"], e["data"])
                                 for e in baselines]
        baseline_values += [(n, metric_names.split(f"{e['method']}_test", e["test"])) for e in baselines]
    notes = flagged_panels(panels) + notes
    cols = ["method", "n", "seed", "trial", *experiment_for(spec).table_metrics,
            *(k for k in ACCOUNTING_KEYS if any(k in r for r in summary))]
    write_text(out / "summary.csv", _csv(summary, cols), root=paths.root)
    md = (f"# {spec.name}: test-draw comparison (best trial per n and tuned method selected on validation)\n\n"
          + _table_md(summary, cols) + "".join(f"\n{m}" for m in missing) + ("\n" if missing else "")
          + ("\n## Figures\n\n" + "\n".join(notes) + "\n" if notes else ""))
    write_text(out / "summary.md", md, root=paths.root)
    tcols = sorted({k for r in trial_rows for k in r}, key=lambda k: (k.startswith("param."), k))
    write_text(out / "trials.csv", _csv(trial_rows, tcols), root=paths.root)
    if (p := plots.samples_grid(panels, out / "samples_grid.png")) is not None:
        figures.append(p)
    note = ""
    try:
        _sync_mlflow(paths, spec, tracking_uri, out, figures, cache_dir=cache_dir, bests=bests,
                     baselines=baseline_values, resync=resync)
    except Exception as e:  # noqa: BLE001 - the files above are the report; MLflow is retried next time
        note = f"\n(MLflow not updated: {e}; run `tgdp-study report {paths.root}` again to log it)\n"
    return md + f"\nreport: {out}\n" + note


def _sync_mlflow(paths: StudyPaths, spec: StudySpec, tracking_uri: str, out: Path, figures: list[Path], *,
                 cache_dir: Path, bests: list[tuple[str, int, dict[str, float]]] = (),
                 baselines: list[tuple[int, dict[str, float]]] = (), resync: bool = True) -> None:
    """Parent, baseline and trial runs for everything on disk (baselines from the stage cache ``cache_dir``), then
    the summary run (all idempotent). ``bests``:
    (unit, n, best_<method>_* values) for the unit's parent run and the summary run (step = n, so the best value
    per n can be charted); ``baselines``: (n, <method>_test_* values) for the summary run. ``resync=False``: the
    summary run and the best values only (the driver has just logged every other run itself)."""
    from study.relocate import relocate_mlflow
    from study.spec import dump_spec
    from study.tracking import Tracker
    from study.trial_records import TrialRecords

    relocate_mlflow(paths, tracking_uri, spec.name)  # a moved or copied study logs into itself
    tracker = Tracker(tracking_uri, spec.name, paths.artifact_location)
    records = TrialRecords(tracker, paths, spec)
    for n, seed, unit in units(spec) if resync else ():
        labels = [method_label(unit, m) for m in spec.tuned_methods]
        if not any(paths.trials_dir(x).is_dir() or (paths.ray / f"{spec.name}-{x}").exists() for x in labels):
            continue
        parent = records.parent(unit)
        for e in _baselines(spec, cache_dir, n, seed):
            tracker.baseline_run(parent, unit, e)
        for label in labels:
            run_dir = paths.trials_dir(label)
            for d in sorted(run_dir.glob("*/result.pt")) if run_dir.is_dir() else []:
                run = tracker.find(kind="trial", trial_id=d.parent.name)
                if run is None or run.data.tags.get("finalized") != "true":
                    status_ = run.info.status if run is not None and run.info.status != "RUNNING" else "FINISHED"
                    records.finalize(label, d.parent.name, None, None, status_)
        if all(paths.done_marker(x).is_file() for x in labels):
            tracker.set_status(parent, "FINISHED")
    run_id, _ = tracker.get_or_create("summary", kind="summary", study=spec.name)
    for name in ("summary.csv", "summary.md", "trials.csv"):
        tracker.log_artifact(run_id, out / name, "report")
    for f in figures:
        tracker.log_artifact(run_id, f, "figures")
    for unit, n, values in bests:
        tracker.log_metrics(records.parent(unit), values, once=True)
        tracker.log_metrics(run_id, values, step=n, once=True)
    for n, values in baselines:
        tracker.log_metrics(run_id, values, step=n, once=True)
    tracker.log_text(run_id, dump_spec(spec), "spec.yaml")
    tracker.set_status(run_id, "FINISHED")


def best_over_seeds(paths: StudyPaths, spec: StudySpec, n: int, method: str = TGDP):
    """(best trial, seed) of tuned ``method`` at ``n`` over the development seeds' units, selected on the
    validation objective (``best_trial`` within each unit, then the best of those), or None before any finished."""
    found = []
    for nn, seed, unit in units(spec):
        label = method_label(unit, method)
        study = _load_study(paths, f"{spec.name}-{label}") if nn == n else None
        # strict: an early-stopped trial's in-training value is not comparable with another unit's final one
        if study is not None and (b := best_trial(study, spec, _finished(paths, label), strict=True)) is not None:
            found.append((b, seed))
    if not found:
        return None
    sign = 1 if spec.directions[0] == "minimize" else -1
    return min(found, key=lambda x: sign * x[0].values[0])


def check_best_out(paths: StudyPaths, out: Path, force: bool) -> None:
    """Refuse a ``best --out`` inside this or any study directory (``best --out STUDY/spec.yaml`` replaced the
    spec that resume verifies) and an existing file unless ``force``."""
    out = out.absolute()
    for d in out.resolve().parents:
        if d == paths.root or StudyPaths(d).exists():
            raise UserError(f"--out {out}: inside the study directory {d}; write the exported spec elsewhere")
    if (out.exists() or out.is_symlink()) and not force:
        raise UserError(f"--out {out}: exists; add --force to overwrite it")


def export_best(study_dir: str | Path, n: int, out: Path | None = None, method: str = TGDP, force: bool = False) -> str:
    """The spec of a single re-run of the best trial of ``method`` for ``n``: its params moved into ``fixed``."""
    from study.space import params_to_overrides

    paths = StudyPaths(Path(study_dir).resolve())
    if out is not None:
        check_best_out(paths, out, force)
    spec = read_study_spec(paths)
    if n not in spec.factors.n:
        raise UserError(f"n={n} is not a target size of study {spec.name}; allowed: {list(spec.factors.n)}")
    if method not in spec.tuned_methods:
        raise UserError(f"--method {method}: not tuned in study {spec.name}; allowed: {', '.join(spec.tuned_methods)}")
    found = best_over_seeds(paths, spec, n, method)
    if found is None:
        raise UserError(f"no finished trial for n={n} in {paths.root} yet (see `tgdp-study status {paths.root}`)")
    b, seed = found
    d = spec_dict(spec)
    fixed = {sec: dict(v) for sec, v in d.get("fixed", {}).items()}
    if method != TGDP:  # the method's own config transform first (tgdp_reg's overrides), as its trials ran
        from tgdp.config import to_dict

        base = to_dict(spec.base_config())
        for sec, values in to_dict(experiment_for(spec).method_config(method, spec.base_config())).items():
            diff = {k: v for k, v in values.items() if base[sec].get(k) != v}
            if diff:
                fixed.setdefault(sec, {}).update(diff)
    for sec, values in params_to_overrides(spec.space_of(method), b.params).items():
        fixed.setdefault(sec, {}).update(values)
    d.update(name=(f"{spec.name}-best-n{n}" + ("" if method == TGDP else f"-{method}"))[:64], fixed=fixed, space={},
             factors={"n": [n], "seeds": [seed]},
             description=f"best trial #{b.number} of {spec.name} for n={n} "
                         f"({', '.join(f'{m}={_fmt(v)}' for m, v in zip(spec.metrics, b.values))})")
    d["budget"] = {**d["budget"], "trials_per_n": 1}
    # one trial: nothing for ASHA to compare, and the study's grace period may exceed the best trial's epochs
    d["early_stopping"] = {"enabled": False}
    d.pop("initial_trials", None)  # points of the searched space; the best one is now `fixed`
    d.pop("methods", None)  # the exported spec re-runs one configuration: the others stay shared and fixed
    d.setdefault("sampler", "tpe")
    if d["sampler"] == "grid":
        d["sampler"] = "random"  # an empty space has no grid
    text = dump_yaml(d)
    parse_spec(read_yaml(text, "<best>"), "<best>")  # what `run` will accept
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, text)  # checked by check_best_out before the study was read
        return f"wrote {out}"
    return text.rstrip()
