"""PTB-XL, the ECG source domain (DESIGN §2): 12 leads, 10 s, 71 SCP statements, 10 stratified folds.

Layout read (PhysioNet v1.0.x): ``ptbxl_database.csv`` (index ``ecg_id``; ``scp_codes`` a Python dict
string of statement -> likelihood; ``strat_fold`` 1-10; ``filename_lr``/``filename_hr`` relative paths
without extension), ``scp_statements.csv`` (the 71 statements, first column = name) and
``records100/`` and/or ``records500/``.

Labels. ``y_full`` is the 71-statement multi-hot in the row order of ``scp_statements.csv`` (stable and
documented: ``read_scp_statements``). A statement counts when its likelihood is >= ``min_likelihood``
(default 0: every listed statement, as in the PTB-XL benchmark, since rhythm statements carry 0).
``y`` is its projection onto the 9 shared classes by statement name (``ptbxl_to_target``).

Files. The 100 Hz file is read when its header exists; otherwise the 500 Hz ``filename_hr`` record is
read and resampled (many distributions, and the shared subset, lack most ``records100`` files).
Folds: 1-8 train, 9 validation, 10 test (the PTB-XL authors' recommendation), see ``PTBXL_FOLDS``.

Rows are untrusted: ecg_id must be a positive integer and unique (a duplicate always raises), strat_fold an
integer 1-10 (``3.7`` is not fold 3, ``11`` is in no split), scp_codes a flat dict of finite likelihoods
(at most ``MAX_SCP_TEXT`` characters: ``ast.literal_eval`` of deeply nested text exhausts the parser),
filename_lr/filename_hr relative paths inside the data root (no ``../``, not absolute). Every row problem
is an ``ECGDataError`` naming the ecg_id, skipped with ``skip_bad``.
"""

from __future__ import annotations

import ast
import math
import os
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from tgdp.data.ecg import (FS, MIN_LENGTH, PTBXL_STATEMENT_OF_CLASS, TARGET_CLASSES, ECGDataError, ECGDataset,
                           build_dataset, read_csv_table, shape_signal)
from tgdp.data.wfdb_io import read_wfdb

PTBXL_FOLDS: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}
_REQUIRED_COLUMNS = ("scp_codes", "strat_fold", "filename_lr", "filename_hr")
MAX_SCP_TEXT = 10_000  # characters of one scp_codes cell (real ones: < 100)
_FOLDS = range(1, 11)  # strat_fold values of PTB-XL


def read_scp_statements(root: str) -> tuple[str, ...]:
    """The SCP statement names in ``scp_statements.csv`` row order (71 in PTB-XL): y_full's columns."""
    path = os.path.join(root, "scp_statements.csv")
    if not os.path.isfile(path):
        raise ECGDataError("scp_statements.csv", f"missing file {path}")
    table = read_csv_table(path, "scp_statements.csv", index_col=0)
    names = tuple(str(n) for n in table.index)
    missing = [s for s in PTBXL_STATEMENT_OF_CLASS.values() if s not in names]
    if missing or len(set(names)) != len(names):
        raise ECGDataError("scp_statements.csv", f"statements {missing} missing or names duplicated")
    return names


def read_ptbxl_database(root: str) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ecg_id, UTF-8, whitespace kept; ecg_id, strat_fold, scp_codes and the
    file names left as text (``checked_rows`` checks and converts them, row by row)."""
    path = os.path.join(root, "ptbxl_database.csv")
    if not os.path.isfile(path):
        raise ECGDataError("ptbxl_database.csv", f"missing file {path}")
    table = read_csv_table(path, "ptbxl_database.csv", index_col="ecg_id",
                           dtype={"ecg_id": str, "strat_fold": str, "scp_codes": str, "filename_lr": str,
                                  "filename_hr": str})
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ECGDataError("ptbxl_database.csv", f"missing column(s) {missing}")
    return table


def parse_scp_codes(text: str, statements: Sequence[str], *, record: str,
                    min_likelihood: float = 0.0) -> np.ndarray:
    """One ``scp_codes`` cell -> (len(statements),) float32 multi-hot; unknown statements and likelihoods that
    are not finite numbers raise."""
    if not isinstance(text, str) or len(text) > MAX_SCP_TEXT:
        shown = text if not isinstance(text, str) else f"{text[:60]!r}... ({len(text)} characters)"
        raise ECGDataError(record, f"unparsable scp_codes {shown} (at most {MAX_SCP_TEXT} characters)")
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:  # nesting: Memory/Recursion
        raise ECGDataError(record, f"unparsable scp_codes {text[:200]!r}") from exc
    if not isinstance(codes, dict):
        raise ECGDataError(record, f"scp_codes is not a dict: {text!r}")
    column = {name: i for i, name in enumerate(statements)}
    out = np.zeros(len(statements), dtype=np.float32)
    for code, likelihood in codes.items():
        if code not in column:
            raise ECGDataError(record, f"unknown label code {code!r} (not in scp_statements.csv)")
        if isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)) or not math.isfinite(likelihood):
            raise ECGDataError(record, f"likelihood of {code!r} is not a finite number: {likelihood!r}")
        if float(likelihood) >= min_likelihood:
            out[column[code]] = 1.0
    return out


def checked_rows(table: pd.DataFrame, *, skip_bad: bool = False) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The rows of ``read_ptbxl_database`` with a checked int ecg_id (index, sorted) and int strat_fold 1-10.

    A row whose ecg_id is not a positive integer or whose strat_fold is not an integer 1-10 raises, or with
    ``skip_bad`` is returned in the skipped list; an ecg_id listed twice always raises (which row is it?).
    """
    keep, ids, folds, skipped = [], [], [], []
    for i, (raw_id, raw_fold) in enumerate(zip(table.index, table["strat_fold"])):
        text = str(raw_id).strip()
        try:
            if not re.fullmatch(r"[0-9]+", text) or int(text) == 0:
                raise ECGDataError(text, "ecg_id is not a positive integer")
            fold = str(raw_fold).strip() if isinstance(raw_fold, str) else ""
            if not fold:
                raise ECGDataError(text, "strat_fold is empty")
            if not re.fullmatch(r"[0-9]+(\.0*)?", fold) or int(float(fold)) not in _FOLDS:
                raise ECGDataError(text, f"strat_fold {fold!r} is not an integer {_FOLDS[0]}-{_FOLDS[-1]}")
        except ECGDataError as exc:
            if not skip_bad:
                raise
            skipped.append((exc.record, exc.problem))
            continue
        keep.append(i)
        ids.append(int(text))
        folds.append(int(float(fold)))
    seen: set[int] = set()
    for ecg_id in ids:
        if ecg_id in seen:
            raise ECGDataError(str(ecg_id), "listed twice in ptbxl_database.csv")
        seen.add(ecg_id)
    out = table.iloc[keep].copy()
    out.index = pd.Index(ids, name="ecg_id")
    out["strat_fold"] = folds
    return out.sort_index(), skipped


def ptbxl_to_target(y_full: np.ndarray, statements: Sequence[str]) -> np.ndarray:
    """(N, len(statements)) statement multi-hot -> (N, 9) multi-hot over TARGET_CLASSES, by name."""
    column = {name: i for i, name in enumerate(statements)}
    cols = [column[PTBXL_STATEMENT_OF_CLASS[c]] for c in TARGET_CLASSES]
    return np.asarray(y_full, dtype=np.float32)[..., cols]


def _record_path(root: str, row: pd.Series, prefer: str, record: str) -> tuple[str, int]:
    """(path without extension, expected fs) of the file to read, falling back from 100 to 500 Hz."""
    options = [("filename_lr", 100), ("filename_hr", 500)]
    if prefer == "hr":
        options.reverse()
    tried = []
    for column, fs in options:
        rel = row[column]
        if isinstance(rel, str) and rel.strip():
            if os.path.isabs(rel) or ".." in re.split(r"[/\\]", rel):
                raise ECGDataError(record, f"{column} {rel!r} is not a path inside the data root (never read)")
            path = os.path.join(root, rel)
            if os.path.isfile(path + ".hea"):
                return path, fs
            tried.append(path + ".hea")
    raise ECGDataError(record, f"missing file: none of {tried or ['(no filename in the database)']} exists")


def load_ptbxl(root: str, *, folds: Iterable[int] | None = None, ecg_ids: Iterable[int] | None = None,
               prefer: str = "lr", min_likelihood: float = 0.0, min_length: int = MIN_LENGTH,
               skip_bad: bool = False, limit: int | None = None) -> ECGDataset:
    """Load PTB-XL records (x (N, 8, 1000) at 100 Hz, y (N, 9), y_full (N, 71)) in ecg_id order.

    ``folds`` keeps rows whose strat_fold is listed; ``ecg_ids`` keeps those ids (missing ids raise);
    ``prefer`` "lr" reads 100 Hz files first, "hr" the 500 Hz ones; ``limit`` caps the number of rows
    read (after filtering). With ``skip_bad`` a broken record is listed in ``skipped`` instead of raising.
    """
    if prefer not in ("lr", "hr"):
        raise ValueError(f"prefer must be 'lr' or 'hr', got {prefer!r}")
    statements = read_scp_statements(root)
    table, skipped = checked_rows(read_ptbxl_database(root), skip_bad=skip_bad)
    if ecg_ids is not None:
        wanted = [int(i) for i in ecg_ids]
        absent = sorted(set(wanted) - set(table.index) - {int(r) for r, _ in skipped if r.isdigit()})
        if absent:
            raise ECGDataError(str(absent[0]), f"ecg_id(s) {absent} not in ptbxl_database.csv")
        table = table.loc[sorted(set(wanted) & set(table.index))]
    if folds is not None:
        table = table[table["strat_fold"].isin([int(f) for f in folds])]
    if limit is not None:
        table = table.iloc[:limit]

    records, y_full, kept_folds, fs_read = [], [], [], {}
    for ecg_id, row in table.iterrows():
        record = str(ecg_id)
        try:
            labels = parse_scp_codes(row["scp_codes"], statements, record=record, min_likelihood=min_likelihood)
            path, fs = _record_path(root, row, prefer, record)
            signal, names, fs = read_wfdb(path, record=record, expected_fs=fs)
            x, valid = shape_signal(signal, names, fs, record=record, min_length=min_length)
        except ECGDataError as exc:
            if not skip_bad:
                raise
            skipped.append((record, exc.problem))
            continue
        records.append((record, x, valid, ptbxl_to_target(labels, statements)))
        y_full.append(labels)
        kept_folds.append(int(row["strat_fold"]))
        fs_read[record] = fs
    y_full_arr = np.stack(y_full) if y_full else np.zeros((0, len(statements)), np.float32)
    return build_dataset(records, source=f"ptbxl:{os.path.abspath(root)}", skipped=skipped, folds=kept_folds,
                         y_full=y_full_arr, label_names_full=statements,
                         meta={"fs_read": fs_read, "fs": FS, "min_likelihood": min_likelihood})


def fold_splits(dataset: ECGDataset, folds: dict[str, Sequence[int]] = PTBXL_FOLDS) -> dict[str, ECGDataset]:
    """Split a loaded PTB-XL dataset by strat_fold into {"train", "val", "test"} (PTBXL_FOLDS by default)."""
    if dataset.folds is None:
        raise ValueError("dataset has no strat_fold column (not PTB-XL?)")
    f = np.asarray(dataset.folds)
    return {name: dataset.subset(np.flatnonzero(np.isin(f, list(ids)))) for name, ids in folds.items()}
