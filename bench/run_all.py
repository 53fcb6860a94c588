"""Run the performance benchmarks in sequence and write ``bench/results/summary.md`` (``make bench``).

    .venv/bin/python bench/run_all.py [--full] [--only NAME ...] [--summary-only]

Each benchmark is its own process (a fresh interpreter, its own Ray) and writes
``bench/results/<name>.json``; this script collects their ratios and goals into one table. ``--full``
adds the default study (``bench/default_study.py``, several minutes). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, environment, single_thread_env  # noqa: E402

# (result name, script, what) in run order; the long one last
BENCHMARKS = [
    ("sampling_cost", "sampling_cost.py", "guided / unguided sampling cost per step"),
    ("train_step_rate", "train_step_rate.py", "Ray Train step rate / plain PyTorch loop"),
    ("study_overhead", "study_overhead.py", "smoke study via Ray / same stages in-process"),
    ("stage_cache", "stage_cache.py", "time to first trial result: first / repeat study (shared cache)"),
]
FULL = [("default_study", "default_study.py", "default study (make study) total wall time")]


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary(names: list[tuple[str, str, str]], walls: dict[str, float], full: bool) -> str:
    env = environment()
    out = ["# Benchmarks", "",
           f"`make bench` ({'--full, ' if full else ''}"
           f"{env['date']}; torch {env['torch']}, ray {env['ray']}, {env['cpu_count']} CPUs, load "
           f"{env['loadavg_1_5_15']}). One thread per process; ratios measured within one run of each script.", "",
           "| benchmark | what | measured | goal | result | script wall |", "|---|---|---|---|---|---|"]
    for name, script, what in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file() and name == "default_study" and not full:
            continue
        if not path.is_file():
            out.append(f"| {name} | {what} | (no result) | | | |")
            continue
        r = json.loads(path.read_text())
        if name == "default_study":
            measured = f"total {r['total_wall_s']:.0f} s"
        else:
            measured = "; ".join(f"{k}: {_fmt(v)}" for k, v in r.get("ratios", {}).items())
        res = {True: "PASS", False: "FAIL", None: "report"}[r.get("pass")]
        wall = f"{walls[name]:.0f} s" if name in walls else f"(earlier run, {r['environment']['date']})"
        out.append(f"| {name} | {what} | {measured} | {r.get('goal', '')} | {res} | {wall} |")
    out += ["", "Details (inputs, environment, raw timings, breakdowns): `bench/results/<name>.json`."]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also run the default study (several minutes)")
    ap.add_argument("--only", nargs="+", help="run only these benchmarks (result names)")
    ap.add_argument("--summary-only", action="store_true", help="rewrite summary.md from the result files")
    args = ap.parse_args()
    todo = BENCHMARKS + (FULL if args.full else [])
    if args.only:
        todo = [b for b in BENCHMARKS + FULL if b[0] in args.only]
    if args.summary_only:
        todo = []
    walls: dict[str, float] = {}
    failed = []
    for name, script, what in todo:
        print(f"=== {name}: {what}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, env=single_thread_env()).returncode
        walls[name] = time.perf_counter() - t0
        if rc != 0:
            failed.append(name)
            print(f"=== {name}: exit code {rc}", flush=True)
    text = summary(BENCHMARKS + FULL, walls, args.full)  # results of earlier runs are shown with their date
    (RESULTS / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
