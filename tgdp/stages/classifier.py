"""Stage B (the domain classifier c(x), whose -logit estimates log q/p) and stage B' (the time-dependent
classifier c'(x_t, t) of the cycle loss, whose -logit estimates log q_t/p_t), both with the class-balanced
logistic loss and early stopping on a held-out split, driven by the shared training loop (tgdp.training).

Balanced: each domain's loss is averaged separately, so the optimum is log p/q with no log m/n offset
however unequal the domain sizes (the pooled loss would shift every log r by log(m / n)).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from tgdp import losses, seeds
from tgdp.config import ClassifierConfig, TimeClassifierConfig
from tgdp.models import CLASSIFIER_NETS, TIME_CLASSIFIER_NETS, build
from tgdp.reporter import Reporter
from tgdp.schedules import VPSchedule
from tgdp.stages.common import labels, noised, num_labels
from tgdp.training import EarlyStopping, optimiser, rank_batch, training_loop

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]
"""(source x, target x, source y, target y) of one split; the labels are None when unconditional."""


class DomainClassifier(nn.Module):
    """c(x[, y]) = gamma * net(x[, y]): the trained classifier's logit tilted by gamma <= 1 (``fit_ratio_tilt``;
    1 when the tilt is off), so log r = -logit is the tilted ratio every consumer reads."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("gamma", torch.ones(()))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.gamma * self.net(x, y)


def build_classifier(cfg: ClassifierConfig, shape: tuple[int, ...], num_labels: int = 0) -> DomainClassifier:
    """The domain classifier of ``cfg`` (untrained, gamma = 1); also reloads cached weights."""
    return DomainClassifier(build(CLASSIFIER_NETS, cfg.arch, tuple(shape), cfg.width, cfg.depth, num_labels))


def build_time_classifier(cfg: TimeClassifierConfig, shape: tuple[int, ...], num_labels: int = 0) -> nn.Module:
    """The time-dependent classifier net of ``cfg`` (logit of "source" at (x_t, t[, y]))."""
    return build(TIME_CLASSIFIER_NETS, cfg.arch, tuple(shape), cfg.width, cfg.depth, num_labels)


@torch.no_grad()
def classifier_log_ratio(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                         batch_size: int = 8192) -> torch.Tensor:
    """log r(x) = -logit c(x) (N,) for every row of x (N, *shape) (batched, no grad)."""
    out = [losses.log_ratio_from_logits(classifier(x[i:i + batch_size],
                                                   None if y is None else y[i:i + batch_size].to(x.device)))
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def _split(n: int, fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Train / held-out index split; keeps at least one point on each side when n >= 2."""
    perm = torch.randperm(n, generator=g)
    k = min(max(int(round(n * fraction)), 1 if n >= 2 and fraction > 0 else 0), n - 1)
    return perm[k:], perm[:k]


def _balanced_batch(xs, xt, ys, yt, bs: int, g: torch.Generator):
    """bs source and bs target points (with replacement, source indices drawn first) and the is_source labels."""
    i = torch.randint(0, xs.shape[0], (bs,), generator=g).to(xs.device)
    j = torch.randint(0, xt.shape[0], (bs,), generator=g).to(xt.device)
    x = torch.cat([xs[i], xt[j]])
    y = torch.cat([ys[i], yt[j]]) if ys is not None else None
    is_source = torch.cat([torch.ones(bs), torch.zeros(bs)]).to(xs.device)
    return x, y, is_source


@torch.no_grad()
def _balanced_eval(logit_fn, xs, xt, ys, yt) -> float:
    """Balanced logistic loss over whole sets (each domain averaged separately)."""
    ls = F.softplus(-logit_fn(xs, ys)).mean()
    lt = F.softplus(logit_fn(xt, yt)).mean()
    return float(0.5 * (ls + lt))


def train_classifier(cfg: ClassifierConfig, data: dict, device: torch.device, reporter: Reporter) -> DomainClassifier:
    """Stage B: c(x) with the balanced logistic loss; log r(x) = -logit. Stage name "classifier".

    Early stopping on a held-out split of both domains keeps the ratio calibrated when n is tiny: the
    best held-out state is kept, not the last (over-fit) one. With ``cfg.tilt`` the returned classifier's
    logit is scaled by the gamma of ``fit_ratio_tilt`` on the held-out target points.
    """
    torch.manual_seed(cfg.seed)  # the net's initial weights
    net = build(CLASSIFIER_NETS, cfg.arch, tuple(data["source_x"].shape[1:]), cfg.width, cfg.depth,
                num_labels(data, cfg.conditional)).to(device)
    held_out = _fit(cfg, net, data, device, reporter)
    model = DomainClassifier(net).eval()
    if cfg.tilt and len(held_out):
        model.gamma.fill_(fit_ratio_tilt(net, held_out, data, cfg.conditional, device))
    return model


def _fit(cfg: ClassifierConfig, net: nn.Module, data: dict, device: torch.device, reporter: Reporter) -> torch.Tensor:
    """Train ``net`` in place (balanced loss, early stopping on the held-out split) and leave it at its best
    held-out state, in eval mode. Returns the indices of the held-out target points."""
    xs, xt = data["source_x"].to(device), data["target_x"].to(device)
    ys, yt = labels(data, "source_y", cfg.conditional), labels(data, "target_y", cfg.conditional)
    ys, yt = (ys.to(device), yt.to(device)) if cfg.conditional else (None, None)
    split_g = torch.Generator().manual_seed(cfg.seed)  # identical on every rank
    s_tr, s_ho = _split(xs.shape[0], cfg.holdout_fraction, split_g)
    t_tr, t_ho = _split(xt.shape[0], cfg.holdout_fraction, split_g)
    pick = lambda v, i: None if v is None else v[i.to(device)]  # noqa: E731
    train: Batch = (pick(xs, s_tr), pick(xt, t_tr), pick(ys, s_tr), pick(yt, t_tr))
    held: Batch = (pick(xs, s_ho), pick(xt, t_ho), pick(ys, s_ho), pick(yt, t_ho))
    has_holdout = len(t_ho) > 0
    net.train()
    opt = optimiser(net, cfg.lr, cfg.weight_decay)
    g = seeds.minibatch_generator(cfg.seed)
    bs = rank_batch(cfg.batch_size, max(xs.shape[0], 1))

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, is_source = _balanced_batch(*train, bs, g)
        return losses.balanced_logistic(net(x, y), is_source).sum(), {}

    def evaluate() -> tuple[float, float]:  # (train loss, held-out loss); the train loss without a held-out split
        net.eval()
        train_loss = _balanced_eval(net, *train)
        held_loss = _balanced_eval(net, *held) if has_holdout else train_loss
        net.train()
        return train_loss, held_loss

    early = EarlyStopping(net, evaluate, cfg.patience, device)
    # constant learning rate: early stopping, not a schedule, decides where the fit ends
    training_loop(stage="classifier", model=net, opt=opt, generator=g, step_fn=step, units=cfg.steps,
                  report_every=cfg.report_every, reporter=reporter, device=device, early_stopping=early)
    net.load_state_dict(early.best_state)
    net.eval()
    return t_ho


@torch.no_grad()
def fit_ratio_tilt(classifier: nn.Module, held_out: torch.Tensor, data: dict, conditional: bool,
                   device: torch.device) -> float:
    """gamma maximising the held-out likelihood of the target points under q_gamma = p r^gamma / Z(gamma).

    A classifier fitted to n points ranks them well but over-states its confidence (measured on the GMM
    at n = 10: learned log r = 1.7-2.5 x the exact one, correlation 0.87-0.96), and guided samples then
    overshoot the target modes. Z(gamma) = E_p[r^gamma] comes from the source samples, so the fit is
    one concave 1-d problem: maximise |H| (gamma mean_{j in H} log r(x_j) - log E_p[r^gamma]), H the
    ``held_out`` target indices the classifier never trained on. Grid over gamma in [0.05, 1]: the tilt only
    shrinks, because the Monte Carlo E_p[r^gamma] misses the heavy tail for gamma >= 1 and then favours
    larger gamma (measured with the exact ratio: 1.25 instead of 1).
    """
    xs, xt = data["source_x"].to(device), data["target_x"].to(device)
    ys = data.get("source_y").to(device) if conditional else None
    yt = data.get("target_y").to(device) if conditional else None
    gammas = torch.linspace(0.05, 1.0, 20, dtype=torch.float64, device=device)
    idx = held_out.to(device)
    log_r_t = classifier_log_ratio(classifier, xt[idx], None if yt is None else yt[idx]).double()
    log_r_s = classifier_log_ratio(classifier, xs, ys).double()
    log_z = torch.logsumexp(gammas[:, None] * log_r_s[None, :], 1) - math.log(log_r_s.numel())
    objective = len(idx) * (gammas * log_r_t.mean() - log_z)
    return float(gammas[int(objective.argmax())])


NoisedSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(x_t, t, y or None) of a fixed noised evaluation set."""


def _noised_set(x: torch.Tensor, y: torch.Tensor | None, draws: int, schedule: VPSchedule,
                g: torch.Generator) -> NoisedSet:
    """max(draws, N) noised copies of the N rows of x, row i % N for copy i (every point at least once, all
    about equally often), t and eps from ``g`` as in training (``noised``: t uniform on [t_min, 1])."""
    if x.shape[0] == 0:
        return x, x.new_zeros(0), y
    i = (torch.arange(max(draws, x.shape[0])) % x.shape[0]).to(x.device)
    x_t, t, _ = noised(x[i], schedule, g)
    return x_t, t, None if y is None else y[i]


@torch.no_grad()
def _balanced_eval_noised(model: nn.Module, source: NoisedSet, target: NoisedSet, chunk: int = 8192) -> float:
    """Balanced logistic loss of c'(x_t, t[, y]) over two fixed noised sets (each domain averaged separately)."""
    def mean_softplus(s: NoisedSet, sign: float) -> torch.Tensor:
        x, t, y = s
        parts = [model(x[i:i + chunk], t[i:i + chunk], None if y is None else y[i:i + chunk])
                 for i in range(0, x.shape[0], chunk)]
        return F.softplus(sign * torch.cat(parts)).mean()
    return float(0.5 * (mean_softplus(source, -1.0) + mean_softplus(target, 1.0)))


NoisedPair = tuple[NoisedSet, NoisedSet]
"""(source set, target set) of one fixed noised draw."""


def time_classifier_sets(cfg: TimeClassifierConfig, data: dict, schedule: VPSchedule,
                         device: torch.device) -> tuple[Batch, NoisedPair, NoisedPair]:
    """Stage B''s split: (training points, fixed noised training draw, fixed noised held-out draw). A pure
    function of (cfg.seed, data), so a resumed run, every rank and a test rebuild the same sets.

    The split is the domain classifier's (source then target indices from a generator seeded with cfg.seed);
    the same generator then noises ``holdout_draws`` copies per domain, held-out points first. The noise is
    drawn once: with a fresh draw per evaluation every comparison would carry its own sampling noise (at
    n = 10 the held-out target is 2 points), and early stopping would partly compare noise. The training
    draw puts the reported train_loss on the same footing.
    """
    xs, xt = data["source_x"].to(device), data["target_x"].to(device)
    ys, yt = labels(data, "source_y", cfg.conditional), labels(data, "target_y", cfg.conditional)
    ys, yt = (ys.to(device), yt.to(device)) if cfg.conditional else (None, None)
    split_g = torch.Generator().manual_seed(cfg.seed)  # identical on every rank
    s_tr, s_ho = _split(xs.shape[0], cfg.holdout_fraction, split_g)
    t_tr, t_ho = _split(xt.shape[0], cfg.holdout_fraction, split_g)
    # training rows in data order: without a split the minibatches are those of the stage before it had one
    s_tr, t_tr = s_tr.sort().values, t_tr.sort().values
    pick = lambda v, i: None if v is None else v[i.to(device)]  # noqa: E731
    train: Batch = (pick(xs, s_tr), pick(xt, t_tr), pick(ys, s_tr), pick(yt, t_tr))
    held: Batch = (pick(xs, s_ho), pick(xt, t_ho), pick(ys, s_ho), pick(yt, t_ho))
    held_sets = tuple(_noised_set(held[k], held[k + 2], cfg.holdout_draws, schedule, split_g) for k in (0, 1))
    train_sets = tuple(_noised_set(train[k], train[k + 2], cfg.holdout_draws, schedule, split_g) for k in (0, 1))
    return train, train_sets, held_sets


def time_classifier_holdout_loss(model: nn.Module, cfg: TimeClassifierConfig, data: dict, schedule: VPSchedule,
                                 device: torch.device) -> float:
    """The held-out balanced loss stage B' early-stops on, for any c' (e.g. the one it returned)."""
    _, _, held = time_classifier_sets(cfg, data, schedule, device)
    return _balanced_eval_noised(model.eval(), *held)


def train_time_classifier(cfg: TimeClassifierConfig, data: dict, schedule: VPSchedule, device: torch.device,
                          reporter: Reporter) -> nn.Module:
    """Stage B': c'(x_t, t[, y]) on noised source/target samples (same t for the pair), balanced loss, so
    -logit estimates log q_t/p_t. Stage name "time_classifier"; reports ``loss`` (mean since the last report),
    ``train_loss`` and ``holdout_loss`` (the fixed noised draws of ``time_classifier_sets``).

    The domain classifier's treatment: early stopping on the held-out split with ``cfg.patience``, and the best
    held-out state is returned, not the last. With ``cfg.ema`` the EMA weights are the ones evaluated, kept
    and returned. Without held-out target points (n = 1 or holdout_fraction = 0, the default: see
    TimeClassifierConfig) it stops on the training draw's loss.

    No ratio tilt. ``fit_ratio_tilt`` shrinks an over-confident log r at t = 0 (learned 1.7-2.5 x the exact one
    at n = 10). c''s log ratio regresses on the exact one with slope 0.57-1.11 at t = 0.05 and 0.2 on the
    development seeds, n = 10 included (bench/results/time_classifier_cycle.json, ``defaults_selection``): no
    over-confidence to shrink, and a shrink-only tilt would make the under-confident fits worse. It would also
    break what the cycle loss relies on (guidance.py): the balanced c' has source mean E_{p_t}[r_t] = 1 at
    every t, which p_t r_t^gamma keeps only when divided by a per-t normaliser E_{p_t}[r_t^gamma].
    """
    train, train_sets, held_sets = time_classifier_sets(cfg, data, schedule, device)
    has_holdout = held_sets[1][0].shape[0] > 0
    torch.manual_seed(cfg.seed)  # the net's initial weights
    model = build_time_classifier(cfg, tuple(data["source_x"].shape[1:]),
                                  num_labels(data, cfg.conditional)).to(device).train()
    opt = optimiser(model, cfg.lr, cfg.weight_decay)
    g = seeds.minibatch_generator(cfg.seed)
    bs = rank_batch(cfg.batch_size, max(train[0].shape[0], 1))

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0, y, is_source = _balanced_batch(*train, bs, g)
        x_t, t, _ = noised(x0, schedule, g)
        loss = losses.balanced_logistic(model(x_t, t, y), is_source).sum()
        return loss, {"loss": loss.item()}

    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
    kept = model if ema is None else ema  # the weights evaluated, kept at their best and returned

    def evaluate() -> tuple[float, float]:  # (train loss, held-out loss) on the fixed noised draws
        kept.eval()
        train_loss = _balanced_eval_noised(kept, *train_sets)
        held_loss = _balanced_eval_noised(kept, *held_sets) if has_holdout else train_loss
        model.train()
        return train_loss, held_loss

    early = EarlyStopping(kept, evaluate, cfg.patience, device)
    training_loop(stage="time_classifier", model=model, opt=opt, generator=g, step_fn=step, units=cfg.steps,
                  report_every=cfg.report_every, reporter=reporter, device=device, lr=cfg.lr, ema=ema,
                  ema_decay=cfg.ema, early_stopping=early)
    kept.load_state_dict(early.best_state)
    return kept.eval()
