"""The ECG task (DESIGN §2): PTB-XL (source) -> CPSC2018 (target) records, their splits and normalisation,
and the preset stage configs of the conditional version.

Data (``load_ecg_task``). The source is PTB-XL (or the simulator's PTB-XL layout), the target CPSC2018 (or
its simulated layout), both as (N, 8, 1000) records at 100 Hz with 9-class multi-hot labels. The target
is split by ``split_target`` into the limited training set (n records or a fraction, stratified, seeded),
a validation and a test split, pairwise disjoint. **Normalisation rule:** one per-lead ``LeadNorm`` is
fitted on the *source training records only* (all loaded source records; the source has no held-out use
here) and applied to every set, so the source model, the classifiers, the guidance net and the target
baselines all work in one space, and no target record (limited, validation or test) influences it.
Generated records are mapped back to mV (``LeadNorm.invert``) before they are evaluated.

Configs. ``PRESETS`` (stage configs) and ``UTILITY_PRESETS`` (the utility classifier): micro (tests), cpu
(2 CPU cores, minutes per n), paper (36 x 256 SSSD and the paper's iterations/lrs, GPU). The ECG runs the
conditional version: ``check_ecg_config`` refuses a stage that is not label-aware. The methods and their
evaluation are in ``tgdp.ecg_methods``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch

from tgdp.config import ClassifierConfig, GuidanceConfig, SampleConfig, ScoreConfig, TGDPConfig, TimeClassifierConfig
from tgdp.data.ecg import ECGDataset, LeadNorm, TargetSplit, fit_lead_norm, split_target
from tgdp.data.ecg_cache import LOADERS, load_cached
from tgdp.ecg_config import ECGDataConfig, UtilityConfig


# --- data ----------------------------------------------------------------------------------------------

@dataclass
class ECGTask:
    """The loaded experiment. Tensors named *_x are normalised (``norm``); raw datasets stay in mV."""

    data: dict[str, torch.Tensor]  # source_x (m, 8, L), source_y (m, 9), target_x (n, 8, L), target_y (n, 9)
    val_x: torch.Tensor  # (n_val, 8, L) normalised target validation records
    val_y: torch.Tensor  # (n_val, 9)
    test_x: torch.Tensor  # (n_test, 8, L) normalised target test records
    test_y: torch.Tensor  # (n_test, 9)
    norm: LeadNorm  # fitted on the source training records only
    split: TargetSplit  # row indices of train / val / test in ``target``
    source: ECGDataset  # raw source records (mV)
    target: ECGDataset  # raw target records (mV), all rows
    config: ECGDataConfig | None = None  # what was loaded (load_ecg_task sets it)

    def mv(self, rows: str) -> torch.Tensor:
        """Raw target records (mV) of split ``rows`` ("train", "val" or "test")."""
        return self.target.x[list(getattr(self.split, rows))]


def simulated_roots(cfg: ECGDataConfig) -> tuple[str, str]:
    """(source dir, target dir) of the simulated sets, written once; safe when trials race (atomic rename)."""
    base = cfg.sim_dir or os.environ.get("TGDP_ECG_SIM_DIR") or os.path.join(tempfile.gettempdir(), "tgdp-ecg-sim")
    from tgdp.data.ecg_sim import SIM_VERSION, write_simulated_dataset  # noqa: PLC0415 - only needed for simulate
    roots = []
    for domain, records, seed in (("source", cfg.sim_source_records, cfg.sim_seed),
                                  ("target", cfg.sim_target_records, cfg.sim_seed + 1)):
        final = os.path.join(base, f"{domain}-{records}-seed{seed}-v{SIM_VERSION}")
        if not os.path.exists(os.path.join(final, "simulation.json")):
            os.makedirs(base, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{domain}-", dir=base)
            write_simulated_dataset(tmp, domain, records, seed, overwrite=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process got there first: its copy is identical
                shutil.rmtree(tmp, ignore_errors=True)
        roots.append(final)
    return roots[0], roots[1]


def load_ecg_task(cfg: ECGDataConfig, *, cache_dir: str | None = None) -> ECGTask:
    """Load source and target, split the target, fit the normalisation on the source, build the data dict.

    With ``cache_dir`` the records come from the preprocessed-data cache (``tgdp.data.ecg_cache``): read
    from the WFDB files once, in parallel, then memory-mapped by every later call (same values)."""
    src_root, tgt_root = simulated_roots(cfg) if cfg.simulate else (cfg.source_root, cfg.target_root)
    source = _load("ptbxl", src_root, cache_dir, min_length=cfg.min_length, skip_bad=cfg.skip_bad,
                   limit=cfg.source_limit or None)
    target = _load("cpsc2018", tgt_root, cache_dir, min_length=cfg.min_length, skip_bad=cfg.skip_bad)
    if len(source) == 0 or len(target) == 0:
        raise ValueError(f"no usable records: {len(source)} source, {len(target)} target")
    n = int(cfg.n) if float(cfg.n) >= 1 else float(cfg.n)
    split = split_target(target.y, n, seed=cfg.seed, val=_size(cfg.val), test=_size(cfg.test),
                         record_ids=target.record_ids)
    norm = fit_lead_norm(source.x, source.lengths)  # source training records only (see the module doc)

    def normed(rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        sub = target.subset(list(rows))
        return norm.apply(sub.x, sub.lengths), sub.y

    tx, ty = normed(split.train)
    vx, vy = normed(split.val)
    sx, sy = normed(split.test)
    data = {"source_x": norm.apply(source.x, source.lengths), "source_y": source.y, "target_x": tx, "target_y": ty}
    return ECGTask(data, vx, vy, sx, sy, norm, split, source, target, cfg)


def _load(kind: str, root: str, cache_dir: str | None, **options: Any) -> ECGDataset:
    """``load_ptbxl`` / ``load_cpsc`` (``kind``), through the cache when there is a cache directory."""
    return load_cached(kind, root, cache_dir, **options) if cache_dir else LOADERS[kind][0](root, **options)


def _size(v: int | float) -> int | float:
    return int(v) if float(v) >= 1 else float(v)


# --- configs -------------------------------------------------------------------------------------------

def _preset(width: int, depth: int, steps: int, *, cls: tuple[int, int, int], guid: tuple[int, int, int],
            vanilla: int, finetune: int, batch: int, lr: float, samples: int, solver_steps: int,
            report: int, guidance_lr: float = 1e-3, vanilla_lr: float | None = None,
            finetune_lr: float | None = None) -> TGDPConfig:
    score = ScoreConfig(arch="sssd", width=width, depth=depth, steps=steps, batch_size=batch, lr=lr, ema=0.99,
                        report_every=report, conditional=True, gaussian_skip=True)
    return TGDPConfig(
        source=score,
        classifier=ClassifierConfig(arch="cnn", width=cls[0], depth=cls[1], steps=cls[2], batch_size=batch,
                                    report_every=max(cls[2] // 10, 1), conditional=True),
        time_classifier=TimeClassifierConfig(arch="cnn", width=cls[0], depth=cls[1], steps=cls[2],
                                             batch_size=batch, report_every=max(cls[2] // 2, 1), conditional=True),
        guidance=GuidanceConfig(arch="cnn", width=guid[0], depth=guid[1], epochs=guid[2], batch_size=batch,
                                target_batch_size=batch, lr=guidance_lr, conditional=True),
        vanilla=replace(score, steps=vanilla, lr=vanilla_lr or lr, report_every=max(min(report, vanilla), 1)),
        finetune=replace(score, steps=finetune, lr=finetune_lr or lr / 10, report_every=max(min(report, finetune), 1)),
        sample=SampleConfig(steps=solver_steps, num_samples=samples, batch_size=min(samples, 64)),
    )


# micro: seconds, for tests. cpu: the 2-core benchmark (measured: see bench/ecg_sim_compare.py); its guidance
# gets 30 epochs (750 steps at n = 100, 14 s): with 3 the loss stayed flat and the samples moved by 1e-6.
# paper: SSSD-ECG size (36 residual layers x 256 channels); DESIGN §2 iterations and lrs: vanilla 100k
# iterations lr 2e-4, finetune 50k lr 2e-5, guidance 50k iterations lr 2e-4 (= 75 epochs of batch 32 over
# ~21k PTB-XL records); the source model is not given there and gets the vanilla budget (100k, lr 2e-4).
PRESETS: dict[str, TGDPConfig] = {
    "micro": _preset(8, 1, 2, cls=(8, 1, 2), guid=(8, 1, 1), vanilla=2, finetune=1, batch=4, lr=1e-3,
                     samples=4, solver_steps=2, report=1),
    "cpu": _preset(16, 2, 300, cls=(16, 3, 300), guid=(16, 3, 30), vanilla=150, finetune=75, batch=16, lr=2e-3,
                   samples=48, solver_steps=10, report=50),
    "paper": _preset(256, 36, 100_000, cls=(64, 4, 5000), guid=(128, 4, 75), vanilla=100_000, finetune=50_000,
                     batch=32, lr=2e-4, samples=5000, solver_steps=25, report=1000, guidance_lr=2e-4,
                     vanilla_lr=2e-4, finetune_lr=2e-5),
}
UTILITY_PRESETS: dict[str, UtilityConfig] = {
    "micro": UtilityConfig(epochs=1, width=8, stages=1, bootstrap_reps=5, batch_size=8),
    "cpu": UtilityConfig(epochs=15, width=16, stages=3, bootstrap_reps=200, batch_size=32),
    "paper": UtilityConfig(epochs=30, width=64, stages=4, blocks=2, bootstrap_reps=1000),
}


def check_ecg_config(cfg: TGDPConfig) -> None:
    """The ECG experiment is the conditional version: every stage must be label-aware."""
    off = [sec for sec in ("source", "vanilla", "finetune", "classifier", "time_classifier", "guidance")
           if not getattr(cfg, sec).conditional]
    if off:
        raise ValueError(f"ECG runs the conditional version: set conditional=True in {off}")
