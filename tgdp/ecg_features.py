"""A cheap distribution metric for ECG records: distances in a fixed, versioned hand-crafted embedding.

Embedding ``EMBEDDING_VERSION`` = "ecgfeat-v1" of one record x (C, L) sampled at ``fs`` Hz (100 Hz here),
D = 10 C + 4 features:

* per lead (C leads, in input order), 10 features:
    - 5 log band powers log(1e-8 + mean |X(f)|^2) of the Hann-windowed periodogram (linear trend
      removed) in the bands [0.5, 3), [3, 8), [8, 15), [15, 25), [25, 40) Hz - baseline/T-wave,
      P/T and QRS energy, QRS detail, high-frequency content;
    - 5 amplitude statistics: mean, standard deviation, 1st and 99th percentile, mean |first difference|
      (slope energy, in units per sample);
* rhythm, from lead ``rr_lead`` (default 1 = lead II in the model order I, II, V1-V6), 4 features:
  mean heart rate (bpm), SDNN and RMSSD of the RR intervals (s), and a validity flag. R peaks are
  found Pan-Tompkins-style: squared first difference, 0.12 s moving average, peaks at least 0.3 s
  apart (max 200 bpm) and above 30% of the record's 99th percentile of that envelope. Records with
  fewer than 3 peaks get (0, 0, 0) and flag 0.

The embedding has no trained parts, so values are comparable across runs and studies as long as the
version string matches; any change to the features must bump it.

Distances (``embedding_distances``) standardise both sets with the mean/std of the *reference* (real)
set's features (so values compare across generators scored against the same real set), then report the energy distance (Euclidean, V-statistic, ``tgdp.metrics``) and the
Frechet distance between Gaussian fits (ridge 1e-6 on the covariances, so tiny sets stay defined).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from scipy.signal import find_peaks

from tgdp.metrics import energy_distance

EMBEDDING_VERSION = "ecgfeat-v1"
BANDS_HZ: tuple[tuple[float, float], ...] = ((0.5, 3.0), (3.0, 8.0), (8.0, 15.0), (15.0, 25.0), (25.0, 40.0))


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"expected records of shape (N, leads, L), got {arr.shape}")
    return arr.astype(np.float64)


def _band_powers(x: np.ndarray, fs: float) -> np.ndarray:
    """(N, C, L) -> (N, C, len(BANDS_HZ)) log band powers."""
    L = x.shape[-1]
    t = np.arange(L) - (L - 1) / 2
    # Remove each lead's linear trend so baseline offset/drift does not leak into every band.
    slope = (x * t).sum(-1, keepdims=True) / max((t**2).sum(), 1e-12)
    detrended = x - x.mean(-1, keepdims=True) - slope * t
    power = np.abs(np.fft.rfft(detrended * np.hanning(L), axis=-1)) ** 2 / L
    freqs = np.fft.rfftfreq(L, d=1.0 / fs)
    out = []
    for lo, hi in BANDS_HZ:
        sel = (freqs >= lo) & (freqs < hi)
        out.append(np.log(1e-8 + (power[..., sel].mean(-1) if sel.any() else np.zeros(power.shape[:-1]))))
    return np.stack(out, axis=-1)


def _amplitude_stats(x: np.ndarray) -> np.ndarray:
    """(N, C, L) -> (N, C, 5): mean, std, p1, p99, mean |diff|."""
    p1, p99 = np.percentile(x, [1, 99], axis=-1)
    slope = np.abs(np.diff(x, axis=-1)).mean(-1) if x.shape[-1] > 1 else np.zeros(x.shape[:-1])
    return np.stack([x.mean(-1), x.std(-1), p1, p99, slope], axis=-1)


def rr_features(lead: np.ndarray, fs: float = 100.0) -> np.ndarray:
    """(L,) one lead -> (4,): mean HR (bpm), SDNN (s), RMSSD (s), valid flag; see the module doc."""
    if lead.shape[0] < 3:
        return np.zeros(4)
    env = np.diff(lead) ** 2
    win = max(1, int(round(0.12 * fs)))
    env = np.convolve(env, np.ones(win) / win, mode="same")
    height = 0.3 * np.percentile(env, 99)
    if not np.isfinite(height) or height <= 0:
        return np.zeros(4)
    peaks, _ = find_peaks(env, height=height, distance=max(1, int(round(0.3 * fs))))
    if peaks.size < 3:
        return np.zeros(4)
    rr = np.diff(peaks) / fs
    return np.array([60.0 / rr.mean(), rr.std(), np.sqrt(np.mean(np.diff(rr) ** 2)), 1.0])


def ecg_features(x: np.ndarray | torch.Tensor, fs: float = 100.0, rr_lead: int = 1) -> np.ndarray:
    """The "ecgfeat-v1" embedding: x (N, C, L) -> (N, 10 C + 4) float64; see the module doc."""
    arr = _as_numpy(x)
    per_lead = np.concatenate([_band_powers(arr, fs), _amplitude_stats(arr)], axis=-1)  # (N, C, 10)
    rhythm = np.stack([rr_features(rec[min(rr_lead, arr.shape[1] - 1)], fs) for rec in arr]) if len(arr) \
        else np.zeros((0, 4))
    return np.concatenate([per_lead.reshape(arr.shape[0], -1), rhythm], axis=1)


def frechet_distance(a: np.ndarray, b: np.ndarray, ridge: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) of Gaussian fits to a (N, D), b (M, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    eye = ridge * np.eye(a.shape[1])
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + eye if len(a) > 1 else eye
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + eye if len(b) > 1 else eye
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)  # sqrtm of a product of SPD matrices: imaginary parts are round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean))


def embedding_distances(generated: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor,
                        fs: float = 100.0, rr_lead: int = 1) -> dict[str, float]:
    """Energy and Frechet distances between generated (N, C, L) and real (M, C, L) records in "ecgfeat-v1".

    Features are standardised with the real set's mean and std, so each feature counts in units of its
    spread among real records (a feature constant among real records uses its pooled spread, or 1). Returns {"feat_energy", "feat_frechet"}; log
    ``EMBEDDING_VERSION`` next to them.
    """
    fg, fr = ecg_features(generated, fs, rr_lead), ecg_features(real, fs, rr_lead)
    if fg.shape[1] != fr.shape[1]:
        raise ValueError(f"generated and real records differ in number of leads: {fg.shape} vs {fr.shape}")
    mean, std = fr.mean(0), fr.std(0)
    # A feature constant among real records (e.g. the rhythm flag) would blow up by 1/std: fall back to
    # its spread in the pooled sets there, and to 1 if it is constant everywhere.
    pooled = np.concatenate([fg, fr]).std(0)
    std = np.where(std > 1e-6, std, np.where(pooled > 1e-6, pooled, 1.0))
    zg, zr = (fg - mean) / std, (fr - mean) / std
    return {"feat_energy": energy_distance(torch.from_numpy(zg), torch.from_numpy(zr)),
            "feat_frechet": frechet_distance(zg, zr)}
