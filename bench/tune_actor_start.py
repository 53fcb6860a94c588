"""Benchmark: how long a Tune run takes to start its trial, and whether a warm worker process can shorten it.

    .venv/bin/python bench/tune_actor_start.py [--repeats 2]

Each variant runs in a fresh process: a local Ray (2 CPUs, no dashboard), 8 s of idle time (as a study spends
on its shared stages and baselines before its first Tune run), then two Tune runs in a row of one trivial
trial (it reports at once). Per run: seconds from ``Tuner.fit()`` to the trial's process being created, to the
trial function running, and to ``fit`` returning. Variants:

- ``plain``: Ray as the study starts it;
- ``job_env``: the job's runtime_env set to the ``env_vars`` Tune gives every trial actor
  (``ray.tune.execution.class_cache``), so that Ray's prestarted workers could match the trial actor;
- ``preload``: ``job_env`` plus Ray's ``preload_python_modules`` (torch, study.trial): every new worker imports
  them before it registers.

A study's per-Tune-run cost (bench/README.md, stage_cache) is this plus its own trial's imports and work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, single_thread_env, write_result  # noqa: E402

CHILD = r"""
import json, os, sys, tempfile, time
variant = sys.argv[1]
import ray
kw = {}
if variant in ("job_env", "preload"):
    from ray.tune.execution import class_cache as cc
    env = {**cc.DEFAULT_ENV_VARS, **{k: os.environ[k] for k in cc.ENV_VARS_TO_PROPAGATE if k in os.environ}}
    kw["runtime_env"] = {"env_vars": env}
if variant == "preload":
    kw["_system_config"] = {"preload_python_modules": ["torch", "study.trial"]}
t = time.time()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, **kw)
init_s = time.time() - t
time.sleep(8)
from ray import tune

def trial(config):
    import psutil
    tune.report({"started": time.time(), "created": psutil.Process().create_time(), "torch": "torch" in sys.modules})

runs = []
with tempfile.TemporaryDirectory() as tmp:
    for _ in range(2):
        t = time.time()
        res = tune.Tuner(trial, run_config=tune.RunConfig(storage_path=tmp, verbose=0)).fit()
        m = res[0].metrics
        runs.append({"process_created_s": round(m["created"] - t, 2), "trial_started_s": round(m["started"] - t, 2),
                     "fit_s": round(time.time() - t, 2), "torch_imported_at_start": m["torch"]})
print("RESULT " + json.dumps({"ray_init_s": round(init_s, 2), "runs": runs}))
"""

VARIANTS = ("plain", "job_env", "preload")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    env = single_thread_env({"RAY_AUTH_MODE": "disabled"})  # a throw-away local Ray of this process only
    raw: dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in VARIANTS:  # interleaved, so a load change hits every variant alike
            out = subprocess.run([sys.executable, "-c", CHILD, v], env=env, cwd=ROOT, capture_output=True, text=True)
            line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                print(out.stdout[-2000:], out.stderr[-4000:])
                raise SystemExit(f"tune_actor_start: variant {v} failed (exit {out.returncode})")
            raw[v].append(json.loads(line[0][len("RESULT "):]))
            print(v, raw[v][-1], flush=True)

    summary = {v: {f"run{i + 1}_{k}": statistics.median(r["runs"][i][k] for r in raw[v]) for i in range(2)
                   for k in ("process_created_s", "trial_started_s")} for v in VARIANTS}
    path = write_result("tune_actor_start", {"name": "tune_actor_start", "inputs": {"repeats": args.repeats,
                        "idle_before_first_run_s": 8}, "environment": environment(), "raw": raw,
                        "median": summary})
    print(json.dumps(summary, indent=1), f"\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
