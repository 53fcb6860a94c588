"""Validated reading of one WFDB record (PTB-XL ``.hea``/``.dat``, CinC ``.hea``/``.mat``).

Why not just ``wfdb.rdrecord``: it parses every header through pandas (~17 ms per header here, twice
per record with ``rdheader``), which makes a 20k-record PTB-XL load take minutes, and it reports broken
files with generic messages. Both datasets use WFDB format 16 (little-endian int16, sample-interleaved,
one file per record, optional byte offset: ``16+24`` for the CinC ``.mat``); those records take a small
direct path (header parsed here, samples by ``np.fromfile``). Any other format goes through ``wfdb``
with the same checks. Every problem is an ``ECGDataError`` naming the record.

Headers are untrusted input: the header must name its own record, each signal file must be that record's
(``<record>.<ext>`` in the header's directory: no ``../``, no absolute path, not another record's file),
the sampling rate and every gain finite and positive (gain 0 means WFDB's default 200). Samples equal to
WFDB's invalid-sample marker of their format (-32768 in format 16) become NaN, as ``wfdb.rdrecord`` does,
never a physical value (-32.768 mV at 1000/mV); ``shape_signal`` refuses NaN in the model's leads.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from tgdp.data.ecg import ECGDataError

_GAIN = re.compile(r"^([-+0-9.eE]+)(?:\(([-+0-9]+)\))?(?:/(\S+))?$")
_UNIT_SCALE = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}  # to mV
# WFDB's invalid-sample marker per format (the digital value of a missing sample; as wfdb.io._signal)
_INVALID = {"80": -(2**7), "508": -(2**7), "310": -(2**9), "311": -(2**9), "212": -(2**11), "16": -(2**15),
            "61": -(2**15), "160": -(2**15), "516": -(2**15), "24": -(2**23), "524": -(2**23), "32": -(2**31)}


def parse_header(path: str, record: str) -> dict[str, Any]:
    """Minimal WFDB header parser: fs, sig_len and per-signal fields (single-segment records)."""
    try:
        with open(path + ".hea", encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except FileNotFoundError:
        raise ECGDataError(record, f"missing file {path}.hea") from None
    except OSError as exc:
        raise ECGDataError(record, f"unreadable header {path}.hea ({exc.strerror or exc})") from None
    try:
        head = lines[0].split()
        n_sig, fs, sig_len = int(head[1]), float(head[2].split("/")[0]), int(head[3])
        if "/" in head[0]:
            raise ValueError("multi-segment records are not supported")
        signals = []
        for line in lines[1:1 + n_sig]:
            f = line.split()
            fmt, _, offset = f[1].partition("+")
            fmt = fmt.split("x")[0].split(":")[0]
            m = _GAIN.match(f[2])
            if m is None:
                raise ValueError(f"bad gain field {f[2]!r}")
            gain = float(m.group(1)) or 200.0  # WFDB: gain 0 means the default 200
            baseline = int(m.group(2)) if m.group(2) else (int(f[4]) if len(f) > 4 else 0)
            if not math.isfinite(gain) or gain < 0:
                raise ValueError(f"gain {f[2]!r} is not a finite positive number")
            signals.append({"file": f[0], "fmt": fmt, "offset": int(offset or 0), "gain": gain,
                            "baseline": baseline, "units": (m.group(3) or "mV").lower(),
                            "init": int(f[5]) if len(f) > 5 else None,
                            "checksum": int(f[6]) if len(f) > 6 else None,
                            "name": " ".join(f[8:]) if len(f) > 8 else f"ch{len(signals)}"})
    except (IndexError, ValueError) as exc:
        raise ECGDataError(record, f"unreadable header {path}.hea ({exc})") from None
    if len(signals) != n_sig or n_sig == 0 or sig_len <= 0:
        raise ECGDataError(record, f"header/signal mismatch: header declares {n_sig} signals x {sig_len} samples "
                                   f"but lists {len(signals)} signal lines")
    if not math.isfinite(fs) or fs <= 0:
        raise ECGDataError(record, f"unreadable header {path}.hea (sampling rate {head[2]!r} is not a finite "
                                   "positive number)")
    _check_names(path, record, head[0], [s["file"] for s in signals])
    return {"fs": fs, "sig_len": sig_len, "n_sig": n_sig, "signals": signals}


def _check_names(path: str, record: str, name: str, files: list[str]) -> None:
    """The header at ``path`` names its own record, and only that record's signal files, in its directory."""
    own = os.path.basename(path)
    if name != own:
        raise ECGDataError(record, f"header {path}.hea is for record {name!r}, not {own!r}")
    for file in files:
        if os.path.basename(file) != file or file in (".", "..") or "\\" in file:
            raise ECGDataError(record, f"signal file {file!r} in {path}.hea is not a file name in the record's "
                                       "directory (a path: never read)")
        if os.path.splitext(file)[0] != own:
            raise ECGDataError(record, f"signal file {file!r} in {path}.hea belongs to another record "
                                       f"(expected {own}.<ext>)")


def read_wfdb(path: str, *, record: str | None = None, expected_fs: float | None = None
              ) -> tuple[np.ndarray, list[str], float]:
    """Read one record (path without extension) after checking it against its header.

    Checks, each an ``ECGDataError``: header and signal files exist; the sampling rate equals
    ``expected_fs`` (when given); the signal file holds exactly the declared samples (fewer: truncated
    signal; more: header/signal mismatch); first samples and per-lead checksums match the header.
    Returns the physical signal (L, C) in mV, the lead names and fs.
    """
    record = record or os.path.basename(path)
    header = parse_header(path, record)
    if expected_fs is not None and header["fs"] != float(expected_fs):
        raise ECGDataError(record, f"wrong sampling rate: header says {header['fs']:g} Hz, expected {expected_fs:g} Hz")
    sigs, n_sig, sig_len = header["signals"], header["n_sig"], header["sig_len"]
    directory = os.path.dirname(path)
    for name in {s["file"] for s in sigs}:
        if not os.path.isfile(os.path.join(directory, name)):
            raise ECGDataError(record, f"missing file {os.path.join(directory, name)}")
    simple = len({(s["file"], s["fmt"], s["offset"]) for s in sigs}) == 1 and sigs[0]["fmt"] == "16"
    digital = _read_format16(path, header, record) if simple else _read_with_wfdb(path, record)
    if digital.shape != (sig_len, n_sig):
        raise ECGDataError(record, f"header/signal mismatch: header declares {sig_len}x{n_sig} samples, "
                                   f"file gives {digital.shape[0]}x{digital.shape[1]}")
    for k, s in enumerate(sigs):
        if s["init"] is not None and int(digital[0, k]) != s["init"]:
            raise ECGDataError(record, f"header/signal mismatch: first sample of lead {s['name']} is "
                                       f"{int(digital[0, k])}, header says {s['init']}")
    sums = digital.astype(np.int64).sum(axis=0)
    bad = [s["name"] for k, s in enumerate(sigs) if s["checksum"] is not None and (sums[k] - s["checksum"]) % 65536]
    if bad:
        raise ECGDataError(record, f"header/signal mismatch: checksum differs for lead(s) {bad}")
    units = {s["units"] for s in sigs}
    if not units <= set(_UNIT_SCALE):
        raise ECGDataError(record, f"unsupported signal units {sorted(units)}")
    gain = np.array([s["gain"] / _UNIT_SCALE[s["units"]] for s in sigs])
    baseline = np.array([s["baseline"] for s in sigs], dtype=np.float64)
    physical = (digital - baseline) / gain
    invalid = np.array([_INVALID.get(s["fmt"], np.nan) for s in sigs])  # formats without a marker: none
    physical[digital == invalid] = np.nan  # a missing sample, not -32.768 mV
    return physical, [s["name"] for s in sigs], header["fs"]


def _read_format16(path: str, header: dict[str, Any], record: str) -> np.ndarray:
    """Samples of a single-file format-16 record as (sig_len, n_sig) int16, after the size check."""
    sig = header["signals"][0]
    full = os.path.join(os.path.dirname(path), sig["file"])
    expected = sig["offset"] + 2 * header["sig_len"] * header["n_sig"]
    actual = os.path.getsize(full)
    what = f"({header['sig_len']} samples x {header['n_sig']} leads)"
    if actual < expected:
        raise ECGDataError(record, f"truncated signal: {full} has {actual} bytes, the header needs {expected} {what}")
    if actual > expected:
        raise ECGDataError(record, f"header/signal mismatch: {full} has {actual} bytes, the header declares "
                                   f"{expected} {what}")
    data = np.fromfile(full, dtype="<i2", offset=sig["offset"])
    return data.reshape(header["sig_len"], header["n_sig"])


def _read_with_wfdb(path: str, record: str) -> np.ndarray:
    """Digital samples of any other format through the wfdb package."""
    import wfdb  # only needed off the format-16 path

    try:
        return np.asarray(wfdb.rdrecord(path, physical=False).d_signal)
    except Exception as exc:  # wfdb raises assorted types on short or corrupt files
        raise ECGDataError(record, f"unreadable or truncated signal ({exc})") from exc
