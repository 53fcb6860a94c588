"""ECG utility evaluation (challenge metrics, thresholds, bootstrap, the ResNet run) and the feature metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tgdp.ecg_eval import (ResNet1d, UtilityConfig, challenge_scores, evaluable_classes, evaluate_predictions,
                           macro_auroc, select_thresholds, utility_eval)
from tgdp.ecg_features import EMBEDDING_VERSION, ecg_features, embedding_distances, frechet_distance, rr_features


# --- challenge metrics -----------------------------------------------------------------------------------

def test_f_beta_g_beta_on_a_known_confusion():
    # Class 0: TP=3, FP=1, FN=2 -> F2 = 5*3 / (5*3 + 4*2 + 1) = 15/24, G2 = 3 / (3 + 1 + 2*2) = 3/8.
    # Class 1: perfect -> 1, 1. Class 2: never positive, never predicted -> 0, 0 (undefined -> 0).
    y_true = np.zeros((10, 3), bool)
    y_pred = np.zeros((10, 3), bool)
    y_true[:5, 0] = True
    y_pred[:3, 0] = True
    y_pred[9, 0] = True
    y_true[5:8, 1] = y_pred[5:8, 1] = True
    f, g = challenge_scores(y_true, y_pred, beta=2.0)
    np.testing.assert_allclose(f, [15 / 24, 1.0, 0.0])
    np.testing.assert_allclose(g, [3 / 8, 1.0, 0.0])
    # beta = 1 reduces F to the usual F1 = 2TP / (2TP + FN + FP) = 6/9.
    assert challenge_scores(y_true, y_pred, beta=1.0)[0][0] == pytest.approx(6 / 9)


def test_auroc_is_one_on_separable_scores_and_skips_unevaluable_classes():
    y = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]], bool)  # class 2 has no negative
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.5], [0.2, 0.3, 0.5], [0.1, 0.6, 0.5]])
    assert list(evaluable_classes(y)) == [True, True, False]
    assert macro_auroc(y, scores) == pytest.approx(1.0)
    assert macro_auroc(y, 1.0 - scores) == pytest.approx(0.0)  # orientation: higher score = positive
    assert np.isnan(macro_auroc(np.ones((3, 2), bool), np.random.rand(3, 2)))  # nothing evaluable


def test_thresholds_maximise_training_f_beta():
    # Positives score 0.6-0.9, negatives 0.1-0.5 except one at 0.7: with beta = 2 recall counts more,
    # so the best cut keeps all positives (threshold 0.6) and accepts the one false positive.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.3, 0.1])[:, None]
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)[:, None]
    thr = select_thresholds(y, scores, beta=2.0)
    assert thr[0] == pytest.approx(0.6)
    f, _ = challenge_scores(y, scores >= thr, beta=2.0)
    # No other cut does better (brute force over all observed scores).
    best = max(challenge_scores(y, scores >= s, beta=2.0)[0][0] for s in scores[:, 0])
    assert f[0] == pytest.approx(best)
    # Ties: a cut never splits records with equal scores; a class without positives gets 0.5.
    tied = select_thresholds(np.array([[1], [0], [0]], bool), np.array([[0.5], [0.5], [0.1]]))
    assert tied[0] == pytest.approx(0.5)
    assert select_thresholds(np.zeros((4, 1), bool), np.random.rand(4, 1))[0] == 0.5


def test_bootstrap_interval_contains_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.random((200, 3)) < 0.3
    scores = np.clip(y + rng.normal(0, 0.6, y.shape), 0, 1)
    out = evaluate_predictions(y, scores, np.full(3, 0.5), bootstrap_reps=100, seed=1)
    for key in ("auroc", "f_beta2", "g_beta2"):
        assert out[f"{key}_lo"] <= out[key] <= out[f"{key}_hi"], key
        assert out[f"{key}_lo"] < out[f"{key}_hi"]  # a real spread, not a degenerate interval
    assert out["num_classes"] == 3
    again = evaluate_predictions(y, scores, np.full(3, 0.5), bootstrap_reps=100, seed=1)
    assert again == out  # same seed, same intervals
    assert "auroc_lo" not in evaluate_predictions(y, scores, np.full(3, 0.5), bootstrap_reps=0)


# --- the classifier and the full evaluation -------------------------------------------------------------

def test_resnet_shapes_any_length():
    net = ResNet1d(12, 9, width=8, stages=3)
    for L in (1, 37, 100):
        assert net(torch.randn(2, 12, L)).shape == (2, 9)


def _sinusoid_task(n: int, seed: int, length: int = 64):
    """Class 0 = sign of a half-period sine bump's amplitude; class 1 = a fast sinusoid is present.

    (A half period, not full periods: -sin over whole periods is a time shift of +sin, which a
    translation-invariant pooled CNN could only tell apart through edge effects.)"""
    rng = np.random.default_rng(seed)
    amp = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)
    fast = rng.random(n) < 0.5
    t = np.arange(length)
    x = (amp[:, None, None] * np.sin(np.pi * t / length)
         + fast[:, None, None] * 0.8 * np.sin(2 * np.pi * t / 4 + rng.uniform(0, 6, (n, 1, 1)))
         + 0.2 * rng.normal(size=(n, 8, length)))
    return x.astype(np.float32), np.stack([amp > 0, fast], 1).astype(np.float32)


@pytest.fixture
def one_thread():
    # Tiny convolutions run faster on one thread, and far faster when the shared cores are busy.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_utility_eval_learns_a_separable_task(one_thread):
    x_tr, y_tr = _sinusoid_task(64, 0)
    x_te, y_te = _sinusoid_task(64, 1)
    cfg = UtilityConfig(epochs=12, batch_size=16, lr=3e-3, width=8, stages=2, bootstrap_reps=30,
                        twelve_leads=True)
    out = utility_eval(torch.from_numpy(x_tr), y_tr, x_te, torch.from_numpy(y_te), cfg, "cpu")
    assert out["auroc"] > 0.9  # the classifier learns what is learnable
    assert out["f_beta2"] > 0.6 and 0 < out["g_beta2"] <= out["f_beta2"] + 1e-9  # G_beta <= F_beta always
    assert out["auroc_lo"] <= out["auroc"] <= out["auroc_hi"]
    assert out["n_train"] == 64 and out["n_test"] == 64 and out["num_classes"] == 2


def test_utility_eval_rejects_mismatched_inputs():
    x, y = _sinusoid_task(8, 0, length=16)
    with pytest.raises(ValueError, match="classes or leads"):
        utility_eval(x, y, x[:, :4], y, UtilityConfig(epochs=1), "cpu")
    with pytest.raises(ValueError, match="8 model leads"):
        utility_eval(x[:, :4], y, x[:, :4], y, UtilityConfig(epochs=1, twelve_leads=True), "cpu")


# --- the feature-embedding distance ---------------------------------------------------------------------

def _beats(n: int, bpm: float, seed: int, length: int = 1000, fs: float = 100.0) -> np.ndarray:
    """Gaussian 'R waves' at bpm (+- 3) on 8 leads with small noise: a crude rhythm strip."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    out = np.zeros((n, 8, length))
    for i in range(n):
        period = 60.0 / (bpm + rng.normal(0, 3))
        for beat in np.arange(rng.uniform(0, period), t[-1], period):
            out[i] += np.exp(-(((t - beat) / 0.02) ** 2))[None] * rng.uniform(0.8, 1.2, (8, 1))
    return out + 0.02 * rng.normal(size=out.shape)


def test_rr_features_recover_the_heart_rate():
    hr, sdnn, rmssd, valid = rr_features(_beats(1, 75.0, 0)[0, 1])
    assert valid == 1 and abs(hr - 75.0) < 6.0 and sdnn < 0.05 and rmssd < 0.1
    assert list(rr_features(np.zeros(1000))) == [0, 0, 0, 0]  # flat line: no rhythm, flag 0


def test_feature_distances_separate_different_rhythms():
    real, same, other = _beats(40, 60, 0), _beats(40, 60, 1), _beats(40, 100, 2)
    assert ecg_features(real).shape == (40, 84) and EMBEDDING_VERSION == "ecgfeat-v1"
    near, far = embedding_distances(same, real), embedding_distances(other, real)
    assert 0 <= near["feat_energy"] < far["feat_energy"]  # same law -> small, other heart rate -> larger
    assert near["feat_frechet"] < far["feat_frechet"]
    assert embedding_distances(torch.from_numpy(real), real)["feat_energy"] == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_shifted_gaussians():
    # Equal covariances: the distance is the squared mean shift (here 4 in one coordinate).
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = a + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=1e-3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
