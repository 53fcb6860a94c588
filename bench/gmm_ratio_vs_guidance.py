"""Why TGDP trails at n = 1000: the learned density ratio, or the guidance network fitted to it?

    .venv/bin/python bench/gmm_ratio_vs_guidance.py [--testbeds asym paper] [--n 1000] [--seeds 1 2 3]

On development seeds (never the evaluation seeds 100-109 of the final table) and the VALIDATION draw, with each
method's frozen configuration of the final table (``bench/results/gmm_compare/<testbed>/frozen.json``), four
fits per seed that share one source model:

- ``tgdp_reg``: as in the table (classifier learned from the n target points);
- ``tgdp_reg, exact ratio``: the same, with the classifier replaced by the exact log r of the mixtures, so
  only the guidance network (and the time classifier of the cycle term) is learned;
- ``oracle_guidance``: the source model with the exact h*;
- ``vanilla``: the tuned vanilla, the table's strongest baseline at n = 1000.

If the exact ratio closes most of the gap to ``oracle_guidance``, the classifier is the bottleneck; if not,
the guidance network's fit of grad log h* is. ``log_ratio_rmse`` and ``guidance_grad_rmse`` (against the exact
fields) say the same from the other side. Written to ``bench/results/gmm_ratio_vs_guidance.json`` as it goes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, write_result  # noqa: E402

from study.experiments import experiment_for  # noqa: E402
from study.experiments.gmm import ratio_metrics  # noqa: E402
from study.spec import parse_spec, read_yaml  # noqa: E402
from tgdp import stages  # noqa: E402
from tgdp.methods import get_method  # noqa: E402
from tgdp.reporter import MemoryReporter  # noqa: E402


class ExactRatio(nn.Module):
    """A stand-in domain classifier whose logit is -log r(x), exact (so ``classifier_log_ratio`` = log r)."""

    def __init__(self, task) -> None:
        super().__init__()
        self.task = task
        self.anchor = nn.Parameter(torch.zeros(()))  # consumers read the device off the parameters

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return -self.task.log_ratio(x.cpu()).to(x.device, x.dtype)


def spec_for(testbed: str):
    data = read_yaml((ROOT / "search_spaces" / "gmm_compare.yaml").read_text())
    data["name"] = f"diagnose-{testbed}"
    data.setdefault("data", {})["testbed"] = testbed
    return parse_spec(data)


def run(testbed: str, n: int, seed: int) -> dict[str, dict[str, float]]:
    spec = spec_for(testbed)
    frozen = json.loads((ROOT / "bench" / "results" / "gmm_compare" / testbed / "frozen.json").read_text())
    exp, device, out = experiment_for(spec), torch.device("cpu"), {}
    data_cfg, cfg = spec.resolved_config(n, seed, frozen["tgdp_reg"][str(n)]["params"], method="tgdp_reg")
    task, data = exp.load(data_cfg)
    schedule = exp.schedule(task)
    source = stages.pretrain_source(cfg.source, data, schedule, device, MemoryReporter())
    learned = stages.train_classifier(cfg.classifier, data, device, MemoryReporter())
    for label, clf in (("tgdp_reg", learned), ("tgdp_reg, exact ratio", ExactRatio(task))):
        t0 = time.time()
        fitted = get_method("tgdp_reg").fit(cfg, data, source, schedule, device, MemoryReporter(), classifier=clf)
        res = exp.evaluate("tgdp_reg", cfg, task, data, device, source=source, h=fitted.guidance)
        out[label] = {**{k: res["validation"][k] for k in ("energy_distance", "mode_balance_error")},
                      **ratio_metrics(task, clf if clf is learned else None, fitted.guidance, False),
                      "seconds": round(time.time() - t0, 1)}
    res = exp.evaluate("oracle_guidance", cfg, task, data, device, source=source)
    out["oracle_guidance"] = {k: res["validation"][k] for k in ("energy_distance", "mode_balance_error")}
    v_data, v_cfg = spec.resolved_config(n, seed, frozen["vanilla"][str(n)]["params"], method="vanilla")
    fitted = get_method("vanilla").fit(v_cfg, data, source, schedule, device, MemoryReporter())
    res = exp.evaluate("vanilla", v_cfg, task, data, device, source=source, model=fitted.model)
    out["vanilla"] = {k: res["validation"][k] for k in ("energy_distance", "mode_balance_error")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbeds", nargs="+", default=["asym", "paper"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    if set(args.seeds) & set(range(100, 110)):
        raise SystemExit("gmm_ratio_vs_guidance: seeds 100-109 are the final table's evaluation seeds; use others")
    torch.set_num_threads(1)
    path = ROOT / "bench" / "results" / "gmm_ratio_vs_guidance.json"
    raw = json.loads(path.read_text())["raw"] if path.is_file() else {}
    for tb in args.testbeds:
        for seed in args.seeds:
            key = f"{tb}/n{args.n}/s{seed}"
            if key in raw:
                continue
            raw[key] = run(tb, args.n, seed)
            print(key, json.dumps(raw[key]), flush=True)
            summary = {}
            for k in {k.rsplit("/", 1)[0] for k in raw}:
                rows = [v for kk, v in raw.items() if kk.startswith(k + "/")]
                summary[k] = {m: {q: round(sum(r[m][q] for r in rows) / len(rows), 5) for q in rows[0][m]
                                  if q != "seconds"} for m in rows[0]}
                summary[k]["seeds"] = len(rows)
            write_result("gmm_ratio_vs_guidance", {
                "name": "gmm_ratio_vs_guidance", "inputs": {"n": args.n, "seeds": args.seeds, "draw": "validation",
                                                            "configs": "bench/results/gmm_compare/<testbed>/frozen.json"},
                "environment": environment(), "raw": raw, "mean_over_seeds": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
