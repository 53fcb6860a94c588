"""ECG utility evaluation, "train on limited real + synthetic, test on real" (DESIGN §2).

A compact 1-D ResNet multi-label classifier (sigmoid outputs, BCE) is trained on the given training
records - the caller concatenates the limited real target set with generated records and their
generation labels - and tested on held-out real target records. Reported, with percentile bootstrap
intervals over test records:

* ``auroc``: macro AUROC (sklearn), mean over the classes that have both a positive and a negative
  test record (others have no defined AUROC).
* ``f_beta2`` / ``g_beta2``: the PhysioNet/CinC challenge metrics with beta = 2, per class c

      F_beta = (1 + beta^2) TP / ((1 + beta^2) TP + beta^2 FN + FP),   G_beta = TP / (TP + FP + beta FN)

  averaged over the same classes. A class whose denominator is 0 scores 0 (no positives and no
  predictions only happens for classes that are excluded anyway).
  Binary predictions use class-wise thresholds chosen on the *training* predictions, each maximising
  that class's F_beta (the test records are never used to choose them). A class without positive
  training records gets threshold 0.5.

Everything is seeded (``UtilityConfig.seed``): init, minibatch order and bootstrap draws.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from tgdp.data.ecg import to_twelve_leads
from tgdp.ecg_config import UtilityConfig  # noqa: F401  (torch-free: specs validate it; re-exported here)

# --- the classifier --------------------------------------------------------------------------------------

class _BasicBlock1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 5, stride=stride, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.short = (nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
                      if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet1d(nn.Module):
    """Compact 1-D ResNet: x (N, leads, L) -> class logits (N, num_classes). Any L >= 1.

    Stem conv (k=7, stride 2), ``stages`` stages of ``blocks`` basic blocks (k=5; the first block of each
    later stage has stride 2 and doubles the channels), then concatenated global average and max
    pooling (the usual PTB-XL benchmark head) and a linear layer.
    """

    def __init__(self, leads: int, num_classes: int, width: int = 32, stages: int = 3, blocks: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(leads, width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm1d(width), nn.ReLU())
        layers: list[nn.Module] = []
        c = width
        for s in range(stages):
            c_out = width * 2**s
            for b in range(blocks):
                layers.append(_BasicBlock1d(c, c_out, stride=2 if (s > 0 and b == 0) else 1))
                c = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(x))
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


def _prepare(x: np.ndarray | torch.Tensor, twelve_leads: bool) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if x.dim() != 3:
        raise ValueError(f"expected records of shape (N, leads, L), got {tuple(x.shape)}")
    if twelve_leads:
        if x.shape[1] != 8:
            raise ValueError(f"twelve_leads=True needs the 8 model leads, got {x.shape[1]} channels")
        x = to_twelve_leads(x)
    return x


def train_classifier(x: torch.Tensor, y: torch.Tensor, cfg: UtilityConfig, device: torch.device) -> nn.Module:
    """Fit a ResNet1d with BCE on x (N, leads, L), multi-hot y (N, K); returns it in eval mode."""
    torch.manual_seed(cfg.seed)
    model = ResNet1d(x.shape[1], y.shape[1], cfg.width, cfg.stages, cfg.blocks, cfg.dropout).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    bs = max(1, min(cfg.batch_size, n))
    steps_per_epoch = (n + bs - 1) // bs
    total, step = cfg.epochs * steps_per_epoch, 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            if idx.numel() < 2 and n >= 2:
                continue  # BatchNorm needs > 1 record per batch in training mode
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = F.binary_cross_entropy_with_logits(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # Cosine decay to 10% (as the diffusion stages): a stable end without a tuned schedule.
            frac = step / max(total, 1)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (0.1 + 0.45 * (1.0 + np.cos(np.pi * frac)))
            opt.step()
            step += 1
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Sigmoid probabilities (N, K) as float64 numpy."""
    out = [torch.sigmoid(model(x[i:i + batch_size].to(device))).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).double().numpy()


# --- metrics ---------------------------------------------------------------------------------------------

def challenge_scores(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F_beta and G_beta, each (K,), from binary y_true, y_pred (N, K); 0 where undefined."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    b2 = beta**2
    f_den = (1 + b2) * tp + b2 * fn + fp
    g_den = tp + fp + beta * fn
    f = np.divide((1 + b2) * tp, f_den, out=np.zeros_like(tp), where=f_den > 0)
    g = np.divide(tp, g_den, out=np.zeros_like(tp), where=g_den > 0)
    return f, g


def select_thresholds(y_true: np.ndarray, scores: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """Per-class threshold (K,) maximising F_beta of ``scores >= threshold`` on (y_true, scores) (N, K).

    Candidates are the observed scores (ties broken towards the higher threshold); a class without
    positives gets 0.5.
    """
    y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=float)
    thresholds = np.full(y_true.shape[1], 0.5)
    b2 = beta**2
    for k in range(y_true.shape[1]):
        pos = y_true[:, k].sum()
        if pos == 0:
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        s, yk = scores[order, k], y_true[order, k]
        tp, fp = np.cumsum(yk), np.cumsum(~yk)
        last = np.r_[s[1:] != s[:-1], True]  # a cut is only valid after the last of tied scores
        f = (1 + b2) * tp / ((1 + b2) * tp + b2 * (pos - tp) + fp)
        f = np.where(last, f, -1.0)
        thresholds[k] = s[int(np.argmax(f))]
    return thresholds


def evaluable_classes(y_true: np.ndarray) -> np.ndarray:
    """Boolean (K,): classes with at least one positive and one negative record."""
    pos = np.asarray(y_true).astype(bool).sum(0)
    return (pos > 0) & (pos < len(y_true))


def macro_auroc(y_true: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None) -> float:
    """Mean per-class AUROC over ``classes`` (default: the evaluable ones); NaN if there are none."""
    y_true = np.asarray(y_true).astype(int)
    mask = evaluable_classes(y_true) if classes is None else np.asarray(classes) & evaluable_classes(y_true)
    if not mask.any():
        return float("nan")
    return float(np.mean([roc_auc_score(y_true[:, k], scores[:, k]) for k in np.flatnonzero(mask)]))


def _point(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, beta: float) -> dict[str, float]:
    mask = evaluable_classes(y_true)
    if not mask.any():
        return {"auroc": float("nan"), "f_beta2": float("nan"), "g_beta2": float("nan")}
    f, g = challenge_scores(y_true, scores >= thresholds[None, :], beta)
    return {"auroc": macro_auroc(y_true, scores, mask), "f_beta2": float(f[mask].mean()),
            "g_beta2": float(g[mask].mean())}


def evaluate_predictions(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, *, beta: float = 2.0,
                         bootstrap_reps: int = 200, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Macro AUROC, F_beta, G_beta of test ``scores`` (N, K) against ``y_true`` (N, K) with percentile
    bootstrap intervals ``<metric>_lo`` / ``<metric>_hi`` over resampled test records.

    Each resample evaluates the classes evaluable within it; resamples where a metric is undefined are
    ignored for that metric. The keys keep the suffix "beta2" whatever ``beta`` is (the study's metric).
    """
    y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=float)
    out = _point(y_true, scores, thresholds, beta)
    out["num_classes"] = float(evaluable_classes(y_true).sum())
    if bootstrap_reps > 0:
        rng = np.random.default_rng(seed)
        n = y_true.shape[0]
        draws = [_point(y_true[idx], scores[idx], thresholds, beta)
                 for idx in (rng.integers(0, n, n) for _ in range(bootstrap_reps))]
        lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
        for key in ("auroc", "f_beta2", "g_beta2"):
            vals = np.array([d[key] for d in draws])
            vals = vals[np.isfinite(vals)]
            out[f"{key}_lo"] = float(np.percentile(vals, lo_q)) if vals.size else float("nan")
            out[f"{key}_hi"] = float(np.percentile(vals, hi_q)) if vals.size else float("nan")
    return out


# --- the evaluation --------------------------------------------------------------------------------------

def utility_eval(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray | torch.Tensor,
                 test_x: np.ndarray | torch.Tensor, test_y: np.ndarray | torch.Tensor, cfg: UtilityConfig,
                 device: torch.device | str = "cpu") -> dict[str, float]:
    """Train on (train_x (N, leads, L), train_y (N, K) multi-hot), test on (test_x, test_y); see the module doc.

    Returns auroc, f_beta2, g_beta2 with their _lo/_hi bootstrap bounds, num_classes (evaluated classes),
    n_train and n_test.
    """
    device = torch.device(device)
    x_tr, x_te = _prepare(train_x, cfg.twelve_leads), _prepare(test_x, cfg.twelve_leads)
    y_tr = torch.as_tensor(np.asarray(train_y) if not isinstance(train_y, torch.Tensor) else train_y).float()
    y_te = np.asarray(test_y.cpu() if isinstance(test_y, torch.Tensor) else test_y).astype(bool)
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0]:
        raise ValueError("records and labels differ in number")
    if y_tr.shape[1] != y_te.shape[1] or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError("train and test differ in number of classes or leads")
    if cfg.standardize:
        # Statistics from the training records only: the test set must not leak into preprocessing.
        mean = x_tr.mean(dim=(0, 2), keepdim=True)
        std = x_tr.std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    model = train_classifier(x_tr, y_tr, cfg, device)
    thresholds = select_thresholds(y_tr.numpy(), predict(model, x_tr, device, cfg.eval_batch_size), cfg.beta)
    out = evaluate_predictions(y_te, predict(model, x_te, device, cfg.eval_batch_size), thresholds, beta=cfg.beta,
                               bootstrap_reps=cfg.bootstrap_reps, ci=cfg.ci, seed=cfg.seed)
    out.update(n_train=float(x_tr.shape[0]), n_test=float(x_te.shape[0]))
    return out
