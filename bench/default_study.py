"""Benchmark 5: the default study (what ``make study`` runs: ``search_spaces/gmm.yaml``), total wall time
with a breakdown per phase and stage. Long (minutes): ``bench/run_all.py`` runs it only with ``--full``.

    .venv/bin/python bench/default_study.py [--keep DIR] [--timeout 2700]

``tgdp-study run search_spaces/gmm.yaml`` in a fresh directory with a cold stage cache (no
``TGDP_STUDY_CACHE_DIR``). The breakdown comes from the driver's timestamped stdout (start-up, per n the
shared-stage Train run = source model + classifier + baselines, the Tune run, every trial from start to
result, the report) and from each Tune trial's ``result.json`` (``time_total_s`` and the reported guidance
epoch, i.e. how far ASHA let it run). Goal: total <= 600 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, ROOT, environment, run_timed, single_thread_env, study_timeline, verdict, \
    write_result  # noqa: E402

GOAL_S = 600.0
SPEC = "search_spaces/gmm.yaml"


def tune_trials(study_root: Path) -> list[dict]:
    """Per Tune trial: unit, id, params, reported epochs, time_total_s (Tune's clock: inside the trial)."""
    out = []
    for res in sorted((study_root / "ray").glob("*/trial_*/result.json")):
        rows = [json.loads(x) for x in res.read_text().splitlines() if x.strip()]
        if not rows:
            continue
        params = {k: v for k, v in json.loads((res.parent / "params.json").read_text()).items() if not k.startswith("_")}
        out.append({"unit": res.parent.parent.name.rsplit("-", 1)[-1], "trial": res.parent.name[len("trial_"):],
                    "params": params, "last_epoch": rows[-1].get("epoch"), "final": bool(rows[-1].get("final")),
                    "time_total_s": rows[-1].get("time_total_s"),
                    "report_times_s": [round(r.get("time_total_s", 0.0), 2) for r in rows]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the study directory here (default: a temporary directory, removed)")
    ap.add_argument("--timeout", type=float, default=2700.0, help="kill the study after this many seconds")
    args = ap.parse_args()
    env = single_thread_env()
    env.pop("TGDP_STUDY_CACHE_DIR", None)  # cold cache: the whole study, as on a fresh machine
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-default-"))
    if tmp.exists() and any(tmp.iterdir()):
        raise SystemExit(f"{tmp} is not empty")
    try:
        print(f"default_study: tgdp-study run {SPEC} --dir {tmp} (several minutes) ...", flush=True)
        wall, lines, rc = run_timed([str(BIN / "tgdp-study"), "run", str(ROOT / SPEC), "--dir", str(tmp)], env,
                                    log=tmp / "driver.log", timeout=args.timeout)
        timeline = study_timeline(lines, wall)
        root = next((p for p in tmp.iterdir() if p.is_dir()), None)
        trials = tune_trials(root) if root else []
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    units = {}
    for label, u in timeline["units"].items():
        ts = [t for t in trials if t["unit"] == label]
        walls = [t["wall_s"] for t in timeline["trials"] if t["unit"] == label and t["wall_s"] is not None]
        units[label] = {
            "shared_stages_s (source + classifier + baselines Train run)": u.get("shared_s"),
            "tune_run_s": None if "tune_start" not in u or "end" not in u else round(u["end"] - u["tune_start"], 1),
            "trials": len(ts), "trials_finished": sum(t["final"] for t in ts),
            "trial_wall_s (driver: start -> result), sum": round(sum(walls), 1),
            "trial_time_total_s (inside the trial), sum": round(sum(t["time_total_s"] or 0 for t in ts), 1)}
    ok = rc == 0 and wall <= GOAL_S
    payload = {
        "name": "default_study", "inputs": {"spec": SPEC, "cache": "cold", "threads_per_trial": 1},
        "environment": environment(), "exit_code": rc, "total_wall_s": wall,
        "breakdown_s": {"startup (imports, MLflow db, ray.init)": timeline["startup_s (imports, MLflow db, ray.init)"],
                        "units": units, "report": timeline["report_s"]},
        "raw": {"timeline": timeline, "tune_trials": trials},
        "goal": f"total wall <= {GOAL_S:.0f} s", "pass": ok,
    }
    path = write_result("default_study", payload)
    print(f"default_study: {wall:.0f} s total (exit {rc}; goal <= {GOAL_S:.0f} s: {verdict(ok)})")
    for label, u in units.items():
        print(f"  {label}: shared stages {u['shared_stages_s (source + classifier + baselines Train run)']} s, "
              f"Tune run {u['tune_run_s']} s ({u['trials']} trials, {u['trials_finished']} finished)")
    print(f"  start-up {payload['breakdown_s']['startup (imports, MLflow db, ray.init)']:.1f} s, report "
          f"{timeline['report_s']} s\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
