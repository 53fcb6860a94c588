"""Benchmark 3: guided vs unguided sampling cost per solver step.

    .venv/bin/python bench/sampling_cost.py [--samples 10000] [--repeats 2] [--steps 10]

``tgdp.sampling.tgdp_samples`` (eps_theta - gamma sigma_t grad log h_psi: one score forward plus one
guidance forward + backward per evaluation) against ``tgdp.sampling.model_samples`` (one score forward),
with the default ``ScoreConfig`` (256 x 4) source net, two guidance nets (the default ``GuidanceConfig``,
the paper's 512 x 4, and the GMM experiment's 256 x 3) and the default ``SampleConfig`` (DPM-Solver-2,
one batch of 10000; 10 steps timed, per-step cost) on the 2-D GMM, one thread. Weights are freshly
initialised (the cost does not depend on them). Runs alternate, the median of each is used.
Goal: guided / unguided <= 2.5.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, median, verdict, write_result  # noqa: E402

GOAL = 2.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="solver steps (the cost per step does not depend on it; "
                    "the default SampleConfig uses 25)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from study.experiments.gmm_defaults import GMM_GUIDANCE
    from tgdp import sampling, stages
    from tgdp.config import GMMConfig, GuidanceConfig, SampleConfig, ScoreConfig, to_dict
    from tgdp.data.gmm import GMMTask

    task = GMMTask(GMMConfig())
    shape, sched, dev = (task.cfg.dim,), task.schedule, torch.device("cpu")
    score_cfg = ScoreConfig()
    guide_cfgs = {"guided": GuidanceConfig(), "guided_gmm": replace(GuidanceConfig(), **GMM_GUIDANCE)}
    sample_cfg = replace(SampleConfig(), num_samples=args.samples, steps=args.steps)
    torch.manual_seed(0)
    source = stages.build_score(score_cfg, shape).eval().requires_grad_(False)
    nets = {k: stages.build_guidance(c, shape).eval().requires_grad_(False) for k, c in guide_cfgs.items()}
    runs = {"unguided": lambda: sampling.model_samples(sample_cfg, source, sched, dev, shape),
            **{k: (lambda h=h: sampling.tgdp_samples(sample_cfg, source, h, sched, dev, shape))
               for k, h in nets.items()}}
    small = replace(sample_cfg, num_samples=256, batch_size=256)  # warm-up: first-call dispatch, allocator
    sampling.model_samples(small, source, sched, dev, shape)
    for h in nets.values():
        sampling.tgdp_samples(small, source, h, sched, dev, shape)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            x = fn()
            times[name].append(time.perf_counter() - t0)
            assert x.shape == (args.samples, *shape) and torch.isfinite(x).all(), name
    steps = sample_cfg.steps
    per_step = {k: median(v) / steps for k, v in times.items()}
    ratio = per_step["guided"] / per_step["unguided"]
    ratio_gmm = per_step["guided_gmm"] / per_step["unguided"]
    payload = {
        "name": "sampling_cost",
        "inputs": {"samples": args.samples, "repeats": args.repeats, "threads": args.threads,
                   "score": to_dict(score_cfg), "guidance": {k: to_dict(c) for k, c in guide_cfgs.items()},
                   "sample": to_dict(sample_cfg),
                   "evaluations_per_step": 2 if sample_cfg.solver == "dpm2" else 1},
        "environment": environment(),
        "raw_s": times,
        "per_step_s": per_step,
        "ratios": {"guided / unguided per step": ratio, "guided (GMM 256x3) / unguided per step": ratio_gmm},
        "goal": f"guided / unguided <= {GOAL}", "pass": ratio <= GOAL,
    }
    path = write_result("sampling_cost", payload)
    print(f"sampling_cost: {args.samples} samples, {steps} {sample_cfg.solver} steps: unguided "
          f"{per_step['unguided'] * 1e3:.1f} ms/step, guided {per_step['guided'] * 1e3:.1f} ms/step -> ratio "
          f"{ratio:.2f} (goal <= {GOAL}: {verdict(ratio <= GOAL)}); GMM-sized guidance "
          f"{per_step['guided_gmm'] * 1e3:.1f} ms/step -> {ratio_gmm:.2f}\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
