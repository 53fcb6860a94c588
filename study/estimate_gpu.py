"""The GPU-hours a spec would cost, from the rates measured on a GPU in ``bench/results`` (``--dry-run``).

The rates are those of ``bench/gpu_check.py`` on one GPU (``gpu_check.json``: fp32, ``gpu_check_bf16.json``:
bf16): the paper-size SSSD (256 x 36, batch 32, 8 x 1000 records) in steps/s, the CNN classifiers and
guidance net in steps/s, guided DPM-Solver-2 sampling (25 steps) in records/s. A stage of another size is
scaled to first order: SSSD work by width x depth x batch (sampling by width x depth x solver steps), the
guidance by its batch; small nets under-fill a GPU, so their estimate is a lower bound. GPU-seconds add up
across Train workers (a data-parallel run splits the batch; the all-reduce is not counted).

What is counted, with every searched value at its base (the spec's ``fixed`` or default) value and no ASHA
stop (an upper bound for the trials): the source model once per seed; per unit (n, seed) the domain
classifier and the SSSD baselines the experiment fits (``vanilla``, ``finetune``) with their samples; per
trial the time classifier, the guidance epochs over the m source records, the in-training proxy samples
and the final guided samples. Not counted: data loading, the utility classifier of the ECG evaluation,
and Ray start-up. Only SSSD specs (the ECG experiment) have measured rates; for others the estimate says so.
Import-light (json, no torch), as ``--dry-run`` must stay.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
RATE_FILES = {"fp32": "gpu_check.json", "bf16": "gpu_check_bf16.json"}  # by ScoreConfig.precision
MEASURED = {"sssd_work": 256 * 36 * 32, "sample_work": 256 * 36 * 25, "guidance_batch": 32}  # gpu_check's sizes
PTBXL_RECORDS = 21837  # PTB-XL records, the real source's m when no source_limit is set
SHARED_SSSD = ("vanilla", "finetune")  # ScoreConfig sections of shared methods named as their sections
PROXY_RECORDS = 8  # guided records per guidance epoch (study.experiments.ecg.ECG_EPOCH_RECORDS; torch-free here)


def gpu_estimate(spec: Any, results: Path = RESULTS) -> str:
    """Lines for ``--dry-run``: the spec's estimated GPU-hours by part and in all, or why there is none."""
    data, base = spec.resolved_config(spec.factors.n[0], spec.factors.seeds[0])
    if base.source.arch != "sssd":
        return f"  none: no GPU rate measured for source arch {base.source.arch!r} (only sssd, the ECG nets)"
    path = results / RATE_FILES[base.source.precision]
    if not path.is_file():
        return f"  none: {path} is missing (run bench/gpu_check.py on a GPU)"
    bench = json.loads(path.read_text())
    w, env = bench["worker"], bench["environment"]
    rates = {"sssd": w["source"]["steps_per_s"], "classifier": w["classifier"]["steps_per_s"],
             "time_classifier": w["time_classifier"]["steps_per_s"], "guidance": w["guidance"]["steps_per_s"],
             "sample": w["sample_guided"]["samples_per_s"]}
    seeds, units = len(spec.factors.seeds), len(spec.factors.n) * len(spec.factors.seeds)
    m = _source_records(data)
    shared_s = seeds * _sssd_s(base.source, rates)  # the source key holds no n: once per seed
    unit_s = base.classifier.steps / rates["classifier"]
    for section in SHARED_SSSD:
        if section in _experiment_methods(spec) and section not in spec.tuned_methods:
            unit_s += _sssd_s(getattr(base, section), rates) + _sample_s(base.source, base.sample, rates)
    trial_s = (base.time_classifier.steps / rates["time_classifier"]
               + base.guidance.epochs * _guidance_s(base.guidance, m, rates)
               + base.guidance.epochs * _sample_s(base.source, base.sample, rates, PROXY_RECORDS)
               + _sample_s(base.source, base.sample, rates))
    trials = spec.budget.trials_per_n * units * len(spec.tuned_methods)
    total = shared_s + units * unit_s + trials * trial_s
    note = "  (compile: no compiled rate measured; eager rates used)" if base.source.compile else ""
    return "\n".join([
        f"  rates        {path.name}: {w.get('device', '?')}, {env.get('date', '?')}, torch {env.get('torch', '?')}"
        f"{note}",
        f"  source       {seeds} x {_h(shared_s / seeds)} = {_h(shared_s)}  (sssd {base.source.width} x "
        f"{base.source.depth}, {base.source.steps} steps, batch {base.source.batch_size})",
        f"  per unit     {units} x {_h(unit_s)} = {_h(units * unit_s)}  (classifier, shared SSSD baselines, "
        "their samples)",
        f"  per trial    {trials} x {_h(trial_s)} = {_h(trials * trial_s)}  (guidance {base.guidance.epochs} epochs "
        f"over m = {m}, sampling; no ASHA stop)",
        f"  total        {total / 3600:.3g} GPU-hours  (a lower bound for nets smaller than the measured ones;",
        "               data loading and the utility evaluation not counted)",
    ])


def _sssd_s(cfg: Any, rates: dict[str, float]) -> float:
    """GPU-seconds of ``cfg.steps`` SSSD training steps (work scaled by width x depth x batch)."""
    return cfg.steps / rates["sssd"] * cfg.width * cfg.depth * cfg.batch_size / MEASURED["sssd_work"]


def _sample_s(score: Any, sample: Any, rates: dict[str, float], records: int | None = None) -> float:
    """GPU-seconds of sampling ``records`` (default ``sample.num_samples``) with the score net ``score``."""
    work = score.width * score.depth * sample.steps / MEASURED["sample_work"]
    return (records or sample.num_samples) / rates["sample"] * work


def _guidance_s(cfg: Any, m: int, rates: dict[str, float]) -> float:
    """GPU-seconds of one guidance epoch: ceil(m / batch) steps, each scaled by its batch."""
    return math.ceil(m / cfg.batch_size) / rates["guidance"] * cfg.batch_size / MEASURED["guidance_batch"]


def _source_records(data: Any) -> int:
    """m, the source records of a unit: the simulated count, the source_limit, or all of PTB-XL."""
    if getattr(data, "simulate", False):
        return int(data.sim_source_records)
    return int(getattr(data, "source_limit", 0) or PTBXL_RECORDS)


def _experiment_methods(spec: Any) -> tuple[str, ...]:
    from study.experiments import get_experiment

    return tuple(get_experiment(spec.experiment).methods)


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h"


__all__ = ["gpu_estimate"]
