"""The Gaussian-mixture comparison: every method on the same data, budget and sampler.

    tgdp-study gmm --n 10 100 1000 --seed 0 [1 2 --jobs 2] [--set guidance.width=256] --out results/gmm

Trains the source model once, then per n: TGDP (eta_1 = eta_2 = 0), TGDP with both regularisers,
vanilla, finetune, Domain Guidance (that finetune fit, ``domain_guidance.weight``), source-only,
oracle-guidance (learned source score + exact grad log h*) and
oracle-target (exact target score). Every method is sampled with the same solver and scored against
a fresh *test* draw of the true target; ``true_target`` is a second true draw (the noise floor).
Writes table.csv, table.md, samples.png, ratio_field.png and config.json under --out (under --out/seed<S>
for several seeds, plus summary.md: mean, sd and per-seed wins).

The stage configs are ``study.experiments.gmm_defaults.default_config`` (with ``--set`` applied, values read
as YAML 1.2 scalars by ``study.yaml_io``); tgdp_reg's regularisers are the GMM experiment's ``regularised``;
the figures are drawn by ``study.plots``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from study.experiments.gmm import GMMExperiment
from study.experiments.gmm_defaults import default_config
from study.overrides import split_override
from tgdp import metrics, sampling, seeds, stages
from tgdp.config import GMMConfig, TGDPConfig, from_dict, to_dict
from tgdp.data.gmm import GMMTask
from tgdp.methods import get_method
from tgdp.reporter import MemoryReporter

METHODS = GMMExperiment.methods  # the eight methods, in table order
METRIC_KEYS = ("energy_distance", "sliced_w2", "mean_log_q", "mean_q", "mode_balance_error")
ACCOUNTING_KEYS = ("nonfinite_fraction", "failed")  # tgdp.metrics.sample_metrics: > 1 % non-finite rows = failed
REGULARISED = GMMExperiment.regularised  # the "tgdp_reg" method: the cycle and consistency terms


def run_n(task: GMMTask, cfg: TGDPConfig, source_model, device: torch.device, log=print) -> tuple[dict, dict]:
    """Every method of the GMM experiment at one n, through the Method registry: ({method: samples}, diagnostics).

    Methods share one reporter, so a finished stage is reused (domain_guidance gets finetune's fit back); a
    method that changes the config (tgdp_reg) gets its own, so it never restores another's guidance. tgdp_reg
    reuses tgdp's domain classifier (the same config and data: the same classifier).
    """
    data, sch, shape = task.draw("train"), task.schedule, (task.dim,)
    shared = MemoryReporter()
    samples, fitted, extra, timings = {}, {}, {}, {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        log(f"  n={task.cfg.n:<5} {name:<16} {timings[name]:6.1f} s")
        return out

    for name in METHODS:
        method = get_method(name)
        run_cfg = method.configure(cfg, REGULARISED)
        reporter = shared if run_cfg == cfg else MemoryReporter()
        classifier = fitted["tgdp"].classifier if "tgdp" in fitted else None
        fitted[name] = timed(f"{name}_fit", lambda: method.fit(run_cfg, data, source_model, sch, device, reporter,
                                                               classifier=classifier))
        samples[name] = timed(name, lambda: method.draw(fitted[name], run_cfg.sample, sch, device, shape,
                                                        source=source_model, task=task))
    fit, reg = fitted["tgdp"], fitted["tgdp_reg"]
    extra["classifier_log_ratio_rmse"] = metrics.log_ratio_rmse(
        lambda x: stages.classifier_log_ratio(fit.classifier, x), task)
    extra["tgdp_guidance_grad_rmse"] = metrics.guidance_grad_rmse(sampling.guidance_grad(fit.guidance), task)
    extra["tgdp_reg_guidance_grad_rmse"] = metrics.guidance_grad_rmse(sampling.guidance_grad(reg.guidance), task)
    extra["models"] = {"classifier": fit.classifier, "guidance": fit.guidance}
    extra["timings_s"] = timings
    return samples, extra


def evaluate(samples: dict[str, torch.Tensor], task: GMMTask, split: str = "test") -> list[dict]:
    """One row per method (plus the true-target noise floor) of every metric against ``split``."""
    reference = task.fresh_target(10000, split)
    rows = [{"n": task.cfg.n, "method": name, **metrics.sample_metrics(x, reference, task)}
            for name, x in samples.items()]
    floor = task.fresh_target(10000, split, seed=seeds.noise_floor_reference(task.cfg.seed))
    rows.append({"n": task.cfg.n, "method": "true_target", **metrics.sample_metrics(floor, reference, task)})
    return rows


def markdown_table(rows: list[dict], keys=METRIC_KEYS) -> str:
    """One line per row; a failed row (``failed`` = 1) prints "failed", not its NaNs, and every row with
    non-finite samples is named under the table with its fraction."""
    cell = lambda r, k: "failed" if r.get("failed") else f"{r[k]:.4f}"  # noqa: E731
    head = "| n | method | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys) + "\n"
    notes = "".join(f"\n- n={r['n']} {r['method']}: {100 * r['nonfinite_fraction']:.2f} % of sample rows non-finite "
                    + ("(failed: over 1 %)" if r.get("failed") else "(scored on the finite rows)")
                    for r in rows if r.get("nonfinite_fraction"))
    return head + "".join(f"| {r['n']} | {r['method']} | " + " | ".join(cell(r, k) for k in keys) + " |\n"
                          for r in rows) + ("\n" + notes[1:] + "\n" if notes else "")


def apply_overrides(cfg: TGDPConfig, overrides: list[str]) -> TGDPConfig:
    """``["guidance.width=256", ...]`` applied to ``cfg``; keys and ranges are checked. Values are YAML 1.2
    scalars, read as the spec reader reads them (``guidance.lr=1e-3`` is the float 0.001)."""
    tree = to_dict(cfg)
    for item in overrides:
        key, value = split_override(item, example="guidance.width=256")
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {item!r}: {key!r} is not a config key; top-level keys: {sorted(tree)}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--set {item!r}: unknown key {key!r}; allowed: {sorted(node)}")
        node[leaf] = value
    return from_dict(TGDPConfig, tree)


def run_seed(seed: int, ns: list[int], overrides: list[str], out: Path) -> list[dict]:
    """Every method at every n for one seed; writes table.{csv,md,json}, diagnostics, config and figures."""
    from study import plots  # matplotlib only when writing figures

    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    # The GMM nets are small MLPs: intra-op threads only add synchronisation, which on a shared, busy machine
    # made the source stage many times slower than one thread (seen on a 2-core box; no result file measures it).
    torch.set_num_threads(1)
    cfg = apply_overrides(default_config(seed), overrides)
    say = lambda s: print(f"[seed {seed}] {s}", flush=True)  # noqa: E731
    base = GMMTask(GMMConfig(n=max(ns), seed=seed))
    t0 = time.perf_counter()
    source_model = stages.pretrain_source(cfg.source, base.draw("train"), base.schedule, device, MemoryReporter())
    say(f"source model   {time.perf_counter() - t0:6.1f} s")
    rows, all_samples, fields, diagnostics = [], {}, {}, {}
    for n in ns:
        task = GMMTask(GMMConfig(n=n, seed=seed))
        t0 = time.perf_counter()
        samples, extra = run_n(task, cfg, source_model, device, log=say)
        rows += evaluate(samples, task)
        all_samples[n], fields[n] = samples, (task, extra.pop("models"))
        diagnostics[n] = {**extra, "wall_s": time.perf_counter() - t0}
        say(f"n={n}: done in {diagnostics[n]['wall_s']:.1f} s")
    table = markdown_table(rows)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["n", "method", *METRIC_KEYS, *ACCOUNTING_KEYS])
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(f"Command: `{command_line(ns, [seed], overrides)}`\n\n{table}")
    (out / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2))
    (out / "config.json").write_text(json.dumps({"seed": seed, "n": ns, "overrides": overrides, "tgdp": to_dict(cfg),
                                                 "regularised": REGULARISED}, indent=2))
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    plots.gmm_samples_grid(all_samples, {n: t for n, (t, _) in fields.items()}, out / "samples.png")
    plots.gmm_ratio_fields(fields, out / "ratio_field.png")
    return rows


def command_line(ns: list[int], seeds: list[int], overrides: list[str]) -> str:
    sets = "".join(f" --set {o}" for o in overrides)
    return f"tgdp-study gmm --n {' '.join(map(str, ns))} --seed {' '.join(map(str, seeds))}{sets}"


def seed_summary(rows: list[dict], seeds: list[int], metric: str = "energy_distance") -> str:
    """Mean and standard deviation over seeds per (n, method), and in how many seeds tgdp_reg beat each
    transfer baseline: one seed's table is one draw of the data, the nets and the sampler noise."""
    by: dict[tuple[int, str], dict[int, float]] = {}
    for r in rows:
        by.setdefault((r["n"], r["method"]), {})[r["seed"]] = r[metric]
    lines = [f"| n | method | {metric} mean | sd | per seed ({', '.join(map(str, seeds))}) | tgdp_reg better in |",
             "|---|---|---|---|---|---|"]
    for (n, method), vals in by.items():
        v = torch.tensor([vals[s] for s in seeds], dtype=torch.float64)
        sd = v.std().item() if len(seeds) > 1 else 0.0
        reg = by.get((n, "tgdp_reg"), {})
        wins = (f"{sum(reg[s] < vals[s] for s in seeds)}/{len(seeds)}"
                if method in ("vanilla", "finetune", "source_only", "tgdp") else "")
        lines.append(f"| {n} | {method} | {v.mean().item():.4f} | {sd:.4f} | "
                     f"{' '.join('failed' if x != x else f'{x:.4f}' for x in v.tolist())} | {wins} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    out = Path(args.out or "results/gmm").resolve()
    seeds, ns, overrides = list(args.seed), list(args.n), list(args.set or [])
    apply_overrides(default_config(), overrides)  # a bad --set fails before any training
    print(f"tgdp-study gmm: n = {ns}, seeds = {seeds}, out = {out}", flush=True)
    dirs = {s: out if len(seeds) == 1 else out / f"seed{s}" for s in seeds}
    if args.jobs > 1 and len(seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.jobs, len(seeds)), mp_context=mp.get_context("spawn")) as pool:
            results = dict(zip(seeds, pool.map(run_seed, seeds, [ns] * len(seeds), [overrides] * len(seeds),
                                               [dirs[s] for s in seeds])))
    else:
        results = {s: run_seed(s, ns, overrides, dirs[s]) for s in seeds}
    for s in seeds:
        print(f"\nseed {s}:\n" + markdown_table(results[s]))
    if len(seeds) > 1:
        rows = [{**r, "seed": s} for s in seeds for r in results[s]]
        summary = seed_summary(rows, seeds)
        (out / "summary.md").write_text(f"Command: `{command_line(ns, seeds, overrides)}`\n\n{summary}")
        (out / "summary.json").write_text(json.dumps(rows, indent=2))
        print(summary)
    print(f"wrote {out}", flush=True)
    return 0
