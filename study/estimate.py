"""``run --dry-run``: an estimated run time from the stage rates measured by the bench (``bench/results/*.json``).

The bench's study measurements (``bench/default_study.py`` -> ``default_study.json`` on search_spaces/gmm.yaml,
``bench/study_overhead.py`` -> ``study_overhead.json`` on search_spaces/gmm_smoke.yaml) hold a timeline of a
real run: start-up, per unit the shared stages and the Tune run, per trial its wall time, the report. From
one of them, per unit: the shared-stage seconds and the Tune-run seconds per trial (ASHA stops and trial
concurrency included, as measured); the estimate is::

    start-up + units x (shared stages + tuned methods x trials_per_n x seconds per trial) + report

The measurement used is the one whose spec has the same experiment, ``data:`` and ``fixed:`` (the stage sizes)
as the planned spec, else the first one of the same experiment, said to be a rough scale only. No
measurement of the experiment (or no bench/results in this tree): no estimate, and the plan says so. It
is never more than an estimate: another machine, load, a warm stage cache (shared stages skipped) or a
searched stage size change it.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

from study.spec import StudySpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MEASUREMENTS = ("default_study.json", "study_overhead.json")  # the bench's timelines of whole studies


def _timeline(data: dict[str, Any]) -> dict[str, Any] | None:
    raw = data.get("raw", {})
    return raw.get("timeline") or (raw.get("ray_timelines") or [None])[0]


def _rates(timeline: dict[str, Any]) -> dict[str, float]:
    """Seconds: start-up, shared stages per unit, Tune run per trial, report (means over the units)."""
    units = timeline["units"]
    trials = {u: sum(1 for t in timeline["trials"] if t["unit"] == u) for u in units}
    return {"startup": next(v for k, v in timeline.items() if k.startswith("startup_s")),
            "shared": mean(u["shared_s"] for u in units.values()),
            "trial": mean((u["end"] - u["tune_start"]) / max(trials[name], 1) for name, u in units.items()),
            "report": timeline.get("report_s", 0.0)}


def _candidates(results: Path) -> list[tuple[Path, StudySpec, dict[str, Any]]]:
    """(file, its measured spec, its timeline) of each readable measurement."""
    out = []
    for name in MEASUREMENTS:
        f = results / name
        try:
            data = json.loads(f.read_text())
            timeline = _timeline(data)
            measured = load_spec(ROOT / data["inputs"]["spec"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # missing or from an older format: not a measurement to estimate from
        if timeline:
            out.append((f, measured, {**timeline, "date": data.get("environment", {}).get("date", "?"),
                                      "cpus": data.get("environment", {}).get("cpu_count", "?")}))
    return out


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else (f"{seconds / 60:.1f} min" if seconds < 7200
                                                     else f"{seconds / 3600:.1f} h")


def estimate(spec: StudySpec, results: Path = RESULTS) -> str:
    """The plan's "estimated run time" section (text, no trailing newline)."""
    head = "== estimated run time (an estimate from measured rates, not a promise) =="
    same_exp = [c for c in _candidates(results) if c[1].experiment == spec.experiment]
    if not same_exp:
        return f"{head}\n  none: no measured study of experiment {spec.experiment} in {results}"
    same = [c for c in same_exp if (c[1].data, c[1].fixed) == (spec.data, spec.fixed)]
    f, measured, timeline = (same or same_exp)[0]
    r = _rates(timeline)
    n_units, n_methods = len(spec.factors.n) * len(spec.factors.seeds), len(spec.tuned_methods)
    trials = spec.budget.trials_per_n
    total = r["startup"] + n_units * (r["shared"] + n_methods * trials * r["trial"]) + r["report"]
    rel = f.relative_to(ROOT) if f.is_relative_to(ROOT) else f
    fit = ("the same stage sizes (data:, fixed:) as this spec" if same else
           "OTHER stage sizes than this spec (data:/fixed: differ): a rough scale only")
    return "\n".join([
        head,
        f"  about {_fmt(total)} = start-up {_fmt(r['startup'])} + {n_units} unit(s) x (shared stages "
        f"{_fmt(r['shared'])} + {n_methods} tuned method(s) x {trials} trials x {r['trial']:.1f} s) + report "
        f"{_fmt(r['report'])}",
        f"  rates from {rel}: {measured.source and Path(measured.source).name} on {timeline['cpus']} CPUs, "
        f"{timeline['date']}, cold stage cache; {fit}",
        "  a warm stage cache skips the shared stages; other machines, load and concurrency change every rate",
    ])


__all__ = ["MEASUREMENTS", "estimate"]
