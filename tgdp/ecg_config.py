"""The data section of the ECG experiment and its utility evaluation, kept free of torch so the spec layer
can validate them cheaply.

``tgdp.ecg_task.load_ecg_task`` loads the records it describes; see that module's docstring for the
split and normalisation rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ECGDataConfig:
    """Where the ECG records come from and how the target is split."""

    source_root: str = ""  # PTB-XL directory (ptbxl_database.csv, records100/...); unused with simulate
    target_root: str = ""  # CPSC2018 directory (REFERENCE.csv, A0001.hea/.mat, ...); unused with simulate
    simulate: bool = False  # use tgdp.data.ecg_sim records (written once, cached under sim_dir)
    sim_dir: str = ""  # cache of simulated sets ("" = $TGDP_ECG_SIM_DIR or <tmp>/tgdp-ecg-sim)
    sim_source_records: int = 400  # simulated PTB-XL-like source records (m)
    sim_target_records: int = 600  # simulated CPSC-like target records (pool for n + val + test)
    sim_seed: int = 0  # simulator seed (source uses it, target uses sim_seed + 1)
    source_limit: int = 0  # read at most this many source records (0 = all)
    n: int | float = 10  # limited target training set: a count, or a fraction in (0, 1) of the target
    seed: int = 0  # seed of the target split (and of nothing else)
    val: int | float = 0.2  # validation split: a count or a fraction of the target records
    test: int | float = 0.2  # test split: a count or a fraction of the target records
    min_length: int = 500  # shortest accepted record in samples at 100 Hz (shorter: rejected or skipped)
    skip_bad: bool = False  # skip (and list) broken records instead of failing

    def __post_init__(self) -> None:
        # Messages follow tgdp.config.from_dict: "<key>: <problem>; allowed: <what>".
        for key in ("n", "val", "test"):
            v = getattr(self, key)
            ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or \
                (isinstance(v, float) and (0.0 < v < 1.0 or (v >= 1 and v.is_integer())))
            if not ok:
                raise ValueError(f"{key}: invalid value {v!r}; allowed: an integer >= 1 or a fraction in (0, 1)")
        for key in ("sim_source_records", "sim_target_records", "min_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}; allowed: an integer >= 1")
        if self.source_limit < 0:
            raise ValueError(f"source_limit: must be >= 0, got {self.source_limit}; allowed: 0 (all) or a count")
        if not self.simulate and not (self.source_root and self.target_root):
            raise ValueError("source_root: real data needs source_root and target_root; "
                             "allowed: both directories, or simulate: true")


@dataclass(frozen=True)
class UtilityConfig:
    """The downstream classifier and its evaluation."""

    epochs: int = 30  # passes over the training records
    batch_size: int = 64  # records per step
    lr: float = 1e-3  # AdamW learning rate (cosine-decayed to 10%)
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    width: int = 32  # channels of the first ResNet stage (doubled per later stage)
    stages: int = 3  # ResNet stages (each after the first halves the length)
    blocks: int = 1  # residual blocks per stage
    dropout: float = 0.2  # dropout before the linear head
    twelve_leads: bool = False  # derive III, aVR, aVL, aVF from 8-lead (I, II, V1-V6) inputs first
    standardize: bool = True  # per-lead mean/std fitted on the training records only
    beta: float = 2.0  # beta of F_beta / G_beta and of the threshold selection
    bootstrap_reps: int = 200  # bootstrap resamples of the test records (0 disables the intervals)
    ci: float = 0.95  # coverage of the percentile bootstrap interval
    eval_batch_size: int = 256  # records per forward pass at prediction time
    seed: int = 0  # init, minibatch order and bootstrap seed
