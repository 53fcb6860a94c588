"""ICBEB2018 / CPSC2018, the ECG target domain (DESIGN §2): 12 leads, 500 Hz, 6-144 s, 9 classes.

Two on-disk forms are read, per record:

* **WFDB (PhysioNet/CinC Challenge 2020)**: ``A0001.hea`` + ``A0001.mat`` (MATLAB v4 ``val``, int16,
  12xN, header format ``16+24``). Lead names come from the header (aVR/aVL/aVF, matched
  case-insensitively).
* **Original CPSC2018 release**: ``A0001.mat`` only, a MATLAB struct ``ECG`` with field ``data``
  (float64, 12xN, mV; also ``sex``, ``age``). It has no header: the rate is the dataset's 500 Hz and the
  lead order the standard I, II, III, aVR, aVL, aVF, V1-V6.

``form="auto"`` (default) uses the header when it exists, the original struct otherwise.

Labels come from ``REFERENCE.csv`` (``Recording,First_label,Second_label,Third_label``; codes 1-9 =
TARGET_CLASSES in order; CRLF; up to three labels; empty cells; rows not sorted). Records are returned
sorted by record id, whatever the file's row order. An empty or header-only REFERENCE.csv is an error, and
a record id must be a plain file name (``A0001``; never a path: ``../x`` is refused, not read).
"""

from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np
import pandas as pd

from tgdp.data.ecg import (FS, MIN_LENGTH, TARGET_CLASSES, TWELVE_LEADS, ECGDataError, ECGDataset, build_dataset,
                           read_csv_table, shape_signal)
from tgdp.data.wfdb_io import read_wfdb

CPSC_FS = 500  # Hz, the rate of every CPSC2018 record
_LABEL_COLUMNS = ("First_label", "Second_label", "Third_label")


def read_reference(root: str, *, skip_bad: bool = False) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, str]]]:
    """REFERENCE.csv -> ({record: label codes 1..9}, skipped). Unknown codes and unlabelled rows raise
    (or, with skip_bad, are listed in skipped); duplicated records always raise."""
    path = os.path.join(root, "REFERENCE.csv")
    if not os.path.isfile(path):
        raise ECGDataError("REFERENCE.csv", f"missing file {path}")
    # pandas accepts the CRLF line endings; "nan" or "NA" in a label cell is a bad code, not an empty cell
    table = read_csv_table(path, "REFERENCE.csv", dtype=str, keep_default_na=False)
    if "Recording" not in table.columns or "First_label" not in table.columns:
        raise ECGDataError("REFERENCE.csv", f"expected columns Recording,First_label,...; got {list(table.columns)}")
    if table.empty:
        raise ECGDataError("REFERENCE.csv", f"{path} lists no records (header only)")
    labels: dict[str, tuple[int, ...]] = {}
    skipped: list[tuple[str, str]] = []
    for _, row in table.iterrows():
        record = str(row["Recording"]).strip()
        if record in labels:
            raise ECGDataError(record, "listed twice in REFERENCE.csv")
        try:
            labels[record] = _parse_codes(row, record)
        except ECGDataError as exc:
            if not skip_bad:
                raise
            skipped.append((record, exc.problem))
    return labels, skipped


def _parse_codes(row: pd.Series, record: str) -> tuple[int, ...]:
    codes = []
    for column in _LABEL_COLUMNS:
        cell = row.get(column)
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
            continue
        try:
            value = float(cell)
        except ValueError:
            raise ECGDataError(record, f"unknown label code {cell!r} in {column}") from None
        if not math.isfinite(value) or value != int(value) or not 1 <= int(value) <= len(TARGET_CLASSES):
            raise ECGDataError(record, f"unknown label code {cell!r} in {column} (expected 1-{len(TARGET_CLASSES)})")
        codes.append(int(value))
    if not codes:
        raise ECGDataError(record, "no label in REFERENCE.csv")
    return tuple(codes)


def codes_to_multihot(codes: Iterable[int]) -> np.ndarray:
    """CPSC codes 1..9 -> (9,) float32 multi-hot over TARGET_CLASSES."""
    y = np.zeros(len(TARGET_CLASSES), dtype=np.float32)
    for c in codes:
        y[int(c) - 1] = 1.0
    return y


def read_original_mat(path: str, *, record: str) -> tuple[np.ndarray, list[str], float]:
    """Original CPSC2018 ``.mat`` (struct ECG, data 12xN in mV) -> (signal (N, 12), lead names, 500 Hz)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types on foreign files
        raise ECGDataError(record, f"unreadable .mat file {path} ({exc})") from exc
    ecg = mat.get("ECG")
    data = getattr(ecg, "data", None)
    if data is None:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ECGDataError(record, f"{path} has no header and no ECG.data struct (variables: {found})")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(TWELVE_LEADS):
        raise ECGDataError(record, f"missing lead(s): ECG.data has shape {data.shape}, expected 12xN")
    return data.T, list(TWELVE_LEADS), float(CPSC_FS)


def read_cpsc_record(root: str, record: str, *, form: str = "auto") -> tuple[np.ndarray, list[str], float]:
    """One record's (signal (N, 12), lead names, fs), WFDB or original form (see the module docstring)."""
    if not record or os.path.basename(record) != record or record in (".", "..") or "\\" in record:
        raise ECGDataError(record, "record id is not a file name (a path outside the data directory: never read)")
    base = os.path.join(root, record)
    if form == "wfdb" or (form == "auto" and os.path.isfile(base + ".hea")):
        return read_wfdb(base, record=record, expected_fs=CPSC_FS)
    if not os.path.isfile(base + ".mat"):
        raise ECGDataError(record, f"missing file {base}.hea / {base}.mat")
    return read_original_mat(base + ".mat", record=record)


def load_cpsc(root: str, *, records: Iterable[str] | None = None, form: str = "auto",
              min_length: int = MIN_LENGTH, skip_bad: bool = False, limit: int | None = None) -> ECGDataset:
    """Load CPSC2018 records listed in REFERENCE.csv, sorted by id: x (N, 8, 1000) at 100 Hz, y (N, 9).

    ``records`` restricts to those ids (ids absent from REFERENCE.csv raise); ``limit`` caps the count.
    With ``skip_bad`` a broken record (file or label) is listed in ``skipped`` instead of raising.
    """
    if form not in ("auto", "wfdb", "original"):
        raise ValueError(f"form must be 'auto', 'wfdb' or 'original', got {form!r}")
    labels, skipped = read_reference(root, skip_bad=skip_bad)
    ids = sorted(labels)
    if records is not None:
        wanted = sorted(set(records))
        absent = [r for r in wanted if r not in labels and r not in {s[0] for s in skipped}]
        if absent:
            raise ECGDataError(absent[0], f"record(s) {absent} not in REFERENCE.csv")
        ids = [r for r in wanted if r in labels]
    if limit is not None:
        ids = ids[:limit]
    rows = []
    for record in ids:
        try:
            signal, names, fs = read_cpsc_record(root, record, form=form)
            x, valid = shape_signal(signal, names, fs, record=record, min_length=min_length)
        except ECGDataError as exc:
            if not skip_bad:
                raise
            skipped.append((record, exc.problem))
            continue
        rows.append((record, x, valid, codes_to_multihot(labels[record])))
    return build_dataset(rows, source=f"cpsc2018:{os.path.abspath(root)}", skipped=skipped,
                         meta={"fs": FS, "form": form, "codes": {r[0]: labels[r[0]] for r in rows}})
