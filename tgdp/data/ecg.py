"""Shared ECG data layer (DESIGN §2): leads, labels, signal shaping, validated WFDB reading, the dataset.

Conventions every ECG loader follows:

* **Leads.** The model sees the 8 independent leads ``MODEL_LEADS`` = I, II, V1-V6 as channels, in that
  order. Leads are matched by name case-insensitively (PTB-XL writes AVR/AVL/AVF, CPSC aVR/aVL/aVF).
  The 4 remaining limb leads follow from Einthoven/Goldberger: III = II - I, aVR = -(I + II)/2,
  aVL = I - II/2, aVF = II - I/2 (``derive_limb_leads``, ``to_twelve_leads``).
* **Labels.** The shared label space is the 9 CPSC2018 classes ``TARGET_CLASSES`` (REFERENCE.csv codes
  1-9 in that order). PTB-XL statements map into it by name through ``PTBXL_STATEMENT_OF_CLASS``.
* **Signal shape.** Signals are resampled to ``FS`` = 100 Hz (polyphase, ``scipy.signal.resample_poly``)
  and cut to the first ``LENGTH`` = 1000 samples (10 s), in mV.
  Shorter-record rule: a record with fewer than ``min_length`` samples at 100 Hz (default 500 = 5 s) is
  rejected as an ``ECGDataError``; one between ``min_length`` and ``LENGTH`` is zero-padded at the end and
  its number of valid samples is kept in ``ECGDataset.lengths`` (the padding mask is
  ``arange(LENGTH) < lengths[:, None]``). Normalisation statistics ignore the padding.
* **Errors.** Every problem with a data file raises ``ECGDataError`` (a ``ValueError``) whose message
  starts with the record id. Loaders skip bad records only when called with ``skip_bad=True``, and then
  list them, with reasons, in ``ECGDataset.skipped``; nothing is dropped silently.
* **Reading.** ``tgdp.data.wfdb_io.read_wfdb`` validates every record against its header.
* **Splits.** ``split_target`` draws test, then validation, then the limited training set, each a
  stratified sample (stratum = a record's rarest positive class) from what is left, so the three are
  disjoint and the held-out splits do not depend on n. ``LeadNorm`` is fitted on training rows only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
from scipy.signal import resample_poly

FS = 100  # Hz, sampling rate the model sees
LENGTH = 1000  # samples per record at FS (10 s)
MIN_LENGTH = 500  # default minimum valid samples at FS (5 s); shorter records are rejected
TWELVE_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
MODEL_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # model channels, in order
DERIVED_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")  # computed from I and II

# The shared 9-class label space: CPSC2018 REFERENCE.csv codes 1..9 in this order.
TARGET_CLASSES: tuple[str, ...] = ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
# The PTB-XL SCP statement that carries each target class (matched by name in scp_statements.csv).
PTBXL_STATEMENT_OF_CLASS: dict[str, str] = {
    "Normal": "NORM", "AF": "AFIB", "I-AVB": "1AVB", "LBBB": "CLBBB", "RBBB": "CRBBB",
    "PAC": "PAC", "PVC": "PVC", "STD": "STD_", "STE": "STE_",
}


class ECGDataError(ValueError):
    """A data file is missing, broken or inconsistent; the message starts with the record id."""

    def __init__(self, record: str, problem: str):
        super().__init__(f"{record}: {problem}")
        self.record = record
        self.problem = problem


def read_csv_table(path: str, name: str, **options: Any) -> Any:
    """A data CSV (UTF-8) as a pandas DataFrame (``options`` go to ``pd.read_csv``); an empty (0-byte),
    unparsable or non-UTF-8 file is an ``ECGDataError`` naming it, not a pandas exception."""
    import pandas as pd

    try:
        return pd.read_csv(path, encoding="utf-8", **options)
    except pd.errors.EmptyDataError:
        raise ECGDataError(name, f"empty file {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise ECGDataError(name, f"unreadable file {path} ({exc})") from None


# --- leads ----------------------------------------------------------------------------------------------

def select_leads(signal: np.ndarray, names: Sequence[str], wanted: Sequence[str] = MODEL_LEADS, *,
                 record: str = "?") -> np.ndarray:
    """Pick ``wanted`` leads (case-insensitive names) from ``signal`` (L, C) -> (len(wanted), L)."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        key = str(name).strip().lower()
        if key in index:  # which one is V1? Taking the first would silently read another lead
            raise ECGDataError(record, f"lead name {str(name).strip()!r} appears twice; the record has {list(names)}")
        index[key] = i
    missing = [w for w in wanted if w.lower() not in index]
    if missing:
        raise ECGDataError(record, f"missing lead(s) {missing}; the record has {list(names)}")
    return np.stack([signal[:, index[w.lower()]] for w in wanted], axis=0)


def derive_limb_leads(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """III, aVR, aVL, aVF from leads I and II: x (..., 8 or more, L) in MODEL_LEADS order -> (..., 4, L)."""
    lead_i, lead_ii = x[..., 0, :], x[..., 1, :]
    parts = [lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    return torch.stack(parts, dim=-2) if isinstance(x, torch.Tensor) else np.stack(parts, axis=-2)


def to_twelve_leads(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(..., 8, L) in MODEL_LEADS order -> (..., 12, L) in TWELVE_LEADS order."""
    derived = derive_limb_leads(x)
    if isinstance(x, torch.Tensor):
        return torch.cat([x[..., :2, :], derived, x[..., 2:, :]], dim=-2)
    return np.concatenate([x[..., :2, :], derived, x[..., 2:, :]], axis=-2)


# --- signal shaping ---------------------------------------------------------------------------------------

def resample(x: np.ndarray, fs_in: float, fs_out: int = FS) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased); fs_out / fs_in must be a small ratio."""
    if fs_in == fs_out:
        return x
    ratio = Fraction(fs_out) / Fraction(fs_in).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def crop_or_pad(x: np.ndarray, *, length: int = LENGTH, min_length: int = MIN_LENGTH,
                record: str = "?") -> tuple[np.ndarray, int]:
    """First ``length`` samples of x (C, L); zero-pads at the end (returns the valid count) or rejects
    records shorter than ``min_length``."""
    n = x.shape[-1]
    if n < min_length:
        raise ECGDataError(record, f"too short: {n} samples at {FS} Hz < minimum {min_length}")
    if n >= length:
        return x[..., :length], length
    pad = np.zeros(x.shape[:-1] + (length - n,), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1), n


def shape_signal(signal: np.ndarray, names: Sequence[str], fs: float, *, record: str,
                 min_length: int = MIN_LENGTH) -> tuple[np.ndarray, int]:
    """(L, C) physical signal with lead ``names`` at ``fs`` -> ((8, LENGTH) float32 at FS, valid length)."""
    x = select_leads(signal, names, MODEL_LEADS, record=record)
    bad = [lead for lead, row in zip(MODEL_LEADS, x) if not np.all(np.isfinite(row))]
    if bad:
        raise ECGDataError(record, f"invalid samples (NaN/inf, or WFDB's invalid-sample marker) in lead(s) {bad}")
    flat = [lead for lead, row in zip(MODEL_LEADS, x) if np.ptp(row) == 0]
    if flat:  # a detached electrode or an empty recording: nothing to learn, and a zero std downstream
        raise ECGDataError(record, f"flat signal: lead(s) {flat} constant over the whole record")
    x = resample(x, fs, FS)
    x, valid = crop_or_pad(x, length=LENGTH, min_length=min_length, record=record)
    return x.astype(np.float32), valid


# --- the dataset ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ECGDataset:
    """N records ready for the stages: x (N, 8, LENGTH) float32 in mV, y (N, 9) float32 multi-hot."""

    x: torch.Tensor  # (N, 8, LENGTH) float32, leads MODEL_LEADS, mV, FS Hz, zero-padded past `lengths`
    y: torch.Tensor  # (N, 9) float32 multi-hot over TARGET_CLASSES
    record_ids: tuple[str, ...]  # record id per row (PTB-XL: ecg_id as str; CPSC: "A0001")
    lengths: torch.Tensor  # (N,) int64 valid samples per record (LENGTH unless zero-padded)
    folds: tuple[int, ...] | None = None  # PTB-XL strat_fold per row (1..10); None for CPSC
    y_full: torch.Tensor | None = None  # (N, len(label_names_full)) float32 source-native multi-hot, if any
    label_names_full: tuple[str, ...] = ()  # names of y_full's columns (PTB-XL: the 71 SCP statements)
    source: str = ""  # "ptbxl" or "cpsc2018", plus the root directory
    skipped: tuple[tuple[str, str], ...] = ()  # (record id, reason) of records skipped with skip_bad=True
    meta: dict[str, Any] = field(default_factory=dict)  # free-form provenance (fs read per record, ...)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def leads(self) -> tuple[str, ...]:
        return MODEL_LEADS

    @property
    def classes(self) -> tuple[str, ...]:
        return TARGET_CLASSES

    @property
    def mask(self) -> torch.Tensor:
        """(N, LENGTH) bool, True on valid (non-padded) samples."""
        return torch.arange(self.x.shape[-1])[None, :] < self.lengths[:, None]

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "ECGDataset":
        """Rows ``index`` (in that order) as a new dataset; skipped/meta are carried over."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        rows = idx.tolist()
        return replace(
            self, x=self.x[idx], y=self.y[idx], lengths=self.lengths[idx],
            record_ids=tuple(self.record_ids[i] for i in rows),
            folds=None if self.folds is None else tuple(self.folds[i] for i in rows),
            y_full=None if self.y_full is None else self.y_full[idx],
        )

    def as_data(self, prefix: str) -> dict[str, torch.Tensor]:
        """``{prefix_x, prefix_y}`` for the stages' data dict (prefix "source" or "target")."""
        return {f"{prefix}_x": self.x, f"{prefix}_y": self.y}


def stage_data(source: ECGDataset, target: ECGDataset) -> dict[str, torch.Tensor]:
    """The stages' data dict: source_x, source_y, target_x, target_y."""
    return {**source.as_data("source"), **target.as_data("target")}


def build_dataset(rows: list[tuple[str, np.ndarray, int, np.ndarray]], *, source: str,
                  skipped: Sequence[tuple[str, str]] = (), folds: Sequence[int] | None = None,
                  y_full: np.ndarray | None = None, label_names_full: Sequence[str] = (),
                  meta: dict[str, Any] | None = None) -> ECGDataset:
    """Stack (record id, x (8, LENGTH), valid length, y (9,)) rows into an ECGDataset."""
    n = len(rows)
    x = np.stack([r[1] for r in rows]) if n else np.zeros((0, len(MODEL_LEADS), LENGTH), np.float32)
    y = np.stack([r[3] for r in rows]) if n else np.zeros((0, len(TARGET_CLASSES)), np.float32)
    return ECGDataset(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y=torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)),
        record_ids=tuple(r[0] for r in rows),
        lengths=torch.tensor([r[2] for r in rows], dtype=torch.int64),
        folds=None if folds is None else tuple(int(f) for f in folds),
        y_full=None if y_full is None else torch.from_numpy(np.ascontiguousarray(y_full, dtype=np.float32)),
        label_names_full=tuple(label_names_full), source=source, skipped=tuple(skipped), meta=dict(meta or {}),
    )


# --- stratified sampling and target splits -----------------------------------------------------------------

def _count(size: int | float, total: int, what: str) -> int:
    """An int count, or a fraction in (0, 1) of ``total`` (rounded, at least 1)."""
    if isinstance(size, float) and 0.0 < size < 1.0:
        return max(1, int(round(size * total)))
    if float(size) != int(size) or int(size) < 0:
        raise ValueError(f"{what}: expected a count >= 0 or a fraction in (0, 1), got {size!r}")
    return int(size)


def strata(y: np.ndarray | torch.Tensor) -> np.ndarray:
    """Stratum per record (N,): index of its rarest positive class (counted over y), -1 if it has none."""
    y = np.asarray(y) > 0.5
    counts = y.sum(axis=0).astype(np.float64)
    rarity = np.where(y, counts[None, :], np.inf)
    return np.where(y.any(axis=1), rarity.argmin(axis=1), -1)


def stratified_sample(y: np.ndarray | torch.Tensor, size: int | float, *, seed: int,
                      pool: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a stratified sample of ``size`` records (count or fraction of the pool) from ``pool``.

    Allocation: one record per stratum first when size >= number of strata (so n = 10 still sees all 9
    classes), the rest proportional to stratum sizes by largest remainder; members are drawn uniformly.
    """
    strat = strata(y)
    pool = np.arange(len(strat)) if pool is None else np.asarray(pool, dtype=np.int64)
    k = _count(size, len(pool), "sample size")
    if k > len(pool):
        raise ValueError(f"sample size {k} exceeds the {len(pool)} available records")
    rng = np.random.default_rng(seed)
    keys, counts = np.unique(strat[pool], return_counts=True)
    base = np.ones_like(counts) if k >= len(keys) else np.zeros_like(counts)
    quota = (k - base.sum()) * (counts - base) / max((counts - base).sum(), 1)
    alloc = base + np.floor(quota).astype(np.int64)
    remainder = quota - np.floor(quota) + rng.uniform(0, 1e-9, size=len(keys))  # random tie-break
    for i in np.argsort(-remainder)[: k - alloc.sum()]:
        alloc[i] += 1
    chosen = [rng.permutation(pool[strat[pool] == key])[:a] for key, a in zip(keys, alloc)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class TargetSplit:
    """Disjoint row indices of a target dataset: the limited training set, validation and test."""

    train: tuple[int, ...]  # the n limited target records used for training
    val: tuple[int, ...]  # validation rows (hyper-parameter selection)
    test: tuple[int, ...]  # test rows (reported numbers)
    seed: int  # seed that drew all three
    record_ids: tuple[str, ...] = ()  # ids of train + val + test rows in that order, when known

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TargetSplit":
        return cls(train=tuple(data["train"]), val=tuple(data["val"]), test=tuple(data["test"]),
                   seed=int(data["seed"]), record_ids=tuple(data.get("record_ids", ())))


def split_target(y: np.ndarray | torch.Tensor, n: int | float, *, seed: int, val: int | float = 0.2,
                 test: int | float = 0.2, record_ids: Sequence[str] = ()) -> TargetSplit:
    """Stratified test, then validation, then limited training set, each from the rows left over.

    The held-out splits depend only on (y, val, test, seed), not on n: every n is scored on the same rows.
    """
    total = len(np.asarray(y))
    n_test, n_val = _count(test, total, "test size"), _count(val, total, "val size")
    n_train = _count(n, total, "n")
    if n_test + n_val + n_train > total:
        raise ValueError(f"n={n_train} + val={n_val} + test={n_test} exceed the {total} target records")
    test_idx = stratified_sample(y, n_test, seed=seed * 3 + 2)
    rest = np.setdiff1d(np.arange(total), test_idx)
    val_idx = stratified_sample(y, n_val, seed=seed * 3 + 1, pool=rest)
    rest = np.setdiff1d(rest, val_idx)
    train_idx = stratified_sample(y, n_train, seed=seed * 3, pool=rest)
    ids = tuple(record_ids[i] for i in np.concatenate([train_idx, val_idx, test_idx])) if record_ids else ()
    return TargetSplit(tuple(map(int, train_idx)), tuple(map(int, val_idx)), tuple(map(int, test_idx)),
                       seed, ids)


# --- normalisation ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeadNorm:
    """Per-lead (x - mean) / std, fitted on training rows only; saved with the model via to_dict."""

    mean: tuple[float, ...]  # mV per lead
    std: tuple[float, ...]  # mV per lead (floored at min_std when fitted)
    leads: tuple[str, ...] = MODEL_LEADS  # lead order the statistics refer to

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-2] != len(self.leads):
            raise ValueError(f"LeadNorm has {len(self.leads)} leads, x has {x.shape[-2]} channels")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None]
        return mean, std

    def apply(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise x (N, C, L); with ``lengths`` the zero padding stays zero."""
        mean, std = self._stats(x)
        out = x - mean  # then in place: one copy of x, not three (full-size PTB-XL: 666 MB each)
        out.div_(std)
        if lengths is not None:
            out.mul_((torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None].to(x.device))[:, None])
        return out

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Back to mV: x * std + mean."""
        mean, std = self._stats(x)
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "leads": list(self.leads)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LeadNorm":
        unknown = set(data) - {"mean", "std", "leads"}
        if unknown:
            raise ValueError(f"LeadNorm: unknown key(s) {sorted(unknown)}")
        return cls(mean=tuple(map(float, data["mean"])), std=tuple(map(float, data["std"])),
                   leads=tuple(data.get("leads", MODEL_LEADS)))


def fit_lead_norm(x: torch.Tensor, lengths: torch.Tensor | None = None, *, min_std: float = 1e-3) -> LeadNorm:
    """Per-lead mean/std over the valid samples of the training records x (N, C, L)."""
    if x.shape[0] == 0:
        raise ValueError("cannot fit normalisation statistics on an empty training set")
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.int64)

    def blocks():  # float64 over 1024 rows at a time: the whole set in float64 with its temporaries was
        for i in range(0, x.shape[0], 1024):  # 4x its size (5 GB per process for full-size PTB-XL)
            valid = torch.arange(x.shape[-1])[None, :] < lengths[i:i + 1024, None]
            yield x[i:i + 1024].double(), valid[:, None, :].to(torch.float64)

    count = sum(w.sum(dim=(0, 2)) for _, w in blocks())
    mean = sum((xb * w).sum(dim=(0, 2)) for xb, w in blocks()) / count
    var = sum((((xb - mean[None, :, None]) ** 2) * w).sum(dim=(0, 2)) for xb, w in blocks()) / count
    std = var.sqrt().clamp_min(min_std)
    leads = MODEL_LEADS if x.shape[1] == len(MODEL_LEADS) else tuple(f"ch{i}" for i in range(x.shape[1]))
    return LeadNorm(mean=tuple(mean.tolist()), std=tuple(std.tolist()), leads=leads)
