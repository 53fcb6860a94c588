"""User-given vector data (the ``arrays`` experiment): source and target rows from ``.npy`` / ``.npz`` files.

What the user gives (``ArraysConfig``): a source file and a target file, each a 2-D numeric array
(rows, d) with the same d, either a ``.npy`` or an array inside a ``.npz`` (named by ``source_key`` /
``target_key``); optionally integer class labels per row (conditional TGDP), from the ``.npz`` files
(``label_key``) or from separate files (``source_labels`` / ``target_labels``).

Rules, each chosen so that a study's numbers mean the same thing for every n and trial:

* **Reading.** ``np.load(allow_pickle=False)`` always: a pickled object array is refused, never run.
  Every problem (missing file, wrong suffix, missing key, not 2-D, non-numeric, NaN/inf, labels of the
  wrong length / dtype / sign, a target label the source lacks, too few target rows) raises
  ``ArraysDataError`` naming the spec key, the file and what is allowed. ``check_arrays`` runs all of
  it at spec validation time (before a study directory exists); the files are small enough to read.
* **Split.** The target rows are permuted by ``np.random.default_rng(seed)`` (the unit seed; nothing
  else in this module is random): the first ``val`` rows are the validation split (selection), the
  next ``test`` rows the test split (report), the next ``n`` rows the training rows. Disjoint by
  construction; for one seed the validation and test rows are the same at every n and the training
  rows of a smaller n are a prefix of a larger n's, so n is the only thing that changes across n.
  ``val`` / ``test`` are row counts or fractions in (0, 1) of the target file's rows.
* **Standardisation** (``standardize``, default on): per-column mean and standard deviation of the
  *source* rows (all of them are training data; no target row enters), applied to every split of both
  domains; a constant column keeps scale 1. Source-only statistics do not depend on n or on the split,
  so every metric of a study is in one fixed unit system, and the source model's training rows are the
  same at every n (the stage cache keys the source model by the data config *without* n; pooled
  source + target-train statistics would break that). Metrics are computed in standardised units
  (each column weighs the same in the distances whatever its raw scale); ``Standardizer.invert`` maps
  samples back to the file's units.
* **Labels** are integers >= 0 (any values: 3, 7, 100 are fine); one-hot column k is the k-th smallest
  distinct source label (``ArraysInfo.classes``), so K = the number of distinct source labels.
  Target labels must occur among the source labels: TGDP transfers a label-conditional source model.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SUFFIXES = (".npy", ".npz")
DATA_KINDS = "biuf"  # numpy dtype kinds accepted as samples: bool, signed / unsigned integer, float
LABEL_KINDS = "iu"  # numpy dtype kinds accepted as labels: signed / unsigned integer
PATH_KEYS = ("source", "target", "source_labels", "target_labels")  # the fields that hold file paths


class ArraysDataError(ValueError):
    """A problem with a user's array file; ``str()`` is ``data.<key>: <file>: <problem>; allowed: <what>``."""

    def __init__(self, key: str, file: str | Path, problem: str, allowed: str) -> None:
        self.key, self.file = key, str(file)
        super().__init__(f"data.{key}: {file}: {problem}; allowed: {allowed}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray processes
        msg = str(self)
        return (_rebuild, (type(self), msg))


def _rebuild(cls: type, msg: str) -> ValueError:
    err = ValueError.__new__(cls)
    ValueError.__init__(err, msg)
    return err


def _is_count_or_fraction(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or \
        (isinstance(v, float) and (0.0 < v < 1.0 or (v >= 1 and v.is_integer())))


@dataclass(frozen=True)
class ArraysConfig:
    """Where the user's rows come from and how the target file is split (see the module docstring)."""

    source: str = ""  # required: source rows, .npy (rows, d) or .npz (source_key); relative to the working dir
    target: str = ""  # required: target rows, .npy (rows, d) or .npz (target_key); relative to the working dir
    source_key: str = "x"  # name of the source rows inside a .npz source file (unused for .npy)
    target_key: str = "x"  # name of the target rows inside a .npz target file (unused for .npy)
    label_key: str = ""  # name of the integer labels inside .npz files ("" = none; labels -> conditional TGDP)
    source_labels: str = ""  # separate source labels: .npy (rows,) or .npz with label_key ("" = from source / none)
    target_labels: str = ""  # separate target labels: .npy (rows,) or .npz with label_key ("" = from target / none)
    val: int | float = 0.2  # validation rows of the target file (selection): a count or a fraction in (0, 1)
    test: int | float = 0.2  # test rows of the target file (the report): a count or a fraction in (0, 1)
    standardize: bool = True  # scale every column by the source rows' mean / std (source only; module doc)
    fingerprint: str = ""  # sha256 prefix of the files' bytes: recorded when the spec is validated, then checked
    n: int = 100  # target training rows (set from factors.n)
    seed: int = 0  # seed of the target split (set from factors.seeds; nothing else here is random)

    def __post_init__(self) -> None:
        # Messages follow tgdp.config.from_dict: "<key>: <problem>; allowed: <what>".
        for key in ("source", "target"):
            if not getattr(self, key):
                raise ValueError(f"{key}: missing file path; allowed: a .npy or .npz file of rows (rows, d)")
        for key in ("val", "test"):
            if not _is_count_or_fraction(getattr(self, key)):
                raise ValueError(f"{key}: invalid value {getattr(self, key)!r}; "
                                 "allowed: an integer >= 1 or a fraction in (0, 1)")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n: invalid value {self.n!r}; allowed: an integer >= 1")

    @property
    def conditional(self) -> bool:
        """Labels were given (by label_key or a labels file): the conditional version of TGDP."""
        return bool(self.label_key or self.source_labels or self.target_labels)


def resolve_paths(data: dict[str, Any], base: str | Path | None = None) -> dict[str, Any]:
    """``data`` with every path field made absolute against ``base`` (default: the current directory).

    Done once when the spec is validated: the spec is copied into the study directory and a resumed study
    or a Ray worker may run in another directory, so the stored config must not depend on where it ran.
    """
    root = Path.cwd() if base is None else Path(base)
    out = dict(data)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = os.path.normpath(root / Path(value).expanduser())  # symlinks kept as the user wrote them
    return out


def fingerprint(cfg: ArraysConfig | dict[str, Any]) -> str:
    """16 hex digits of sha256 over every given file's bytes (an OSError when one cannot be read).

    Recorded in the study's spec so that a resumed study refuses changed files, and part of every stage
    cache key (the data config is), so a shared cache never serves a model trained on other contents."""
    h = hashlib.sha256()
    for key in PATH_KEYS:
        path = cfg.get(key, "") if isinstance(cfg, dict) else getattr(cfg, key)
        if isinstance(path, str) and path:
            h.update(f"{key}\0".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def check_fingerprint(cfg: ArraysConfig) -> None:
    """ArraysDataError when ``cfg.fingerprint`` is set and the files' contents no longer match it."""
    if cfg.fingerprint and (now := fingerprint(cfg)) != cfg.fingerprint:
        raise ArraysDataError("fingerprint", cfg.source, f"the files changed since the spec recorded them "
                              f"(fingerprint now {now}, recorded {cfg.fingerprint})",
                              "the files the study was created with, or a new study for new files")


# --- reading and checking (numpy only: the spec layer calls this without torch) -----------------------------

def _read(key: str, path: str, array_key: str | None, what: str) -> np.ndarray:
    """One array from a .npy (``array_key`` None), or ``array_key`` of a .npz; every failure as ArraysDataError."""
    p = Path(path)
    kind = p.suffix.lower()
    allowed = "a .npy file" if array_key is None else f"a .npz file holding {what} under {array_key!r}"
    if kind not in SUFFIXES:
        raise ArraysDataError(key, p, f"not a .npy or .npz file (suffix {p.suffix or 'none'!r})",
                              "a .npy file, or a .npz file (array named by the spec's key)")
    if not p.exists():
        raise ArraysDataError(key, p, "missing file", f"an existing file: {allowed}")
    if not p.is_file():
        raise ArraysDataError(key, p, "not a file", allowed)
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray) != (kind == ".npy"):
            if not isinstance(loaded, np.ndarray):
                loaded.close()
            raise ValueError(f"its content is a {'.npy array' if kind == '.npz' else '.npz archive'}")
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            names = sorted(loaded.files)
            if array_key not in names:
                raise ArraysDataError(key, p, f"no array {array_key!r}; arrays in the file: {names}",
                                      f"the key of {what}: one of {names}")
            return loaded[array_key]
    except ArraysDataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ArraysDataError(key, p, "holds a pickled object array (never loaded: allow_pickle is off)",
                                  "a numeric array saved with np.save / np.savez (no object dtype)") from None
        raise ArraysDataError(key, p, f"not a readable {kind} file ({e})", allowed) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ArraysDataError(key, p, f"not a readable {kind} file ({type(e).__name__}: {e})", allowed) from None


def _read_rows(cfg: ArraysConfig, domain: str) -> np.ndarray:
    """The (rows, d) samples of ``domain``, checked: numeric, 2-D, non-empty, finite."""
    path = getattr(cfg, domain)
    key = getattr(cfg, f"{domain}_key") if path.lower().endswith(".npz") else None
    x = _read(domain, path, key, f"{domain} rows (rows, d)")
    where = path if key is None else f"{path}[{key!r}]"
    if x.dtype.kind not in DATA_KINDS:
        raise ArraysDataError(domain, where, f"non-numeric dtype {x.dtype}", "a float, integer or bool array")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        hint = " (one feature: x.reshape(-1, 1))" if x.ndim == 1 else ""
        raise ArraysDataError(domain, where, f"shape {tuple(x.shape)} is not a 2-D (rows, d) array{hint}",
                              "a 2-D array with >= 1 row and >= 1 column")
    bad = ~np.isfinite(x.astype(np.float64, copy=False)) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise ArraysDataError(domain, where, f"{int(bad.sum())} NaN/inf values in {rows.size} rows "
                              f"(first at row {int(rows[0])})", "finite numbers only (drop or impute those rows)")
    return x


def _read_labels(cfg: ArraysConfig, domain: str, rows: int) -> np.ndarray | None:
    """The integer labels (rows,) of ``domain`` (None when unconditional), checked: 1-D, length, dtype, >= 0."""
    if not cfg.conditional:
        return None
    own = getattr(cfg, f"{domain}_labels")
    if own:
        key_name, path = f"{domain}_labels", own
    elif cfg.label_key:
        key_name, path = "label_key", getattr(cfg, domain)
    else:
        other = "target" if domain == "source" else "source"
        raise ArraysDataError(f"{domain}_labels", getattr(cfg, domain), f"no labels for the {domain} rows but "
                              f"{other}_labels is given (conditional TGDP needs labels in both domains)",
                              f"{domain}_labels: a .npy of integer labels, or label_key naming them in .npz files")
    is_npz = path.lower().endswith(".npz")
    if not own and not is_npz:
        raise ArraysDataError("label_key", path, f"label_key {cfg.label_key!r} given but the {domain} file is not "
                              "a .npz (a .npy holds one array, no labels)",
                              f"a .npz {domain} file, or {domain}_labels: a .npy of integer labels")
    if is_npz and not cfg.label_key:
        raise ArraysDataError(key_name, path, "a .npz labels file but no label_key", "label_key naming the labels")
    y = _read(key_name, path, cfg.label_key if is_npz else None, f"{domain} labels (rows,)")
    where = f"{path}[{cfg.label_key!r}]" if is_npz else path
    if y.dtype.kind not in LABEL_KINDS:
        raise ArraysDataError(key_name, where, f"labels of dtype {y.dtype} (not integers)",
                              "an integer array of class indices >= 0 (e.g. y.astype(np.int64))")
    if y.ndim != 1 or y.shape[0] != rows:
        raise ArraysDataError(key_name, where, f"labels of shape {tuple(y.shape)} for {rows} {domain} rows",
                              f"a 1-D array of {rows} labels, one per {domain} row")
    if y.size and int(y.min()) < 0:
        raise ArraysDataError(key_name, where, f"negative label {int(y.min())} (row {int(np.argmin(y))})",
                              "class indices >= 0")
    return y.astype(np.int64)


def _count(size: int | float, total: int) -> int:
    """Rows of a count or a fraction in (0, 1) of ``total`` (rounded, at least 1)."""
    return max(1, int(round(size * total))) if isinstance(size, float) and size < 1 else int(size)


@dataclass(frozen=True)
class ArraysInfo:
    """What ``check_arrays`` found: the sizes and the label width."""

    source_rows: int  # rows of the source file (m)
    target_rows: int  # rows of the target file (train + validation + test pool)
    dim: int  # columns d of both files
    val: int  # validation rows
    test: int  # test rows
    classes: tuple[int, ...] = ()  # distinct source labels, sorted: one-hot column k is classes[k] (() = none)

    @property
    def num_labels(self) -> int:
        """One-hot width K (0 = unconditional)."""
        return len(self.classes)


def check_arrays(cfg: ArraysConfig, max_n: int | None = None) -> tuple[ArraysInfo, dict[str, Any]]:
    """Read and check every file of ``cfg`` (for ``max_n`` target training rows, default ``cfg.n``).

    Returns the info and the raw arrays {source_x, target_x, source_y, target_y} (labels None when
    unconditional). Raises ``ArraysDataError`` on the first problem (module docstring lists them).
    """
    xs, xt = _read_rows(cfg, "source"), _read_rows(cfg, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ArraysDataError("target", cfg.target, f"{xt.shape[1]} columns but the source has {xs.shape[1]}",
                              f"the same number of columns d as the source ({xs.shape[1]})")
    ys, yt = _read_labels(cfg, "source", xs.shape[0]), _read_labels(cfg, "target", xt.shape[0])
    if ys is not None and yt is not None:
        extra = sorted(set(np.unique(yt).tolist()) - set(np.unique(ys).tolist()))
        if extra:
            known = sorted(np.unique(ys).tolist())[:20]
            key = "target_labels" if cfg.target_labels else "label_key"
            raise ArraysDataError(key, cfg.target_labels or cfg.target,
                                  f"target labels {extra[:10]} do not occur in the source labels",
                                  f"labels among the source's {known}")
    val, test, n = _count(cfg.val, xt.shape[0]), _count(cfg.test, xt.shape[0]), max_n or cfg.n
    if n + val + test > xt.shape[0]:
        raise ArraysDataError("target", cfg.target, f"{xt.shape[0]} rows, fewer than n + val + test = "
                              f"{n} + {val} + {test} = {n + val + test}",
                              f"a target file with >= {n + val + test} rows, or smaller factors.n / val / test")
    classes = () if ys is None else tuple(int(c) for c in np.unique(ys))
    info = ArraysInfo(xs.shape[0], xt.shape[0], xs.shape[1], val, test, classes)
    return info, {"source_x": xs, "target_x": xt, "source_y": ys, "target_y": yt}


# --- loading (torch) -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Standardizer:
    """Per-column affine map x -> (x - mean) / std fitted on the source rows (identity when disabled)."""

    mean: np.ndarray  # (d,) column means of the source rows (zeros when disabled)
    std: np.ndarray  # (d,) column standard deviations of the source rows (1 for constant columns / disabled)

    @classmethod
    def fit(cls, x: np.ndarray, enabled: bool = True) -> "Standardizer":
        d = x.shape[1]
        if not enabled:
            return cls(np.zeros(d), np.ones(d))
        x = x.astype(np.float64)
        std = x.std(0)
        return cls(x.mean(0), np.where(std > 1e-12, std, 1.0))

    def apply(self, x: np.ndarray):
        import torch
        return torch.as_tensor((x.astype(np.float64) - self.mean) / self.std, dtype=torch.float32)

    def invert(self, x):
        """Samples (N, d) in standardised units -> the file's units (a float64 tensor)."""
        import torch
        return x.double().cpu() * torch.as_tensor(self.std) + torch.as_tensor(self.mean)


@dataclass
class ArraysTask:
    """The loaded data of one (n, seed): stage data, held-out splits, the split indices and the scaler."""

    cfg: ArraysConfig
    info: ArraysInfo
    data: dict[str, Any]  # stage data: source_x (m, d), target_x (n, d), and one-hot source_y / target_y when labelled
    val_x: Any  # (val, d) validation rows (selection), standardised
    test_x: Any  # (test, d) test rows (report), standardised
    val_y: Any = None  # (val, K) one-hot labels of the validation rows (None when unconditional)
    test_y: Any = None  # (test, K) one-hot labels of the test rows
    split: dict[str, np.ndarray] = field(default_factory=dict)  # target-file row indices of train / val / test
    scaler: Standardizer | None = None
    schedule: Any = None  # the VP noise schedule (tgdp.schedules.VPSchedule)

    @property
    def dim(self) -> int:
        return self.info.dim


def split_rows(rows: int, n: int, val: int, test: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint target row indices {train, val, test} (module docstring: val first, then test, then train)."""
    perm = np.random.default_rng(seed).permutation(rows)
    return {"val": perm[:val], "test": perm[val:val + test], "train": perm[val + test:val + test + n]}


def load_arrays(cfg: ArraysConfig) -> ArraysTask:
    """Check, split (seeded by ``cfg.seed``), standardise (source statistics) and one-hot the data."""
    import torch

    from tgdp.data.gmm import one_hot
    from tgdp.schedules import VPSchedule

    check_fingerprint(cfg)
    info, raw = check_arrays(cfg)
    split = split_rows(info.target_rows, cfg.n, info.val, info.test, cfg.seed)
    scaler = Standardizer.fit(raw["source_x"], cfg.standardize)
    xt = raw["target_x"]
    data: dict[str, Any] = {"source_x": scaler.apply(raw["source_x"]), "target_x": scaler.apply(xt[split["train"]])}
    labels: dict[str, Any] = {}
    if raw["source_y"] is not None:
        classes, k = np.asarray(info.classes), info.num_labels

        def hot(y: np.ndarray):  # label values -> one-hot columns (every value is among classes: checked)
            return one_hot(torch.as_tensor(np.searchsorted(classes, y)), k)

        data["source_y"], yt = hot(raw["source_y"]), raw["target_y"]
        data["target_y"] = hot(yt[split["train"]])
        labels = {f"{s}_y": hot(yt[split[s]]) for s in ("val", "test")}
    return ArraysTask(cfg, info, data, scaler.apply(xt[split["val"]]), scaler.apply(xt[split["test"]]),
                      split=split, scaler=scaler, schedule=VPSchedule(), **labels)


__all__ = ["ArraysConfig", "ArraysDataError", "ArraysInfo", "ArraysTask", "Standardizer", "check_arrays",
           "check_fingerprint", "fingerprint", "load_arrays", "resolve_paths", "split_rows"]
