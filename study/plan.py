"""``tgdp-study run --dry-run``: the plan of a study, computed from its validated spec; nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

from study.estimate import estimate
from study.estimate_gpu import gpu_estimate
from study.layout import describe_layout
from study.paths import StudyPaths
from study.space import describe_space
from study.spec import StudySpec, dump_spec, spec_hash


def dry_run_plan(spec: StudySpec, study_dir: Path, address: str | None) -> str:
    """What ``run --dry-run`` prints: the resolved spec, the search spaces, the plan, the resources, what the
    study will write and its estimated run time (CPU and GPU, from measured rates)."""
    r, es = spec.resources, spec.early_stopping
    n_trials = spec.budget.trials_per_n * len(spec.factors.n) * len(spec.factors.seeds) * len(spec.tuned_methods)
    objective = ", ".join(f"{o.direction} {o.metric}" for o in spec.objective)
    if address:
        fit = f"checked against the cluster at {address} at run time"
    else:
        cpus = r.num_cpus if r.num_cpus is not None else os.cpu_count()
        fit = f"fits this machine ({cpus:g} CPUs, {r.num_gpus or 0:g} GPUs)"
    workers = (f"{r.workers_per_trial} Train workers x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU)"
               if r.workers_per_trial else "in-process TorchTrainer (0 workers)")
    lines = [
        f"study        {spec.name}  ({spec.source})",
        f"directory    {study_dir}  (not created by --dry-run)",
        f"spec sha256  {spec_hash(spec)}",
        "",
        "== resolved spec ==",
        dump_spec(spec).rstrip(),
        "",
        f"== search space: {len(spec.space)} parameters, sampler {spec.sampler} (seed {spec.sampler_seed}) ==",
        describe_space(spec.space),
        *(line for m in spec.tuned_methods[1:] for line in (f"  -- {m} --", describe_space(spec.space_of(m)))),
        "",
        "== plan ==",
        f"  target sizes n = {list(spec.factors.n)} x seeds {list(spec.factors.seeds)}: "
        f"{spec.budget.trials_per_n} trials each per tuned method ({', '.join(spec.tuned_methods)}), "
        f"{n_trials} trials in all",
        f"  objective    {objective}" + ("  (multi-objective: Pareto front per n)" if spec.multi_objective else ""),
        f"  time budget  {spec.budget.time_budget_s:g} s per n" if spec.budget.time_budget_s else
        "  time budget  none",
        f"  early stop   ASHA on the guidance epoch: grace {es.grace_period}, reduction {es.reduction_factor:g}, "
        f"max_epochs {spec.max_epochs}" if es.enabled else "  early stop   off",
        "",
        "== resources ==",
        f"  per trial    driver {r.cpus_per_trial:g} CPU + {workers} = {r.trial_cpus:g} CPUs, {r.trial_gpus:g} GPUs",
        f"  concurrency  up to {r.max_concurrent_trials} trials = {r.max_concurrent_trials * r.trial_cpus:g} CPUs, "
        f"{r.max_concurrent_trials * r.trial_gpus:g} GPUs",
        f"  check        {fit}",
        "",
        describe_layout(spec, StudyPaths(study_dir)),
        "",
        estimate(spec),
        "",
        "== GPU estimate (measured rates, bench/results; study.estimate_gpu) ==",
        gpu_estimate(spec),
    ]
    return "\n".join(lines)


__all__ = ["dry_run_plan"]
