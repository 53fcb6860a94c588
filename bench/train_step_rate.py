"""Benchmark 4: training step rate under Ray Train (1 and 2 gloo workers) / a plain PyTorch loop.

    .venv/bin/python bench/train_step_rate.py [--steps 300]

The same stage, ``tgdp.stages.train_score`` (the source model: default ``ScoreConfig`` 256 x 4, global
batch 256) for a fixed number of steps on the 2-D GMM source draw (m = 10000):
  plain   in this process, 1 thread, ``MemoryReporter``;
  ray-1   ``TorchTrainer(num_workers=1)``, 1 CPU and 1 thread per worker;
  ray-2   ``TorchTrainer(num_workers=2)``, gloo; each rank 128 samples per step, gradients all-reduced.
Each worker times its own loop (rank 0's time is reported); the ``fit()`` wall time adds the Train run's
start-up. Ratios are steps/s under Ray / steps/s plain (>= 1 is faster than plain; with 2 workers
on 2 shared cores the ideal is 2). No stated goal: the numbers size ``workers_per_trial``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, median, write_result  # noqa: E402


def _run_stage(steps: int) -> float:
    """train_score for ``steps`` steps (1 thread); returns the loop's seconds."""
    import torch

    torch.set_num_threads(1)
    from tgdp.config import GMMConfig, ScoreConfig
    from tgdp.data.gmm import GMMTask
    from tgdp.reporter import MemoryReporter
    from tgdp import stages

    task = GMMTask(GMMConfig())
    data = task.draw("train")
    cfg = replace(ScoreConfig(), steps=steps, report_every=steps)
    t0 = time.perf_counter()
    stages.train_score(cfg, data["source_x"], None, task.schedule, torch.device("cpu"), MemoryReporter())
    return time.perf_counter() - t0


def _worker(config: dict) -> None:
    import ray.train

    from tgdp import distributed as D

    loop_s = _run_stage(config["steps"])
    ray.train.report({"loop_s": loop_s, "world": D.world_size()})
    if D.is_rank_zero():  # Train V2's Result.metrics keeps only reports with a checkpoint: write a file
        Path(config["out"]).write_text(json.dumps({"loop_s": loop_s, "world": D.world_size()}))


def _ray(steps: int, workers: int) -> dict:
    import ray.train
    import ray.train.torch

    out = os.path.join(os.environ["BENCH_STORAGE"], f"rank0-{workers}w.json")
    t0 = time.perf_counter()
    ray.train.torch.TorchTrainer(
        _worker, train_loop_config={"steps": steps, "out": out},
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"bench-steps-{workers}w-{int(time.time())}",
                                       storage_path=os.environ["BENCH_STORAGE"]),
    ).fit()
    wall = time.perf_counter() - t0
    res = json.loads(Path(out).read_text())
    assert res["world"] == workers, res
    return {"loop_s": res["loop_s"], "fit_wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2, help="plain-loop runs (before and after the Ray runs)")
    args = ap.parse_args()

    import tempfile

    os.environ.update({"RAY_TRAIN_V2_ENABLED": "1", "OMP_NUM_THREADS": "1",
                       "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"})
    from study.ray_auth import private_token

    private_token()  # token authentication, as a study's local Ray
    import ray

    plain = [_run_stage(args.steps)]
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        os.environ["BENCH_STORAGE"] = tmp
        t0 = time.perf_counter()
        ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
        init_s = time.perf_counter() - t0
        try:
            ray_runs = {f"ray_{w}": _ray(args.steps, w) for w in (1, 2)}
        finally:
            ray.shutdown()
    for _ in range(args.repeats - 1):
        plain.append(_run_stage(args.steps))
    plain_rate = args.steps / median(plain)
    rates = {"plain": plain_rate, **{k: args.steps / v["loop_s"] for k, v in ray_runs.items()}}
    ratios = {f"{k} / plain (loop)": rates[k] / plain_rate for k in ray_runs}
    ratios.update({f"{k} / plain (fit wall incl. start-up)": (args.steps / v["fit_wall_s"]) / plain_rate
                   for k, v in ray_runs.items()})
    payload = {
        "name": "train_step_rate",
        "inputs": {"stage": "tgdp.stages.train_score", "config": "ScoreConfig() 256x4, batch 256 (global)",
                   "steps": args.steps, "threads_per_process": 1, "backend": "gloo", "cpus_per_worker": 1},
        "environment": environment(),
        "raw": {"plain_loop_s": plain, "ray_init_s": init_s, **ray_runs},
        "steps_per_s": rates,
        "ratios": ratios,
        "goal": "none stated (report only)", "pass": None,
    }
    path = write_result("train_step_rate", payload)
    print(f"train_step_rate: train_score {args.steps} steps: plain {rates['plain']:.1f} steps/s, Ray Train 1 worker "
          f"{rates['ray_1']:.1f} ({ratios['ray_1 / plain (loop)']:.2f}x), 2 workers {rates['ray_2']:.1f} "
          f"({ratios['ray_2 / plain (loop)']:.2f}x); with Train start-up: "
          f"{ratios['ray_1 / plain (fit wall incl. start-up)']:.2f}x / {ratios['ray_2 / plain (fit wall incl. start-up)']:.2f}x"
          f"\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
