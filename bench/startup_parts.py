"""Benchmark: the parts of a study's fixed start-up that issue 17 cut, each A/B in fresh processes.

    .venv/bin/python bench/startup_parts.py [--pairs 3]

1. MLflow store: ``Tracker`` on a new sqlite store that MLflow migrates (before) vs on a copy of the
   migrated template (``study.mlflow_store.ensure_sqlite_store``, after; the template already made).
2. ``ray.init(address="local", num_cpus=1)`` + ``ray.shutdown()`` with the dashboard (before: Ray's
   default) vs without (after: ``resources.dashboard`` false).

The pairs are interleaved (A, B, A, B, ...) so a change in the box's load hits both sides alike; wall and
CPU seconds of the timed part (after the imports) are recorded with the load before each run. No goal:
the parts' saving, for the study_overhead / stage_cache numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, median, write_result  # noqa: E402

CHILD = {
    "mlflow_migrate": """
import sys, time; from study.tracking import Tracker
t, c = time.perf_counter(), time.process_time()
Tracker(f"sqlite:///{sys.argv[1]}/a.db", "x", sys.argv[1])
""",
    "mlflow_template": """
import sys, time; from study.tracking import Tracker; from study.mlflow_store import ensure_sqlite_store
t, c = time.perf_counter(), time.process_time()
uri = f"sqlite:///{sys.argv[1]}/a.db"
ensure_sqlite_store(uri, sys.argv[2]); Tracker(uri, "x", sys.argv[1])
""",
    "ray_init_dashboard": """
import time, ray
t, c = time.perf_counter(), time.process_time()
ray.init(address="local", num_cpus=1, include_dashboard=True, log_to_driver=False); ray.shutdown()
""",
    "ray_init_no_dashboard": """
import time, ray
t, c = time.perf_counter(), time.process_time()
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False); ray.shutdown()
""",
}
TAIL = ("\nimport json\n"
        "print('RESULT', json.dumps({'wall_s': time.perf_counter() - t, 'cpu_s': time.process_time() - c}))\n")
PAIRS = (("mlflow_migrate", "mlflow_template"), ("ray_init_dashboard", "ray_init_no_dashboard"))


def _run(name: str, tmp: Path, templates: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=tmp))
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-c", CHILD[name] + TAIL, str(work), str(templates)], env=env, cwd=work,
                       capture_output=True, text=True, timeout=600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not line:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    return {**json.loads(line[-1][len("RESULT "):]), "load_before": round(load, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    raw: dict[str, list[dict]] = {name: [] for pair in PAIRS for name in pair}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        templates = Path(tmp) / "templates"
        from study.mlflow_store import ensure_sqlite_store
        ensure_sqlite_store(f"sqlite:///{tmp}/warm.db", templates)  # the template exists, as from a study before
        for _ in range(args.pairs):
            for pair in PAIRS:
                for name in pair:
                    raw[name].append(_run(name, Path(tmp), templates))
                    print(f"startup_parts: {name} {raw[name][-1]}", flush=True)
    med = {name: {k: median([r[k] for r in runs]) for k in ("wall_s", "cpu_s")} for name, runs in raw.items()}
    saved = {f"{a} - {b}": {k: med[a][k] - med[b][k] for k in ("wall_s", "cpu_s")} for a, b in PAIRS}
    payload = {"name": "startup_parts", "inputs": {"pairs": args.pairs}, "environment": environment(), "raw": raw,
               "median": med, "saved_median": saved, "goal": "none (the parts of the fixed start-up cut)",
               "pass": None}
    path = write_result("startup_parts", payload)
    for k, v in saved.items():
        print(f"startup_parts: {k}: {v['wall_s']:.2f} s wall, {v['cpu_s']:.2f} s driver CPU saved (median)")
    print(f"  -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
