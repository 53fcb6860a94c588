"""The Gaussian-mixture comparison: every method on the same data, budget and sampler.

    tgdp-study gmm --n 10 100 1000 --seed 0 --out results/gmm

Trains the source model once, then per n: TGDP (eta_1 = eta_2 = 0), TGDP with both regularisers,
vanilla, finetune, source-only, oracle-guidance (learned source score + exact grad log h*) and
oracle-target (exact target score). Every method is sampled with the same solver and scored against
a fresh *test* draw of the true target; ``true_target`` is a second true draw (the noise floor).
Writes table.csv, table.md, samples.png, ratio_field.png and config.json under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from tgdp import metrics, pipeline, stages
from tgdp.config import GMMConfig, TGDPConfig, to_dict
from tgdp.data.gmm import GMMTask
from tgdp.reporter import MemoryReporter
from tgdp.sampling import guided_eps

METHODS = ("tgdp", "tgdp_reg", "vanilla", "finetune", "source_only", "oracle_guidance", "oracle_target")
METRIC_KEYS = ("energy_distance", "sliced_w2", "mean_log_q", "mean_q", "mode_balance_error")
REGULARISED = {"eta_cycle": 1.0, "eta_consistency": 0.1, "target_batch_size": 64}  # the "tgdp_reg" method


def default_config(seed: int = 0) -> TGDPConfig:
    """The experiment's stage configs: the library defaults, every stage seeded with ``seed``."""
    cfg = TGDPConfig()
    return replace(cfg, **{name: replace(getattr(cfg, name), seed=seed) for name in
                           ("source", "classifier", "time_classifier", "guidance", "vanilla", "finetune", "sample")})


def run_n(task: GMMTask, cfg: TGDPConfig, source_model, device: torch.device, log=print) -> tuple[dict, dict]:
    """All methods at one n: returns ({method: samples}, {extra diagnostics})."""
    data, sch, shape = task.draw("train"), task.schedule, (task.cfg.dim,)
    rep = MemoryReporter()
    samples, extra, timings = {}, {}, {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        log(f"  n={task.cfg.n:<5} {name:<16} {timings[name]:6.1f} s")
        return out

    fit = timed("tgdp_fit", lambda: pipeline.fit_tgdp(cfg, data, source_model, sch, device, rep))
    samples["tgdp"] = timed("tgdp", lambda: pipeline.tgdp_samples(cfg.sample, source_model, fit.guidance, sch, device, shape))
    reg_cfg = replace(cfg, guidance=replace(cfg.guidance, **REGULARISED))
    reg = timed("tgdp_reg_fit", lambda: pipeline.fit_tgdp(reg_cfg, data, source_model, sch, device, MemoryReporter(),
                                                          classifier=fit.classifier))
    samples["tgdp_reg"] = timed("tgdp_reg", lambda: pipeline.tgdp_samples(cfg.sample, source_model, reg.guidance, sch,
                                                                          device, shape))
    for name in pipeline.BASELINES:
        model = timed(f"{name}_fit", lambda: pipeline.fit_baseline(name, cfg, data, source_model, sch, device, rep))
        samples[name] = timed(name, lambda: pipeline.model_samples(cfg.sample, model, sch, device, shape))
    oracle = guided_eps(stages.model_eps(source_model), task.grad_log_h_star, sch, 1.0)
    samples["oracle_guidance"] = pipeline.sample_eps(cfg.sample, lambda y: oracle, shape, sch, device)
    samples["oracle_target"] = pipeline.sample_eps(cfg.sample, lambda y: task.exact_eps("target"), shape, sch, device)
    extra["classifier_log_ratio_rmse"] = metrics.log_ratio_rmse(
        lambda x: stages.classifier_log_ratio(fit.classifier, x), task)
    extra["tgdp_guidance_grad_rmse"] = metrics.guidance_grad_rmse(stages.guidance_grad(fit.guidance), task)
    extra["tgdp_reg_guidance_grad_rmse"] = metrics.guidance_grad_rmse(stages.guidance_grad(reg.guidance), task)
    extra["models"] = {"classifier": fit.classifier, "guidance": fit.guidance}
    extra["timings_s"] = timings
    return samples, extra


def evaluate(samples: dict[str, torch.Tensor], task: GMMTask, split: str = "test") -> list[dict]:
    """One row per method (plus the true-target noise floor) of every metric against ``split``."""
    reference = task.fresh_target(10000, split)
    rows = [{"n": task.cfg.n, "method": name, **metrics.sample_metrics(x, reference, task)}
            for name, x in samples.items()]
    floor = task.fresh_target(10000, split, seed=task.cfg.seed + 500)
    rows.append({"n": task.cfg.n, "method": "true_target", **metrics.sample_metrics(floor, reference, task)})
    return rows


def markdown_table(rows: list[dict], keys=METRIC_KEYS) -> str:
    head = "| n | method | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys) + "\n"
    return head + "".join(f"| {r['n']} | {r['method']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |\n"
                          for r in rows)


def main(args: argparse.Namespace) -> int:
    from tgdp import gmm_plots  # matplotlib only when writing figures

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    # The GMM nets are small MLPs: intra-op threads only add synchronisation (measured on 2 busy
    # cores: 200 source steps took 6.9 s on one thread and 200 s on two).
    torch.set_num_threads(1)
    cfg = default_config(args.seed)
    ns = list(args.n)
    print(f"tgdp-study gmm: n = {ns}, seed = {args.seed}, out = {out}", flush=True)
    base = GMMTask(GMMConfig(n=max(ns), seed=args.seed))
    t0 = time.perf_counter()
    source_model = stages.pretrain_source(cfg.source, base.draw("train"), base.schedule, device, MemoryReporter())
    print(f"  source model   {time.perf_counter() - t0:6.1f} s", flush=True)
    rows, all_samples, fields, diagnostics = [], {}, {}, {}
    for n in ns:
        task = GMMTask(GMMConfig(n=n, seed=args.seed))
        t0 = time.perf_counter()
        samples, extra = run_n(task, cfg, source_model, device, log=lambda s: print(s, flush=True))
        rows += evaluate(samples, task)
        all_samples[n], fields[n] = samples, (task, extra.pop("models"))
        diagnostics[n] = {**extra, "wall_s": time.perf_counter() - t0}
        print(f"  n={n}: done in {diagnostics[n]['wall_s']:.1f} s", flush=True)
    table = markdown_table(rows)
    print("\n" + table)
    import csv
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["n", "method", *METRIC_KEYS])
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(f"Command: `tgdp-study gmm --n {' '.join(map(str, ns))} --seed {args.seed}`\n\n{table}")
    (out / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2))
    (out / "config.json").write_text(json.dumps({"seed": args.seed, "n": ns, "tgdp": to_dict(cfg),
                                                 "regularised": REGULARISED}, indent=2))
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    gmm_plots.samples_grid(all_samples, {n: t for n, (t, _) in fields.items()}, out / "samples.png")
    gmm_plots.ratio_fields(fields, out / "ratio_field.png")
    print(f"wrote {out}/table.csv, table.md, samples.png, ratio_field.png", flush=True)
    return 0
