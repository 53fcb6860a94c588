"""What the learned ratio alone allows on the GMM (against the n points and the exact ratio): a diagnostic.

    .venv/bin/python bench/gmm_ratio_limit.py [--seeds 0 1 2 3 4 5] [--n 10 100 1000]   (~8 min on 2 cores)

With a perfect guidance net, guided sampling reaches the law that the pooled guidance target reweights to:
the m source and n target training points, each weighted by r / (m + n r) (``losses.pooled_reference_log_weights``
at t = 0). This script draws from that weighted measure for the *learned* ratio (the GMM experiment's classifier)
and for the *exact* one, and compares both with the n-point empirical measure, the best that vanilla can memorise.
All three are scored against the same 10000-point test draw of the true target:
- energy distance, and its within-mode part (each target mode's samples against that mode's true samples);
- the target split of the n points and the energy distance that this split alone costs. For two modes at distance
  D with weights w and 1 - w (against 1/2), it is 2 (w - 1/2)^2 D.
Writes bench/results/gmm_ratio_limit.json and .md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, write_result  # noqa: E402

from study.experiments.gmm_defaults import default_config  # noqa: E402
from tgdp import losses, metrics, stages  # noqa: E402
from tgdp.config import GMMConfig, GuidanceConfig  # noqa: E402
from tgdp.data.gmm import GMMTask  # noqa: E402
from tgdp.reporter import MemoryReporter  # noqa: E402

DRAWS = 10000
MEASURES = ("empirical", "learned_ratio", "exact_ratio")


def pooled_draw(data: dict, log_ratio_fn, seed: int) -> torch.Tensor:
    """DRAWS points of the pooled training set, resampled with the pooled target's t = 0 weights."""
    x = torch.cat([data["source_x"], data["target_x"]])
    m, n = data["source_x"].shape[0], data["target_x"].shape[0]
    clip, log_r = GuidanceConfig().log_ratio_clip, log_ratio_fn(x).double()
    _, log_norm = stages.normalised_ratio_targets(log_r[:m], clip)
    log_r = stages.log_ratio_on_target_scale(log_r, clip, log_norm)  # the scale train_guidance puts r on
    is_source = torch.cat([torch.ones(m, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    log_w = log_r + losses.pooled_reference_log_weights(log_r, is_source, m, n, m)
    g = torch.Generator().manual_seed(seed)
    return x[torch.multinomial(torch.softmax(log_w, 0), DRAWS, replacement=True, generator=g)]


def within_mode_energy(task: GMMTask, x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over target modes of the energy distance between the points nearest that mode (by posterior)."""
    kx = task.target.component_log_probs(x).argmax(1)
    kr = task.target.component_log_probs(ref).argmax(1)
    return statistics.mean(metrics.energy_distance(x[kx == k], ref[kr == k])
                           for k in range(task.target.num_components) if (kx == k).any())


def one(n: int, seed: int) -> dict:
    task = GMMTask(GMMConfig(n=n, seed=seed))
    data, ref = task.draw("train"), task.fresh_target(DRAWS, "test")
    clf = stages.train_classifier(default_config(seed).classifier, data, torch.device("cpu"), MemoryReporter())
    measures = {"empirical": data["target_x"],
                "learned_ratio": pooled_draw(data, lambda x: stages.classifier_log_ratio(clf, x), seed),
                "exact_ratio": pooled_draw(data, task.log_ratio, seed)}
    split = data["target_y"].sum(0)
    w = float(split[0] / split.sum())
    mode_distance = float((task.target.means[0] - task.target.means[1]).norm())
    row = {"n": n, "seed": seed, "target_split": [int(v) for v in split.tolist()],
           "split_energy": 2 * (w - 0.5) ** 2 * mode_distance, "tilt_gamma": float(clf.gamma)}
    for name, x in measures.items():
        row[name] = {"energy_distance": metrics.energy_distance(x, ref),
                     "within_mode": within_mode_energy(task, x, ref),
                     "mode_balance_error": metrics.mode_balance_error(x, task)}
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| n | seed | split | split alone | empirical ED (within) | learned ratio ED (within) "
           "| exact ratio ED (within) |", "|---|---|---|---|---|---|---|"]
    cell = lambda d: f"{d['energy_distance']:.4f} ({d['within_mode']:.4f})"  # noqa: E731
    for r in rows:
        split = "/".join(str(v) for v in r["target_split"])
        cells = " | ".join(cell(r[k]) for k in MEASURES)
        out.append(f"| {r['n']} | {r['seed']} | {split} | {r['split_energy']:.4f} | {cells} |")
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        mean = lambda k, f: statistics.mean(r[k][f] for r in sel)  # noqa: E731
        out.append(f"| {n} | mean | | {statistics.mean(r['split_energy'] for r in sel):.4f} | "
                   + " | ".join(f"**{mean(k, 'energy_distance'):.4f}** ({mean(k, 'within_mode'):.4f})"
                                for k in MEASURES) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = [one(n, s) for n in args.n for s in args.seeds]
    table = markdown(rows)
    write_result("gmm_ratio_limit", {"name": "gmm_ratio_limit", "inputs": vars(args), "environment": environment(),
                                     "wall_s": round(time.perf_counter() - t0, 1), "rows": rows})
    (RESULTS / "gmm_ratio_limit.md").write_text("Energy distance to a 10000-point test draw of the target (within-mode "
                                                "part in brackets). `bench/gmm_ratio_limit.py`.\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
