"""ECG data layer on real PTB-XL / CPSC2018 records (tests/data/ecg, and the shared subset when
TGDP_REAL_ECG_DIR points at it): loading, labels, leads, shaping, every error path, splits, normalisation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tgdp.data.cpsc import load_cpsc, read_reference
from tgdp.data.ecg import (DERIVED_LEADS, LENGTH, MODEL_LEADS, PTBXL_STATEMENT_OF_CLASS, TARGET_CLASSES, ECGDataError,
                           LeadNorm, crop_or_pad, derive_limb_leads, fit_lead_norm, resample, select_leads,
                           split_target, stage_data, stratified_sample, to_twelve_leads)
from tgdp.data.ptbxl import fold_splits, load_ptbxl, ptbxl_to_target, read_scp_statements
from tgdp.data.wfdb_io import read_wfdb

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "ecg"
REAL_DIR = os.environ.get("TGDP_REAL_ECG_DIR")
needs_real = pytest.mark.skipif(not REAL_DIR or not os.path.isdir(str(REAL_DIR)),
                                reason="set TGDP_REAL_ECG_DIR to shared/data/real_ecg to run the full real subset")


@pytest.fixture
def copy(tmp_path: Path):
    """A writable copy of the fixture tree (broken in place by the error-path tests)."""
    shutil.copytree(FIXTURES, tmp_path / "ecg")
    for p in (tmp_path / "ecg").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return tmp_path / "ecg"


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


# --- loading real fixtures ----------------------------------------------------------------------------------

def test_ptbxl_fixture_loads_with_labels_folds_and_hr_fallback():
    ds = load_ptbxl(str(FIXTURES / "ptbxl"))
    assert ds.x.shape == (3, 8, LENGTH) and ds.x.dtype == torch.float32  # model channels, 10 s at 100 Hz
    assert ds.record_ids == ("1", "2", "8")  # ecg_id order
    assert ds.folds == (3, 2, 9)  # strat_fold carried from ptbxl_database.csv
    # ecg_id 1 has a records100 file; 2 and 8 only records500 (pitfall 2: fall back to filename_hr)
    assert ds.meta["fs_read"] == {"1": 100.0, "2": 500.0, "8": 500.0}
    normal = TARGET_CLASSES.index("Normal")
    assert ds.y[:, normal].tolist() == [1.0, 1.0, 0.0]  # NORM, NORM, IMI
    assert ds.y.sum().item() == 2.0  # IMI/ABQRS/SR do not map onto the 9 classes
    assert ds.y_full.shape == (3, 71) and ds.label_names_full[4] == "NORM"  # scp_statements.csv row order
    names = ds.label_names_full
    assert {names[i] for i in torch.nonzero(ds.y_full[2]).flatten().tolist()} == {"IMI", "ABQRS", "SR"}
    assert ds.skipped == ()
    assert float(ds.x.abs().max()) < 10.0  # physical units: mV, not raw ADC counts


def test_scp_statement_order_and_name_mapping():
    statements = read_scp_statements(str(FIXTURES / "ptbxl"))
    assert len(statements) == 71 and statements[:3] == ("NDT", "NST_", "DIG")  # stable file order
    for k, cls in enumerate(TARGET_CLASSES):  # each target class is reached from its statement, by name
        y_full = np.zeros((1, 71), np.float32)
        y_full[0, statements.index(PTBXL_STATEMENT_OF_CLASS[cls])] = 1
        assert ptbxl_to_target(y_full, statements)[0].tolist() == [float(i == k) for i in range(9)]


def test_100hz_file_and_resampled_500hz_file_agree():
    lr = load_ptbxl(str(FIXTURES / "ptbxl"), ecg_ids=[1], prefer="lr").x[0]
    hr = load_ptbxl(str(FIXTURES / "ptbxl"), ecg_ids=[1], prefer="hr").x[0]
    # PhysioNet's own 100 Hz files use a different downsampler, so compare shape, not samples
    corr = [np.corrcoef(lr[c], hr[c])[0, 1] for c in range(8)]
    assert min(corr) > 0.9, corr
    assert float((lr - hr).abs().mean()) < 0.15 * float(lr.abs().mean()) + 0.01


def test_cpsc_fixture_loads_labels_and_lengths():
    ds = load_cpsc(str(FIXTURES / "cpsc2018"))
    assert ds.record_ids == ("A0002", "A0003", "A0010")
    assert ds.x.shape == (3, 8, LENGTH) and ds.lengths.tolist() == [LENGTH] * 3
    assert [TARGET_CLASSES[int(i)] for i in ds.y.argmax(1)] == ["Normal", "AF", "RBBB"]  # codes 1, 2, 5
    assert ds.y.sum(1).tolist() == [1.0, 1.0, 1.0]
    data = stage_data(load_ptbxl(str(FIXTURES / "ptbxl")), ds)  # directly usable by the stages
    assert set(data) == {"source_x", "source_y", "target_x", "target_y"}
    assert data["source_x"].shape[1:] == data["target_x"].shape[1:] and data["source_y"].shape[1] == 9


def test_cpsc_original_mat_form_matches_wfdb_form(copy: Path, tmp_path: Path):
    from scipy.io import savemat

    signal, names, _ = read_wfdb(str(copy / "cpsc2018" / "A0002"))
    orig = tmp_path / "orig"
    orig.mkdir()
    # the original release: struct ECG (sex, age, data 12xN in mV), no .hea
    savemat(orig / "A0002.mat", {"ECG": {"sex": "Male", "age": 53, "data": signal.T}})
    (orig / "REFERENCE.csv").write_bytes(b"Recording,First_label,Second_label,Third_label\r\nA0002,1,,\r\n")
    a = load_cpsc(str(copy / "cpsc2018"), records=["A0002"])
    b = load_cpsc(str(orig))
    assert torch.allclose(a.x, b.x, atol=1e-6) and torch.equal(a.y, b.y)


def test_reference_csv_crlf_nan_and_unsorted(tmp_path: Path):
    (tmp_path / "REFERENCE.csv").write_bytes(
        b"Recording,First_label,Second_label,Third_label\r\nA0043,5,2,\r\nA0001,5,,\r\nA0009,2,6,7\r\n")
    labels, skipped = read_reference(str(tmp_path))
    assert labels == {"A0043": (5, 2), "A0001": (5,), "A0009": (2, 6, 7)} and skipped == []  # NaN cells dropped


# --- leads and signal shaping ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["ptbxl/records500/00000/00001_hr", "ptbxl/records100/00000/00001_lr",
                                  "cpsc2018/A0003", "cpsc2018/A0010"])
def test_derived_limb_leads_match_recorded(path: str):
    signal, names, _ = read_wfdb(str(FIXTURES / path))
    x8 = select_leads(signal, names, MODEL_LEADS)
    recorded = select_leads(signal, names, DERIVED_LEADS)  # aVR vs AVR: matched case-insensitively
    # recorded leads are quantised at 1 uV, so the identity holds to a few uV on mV-scale signals
    assert np.abs(derive_limb_leads(x8) - recorded).max() < 0.003
    twelve = to_twelve_leads(torch.from_numpy(x8))
    assert twelve.shape == (12, signal.shape[0]) and torch.equal(twelve[6:], torch.from_numpy(x8[2:]))


def test_select_leads_is_case_insensitive_and_names_missing():
    signal = np.arange(24.0).reshape(2, 12)
    upper = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert select_leads(signal, upper, ["aVL"])[0].tolist() == [4.0, 16.0]
    with pytest.raises(ECGDataError, match=r"rec7: missing lead\(s\) \['V3'\]"):
        select_leads(signal, [n if n != "V3" else "X3" for n in upper], MODEL_LEADS, record="rec7")


def test_resample_and_short_record_rule():
    t = np.arange(5000) / 500.0
    x = np.sin(2 * np.pi * 1.0 * t)[None]
    y = resample(x, 500, 100)
    assert y.shape == (1, 1000) and np.abs(y[0, 50:-50] - np.sin(2 * np.pi * np.arange(1000) / 100)[50:-50]).max() < 1e-2
    padded, valid = crop_or_pad(np.ones((8, 700), np.float32))  # 7 s: zero-padded at the end, length kept
    assert padded.shape == (8, LENGTH) and valid == 700 and padded[:, 700:].sum() == 0 and padded[:, :700].all()
    cropped, valid = crop_or_pad(np.arange(3000.0)[None])  # longer: the first 10 s
    assert valid == LENGTH and cropped[0, -1] == LENGTH - 1
    with pytest.raises(ECGDataError, match="too short"):  # below min_length (5 s): rejected
        crop_or_pad(np.ones((8, 499)), record="r")


# --- error paths, on broken copies of real records -------------------------------------------------------------

def test_missing_signal_file(copy: Path):
    (copy / "cpsc2018" / "A0003.mat").unlink()
    with pytest.raises(ECGDataError, match=r"^A0003: missing file .*A0003\.mat"):
        load_cpsc(str(copy / "cpsc2018"))


def test_missing_ptbxl_record_in_both_rates(copy: Path):
    for suffix in ("hea", "dat"):
        (copy / "ptbxl" / "records500" / "00000" / f"00008_hr.{suffix}").unlink()
    with pytest.raises(ECGDataError, match=r"^8: missing file"):
        load_ptbxl(str(copy / "ptbxl"))


def test_truncated_signal(copy: Path):
    dat = copy / "ptbxl" / "records500" / "00000" / "00002_hr.dat"
    dat.write_bytes(dat.read_bytes()[:50000])
    with pytest.raises(ECGDataError, match=r"^2: truncated signal"):
        load_ptbxl(str(copy / "ptbxl"))


def test_header_signal_mismatch_length_and_checksum(copy: Path):
    hea = copy / "cpsc2018" / "A0010.hea"
    _edit(hea, "A0010 12 500 5000", "A0010 12 500 4000")  # header declares fewer samples than the file holds
    with pytest.raises(ECGDataError, match=r"^A0010: header/signal mismatch"):
        load_cpsc(str(copy / "cpsc2018"))
    _edit(hea, "A0010 12 500 4000", "A0010 12 500 5000")
    mat = copy / "cpsc2018" / "A0010.mat"
    raw = bytearray(mat.read_bytes())
    raw[1000] ^= 0x40  # one corrupted sample: same size, wrong checksum
    mat.write_bytes(bytes(raw))
    with pytest.raises(ECGDataError, match=r"^A0010: header/signal mismatch: checksum"):
        load_cpsc(str(copy / "cpsc2018"))


def test_unknown_label_codes(copy: Path):
    _edit(copy / "cpsc2018" / "REFERENCE.csv", "A0003,2,,", "A0003,2,10,")
    with pytest.raises(ECGDataError, match=r"^A0003: unknown label code '10'"):
        load_cpsc(str(copy / "cpsc2018"))
    _edit(copy / "ptbxl" / "ptbxl_database.csv", "'SBRAD': 0.0", "'XYZ': 0.0")
    with pytest.raises(ECGDataError, match=r"^2: unknown label code 'XYZ'"):
        load_ptbxl(str(copy / "ptbxl"))


def test_missing_lead(copy: Path):
    _edit(copy / "ptbxl" / "records500" / "00000" / "00001_hr.hea", " V4\n", " X4\n")
    with pytest.raises(ECGDataError, match=r"^1: missing lead\(s\) \['V4'\]"):
        load_ptbxl(str(copy / "ptbxl"), prefer="hr")


def test_wrong_sampling_rate(copy: Path):
    _edit(copy / "cpsc2018" / "A0002.hea", "A0002 12 500 5000", "A0002 12 250 5000")
    with pytest.raises(ECGDataError, match=r"^A0002: wrong sampling rate: header says 250"):
        load_cpsc(str(copy / "cpsc2018"))
    _edit(copy / "ptbxl" / "records100" / "00000" / "00001_lr.hea", "00001_lr 12 100 1000", "00001_lr 12 500 1000")
    with pytest.raises(ECGDataError, match=r"^1: wrong sampling rate"):  # a records100 file must be 100 Hz
        load_ptbxl(str(copy / "ptbxl"))


def test_bad_record_skipped_only_when_asked(copy: Path):
    dat = copy / "cpsc2018" / "A0003.mat"
    dat.write_bytes(dat.read_bytes()[:4000])
    _edit(copy / "cpsc2018" / "REFERENCE.csv", "A0010,5,,", "A0010,0,,")
    with pytest.raises(ECGDataError):  # default: never silently dropped
        load_cpsc(str(copy / "cpsc2018"))
    ds = load_cpsc(str(copy / "cpsc2018"), skip_bad=True)
    assert ds.record_ids == ("A0002",)
    reasons = dict(ds.skipped)
    assert set(reasons) == {"A0003", "A0010"}
    assert reasons["A0003"].startswith("truncated signal") and "unknown label code" in reasons["A0010"]


# --- splits and normalisation -----------------------------------------------------------------------------

def _labels(n_per_class: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([np.eye(9, dtype=np.float32)[[k] * c] for k, c in enumerate(n_per_class)])


def test_stratified_sample_sizes_seed_and_coverage():
    y = _labels((300, 150, 40, 20, 120, 30, 40, 60, 10))
    idx = stratified_sample(y, 10, seed=3)
    assert len(idx) == 10 and len(set(idx)) == 10
    assert set(y[idx].argmax(1)) == set(range(9))  # n=10 >= 9 strata: every class represented
    assert np.array_equal(idx, stratified_sample(y, 10, seed=3))  # the recorded seed reproduces it
    assert not np.array_equal(idx, stratified_sample(y, 10, seed=4))
    big = stratified_sample(y, 0.5, seed=0)  # a fraction: proportional per class
    assert len(big) == 385 and abs(int((y[big].argmax(1) == 0).sum()) - 150) <= 1


def test_split_target_disjoint_and_stable_across_n():
    y = _labels((100, 80, 20, 15, 60, 15, 20, 30, 10))
    ids = tuple(f"A{i:04d}" for i in range(len(y)))
    a = split_target(y, 10, seed=1, record_ids=ids)
    b = split_target(y, 100, seed=1)
    for s in (a, b):  # limited set, validation and test are pairwise disjoint
        assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test) and not set(s.val) & set(s.test)
    assert (a.val, a.test) == (b.val, b.test)  # held-out rows do not depend on n
    assert len(a.train) == 10 and len(b.train) == 100 and len(a.test) == round(0.2 * len(y))
    assert type(a).from_dict(a.to_dict()) == a and a.record_ids[0] == ids[a.train[0]]
    with pytest.raises(ValueError, match="exceed"):
        split_target(y, 300, seed=1)


def test_lead_norm_fitted_on_train_only_and_round_trips():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 8, 100, generator=g) * torch.arange(1, 9).float()[None, :, None] + 3.0
    lengths = torch.full((20,), 100)
    lengths[0] = 50
    x[0, :, 50:] = 0.0  # zero padding must not bias the statistics
    norm = fit_lead_norm(x[:10], lengths[:10])
    assert norm == fit_lead_norm(x[:10], lengths[:10])  # deterministic
    assert norm == fit_lead_norm(torch.cat([x[:10], x[10:] * 100])[:10], lengths[:10])  # other rows ignored
    z = norm.apply(x[1:10])
    assert torch.allclose(z.mean(dim=(0, 2)), torch.zeros(8), atol=0.05) and abs(norm.mean[0] - 3.0) < 0.2
    assert torch.allclose(norm.invert(norm.apply(x)), x, atol=1e-4)
    assert norm.apply(x[:1], lengths[:1])[0, :, 50:].abs().max() == 0  # padding stays zero
    assert LeadNorm.from_dict(norm.to_dict()) == norm  # saved with the model
    with pytest.raises(ValueError, match="unknown key"):
        LeadNorm.from_dict({**norm.to_dict(), "typo": 1})


def test_fold_splits():
    parts = fold_splits(load_ptbxl(str(FIXTURES / "ptbxl")), {"train": (2, 3), "val": (9,), "test": (10,)})
    assert parts["train"].record_ids == ("1", "2") and parts["val"].record_ids == ("8",)  # strat_fold respected
    assert len(parts["test"]) == 0 and parts["val"].y_full.shape == (1, 71)


# --- the whole shared real subset ----------------------------------------------------------------------------

@needs_real
def test_whole_real_subset():
    root = Path(str(REAL_DIR))
    ptb = load_ptbxl(str(root / "ptbxl"))
    assert len(ptb) == 21 and ptb.skipped == () and set(ptb.folds) <= set(range(1, 11))
    assert int(ptb.y[:, 0].sum()) == 18  # NORM rows
    cpsc = load_cpsc(str(root / "cpsc2018"))
    assert len(cpsc) == 59 and cpsc.skipped == ()
    first = {"RBBB": 11, "Normal": 9, "AF": 8, "PVC": 8, "STD": 7, "STE": 7, "LBBB": 4, "PAC": 3, "I-AVB": 2}
    assert {c: int(cpsc.y[:, k].sum()) for k, c in enumerate(TARGET_CLASSES)} == {**first, "AF": 9}  # A0043: RBBB+AF
    for rid, codes in cpsc.meta["codes"].items():  # REFERENCE.csv agrees with the #Dx header line
        dx = [c.split(":", 1)[1].strip() for c in (root / "cpsc2018" / f"{rid}.hea").read_text().splitlines()
              if c.startswith("#Dx")][0]
        assert sorted(dx.split(",")) == sorted(TARGET_CLASSES[c - 1] for c in codes), rid
    for path in sorted((root / "cpsc2018").glob("A00*.hea")) + sorted((root / "ptbxl").rglob("*_hr.hea")):
        signal, names, _ = read_wfdb(str(path.with_suffix("")))
        diff = derive_limb_leads(select_leads(signal, names, MODEL_LEADS)) - select_leads(signal, names, DERIVED_LEADS)
        assert np.abs(diff).max() < 0.003, path.name


@pytest.mark.parametrize("path", ["ptbxl/records100/00000/00001_lr", "ptbxl/records500/00000/00008_hr", "cpsc2018/A0010"])
def test_fast_reader_agrees_with_wfdb(path: str):
    import wfdb

    signal, names, fs = read_wfdb(str(FIXTURES / path))
    ref = wfdb.rdrecord(str(FIXTURES / path))  # the reference implementation of the format
    assert names == ref.sig_name and fs == ref.fs
    assert np.allclose(signal, ref.p_signal, atol=1e-9)


def test_header_lists_fewer_signals_than_declared(copy: Path):
    hea = copy / "cpsc2018" / "A0002.hea"
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(lines[:12] + lines[13:]) + "\n")  # drop the V6 line, keep "12" on the record line
    with pytest.raises(ECGDataError, match=r"^A0002: header/signal mismatch: header declares 12 signals"):
        load_cpsc(str(copy / "cpsc2018"))
