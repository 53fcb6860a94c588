"""The default Domain Guidance weight w, chosen on development data only (GMM `paper`, seeds 0-1, validation draw).

    .venv/bin/python bench/domain_guidance_w.py [--seeds 0 1] [--n 10 100 1000] [--weights 1 1.1 1.25 1.5 2 3]

Per seed: the GMM experiment's configs (``study.experiments.gmm_defaults.default_config(seed)``: the library
source / finetune budgets, 3000 / 1500 steps), one source model (its draw does not depend on n), then per n
one finetune fit (``domain_guidance``'s fit) and, for each w, a DPM-Solver-2 draw of ``--num-samples``
samples from eps_src + w (eps_ft - eps_src), scored against the *validation* reference draw of the same size
(``study.experiments.gmm.evaluate_method``, validation split only: the test draw is never looked at). The
seeds run in parallel processes of one torch thread each (2 shared cores).

The rule: w with the smallest geometric mean over the (seed, n) units of energy_distance(w) /
energy_distance(w = 1) (scale-free, so n = 10 does not outweigh n = 1000); ties go to the smaller w (the
closer to plain fine-tuning). The `paper` testbed is ``GMMConfig()``'s defaults.
Writes bench/results/domain_guidance_w.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_result  # noqa: E402

METRICS = ("energy_distance", "sliced_w2", "mode_balance_error", "mean_log_q")


def one_seed(seed: int, ns: list[int], weights: list[float], num_samples: int) -> dict:
    """Validation metrics per (n, w) of one seed, and the seconds each part took."""
    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from study.experiments.gmm import evaluate_method
    from study.experiments.gmm_defaults import default_config
    from tgdp import stages
    from tgdp.config import DomainGuidanceConfig, GMMConfig
    from tgdp.data.gmm import GMMTask
    from tgdp.methods import DomainGuidedScore, get_method
    from tgdp.reporter import MemoryReporter

    cpu, cfg, method = torch.device("cpu"), default_config(seed), get_method("domain_guidance")
    t0 = time.perf_counter()
    base = GMMTask(GMMConfig(n=ns[0], seed=seed))
    source = stages.pretrain_source(cfg.source, base.draw("train"), base.schedule, cpu, MemoryReporter())
    source = source.eval().requires_grad_(False)
    out: dict = {"seed": seed, "rows": [], "seconds": {"source": round(time.perf_counter() - t0, 1)}}
    for n in ns:
        task = GMMTask(GMMConfig(n=n, seed=seed))
        data = task.draw("train")
        t0 = time.perf_counter()
        fitted = method.fit(cfg, data, source, task.schedule, cpu, MemoryReporter())
        out["seconds"][f"finetune_n{n}"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for w in weights:
            run = replace(cfg, domain_guidance=DomainGuidanceConfig(weight=w))
            model = DomainGuidedScore(source, fitted.model.finetuned, w)  # the same finetune fit for every w
            res = evaluate_method("domain_guidance", run, task, data, cpu, splits=("validation",), num=num_samples,
                                  source=source, model=model)
            out["rows"].append({"n": n, "weight": w, **{k: res["validation"][k] for k in METRICS}})
        out["seconds"][f"sampling_n{n}"] = round(time.perf_counter() - t0, 1)
    return out


def choose(rows: list[dict], weights: list[float]) -> tuple[float, dict[float, float]]:
    """(chosen w, {w: geometric mean over units of ED(w) / ED(1)}): the rule of the module doc."""
    base = {(r["seed"], r["n"]): r["energy_distance"] for r in rows if r["weight"] == 1}
    score = {}
    for w in weights:
        logs = [math.log(r["energy_distance"] / base[(r["seed"], r["n"])]) for r in rows if r["weight"] == w]
        score[w] = math.exp(sum(logs) / len(logs))
    best = min(weights, key=lambda w: (round(score[w], 6), w))
    return best, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.1, 1.25, 1.5, 2.0, 3.0])
    ap.add_argument("--num-samples", type=int, default=4000, help="samples per draw (and validation reference size)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if 1.0 not in args.weights:
        ap.error("--weights must include 1 (plain fine-tuning, the reference of the rule)")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        k = len(args.seeds)
        runs = list(pool.map(one_seed, args.seeds, [args.n] * k, [args.weights] * k, [args.num_samples] * k))
    rows = [{"seed": r["seed"], **row} for r in runs for row in r["rows"]]
    best, score = choose(rows, args.weights)
    table = {f"n={n}": [sum(r["energy_distance"] for r in rows if r["n"] == n and r["weight"] == w) / len(args.seeds)
                        for w in args.weights] for n in args.n}
    payload = {
        "command": " ".join(["python bench/domain_guidance_w.py", *sys.argv[1:]]),
        "inputs": {"testbed": "gmm paper (GMMConfig defaults)", "seeds": args.seeds, "n": args.n,
                   "weights": args.weights, "num_samples": args.num_samples, "split": "validation",
                   "config": "study.experiments.gmm_defaults.default_config(seed)"},
        "rule": "argmin_w geometric mean over (seed, n) of energy_distance(w) / energy_distance(1); ties: smaller w",
        "chosen_weight": best,
        "ratio_to_w1_geomean": [round(score[w], 4) for w in args.weights],
        "validation_energy_distance_mean_over_seeds": table,
        "rows": rows,
        "seconds": {f"seed{r['seed']}": r["seconds"] for r in runs},
        "wall_s": round(time.perf_counter() - t0, 1),
        "environment": environment(),
    }
    path = write_result("domain_guidance_w", payload)
    print(f"weights {args.weights}: ED(w)/ED(1) geomean {payload['ratio_to_w1_geomean']} -> w = {best}")
    for n, vals in table.items():
        print(f"  {n}: mean validation energy distance {[round(v, 4) for v in vals]}")
    print(f"wrote {path} ({payload['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
