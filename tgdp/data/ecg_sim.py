"""A label-conditioned synthetic 12-lead ECG generator written in the PTB-XL and CPSC2018 layouts.

Why: the real ECG sets are large and licensed; a simulator with known class effects and a controllable
source -> target shift lets the whole pipeline (loaders, stages, utility evaluation) run and be tested
anywhere, and makes "did transfer help" checkable against a ground truth.

Model. A beat is a sum of Gaussian bumps in time (P, septal q, R, S, ST, T), each with a 3-D cardiac
dipole; lead l sees the projection of the dipole on its lead vector (``LEAD_VECTORS``, for I, II,
V1-V6). III, aVR, aVL, aVF are derived from I and II, so the 12 leads are consistent. Per record the
dipoles are rotated and scaled a little (anatomy); per domain ``DomainShift`` sets lead gains, noise,
baseline wander (each with a per-record spread), heart rate and class prevalence. Class effects (CPSC codes 1-9):

    AF      no P waves, 4-8 Hz fibrillatory waves, irregular RR (log-normal, CV ~ 0.2), faster rate
    I-AVB   PR interval 0.28 s instead of 0.16 s
    LBBB    wide (~160 ms) notched leftward-posterior QRS: broad R in I/V5/V6, deep QS in V1/V2, discordant T
    RBBB    normal start plus a late rightward-anterior wave: R' in V1, broad S in I/V6 (~130 ms)
    PAC     premature beats (coupling 0.65 RR) with an ectopic, inverted P; non-compensatory pause
    PVC     premature wide bizarre beats without P (coupling 0.6 RR) and discordant T; compensatory pause
    STD     ST depression in I, II, V4-V6;  STE: ST elevation in V1-V4

Layouts. ``domain="source"`` writes PTB-XL: ``ptbxl_database.csv`` (scp_codes with the statement of each
class, ``strat_fold`` 1-10 stratified), ``scp_statements.csv`` (the 71 statements in PTB-XL order, or a
copy of a real file given as ``scp_statements=``), ``records100/`` (and ``records500/`` with ``hr=True``),
leads AVR/AVL/AVF uppercase as in PTB-XL. ``domain="target"`` writes CPSC2018 in the CinC 2020 WFDB form:
``A0001.hea`` + ``A0001.mat`` (MATLAB v4 ``val``, format ``16+24``), ``REFERENCE.csv`` with CRLF, 500 Hz,
variable length. ``simulation.json`` records seed, domain and shift. The loaders in ``tgdp.data.ptbxl`` /
``tgdp.data.cpsc`` read both.

The command line ``tgdp-study make-ecg-sim OUT --domain source|target --records N --seed S`` is
``study.programs.ecg_sim``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from tgdp.data.ecg import PTBXL_STATEMENT_OF_CLASS, TARGET_CLASSES, TWELVE_LEADS, to_twelve_leads

SIM_FS = 500  # Hz, generation rate (CPSC files and PTB-XL records500); records100 are resampled from it
# Lead vectors (x left, y inferior, z anterior) of I, II, V1-V6; chest leads sit closer to the heart.
LEAD_VECTORS = np.array([[1.0, 0.0, 0.0], [0.5, 0.866, 0.0], [-0.75, 0.15, 1.3], [-0.15, 0.15, 1.5],
                         [0.45, 0.2, 1.4], [0.9, 0.3, 1.1], [1.25, 0.2, 0.65], [1.4, 0.15, 0.2]])
PTBXL_STATEMENTS: tuple[str, ...] = (  # the 71 PTB-XL SCP statements, in scp_statements.csv row order
    "NDT", "NST_", "DIG", "LNGQT", "NORM", "IMI", "ASMI", "LVH", "LAFB", "ISC_", "IRBBB", "1AVB", "IVCD",
    "ISCAL", "CRBBB", "CLBBB", "ILMI", "LAO/LAE", "AMI", "ALMI", "ISCIN", "INJAS", "LMI", "ISCIL", "LPFB",
    "ISCAS", "INJAL", "ISCLA", "RVH", "ANEUR", "RAO/RAE", "EL", "WPW", "ILBBB", "IPLMI", "ISCAN", "IPMI",
    "SEHYP", "INJIN", "INJLA", "PMI", "3AVB", "INJIL", "2AVB", "ABQRS", "PVC", "STD_", "VCLVH", "QWAVE",
    "LOWT", "NT_", "PAC", "LPR", "INVT", "LVOLT", "HVOLT", "TAB_", "STE_", "PRC(S)", "SR", "AFIB", "STACH",
    "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT", "TRIGU")
_WINDOW = (-0.40, 0.65)  # s around the R peak covered by a beat template
_CONFLICTS = {2: {3, 6}, 3: {2}, 4: {5}, 5: {4}, 6: {2}, 8: {9}, 9: {8}}  # codes that cannot co-occur


@dataclass(frozen=True)
class DomainShift:
    """What makes one simulated domain differ from another (the source -> target shift)."""

    lead_gains: tuple[float, ...] = (1.0,) * 8  # gain per independent lead I, II, V1-V6 (electrodes, device)
    noise_std: float = 0.015  # mV, white measurement noise per lead
    baseline_wander: float = 0.05  # mV, amplitude of the 0.05-0.5 Hz baseline drift per lead
    heart_rate: float = 70.0  # bpm, mean sinus rate
    heart_rate_std: float = 8.0  # bpm, between-record spread of the rate
    amplitude_scale: float = 1.0  # multiplies every dipole (body habitus, amplifier)
    class_prevalence: tuple[float, ...] = (0.40, 0.08, 0.06, 0.05, 0.08, 0.06, 0.07, 0.10, 0.10)  # primary label weights, codes 1-9
    multi_label_prob: float = 0.05  # chance of a second, compatible label
    min_seconds: float = 10.0  # shortest record
    max_seconds: float = 10.0  # longest record (lengths uniform in between)
    noise_spread: float = 0.0  # log-sd of a per-record factor on noise_std and baseline_wander (recording conditions)
    gain_spread: float = 0.0  # log-sd of per-record, per-lead factors on lead_gains (electrode placement)

    def __post_init__(self) -> None:
        if len(self.lead_gains) != 8 or len(self.class_prevalence) != 9 or min(self.class_prevalence) < 0:
            raise ValueError("lead_gains needs 8 values and class_prevalence 9 non-negative weights")
        if not 0 < self.min_seconds <= self.max_seconds or self.heart_rate <= 20:
            raise ValueError("need 0 < min_seconds <= max_seconds and heart_rate > 20 bpm")
        if self.noise_spread < 0 or self.gain_spread < 0:
            raise ValueError("noise_spread and gain_spread must be >= 0")


# The source is a broad population (many sites and devices: per-record noise, wander and electrode gains
# vary); the target is one hospital's narrower population inside it, with its own device gains, rates and
# class mix. Its records are therefore re-weighted source records, the setting TGDP assumes (q << p): with
# fixed, different noise levels the two domains were separable and the density ratio degenerate.
SIM_VERSION = 2  # bump when the simulator's output changes: cached simulated sets are keyed by it
SOURCE_SHIFT = DomainShift(noise_std=0.025, baseline_wander=0.08, heart_rate_std=12.0, noise_spread=0.6,
                           gain_spread=0.15)
TARGET_SHIFT = DomainShift(  # CPSC-like: another device and population, longer noisier records
    lead_gains=(1.15, 0.9, 1.25, 1.1, 0.95, 0.9, 0.85, 0.9), noise_std=0.04, baseline_wander=0.12,
    heart_rate=78.0, heart_rate_std=10.0, amplitude_scale=0.9,
    class_prevalence=(0.13, 0.16, 0.10, 0.03, 0.25, 0.08, 0.10, 0.12, 0.03), min_seconds=10.0, max_seconds=15.0,
    noise_spread=0.2, gain_spread=0.05)


# --- generation -----------------------------------------------------------------------------------------

def draw_labels(records: int, shift: DomainShift, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """CPSC codes (1-9) per record: a primary label by prevalence, maybe one compatible second label."""
    p = np.asarray(shift.class_prevalence, dtype=np.float64)
    primary = rng.choice(9, size=records, p=p / p.sum()) + 1
    out = []
    for code in primary.tolist():
        labels = (code,)
        if code != 1 and rng.uniform() < shift.multi_label_prob:
            options = [c for c in range(2, 10) if c != code and c not in _CONFLICTS.get(code, set())]
            labels = (code, int(rng.choice(options)))
        out.append(labels)
    return out


def _rotation(rng: np.random.Generator, scale: float = 0.15) -> np.ndarray:
    """A small random 3-D rotation (Rodrigues), the per-record heart axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = rng.normal(0, scale)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _components(labels: set[int], rr: float, rng: np.random.Generator) -> list[list[tuple[float, float, np.ndarray]]]:
    """(centre s, width s, dipole mV) bumps of the normal, PAC and PVC beat of one record."""
    pr = rng.normal(0.28, 0.02) if 3 in labels else rng.normal(0.16, 0.015)
    t_at = 0.30 * np.sqrt(rr) + rng.normal(0, 0.01)  # T peak follows the rate (Bazett-like)
    v = lambda *x: np.array(x, dtype=np.float64)  # noqa: E731
    p_wave = [] if 2 in labels else [(-pr, 0.022, 0.15 * v(0.5, 0.85, 0.2))]
    if 4 in labels:  # LBBB: broad notched leftward-posterior depolarisation, discordant repolarisation
        qrs = [(-0.02, 0.02, v(0.8, 0.2, -0.55)), (0.035, 0.022, v(0.85, 0.25, -0.45))]
        t_wave = [(t_at + 0.02, 0.05, -0.3 * v(0.8, 0.2, -0.55))]
    else:
        qrs = [(-0.022, 0.008, 0.25 * v(-0.7, 0.0, 0.7)), (0.0, 0.010, 1.3 * v(0.75, 0.55, -0.35)),
               (0.025, 0.010, 0.3 * v(-0.3, -0.6, 0.2))]
        t_wave = [(t_at, 0.045, 0.35 * v(0.6, 0.65, 0.3))]
        if 5 in labels:  # RBBB: late rightward-anterior wave (R' in V1, broad S in I/V6), T inverted in V1
            qrs.append((0.065, 0.022, 0.7 * v(-0.7, -0.1, 0.7)))
            t_wave = [(t_at + 0.02, 0.045, 0.3 * v(0.7, 0.6, -0.3))]
    st = []
    if 8 in labels:
        st = [(0.15, 0.05, -0.15 * v(0.7, 0.6, 0.2))]
    if 9 in labels:
        st = [(0.15, 0.05, 0.2 * v(0.1, 0.3, 0.95))]
    normal = p_wave + qrs + st + t_wave
    pac = [(-0.14, 0.02, 0.12 * v(-0.3, -0.7, 0.3))] + qrs + st + t_wave
    direction = _rotation(rng, 0.4) @ v(-0.5, 0.7, 0.5)
    pvc = [(0.0, 0.03, 1.6 * direction), (0.05, 0.03, 0.5 * direction), (0.32, 0.06, -0.5 * direction)]
    return [normal, pac, pvc]


def _beats(labels: set[int], seconds: float, rr: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(R time s, beat type 0 normal / 1 PAC / 2 PVC) covering the record; PAC/PVC records get at least one
    ectopic beat among beats 1-4 (inside the first 10 s) and more with probability 0.15 per beat."""
    if 2 in labels:
        rr *= 0.8  # AF conducts faster
    count = int((seconds + 0.5) / 0.25) + 2
    kinds = np.zeros(count, dtype=np.int64)
    ectopic = [kind for kind, code in ((1, 6), (2, 7)) if code in labels]
    if ectopic:
        kinds[1:] = np.where(rng.uniform(size=count - 1) < 0.15, rng.choice(ectopic, size=count - 1), 0)
        kinds[int(rng.integers(1, 5))] = rng.choice(ectopic)
        kinds[1:][kinds[:-1] != 0] = 0  # no two ectopic beats in a row
    t, beats = rng.uniform(0.1, rr), []
    for i in range(count - 1):
        if t >= seconds + 0.5:
            break
        beats.append((t, int(kinds[i])))
        step = rr * (rng.lognormal(0.0, 0.22) if 2 in labels else 1.0 + rng.normal(0, 0.03))
        if kinds[i + 1] == 1:
            step = 0.65 * rr  # PAC: premature; the sinus node then resets (non-compensatory pause)
        elif kinds[i + 1] == 2:
            step = 0.6 * rr  # PVC: premature ...
        elif kinds[i] == 2:
            step = 1.4 * rr  # ... then a compensatory pause (0.6 + 1.4 = 2 RR)
        t += max(step, 0.25)
    return beats


def _wander(time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(8, L) baseline drift of unit scale: two 0.05-0.5 Hz sines per lead, evaluated at 10 Hz and
    interpolated (the sines are far below 5 Hz, and sin() at 500 Hz dominated the generation time)."""
    coarse = np.arange(0.0, time[-1] + 0.2, 0.1)
    freq = rng.uniform(0.05, 0.5, size=(8, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(8, 2, 1))
    slow = 0.5 * np.sin(2 * np.pi * freq * coarse + phase).sum(1)
    return np.stack([np.interp(time, coarse, lead) for lead in slow])


def simulate(labels: Sequence[tuple[int, ...]], shift: DomainShift, seed: int, *, fs: int = SIM_FS) -> list[np.ndarray]:
    """One (12, L) float64 mV signal at ``fs`` Hz per label tuple, leads in TWELVE_LEADS order.

    The bumps are sampled directly at ``fs`` (no resampling step), so 100 Hz generation is 5x cheaper.
    """
    rng = np.random.default_rng(seed)
    w0, w1 = int(round(_WINDOW[0] * fs)), int(round(_WINDOW[1] * fs))
    tgrid = np.arange(w0, w1) / fs
    gains = np.asarray(shift.lead_gains)[:, None]
    out = []
    for codes in labels:
        code_set = set(codes)
        seconds = float(rng.uniform(shift.min_seconds, shift.max_seconds))
        n = int(round(seconds * fs))
        rate = max(rng.normal(shift.heart_rate, shift.heart_rate_std), 35.0)
        rr = 60.0 / rate
        rot = _rotation(rng) * rng.lognormal(0.0, 0.15) * shift.amplitude_scale
        templates = []
        for comps in _components(code_set, rr, rng):  # (3 beat types) x (8, W)
            centre = np.array([c[0] for c in comps])[:, None]
            width = np.array([c[1] for c in comps])[:, None]
            amps = np.stack([c[2] for c in comps]) @ rot.T @ LEAD_VECTORS.T  # (K, 8)
            templates.append(amps.T @ np.exp(-0.5 * ((tgrid[None, :] - centre) / width) ** 2))
        x = np.zeros((8, n + w1 - w0))
        for t, kind in _beats(code_set, seconds, rr, rng):
            start = int(round(t * fs))
            if start < n:
                x[:, start: start + w1 - w0] += templates[kind]
        x = x[:, -w0: -w0 + n]
        time = np.arange(n) / fs
        if 2 in code_set:  # fibrillatory waves, mostly in V1 and II
            f = rng.uniform(4, 8)
            fib = 0.05 * np.sin(2 * np.pi * f * time + rng.uniform(0, 6.3)) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * time))
            x += (LEAD_VECTORS @ np.array([0.2, 0.5, 0.8]))[:, None] * fib[None, :] * 0.5
        record_gains = gains * rng.lognormal(0.0, shift.gain_spread, size=gains.shape) if shift.gain_spread else gains
        level = rng.lognormal(0.0, shift.noise_spread) if shift.noise_spread else 1.0
        x = record_gains * x + level * shift.baseline_wander * _wander(time, rng)
        x += level * shift.noise_std * rng.standard_normal(size=x.shape, dtype=np.float32)
        out.append(to_twelve_leads(x))
    return out


# --- writing --------------------------------------------------------------------------------------------

def _digital(x: np.ndarray) -> np.ndarray:
    """(12, L) mV -> (L, 12) int16 at 1 uV per LSB (1000/mV), the gain of PTB-XL and CPSC; -32768 is left out
    (WFDB's invalid-sample marker)."""
    return np.clip(np.round(x.T * 1000.0), -32767, 32767).astype("<i2")


def _write_wfdb(base: str, digital: np.ndarray, fs: int, lead_names: Sequence[str], *, mat: bool,
                comments: Sequence[str] = ()) -> None:
    """WFDB header + signal: ``.dat`` (format 16) or a MATLAB v4 ``.mat`` holding ``val`` (format 16+24)."""
    name = os.path.basename(base)
    payload = np.ascontiguousarray(digital).tobytes()  # sample-interleaved == column-major 12xN
    if mat:  # MAT v4 header: type 30 (little-endian int16 full matrix), rows, cols, imag flag, name length
        header = struct.pack("<5i", 30, digital.shape[1], digital.shape[0], 0, 4) + b"val\x00"
        with open(base + ".mat", "wb") as f:
            f.write(header + payload)
        file_name, fmt = name + ".mat", "16+24"
    else:
        with open(base + ".dat", "wb") as f:
            f.write(payload)
        file_name, fmt = name + ".dat", "16"
    checks = (digital.astype(np.int64).sum(axis=0) + 32768) % 65536 - 32768
    lines = [f"{name} {digital.shape[1]} {fs} {digital.shape[0]}"]
    for k, lead in enumerate(lead_names):
        lines.append(f"{file_name} {fmt} 1000/mV 16 0 {int(digital[0, k])} {int(checks[k])} 0 {lead}")
    lines += [f"#{c}" for c in comments]
    with open(base + ".hea", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _scp_codes(codes: tuple[int, ...]) -> str:
    """CPSC codes -> PTB-XL scp_codes dict string (rhythm statements carry likelihood 0, as in PTB-XL)."""
    out: dict[str, float] = {}
    for c in codes:
        statement = PTBXL_STATEMENT_OF_CLASS[TARGET_CLASSES[c - 1]]
        out[statement] = 0.0 if statement == "AFIB" else 100.0
    if 2 not in codes:
        out["SR"] = 0.0
    return repr(out)


def _folds(labels: Sequence[tuple[int, ...]], rng: np.random.Generator) -> np.ndarray:
    """strat_fold 1-10, round-robin within each primary label (stratified like PTB-XL's folds)."""
    folds = np.zeros(len(labels), dtype=np.int64)
    primary = np.array([c[0] for c in labels])
    for code in np.unique(primary):
        idx = rng.permutation(np.flatnonzero(primary == code))
        folds[idx] = (np.arange(len(idx)) + rng.integers(10)) % 10 + 1
    return folds


def write_simulated_dataset(out_dir: str, domain: str, records: int, seed: int, shift: DomainShift | None = None,
                            *, hr: bool = False, scp_statements: str | None = None,
                            overwrite: bool = False) -> dict[str, Any]:
    """Simulate ``records`` ECGs and write them in the PTB-XL (source) or CPSC2018 (target) layout.

    ``shift`` defaults to SOURCE_SHIFT / TARGET_SHIFT. Source records are 10 s (the shift's durations
    are ignored) and written at 100 Hz, plus 500 Hz with ``hr``. Refuses an existing dataset in out_dir
    unless ``overwrite``. Returns the summary also saved as ``simulation.json``.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    if records < 1:
        raise ValueError(f"records must be >= 1, got {records}")
    shift = shift or (SOURCE_SHIFT if domain == "source" else TARGET_SHIFT)
    if domain == "source":
        shift = replace(shift, min_seconds=10.0, max_seconds=10.0)
    index = os.path.join(out_dir, "ptbxl_database.csv" if domain == "source" else "REFERENCE.csv")
    if os.path.exists(index) and not overwrite:
        raise FileExistsError(f"{index} exists; pass overwrite=True to replace the dataset")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    labels = draw_labels(records, shift, rng)
    if domain == "source":  # 100 Hz directly unless the 500 Hz files are wanted too
        signals = simulate(labels, shift, seed, fs=SIM_FS if hr else 100)
        _write_ptbxl(out_dir, labels, signals, rng, hr=hr, scp_statements=scp_statements)
    else:
        _write_cpsc(out_dir, labels, simulate(labels, shift, seed), rng)
    summary = {"domain": domain, "records": records, "seed": seed, "version": SIM_VERSION, "shift": asdict(shift),
               "hr": hr, "label_counts": {c: sum(k + 1 in l for l in labels) for k, c in enumerate(TARGET_CLASSES)}}
    with open(os.path.join(out_dir, "simulation.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def _write_ptbxl(out_dir: str, labels, signals, rng, *, hr: bool, scp_statements: str | None) -> None:
    names = [n.upper() if n.startswith("aV") else n for n in TWELVE_LEADS]  # PTB-XL writes AVR/AVL/AVF
    rows = []
    for i, (codes, x) in enumerate(zip(labels, signals), start=1):
        folder = f"{(i // 1000) * 1000:05d}"
        lr, hr_name = f"records100/{folder}/{i:05d}_lr", f"records500/{folder}/{i:05d}_hr"
        os.makedirs(os.path.join(out_dir, os.path.dirname(lr)), exist_ok=True)
        _write_wfdb(os.path.join(out_dir, lr), _digital(resample_poly(x, 1, 5, axis=-1) if hr else x), 100, names,
                    mat=False)
        if hr:
            os.makedirs(os.path.join(out_dir, os.path.dirname(hr_name)), exist_ok=True)
            _write_wfdb(os.path.join(out_dir, hr_name), _digital(x), SIM_FS, names, mat=False)
        rows.append({"ecg_id": i, "patient_id": float(i), "age": float(rng.integers(18, 90)),
                     "sex": int(rng.integers(2)), "device": "SIM", "report": "simulated",
                     "scp_codes": _scp_codes(codes), "filename_lr": lr, "filename_hr": hr_name})
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("filename_lr"), "strat_fold", _folds(labels, rng))
    table.to_csv(os.path.join(out_dir, "ptbxl_database.csv"), index=False, encoding="utf-8")
    if scp_statements:
        with open(scp_statements, "rb") as src, open(os.path.join(out_dir, "scp_statements.csv"), "wb") as dst:
            dst.write(src.read())
    else:
        pd.DataFrame({"description": [""] * len(PTBXL_STATEMENTS)}, index=pd.Index(PTBXL_STATEMENTS)).to_csv(
            os.path.join(out_dir, "scp_statements.csv"), encoding="utf-8")


def _write_cpsc(out_dir: str, labels, signals, rng) -> None:
    lines = ["Recording,First_label,Second_label,Third_label"]
    for i, (codes, x) in enumerate(zip(labels, signals), start=1):
        name = f"A{i:04d}"
        dx = ",".join(TARGET_CLASSES[c - 1] for c in codes)
        comments = [f"Age: {int(rng.integers(18, 90))}", f"Sex: {'Male' if rng.integers(2) else 'Female'}",
                    f"Dx: {dx}", "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"]
        _write_wfdb(os.path.join(out_dir, name), _digital(x), SIM_FS, TWELVE_LEADS, mat=True, comments=comments)
        lines.append(",".join([name] + [str(c) for c in codes] + [""] * (3 - len(codes))))
    with open(os.path.join(out_dir, "REFERENCE.csv"), "wb") as f:
        f.write(("\r\n".join(lines) + "\r\n").encode("utf-8"))
