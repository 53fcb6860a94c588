"""Hostile and broken ECG data (issue 16): the loaders never read outside the data root, and every data
problem is an ``ECGDataError`` naming the record, so ``skip_bad`` skips it and loads the rest.

Each case breaks one record of a writable copy of the real fixtures (tests/data/ecg: PTB-XL ecg_id 1, 2, 8;
CPSC A0002, A0003, A0010). Escapes point at a *valid* copy of the record outside the root: if the loader
followed the path, the load would succeed and the test fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.tgdp.test_ecg_data import _edit, copy  # noqa: F401  (copy: the fixture-tree fixture)
from tgdp.data.cpsc import load_cpsc
from tgdp.data.ecg import TWELVE_LEADS, ECGDataError
from tgdp.data.ecg_sim import _write_wfdb
from tgdp.data.ptbxl import load_ptbxl
from tgdp.data.wfdb_io import read_wfdb

REC100 = "records100/00000/00001_lr"  # ecg_id 1's 100 Hz record (the others have only 500 Hz files)


def _outside(root: Path, *files: str) -> Path:
    """A valid copy of ``files`` (relative to ``root``) in a directory next to the data root."""
    out = root.parent / "outside"
    out.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(root / f, out / Path(f).name)
    return out


def _cpsc_digital(root: Path, record: str, change: Callable[[np.ndarray], None]) -> None:
    """Rewrite ``record`` from its own samples after ``change`` (digital, (L, 12) int16), with a consistent
    header (checksums, first samples): only the change is wrong."""
    signal, names, _ = read_wfdb(str(root / record))
    digital = np.round(signal * 1000).astype("<i2")
    change(digital)
    _write_wfdb(str(root / record), digital, 500, TWELVE_LEADS, mat=True)


def _db(old: str, new: str) -> Callable[[Path], None]:
    return lambda root: _edit(root / "ptbxl_database.csv", old, new)


def _hea(record: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    return lambda root: _edit(root / f"{record}.hea", old, new, count)


def _ref(old: str, new: str) -> Callable[[Path], None]:
    return lambda root: _edit(root / "REFERENCE.csv", old, new)


def _signal_outside(root: Path) -> None:
    out = _outside(root, "A0002.mat")
    _edit(root / "A0002.hea", "A0002.mat", f"../{out.name}/A0002.mat", 12)


def _signal_absolute(root: Path) -> None:
    out = _outside(root, "A0002.mat")
    _edit(root / "A0002.hea", "A0002.mat", str(out / "A0002.mat"), 12)


def _record_outside(root: Path) -> None:
    out = _outside(root, "A0002.hea", "A0002.mat")
    _edit(root / "REFERENCE.csv", "A0002,", f"../{out.name}/A0002,")


def _filename_outside(absolute: bool) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        out = _outside(root, REC100 + ".hea", REC100 + ".dat")
        rel = str(out / "00001_lr") if absolute else f"../{out.name}/00001_lr"
        _edit(root / "ptbxl_database.csv", REC100, rel)
    return edit


# (case id, dataset, edit of the data root, record, message after "<record>: ")
CASES = [
    # --- reading outside the data root -------------------------------------------------------------------
    ("hea-signal-dotdot", "cpsc2018", _signal_outside, "A0002",
     r"signal file '\.\./outside/A0002\.mat' in .* not a file name"),
    ("hea-signal-absolute", "cpsc2018", _signal_absolute, "A0002", r"signal file '/.*/A0002\.mat' in .* not a file"),
    ("reference-record-path", "cpsc2018", _record_outside, "../outside/A0002", r"record id is not a file name"),
    ("filename-lr-dotdot", "ptbxl", _filename_outside(False), "1", r"filename_lr '\.\./outside/00001_lr' is not a path "
                                                                    r"inside the data root"),
    ("filename-lr-absolute", "ptbxl", _filename_outside(True), "1", r"filename_lr '/.*' is not a path inside"),
    ("hea-other-records-signal", "cpsc2018", _hea("A0002", "A0002.mat", "A0003.mat", 12), "A0002",
     r"signal file 'A0003\.mat' in .* belongs to another record \(expected A0002\.<ext>\)"),
    ("hea-other-record-name", "cpsc2018", _hea("A0002", "A0002 12 500", "A0003 12 500"), "A0002",
     r"header .*A0002\.hea is for record 'A0003', not 'A0002'"),
    # --- signal values ------------------------------------------------------------------------------------
    ("duplicate-lead-name", "cpsc2018", _hea("A0002", "0 III\n", "0 V1\n"), "A0002", r"lead name 'V1' appears twice"),
    ("invalid-sample-marker", "cpsc2018",
     lambda root: _cpsc_digital(root, "A0002", lambda d: d.__setitem__((100, TWELVE_LEADS.index("V1")), -32768)),
     "A0002", r"invalid samples \(NaN/inf, or WFDB's invalid-sample marker\) in lead\(s\) \['V1'\]"),
    ("flat-signal", "cpsc2018",
     lambda root: _cpsc_digital(root, "A0002", lambda d: d.__setitem__((slice(None), TWELVE_LEADS.index("V2")), 7)),
     "A0002", r"flat signal: lead\(s\) \['V2'\] constant"),
    ("gain-1e400", "cpsc2018", _hea("A0003", "1000/mV", "1e400/mV"), "A0003",
     r"unreadable header .*A0003\.hea \(gain '1e400/mV' is not a finite positive number\)"),
    ("gain-negative", "cpsc2018", _hea("A0003", "1000/mV", "-1000/mV"), "A0003",
     r"unreadable header .*\(gain '-1000/mV' is not a finite positive number\)"),
    # --- labels and table rows ------------------------------------------------------------------------------
    ("label-inf", "cpsc2018", _ref("A0003,2,,", "A0003,inf,,"), "A0003", r"unknown label code 'inf' in First_label"),
    ("label-nan", "cpsc2018", _ref("A0003,2,,", "A0003,2,nan,"), "A0003", r"unknown label code 'nan' in Second_label"),
    ("scp-likelihood-text", "ptbxl", _db("'SBRAD': 0.0", "'SBRAD': 'high'"), "2",
     r"likelihood of 'SBRAD' is not a finite number: 'high'"),
    ("scp-likelihood-nested", "ptbxl", _db("'SBRAD': 0.0", "'SBRAD': [[0.0]]"), "2", r"likelihood of 'SBRAD'"),
    ("scp-deeply-nested", "ptbxl", _db("'SBRAD': 0.0", "'SBRAD': " + "[" * 1000 + "]" * 1000), "2",
     r"unparsable scp_codes"),
    ("scp-too-long", "ptbxl", _db("'SBRAD': 0.0", "'SBRAD': " + "[" * 100_000 + "]" * 100_000), "2",
     r"unparsable scp_codes .*\(200025 characters\) \(at most 10000 characters\)"),
    ("strat-fold-11", "ptbxl", _db(",2,records100/00000/00002_lr", ",11,records100/00000/00002_lr"), "2",
     r"strat_fold '11' is not an integer 1-10"),
    ("strat-fold-3.7", "ptbxl", _db(",2,records100/00000/00002_lr", ",3.7,records100/00000/00002_lr"), "2",
     r"strat_fold '3\.7' is not an integer 1-10"),
    ("strat-fold-text", "ptbxl", _db(",2,records100/00000/00002_lr", ",two,records100/00000/00002_lr"), "2",
     r"strat_fold 'two' is not an integer 1-10"),
    ("strat-fold-empty", "ptbxl", _db(",2,records100/00000/00002_lr", ",,records100/00000/00002_lr"), "2",
     r"strat_fold is empty"),
    ("ecg-id-text", "ptbxl", _db("\n2,13243.0", "\nx2,13243.0"), "x2", r"ecg_id is not a positive integer"),
]


@pytest.mark.parametrize("case_id,dataset,edit,record,message", CASES, ids=[c[0] for c in CASES])
def test_bad_record_is_an_error_naming_it_and_skippable(copy: Path, case_id: str, dataset: str,  # noqa: F811
                                                        edit: Callable[[Path], None], record: str, message: str):
    root = copy / dataset
    edit(root)
    load = load_cpsc if dataset == "cpsc2018" else load_ptbxl
    with pytest.raises(ECGDataError, match=f"^{record}: {message}") as err:  # default: never dropped silently
        load(str(root))
    assert err.value.record == record
    ds = load(str(root), skip_bad=True)  # an ECGDataError, so skip_bad lists it and loads the other two
    assert record in dict(ds.skipped) and record not in ds.record_ids and len(ds) == 2, ds.skipped


def test_invalid_sample_marker_reads_as_nan_like_wfdb(copy: Path):
    import wfdb

    root = copy / "cpsc2018"
    _cpsc_digital(root, "A0002", lambda d: d.__setitem__((100, 0), -32768))
    signal, _, _ = read_wfdb(str(root / "A0002"))
    assert np.isnan(signal[100, 0]) and np.isfinite(np.delete(signal[:, 0], 100)).all()  # that sample only
    ref = wfdb.rdrecord(str(root / "A0002")).p_signal  # the reference reader: NaN, not -32.768 mV
    assert np.array_equal(np.isnan(ref), np.isnan(signal)) and np.allclose(signal[1:99], ref[1:99])


@pytest.mark.parametrize("text,message", [
    (b"", r"^REFERENCE\.csv: empty file .*REFERENCE\.csv"),
    (b"Recording,First_label,Second_label,Third_label\r\n", r"^REFERENCE\.csv: .*lists no records \(header only\)"),
], ids=["empty", "header-only"])
def test_empty_reference_csv(copy: Path, text: bytes, message: str):
    (copy / "cpsc2018" / "REFERENCE.csv").write_bytes(text)
    for skip_bad in (False, True):  # no records at all is not a record to skip
        with pytest.raises(ECGDataError, match=message):
            load_cpsc(str(copy / "cpsc2018"), skip_bad=skip_bad)


def test_duplicate_ecg_id_always_raises(copy: Path):
    db = copy / "ptbxl" / "ptbxl_database.csv"
    lines = db.read_text().splitlines(keepends=True)
    db.write_text("".join(lines + [lines[2]]))  # ecg_id 2 listed twice
    for skip_bad in (False, True):  # which of the two rows is ecg_id 2? Neither may be guessed
        with pytest.raises(ECGDataError, match=r"^2: listed twice in ptbxl_database\.csv"):
            load_ptbxl(str(copy / "ptbxl"), skip_bad=skip_bad)


def test_other_ids_still_load_next_to_a_text_ecg_id(copy: Path):
    _db("\n2,13243.0", "\nx2,13243.0")(copy / "ptbxl")
    ds = load_ptbxl(str(copy / "ptbxl"), ecg_ids=[1, 8], skip_bad=True)
    # the ids asked for load (before: "ecg_id(s) [1] not in ptbxl_database.csv", the index had become text)
    assert ds.record_ids == ("1", "8") and ds.folds == (3, 9)


def test_empty_ptbxl_tables(copy: Path):
    (copy / "ptbxl" / "scp_statements.csv").write_bytes(b"")
    with pytest.raises(ECGDataError, match=r"^scp_statements\.csv: empty file"):
        load_ptbxl(str(copy / "ptbxl"))
