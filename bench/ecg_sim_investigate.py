"""Why the ECG simulator comparison looks as it does (bench/results/ecg_sim_compare.md): a diagnostic, not a tuning.

    .venv/bin/python bench/ecg_sim_investigate.py      (cpu preset, seed 0; ~5 min on a busy 2-core box)

1. Sample quality of the source model: amplitude and high-frequency power of generated vs real records,
   and feat_energy, at 10 vs 25 solver steps; the feature furthest from the real records.
2. The ratio targets of L_guidance: how much r(x_0) varies over the source samples after the log-ratio
   clip (a constant target means h = 1 and no guidance), at n = 10 and n = 100.
3. The guidance's effect on the samples: relative difference between tgdp and source-only samples drawn
   from the same noise and labels, at gamma = 1 and gamma = 5 (n = 100).
Writes bench/results/ecg_sim_investigate.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from tgdp import sampling, stages
from tgdp.ecg_config import ECGDataConfig
from tgdp.ecg_features import ecg_features, embedding_distances
from tgdp.ecg_task import PRESETS, load_ecg_task
from tgdp.reporter import MemoryReporter
from tgdp.schedules import VPSchedule

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ecg_sim_investigate.json")


def hf_power(x: torch.Tensor) -> float:
    """Mean periodogram power above 25 Hz (100 Hz records, 1000 samples), mV^2."""
    f = torch.fft.rfft(x - x.mean(-1, keepdim=True), dim=-1).abs() ** 2 / x.shape[-1]
    return float(f[..., 250:].mean())


def main() -> None:
    torch.set_num_threads(1)
    cfg, dev, sched, res = PRESETS["cpu"], torch.device("cpu"), VPSchedule(), {}
    t0 = time.time()
    task = load_ecg_task(ECGDataConfig(simulate=True, n=100))
    src = stages.pretrain_source(cfg.source, task.data, sched, dev, MemoryReporter())
    res["source_seconds"] = round(time.time() - t0, 1)
    val = task.mv("val")
    res["real_val"] = {"std_mV": float(val.std()), "hf_power": hf_power(val)}
    labels = sampling.label_draw(task.data, 32, 0)
    shape = tuple(task.data["source_x"].shape[1:])
    for steps in (10, 25):
        s = replace(cfg.sample, steps=steps, num_samples=32, batch_size=32)
        x = task.norm.invert(sampling.model_samples(s, src, sched, dev, shape, labels))
        fg, fr = ecg_features(x), ecg_features(val)
        z = np.abs((fg.mean(0) - fr.mean(0)) / (fr.std(0) + 1e-6))
        res[f"source_only_{steps}_steps"] = {"std_mV": float(x.std()), "hf_power": hf_power(x),
                                             **embedding_distances(x, val), "max_feature_z": float(z.max()),
                                             "worst_feature": int(z.argmax())}
        print(steps, res[f"source_only_{steps}_steps"], flush=True)
    for n in (10, 100):
        t = load_ecg_task(ECGDataConfig(simulate=True, n=n))
        clf = stages.train_classifier(cfg.classifier, t.data, dev, MemoryReporter())
        logr = stages.classifier_log_ratio(clf, t.data["source_x"], t.data["source_y"])
        r, _ = stages.normalised_ratio_targets(logr, cfg.guidance.log_ratio_clip)
        res[f"ratio_targets_n{n}"] = {
            "logr_min": float(logr.min()), "logr_max": float(logr.max()),
            "frac_clipped": float((logr.abs() >= cfg.guidance.log_ratio_clip).float().mean()),
            "r_std_over_mean": float(r.std() / r.mean())}
        print(n, res[f"ratio_targets_n{n}"], flush=True)
        if n == 100:
            logr_t = stages.classifier_log_ratio(clf, t.data["target_x"], t.data["target_y"])
            h = stages.train_guidance(replace(cfg.guidance, eta_cycle=0.0, eta_consistency=0.0), t.data, logr,
                                      sched, dev, MemoryReporter(), score_model=src, target_log_ratio=logr_t)
            s = replace(cfg.sample, num_samples=32, batch_size=32)
            base = sampling.model_samples(s, src, sched, dev, shape, labels)
            for gamma in (1.0, 5.0):
                g = sampling.tgdp_samples(s, src, h, sched, dev, shape, labels, scale=gamma)
                res[f"guidance_effect_gamma{gamma:g}"] = float((g - base).norm() / base.norm())
    res["seconds"] = round(time.time() - t0, 1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
