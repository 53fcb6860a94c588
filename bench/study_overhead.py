"""Benchmark 1: study overhead = smoke study via Ray (``tgdp-study run``) / the same stages in-process.

    .venv/bin/python bench/study_overhead.py [--spec search_spaces/gmm_smoke.yaml] [--profile]

1. ``tgdp-study run <spec>`` in a fresh temporary directory (timestamped stdout gives the phases:
   start-up = imports + MLflow db + ``ray.init``; per unit the shared-stage Train run and the Tune run;
   per trial start -> result; the report).
2. The same work in-process, in a fresh Python process with 1 thread (as the study's trials use): per
   unit the source model (once, it does not depend on n), the classifier, the baselines (vanilla,
   finetune fitted; all five evaluated on validation and test), then every trial with *the parameters
   Optuna chose in step 1* via ``tgdp.pipeline.fit_tgdp`` with the same in-training evaluation, stopped
   at the epoch ASHA stopped it at, else finished with the final evaluation and ``result.pt``.
   With --repeats k, k (Ray, in-process) pairs; medians are compared.
Goal: Ray wall / in-process wall <= 1.3. ``--profile`` wraps step 1 in ``py-spy record --subprocesses``
and writes where the samples fall (bench/results/study_overhead_profile.txt).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, LOAD_AT_START, ROOT, environment, judge, median, run_timed, single_thread_env, \
    study_timeline, verdict, write_result  # noqa: E402

GOAL = 1.3
FIXED_GOAL_S = 10.0  # issue 17: fixed start-up plus report <= 10 s on 2 cores


# --- the in-process replica (runs in a child process: `--inprocess TRIALS.json`) ----------------------

class _StopAt:
    """MemoryReporter that asks the guidance stage to stop after epoch ``stop`` (what ASHA did)."""

    def __init__(self, stop: int | None) -> None:
        from tgdp.reporter import MemoryReporter
        self.inner, self.stop, self.last = MemoryReporter(), stop, 0

    def report(self, metrics, *, stage, epoch, state=None):
        self.inner.report(metrics, stage=stage, epoch=epoch, state=state)
        if stage == "guidance":
            self.last = epoch

    def restore(self, stage):
        return None

    def should_stop(self) -> bool:
        return self.stop is not None and self.last >= self.stop


def inprocess(spec_path: str, trials_file: str) -> dict:
    """The study's stages without Ray/Tune/MLflow; returns timings (seconds)."""
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from study.experiments import get_experiment
    from study.experiments.gmm import evaluate_method, log_ratio_grid, ratio_metrics
    from study.runner import units
    from study.runtime import EVAL_SAMPLES
    from study.spec import load_spec
    from tgdp import pipeline, stages
    from tgdp.methods import get_method
    from tgdp.config import to_dict
    from tgdp.reporter import MemoryReporter

    imports_s = time.perf_counter() - t_import
    spec = load_spec(spec_path)
    exp = get_experiment(spec.experiment, spec)
    plan = json.loads(Path(trials_file).read_text())  # {label: [{"params": {...}, "stop": int|None}]}
    dev = torch.device("cpu")
    out: dict = {"imports_s": imports_s, "units": {}}
    sources: dict = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n, seed, label in units(spec):
            u: dict = {"trials": []}
            t0 = time.perf_counter()
            data_cfg, cfg = spec.resolved_config(n, seed)
            task, data = exp.load(data_cfg)
            rep = MemoryReporter()
            skey = json.dumps([to_dict(cfg.source), {k: v for k, v in to_dict(data_cfg).items() if k != "n"}])
            if skey not in sources:  # the stage cache serves every n with one source model
                sources[skey] = stages.pretrain_source(cfg.source, data, task.schedule, dev, rep)
            source = sources[skey]
            u["source_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            clf = stages.train_classifier(cfg.classifier, data, dev, rep)
            ratio_metrics(task, clf, None, cfg.classifier.conditional)
            u["classifier_s"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            for method in exp.baselines:
                fitted = get_method(method).fit(cfg, data, source, task.schedule, dev, rep)
                evaluate_method(method, cfg, task, data, dev, source=source, model=fitted.model)
            u["baselines_s"] = time.perf_counter() - t1
            for tr in plan.get(label, []):
                t1 = time.perf_counter()
                data_cfg, cfg = spec.resolved_config(n, seed, tr["params"])
                task, data = exp.load(data_cfg)
                ratio = ratio_metrics(task, clf, None, cfg.classifier.conditional)["log_ratio_rmse"]
                evaluate = exp.guidance_evaluator(cfg, task, data, source, dev, EVAL_SAMPLES,
                                                  lambda: {"log_ratio_rmse": ratio})  # noqa: B023
                reporter = _StopAt(tr["stop"])
                models = pipeline.fit_tgdp(cfg, data, source, task.schedule, dev, reporter, classifier=clf,
                                           evaluate=evaluate)
                if tr["stop"] is None:
                    h = models.guidance
                    res = evaluate_method("tgdp", cfg, task, data, dev, source=source, h=h)
                    extra = ratio_metrics(task, clf, h, cfg.guidance.conditional)
                    torch.save({"validation": {**res["validation"], **extra}, "samples": res["validation_samples"],
                                "guidance": h.state_dict(), "ratio_grid": log_ratio_grid(task, clf)},
                               Path(tmp) / f"{label}-{len(u['trials'])}.pt")
                u["trials"].append(time.perf_counter() - t1)
            u["unit_s"] = time.perf_counter() - t0
            out["units"][label] = u
    out["stages_s"] = time.perf_counter() - t_all
    return out


def _ray_plan(study_root: Path) -> dict:
    """{label: [{"params", "stop"}]} from the Tune trial directories of a finished study, in start order."""
    plan: dict = {}
    for exp in sorted((study_root / "ray").iterdir()):
        if not exp.is_dir() or exp.name.startswith("_"):
            continue
        label = exp.name.rsplit("-", 1)[-1]
        rows = []
        for tdir in glob.glob(str(exp / "trial_*")):
            params = {k: v for k, v in json.loads(Path(tdir, "params.json").read_text()).items()
                      if not k.startswith("_")}
            results = [json.loads(x) for x in Path(tdir, "result.json").read_text().splitlines() if x.strip()]
            final = any(r.get("final") for r in results)
            start = min(r["timestamp"] for r in results) if results else 0
            rows.append((start, {"params": params,
                                 "stop": None if final else max((r["epoch"] for r in results), default=0)}))
        plan[label] = [r for _, r in sorted(rows, key=lambda x: x[0])]
    return plan


def _run_inprocess(spec: str, plan_file: Path, env: dict) -> dict:
    wall, lines, rc = run_timed([sys.executable, __file__, "--inprocess", str(plan_file), "--spec", spec], env)
    if rc != 0:
        raise RuntimeError("in-process replica failed:\n" + "\n".join(s for _, s in lines[-30:]))
    res = json.loads(next(s for _, s in reversed(lines) if s.startswith("{")))
    res["process_wall_s"] = wall
    return res


def _proc_name(frame: str) -> str:
    cmd = frame.split(":", 1)[1].strip('"') if ":" in frame else frame
    for key, name in (("tgdp-study", "driver (tgdp-study)"), ("default_worker.py", "Ray worker (trials, Train runs)"),
                      ("dashboard/agent.py", "Ray dashboard agent"), ("dashboard.py", "Ray dashboard"),
                      ("dashboard.subprocesses", "Ray dashboard subprocess"), ("forkserver", "multiprocessing forkserver"),
                      ("log_monitor", "Ray log monitor"), ("monitor.py", "Ray monitor"), ("raylet", "raylet"),
                      ("gcs_server", "gcs_server"), ("runtime_env", "runtime_env agent")):
        if key in cmd:
            return name
    return cmd[:60]


def _driver_phase(stack: str) -> str:
    if "run_shared" in stack:
        if "AdamW.__init__" in stack:
            return "shared Train run: first AdamW() (lazily imports torch._dynamo)"
        return "shared Train run: stage compute (local mode, in the driver)"
    if "write_report" in stack:
        return "report (write_report, MLflow summary run)"
    if "Tracker.__init__" in stack:
        return "MLflow: Tracker() -> sqlite store creation + alembic migrations"
    if "_init_ray" in stack:
        return "ray.init"
    if "tracking.py" in stack or "finalize_trial" in stack:
        return "MLflow: other tracker calls"
    if "Tuner.fit" in stack or "tuner.py" in stack:
        return "Tune run: driver event loop and callbacks"
    if "importlib" in stack:
        return "imports (module level)"
    return "other (log monitor, threads)"


def _profile_summary(raw: Path, top: int = 12) -> str:
    """Aggregate py-spy's raw stacks (``process`` frames nest child processes): samples per process kind, and
    per kind the frames (inclusive) that hold most of them. py-spy samples only non-idle threads."""
    per_proc: Counter = Counter()
    phases: Counter = Counter()
    incl: dict[str, Counter] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        k = max(i for i, f in enumerate(frames) if f.startswith("process "))
        proc = _proc_name(frames[k])
        per_proc[proc] += c
        ctr = incl.setdefault(proc, Counter())
        if proc.startswith("driver"):
            phases[_driver_phase(";".join(frames[k + 1:]))] += c
        for f in set(frames[k + 1:]):
            if not f.startswith(("_call_with_frames_removed", "_find_and_load", "_load_unlocked", "exec_module",
                                 "_LoaderBasics", "_handle_fromlist", "_gcd_import", "<module>", "Thread._bootstrap")):
                ctr[f[:140]] += c
    out = [f"py-spy record --subprocesses --rate 50 (non-idle samples only); total samples: {total}",
           "(py-spy slows the run; short-lived trial actor processes are partly missed by its subprocess polling)", "",
           "samples per process kind:"]
    out += [f"  {c:7d} {100 * c / total:5.1f}%  {p}" for p, c in per_proc.most_common()]
    out += ["", "driver by phase (% of all samples):"]
    out += [f"  {c:7d} {100 * c / total:5.1f}%  {p}" for p, c in phases.most_common()]
    for proc, c in per_proc.most_common(6):
        out += ["", f"{proc}: inclusive samples per frame (top {top}, % of all samples)"]
        out += [f"  {k:7d} {100 * k / total:5.1f}%  {f}" for f, k in incl[proc].most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="search_spaces/gmm_smoke.yaml")
    ap.add_argument("--inprocess", help=argparse.SUPPRESS)  # child mode: trials plan JSON
    ap.add_argument("--repeats", type=int, default=1, help="Ray + in-process pairs (median is reported)")
    ap.add_argument("--profile", action="store_true", help="wrap the Ray run in py-spy record --subprocesses")
    args = ap.parse_args()
    if args.inprocess:
        print(json.dumps(inprocess(args.spec, args.inprocess)), flush=True)
        return 0

    env = single_thread_env()
    spec = str((ROOT / args.spec).resolve())
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        tmp_p = Path(tmp)
        cmd = [str(BIN / "tgdp-study"), "run", spec, "--dir", str(tmp_p / "studies")]
        if args.profile:
            raw = ROOT / "bench" / "results" / "study_overhead_profile.raw"  # kept (large, not committed)
            cmd = [str(BIN / "py-spy"), "record", "--subprocesses", "--rate", "50", "--format", "raw", "-o", str(raw),
                   "--"] + cmd
        # A first in-process pass needs the trial plan; the smoke study's first unit uses Optuna's seeded TPE,
        # so run Ray first to learn it, with in-process passes on both sides of a second (timed) Ray run.
        print("study_overhead: Ray run (tgdp-study run) ...", flush=True)
        ray_wall, lines, rc = run_timed(cmd, env, log=tmp_p / "ray.log")
        if rc != 0:
            print("\n".join(s for _, s in lines[-40:]))
            raise SystemExit(f"tgdp-study run failed (exit {rc})")
        root = next((tmp_p / "studies").iterdir())
        plan = _ray_plan(root)
        plan_file = tmp_p / "plan.json"
        plan_file.write_text(json.dumps(plan))
        print("study_overhead: in-process replica ...", flush=True)
        inproc = [_run_inprocess(spec, plan_file, env)]
        timeline = study_timeline(lines, ray_wall)
        if args.profile:
            summary = _profile_summary(raw)
            (ROOT / "bench" / "results" / "study_overhead_profile.txt").write_text(summary)
            print(summary[:4000])
            return 0
        timelines = [timeline]
        ray_walls = [ray_wall]
        for k in range(2, args.repeats + 1):
            print(f"study_overhead: Ray run {k} (fresh directory, cold cache) ...", flush=True)
            w, ls, rc = run_timed([str(BIN / "tgdp-study"), "run", spec, "--dir", str(tmp_p / f"studies{k}")], env)
            ray_walls.append(w)
            timelines.append(study_timeline(ls, w))
            print(f"study_overhead: in-process replica {k} ...", flush=True)
            inproc.append(_run_inprocess(spec, plan_file, env))

    in_walls = [r["process_wall_s"] for r in inproc]
    in_stages = [r["stages_s"] for r in inproc]
    ratio = median(ray_walls) / median(in_walls)
    ray_units = [t["all_units_done_at_s"] - t["startup_s (imports, MLflow db, ray.init)"] for t in timelines]
    trial_ray = [tr["wall_s"] for t in timelines for tr in t["trials"] if tr["wall_s"] is not None]
    trial_in = [x for r in inproc for u in r["units"].values() for x in u["trials"]]
    startup = median([t["startup_s (imports, MLflow db, ray.init)"] for t in timelines])
    report = median([t["report_s"] for t in timelines])
    n_trials = len(trial_in) // len(inproc)
    payload = {
        "name": "study_overhead", "inputs": {"spec": args.spec, "repeats": args.repeats, "trial_plan": plan, "threads": 1},
        "environment": environment(),
        "raw": {"ray_wall_s": ray_walls, "ray_timelines": timelines, "inprocess": inproc},
        "breakdown_s": {
            "ray_startup (imports + MLflow db + ray.init), median": startup,
            "ray_units (shared Train runs + Tune runs), median": median(ray_units),
            "ray_report (report + MLflow summary run), median": report,
            "inprocess_imports": median([r["imports_s"] for r in inproc]),
            "inprocess_stages": median(in_stages),
            "per_trial_ray_start_to_result, mean": sum(trial_ray) / len(trial_ray),
            "per_trial_inprocess, mean": sum(trial_in) / len(trial_in),
            "per_trial_overhead, mean": sum(trial_ray) / len(trial_ray) - sum(trial_in) / len(trial_in),
            "trials": n_trials},
        "ratios": {"ray_wall / inprocess_process_wall": ratio,
                   "ray_units / inprocess_stages": median(ray_units) / median(in_stages)},
        "fixed_s (start-up + report, not per trial)": startup + report,
        "goal": f"ray_wall / inprocess_process_wall <= {GOAL}", "pass": judge(ratio <= GOAL),
        "goal_fixed": f"start-up + report <= {FIXED_GOAL_S:g} s", "pass_fixed": judge(startup + report <= FIXED_GOAL_S),
    }
    path = write_result("study_overhead", payload)
    b = payload["breakdown_s"]
    print(f"study_overhead: Ray {median(ray_walls):.1f} s vs in-process {median(in_walls):.1f} s "
          f"(stages {median(in_stages):.1f} s) -> ratio {ratio:.2f} (goal <= {GOAL}: {verdict(ratio <= GOAL)})\n"
          f"  Ray start-up {startup:.1f} s, units {median(ray_units):.1f} s, report {report:.1f} s; per trial "
          f"{b['per_trial_ray_start_to_result, mean']:.1f} s via Ray vs {b['per_trial_inprocess, mean']:.1f} s "
          f"in-process ({n_trials} trials)\n  fixed start-up + report {startup + report:.1f} s (goal <= "
          f"{FIXED_GOAL_S:g} s: {verdict(startup + report <= FIXED_GOAL_S)}); load at start {LOAD_AT_START[0]:.1f}"
          f"\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
