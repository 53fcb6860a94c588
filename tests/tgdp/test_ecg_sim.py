"""The ECG simulator: round trip through the real-data loaders, measurable class effects, domain shift, CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt

from study.cli import main as cli_main
from study.programs.ecg_sim import main
from tgdp.data.cpsc import load_cpsc
from tgdp.data.ecg import DERIVED_LEADS, LENGTH, MODEL_LEADS, TARGET_CLASSES, derive_limb_leads, select_leads
from tgdp.data.ecg_sim import (PTBXL_STATEMENTS, SOURCE_SHIFT, TARGET_SHIFT, DomainShift, draw_labels, simulate,
                               write_simulated_dataset)
from tgdp.data.ptbxl import load_ptbxl, read_scp_statements
from tgdp.data.wfdb_io import read_wfdb

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "ecg"
INDEPENDENT = [0, 1, 6, 7, 8, 9, 10, 11]  # I, II, V1-V6 rows of a 12-lead array
_HIGHPASS = butter(2, 0.7, "highpass", fs=100, output="sos")


def _peaks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spatial QRS magnitude (8 high-passed leads) and its R peaks, at 100 Hz."""
    mag = np.sqrt((sosfiltfilt(_HIGHPASS, x, axis=-1) ** 2).sum(0))
    peaks, _ = find_peaks(mag, height=0.4 * mag.max(), distance=25)
    return mag, peaks


def _rr_cv(x: np.ndarray) -> float:
    rr = np.diff(_peaks(x)[1])
    return float(rr.std() / rr.mean())


def _qrs_ms(x: np.ndarray) -> float:
    """Median span (ms) around each R peak where the magnitude exceeds 25% of the peak."""
    mag, peaks = _peaks(x)
    widths = []
    for p in peaks[(peaks > 12) & (peaks < len(mag) - 15)]:
        above = np.flatnonzero(mag[p - 12: p + 15] > 0.25 * mag[p])
        widths.append(10 * (above[-1] - above[0] + 1))
    return float(np.median(widths))


# the class-effect tests read waveforms: one clean recording condition (no per-record noise or gain spread)
CLEAN = replace(SOURCE_SHIFT, noise_std=0.015, baseline_wander=0.05, noise_spread=0.0, gain_spread=0.0)


def _group(code: int, shift: DomainShift = CLEAN, n: int = 12, seed: int = 0) -> list[np.ndarray]:
    return [s[INDEPENDENT] for s in simulate([(code,)] * n, shift, seed=seed * 10 + code, fs=100)]


# --- round trip through the loaders -------------------------------------------------------------------------

def test_source_round_trip_ptbxl_layout(tmp_path: Path):
    summary = write_simulated_dataset(str(tmp_path), "source", 30, seed=3, hr=True)
    lr, hr = load_ptbxl(str(tmp_path)), load_ptbxl(str(tmp_path), prefer="hr")
    assert lr.x.shape == (30, 8, LENGTH) and lr.skipped == ()
    assert set(lr.meta["fs_read"].values()) == {100.0} and set(hr.meta["fs_read"].values()) == {500.0}
    # the 100 Hz files are the 500 Hz signal resampled: the two reads agree up to quantisation
    assert float((lr.x - hr.x).abs().max()) < 0.01
    counts = {c: int(lr.y[:, k].sum()) for k, c in enumerate(TARGET_CLASSES)}
    assert counts == summary["label_counts"]  # labels survive scp_codes -> statements -> 9 classes
    assert set(lr.folds) <= set(range(1, 11)) and len(set(lr.folds)) > 5  # strat_fold written
    header = (tmp_path / "records100" / "00000" / "00001_lr.hea").read_text()
    assert " AVR\n" in header  # PTB-XL's uppercase lead names, exercising case-insensitive selection
    assert json.loads((tmp_path / "simulation.json").read_text())["seed"] == 3


def test_target_round_trip_cpsc_layout(tmp_path: Path):
    summary = write_simulated_dataset(str(tmp_path), "target", 20, seed=4)
    ds = load_cpsc(str(tmp_path))
    assert ds.record_ids == tuple(f"A{i:04d}" for i in range(1, 21)) and ds.x.shape == (20, 8, LENGTH)
    assert {c: int(ds.y[:, k].sum()) for k, c in enumerate(TARGET_CLASSES)} == summary["label_counts"]
    assert b"\r\n" in (tmp_path / "REFERENCE.csv").read_bytes()  # CRLF like the real file
    mat = loadmat(str(tmp_path / "A0001.mat"))  # a genuine MATLAB v4 file holding `val`, 12 x N int16
    assert mat["val"].shape[0] == 12 and mat["val"].dtype == np.int16
    signal, names, fs = read_wfdb(str(tmp_path / "A0001"))
    assert fs == 500 and "aVR" in names and signal.shape[0] >= 5000  # variable length, >= 10 s
    derived = derive_limb_leads(select_leads(signal, names, MODEL_LEADS))
    assert np.abs(derived - select_leads(signal, names, DERIVED_LEADS)).max() < 0.003  # consistent 12 leads


def test_generation_is_seeded(tmp_path: Path):
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_simulated_dataset(str(tmp_path / name), "target", 3, seed=seed)
    assert digest(tmp_path / "a" / "A0002.mat") == digest(tmp_path / "b" / "A0002.mat")
    assert digest(tmp_path / "a" / "A0002.mat") != digest(tmp_path / "c" / "A0002.mat")
    with pytest.raises(FileExistsError):  # an existing dataset is never overwritten by accident
        write_simulated_dataset(str(tmp_path / "a"), "target", 3, seed=1)


def test_builtin_statement_list_matches_real_file(tmp_path: Path):
    assert PTBXL_STATEMENTS == read_scp_statements(str(FIXTURES / "ptbxl"))  # same 71 names, same order
    write_simulated_dataset(str(tmp_path), "source", 2, seed=0, scp_statements=str(FIXTURES / "ptbxl" / "scp_statements.csv"))
    assert (tmp_path / "scp_statements.csv").read_bytes() == (FIXTURES / "ptbxl" / "scp_statements.csv").read_bytes()


# --- class effects --------------------------------------------------------------------------------------------

def test_rhythm_effects_rr_irregularity():
    cv = {code: np.median([_rr_cv(x) for x in _group(code)]) for code in (1, 2, 6, 7)}
    assert cv[1] < 0.06  # sinus rhythm: nearly regular
    assert cv[2] > 3 * cv[1]  # AF: irregularly irregular
    assert cv[6] > 2 * cv[1] and cv[7] > 2 * cv[1]  # premature beats break the rhythm


def test_bundle_branch_blocks_widen_qrs():
    width = {code: np.median([_qrs_ms(x) for x in _group(code)]) for code in (1, 4, 5)}
    assert width[4] >= width[1] + 40 and width[5] >= width[1] + 40  # LBBB / RBBB: broad QRS


def test_morphology_effects_p_waves_pr_and_st():
    def p_energy(code: int) -> float:  # 0.25-0.1 s before R in lead II: P wave (or its absence)
        vals = []
        for x in _group(code):
            _, peaks = _peaks(x)
            vals += [np.ptp(x[1, p - 25: p - 8]) for p in peaks if p > 25]
        return float(np.median(vals))

    assert p_energy(2) < 0.6 * p_energy(1)  # AF: no P waves

    def st_level(code: int, lead: int) -> float:  # ST (R + 150 ms) minus PR segment (R - 50 ms)
        vals = []
        for x in _group(code):
            _, peaks = _peaks(x)
            vals += [x[lead, p + 15] - x[lead, p - 5] for p in peaks if 5 < p < x.shape[1] - 15]
        return float(np.median(vals))

    v2, v5 = MODEL_LEADS.index("V2"), MODEL_LEADS.index("V5")
    assert st_level(9, v2) > st_level(1, v2) + 0.1  # STE: elevation in V2
    assert st_level(8, v5) < st_level(1, v5) - 0.05  # STD: depression in V5
    pr = {code: np.median([np.argmax(x[1, p - 40: p - 6]) for x in _group(code) for p in _peaks(x)[1] if p > 40])
          for code in (1, 3)}
    assert pr[3] < pr[1] - 5  # I-AVB: the P peak sits >= 50 ms earlier before R


# --- domain shift ---------------------------------------------------------------------------------------------

def test_target_records_lie_inside_the_source_population():
    # TGDP assumes q << p. The source's per-record noise levels spread (noise_spread) and cover the target's
    # narrower range; with fixed, different levels (the old shift) a classifier separated the domains.
    hf = lambda x: float(np.median(np.abs(np.diff(x, axis=-1))))  # noqa: E731  (per-record noise level)
    src = np.log([hf(x) for x in _group(1, SOURCE_SHIFT, n=60)])
    tgt = np.log([hf(x) for x in _group(1, TARGET_SHIFT, n=60, seed=1)])
    fixed = np.log([hf(x) for x in _group(1, replace(SOURCE_SHIFT, noise_spread=0.0), n=60)])
    assert src.std() > 2 * tgt.std() and src.std() > 3 * fixed.std(), (src.std(), tgt.std(), fixed.std())
    assert src.min() < np.percentile(tgt, 5) and np.percentile(tgt, 95) < src.max(), (src, tgt)


def test_shift_changes_statistics():
    base = replace(SOURCE_SHIFT, baseline_wander=0.0)
    gains = replace(base, lead_gains=(1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    a = np.stack(_group(1, base, n=6))
    b = np.stack(_group(1, gains, n=6))
    ratio = b.std(axis=(0, 2)) / a.std(axis=(0, 2))
    assert abs(ratio[2] - 2.0) < 0.1 and np.all(np.abs(np.delete(ratio, 2) - 1.0) < 0.05)  # V1 gain only
    noisy = np.stack(_group(1, replace(base, noise_std=0.1), n=6))
    hf = lambda z: np.median(np.abs(np.diff(z, axis=-1)))  # noqa: E731  (robust to the QRS slopes)
    assert hf(noisy) > 2 * hf(a)  # more measurement noise
    wander = np.stack(_group(1, replace(base, baseline_wander=0.3), n=6))
    drift = lambda z: uniform_filter1d(z, 100, axis=-1).std()  # noqa: E731  (1 s moving average)
    assert drift(wander) > 2 * drift(a)  # baseline wander
    slow = np.median([len(_peaks(x)[1]) for x in _group(1, replace(base, heart_rate=55.0, heart_rate_std=1.0))])
    fast = np.median([len(_peaks(x)[1]) for x in _group(1, replace(base, heart_rate=110.0, heart_rate_std=1.0))])
    assert fast > 1.6 * slow  # heart rate
    rng = np.random.default_rng(0)
    for shift in (SOURCE_SHIFT, TARGET_SHIFT):  # class prevalence of the primary label
        counts = np.bincount([c[0] for c in draw_labels(3000, shift, rng)], minlength=10)[1:] / 3000
        assert np.abs(counts - np.asarray(shift.class_prevalence) / sum(shift.class_prevalence)).max() < 0.03


def test_target_default_shift_differs_from_source(tmp_path: Path):
    write_simulated_dataset(str(tmp_path / "s"), "source", 40, seed=0)
    write_simulated_dataset(str(tmp_path / "t"), "target", 40, seed=0)
    s, t = load_ptbxl(str(tmp_path / "s")), load_cpsc(str(tmp_path / "t"))
    assert s.y[:, 0].mean() > t.y[:, 0].mean()  # more Normal records in the source
    # per-record drift (1 s moving average), median over records: the source's levels spread widely
    drift = lambda d: np.median(uniform_filter1d(d.x.numpy(), 100, axis=-1).std(axis=(1, 2)))  # noqa: E731
    assert drift(t) > 1.1 * drift(s)  # stronger typical baseline wander (0.12 vs 0.08 mV) in the target


# --- CLI --------------------------------------------------------------------------------------------------------

def test_cli_subcommand_and_main(tmp_path: Path, capsys):
    # the console command (study.cli hands it to study.programs.ecg_sim) and the program's own main
    assert cli_main(["make-ecg-sim", str(tmp_path / "src"), "--domain", "source", "--records", "5", "--seed", "2"]) == 0
    assert len(load_ptbxl(str(tmp_path / "src"))) == 5
    assert main([str(tmp_path / "tgt"), "--domain", "target", "--records", "4", "--seed", "1",
                 "--shift", json.dumps({"noise_std": 0.0, "lead_gains": [1.0] * 8})]) == 0
    saved = json.loads((tmp_path / "tgt" / "simulation.json").read_text())
    assert saved["shift"]["noise_std"] == 0.0 and saved["records"] == 4
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["domain"] == "target"
    with pytest.raises(SystemExit, match="unknown field"):
        main([str(tmp_path / "x"), "--domain", "target", "--records", "1", "--shift", '{"noize": 1}'])


def test_short_records_are_padded_with_lengths_or_rejected(tmp_path: Path):
    short = replace(TARGET_SHIFT, min_seconds=6.0, max_seconds=8.0)
    write_simulated_dataset(str(tmp_path), "target", 3, seed=5, shift=short)
    ds = load_cpsc(str(tmp_path))
    assert ds.x.shape == (3, 8, LENGTH) and all(600 <= n <= 800 for n in ds.lengths.tolist())  # zero-padded
    assert float(ds.x[~ds.mask[:, None, :].expand_as(ds.x)].abs().max()) == 0.0  # padding is exactly zero
    with pytest.raises(ValueError, match="A0001: too short"):  # below the caller's minimum: rejected ...
        load_cpsc(str(tmp_path), min_length=900)
    skipped = load_cpsc(str(tmp_path), min_length=900, skip_bad=True).skipped  # ... or listed when asked
    assert [r for r, _ in skipped] == ["A0001", "A0002", "A0003"]
