"""Stage C: the guidance net h_psi(x_t, t) trained on L = L_guidance + eta_cycle L_cycle + eta_consistency
L_consistence, driven by the shared training loop (tgdp.training) one epoch over the source samples per
unit. The regression targets come from the classifier's log r, normalised once here."""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from tgdp import distributed as D
from tgdp import losses, seeds
from tgdp.config import GuidanceConfig
from tgdp.models import GUIDANCE_NETS, build
from tgdp.reporter import Reporter
from tgdp.schedules import VPSchedule
from tgdp.stages.common import labels, noised, num_labels
from tgdp.training import optimiser, rank_batch, training_loop


def build_guidance(cfg: GuidanceConfig, shape: tuple[int, ...], num_labels: int = 0) -> nn.Module:
    """The guidance net of ``cfg``: log h_psi(x_t, t[, y]) (B,)."""
    return build(GUIDANCE_NETS, cfg.arch, tuple(shape), cfg.width, cfg.depth, num_labels)


def normalised_ratio_targets(log_ratio: torch.Tensor, clip: float) -> tuple[torch.Tensor, float]:
    """Regression targets r(x_0) for L_guidance and the constant they were divided by.

    Rule: clip log r to [-clip, clip] (an over-confident classifier cannot produce unbounded
    targets), then divide r by its mean over the source samples, which is 1 for the exact ratio
    (E_p[q/p] = 1). grad log h is invariant to this scale; the cycle targets (from the balanced
    time classifier) have source mean 1 already.
    """
    log_norm = float(torch.logsumexp(log_ratio.clamp(-clip, clip), 0) - math.log(log_ratio.numel()))
    return torch.exp(log_ratio_on_target_scale(log_ratio, clip, log_norm)), log_norm


def log_ratio_on_target_scale(log_ratio: torch.Tensor, clip: float, log_norm: float) -> torch.Tensor:
    """The rule of ``normalised_ratio_targets`` in log space, for any points (source or target): clip, then
    divide by the source mean ``log_norm`` it returned."""
    return log_ratio.clamp(-clip, clip) - log_norm


@torch.no_grad()
def _posterior_ratio(x_t, t, idx, xs, ys, log_ratio, schedule: VPSchedule, references: int, g: torch.Generator,
                     pool: tuple | None = None):
    """E[r(x_0) | x_t] over ``references`` source points (all of them when m is smaller) plus the batch's own
    x_0, so each row keeps at least one reference with its label. ``pool`` = (target x, target y, target
    log r) adds the n target points as references (the "pooled" target)."""
    if xs.shape[0] > references:
        ref = torch.cat([idx, torch.randint(0, xs.shape[0], (references,), generator=g).to(idx.device)])
    else:
        ref = torch.arange(xs.shape[0], device=idx.device)
    x0, y0, log_r, log_weight = xs[ref], None if ys is None else ys[ref], log_ratio[ref], None
    if pool is not None:
        xt, yt, log_rt = pool
        is_source = torch.cat([torch.ones_like(log_r, dtype=torch.bool), torch.zeros_like(log_rt, dtype=torch.bool)])
        x0, log_r = torch.cat([x0, xt]), torch.cat([log_r, log_rt])
        y0 = None if ys is None else torch.cat([y0, yt])
        log_weight = losses.pooled_reference_log_weights(log_r, is_source, xs.shape[0], xt.shape[0], len(ref))
    same = None if ys is None else (ys[idx].reshape(len(idx), 1, -1) == y0.reshape(1, len(x0), -1)).all(-1)
    return torch.exp(losses.posterior_log_ratio(x_t, schedule.alpha(t), schedule.sigma(t), x0, log_r, same,
                                                log_weight))


def train_guidance(cfg: GuidanceConfig, data: dict, log_ratio: torch.Tensor, schedule: VPSchedule,
                   device: torch.device, reporter: Reporter, *, score_model: nn.Module | None = None,
                   time_classifier: nn.Module | None = None, target_log_ratio: torch.Tensor | None = None,
                   evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None) -> nn.Module:
    """Stage C: L = L_guidance + eta_1 L_cycle + eta_2 L_consistence, training only psi; returns the EMA net.

    ``log_ratio`` (m,) holds log r(x_0) of every source sample (from ``classifier_log_ratio``, or the
    exact one for the oracle check); ``target_log_ratio`` (n,) the same at the target samples, needed by the
    "pooled" target. ``time_classifier`` is needed when eta_1 > 0 and ``score_model``
    when eta_2 > 0; both stay frozen. ``evaluate(h, epoch)`` (optional) adds metrics to each report,
    e.g. the study objective so that a scheduler can stop weak trials early. Reports every
    ``cfg.report_every`` epochs (stage "guidance", ``epoch`` = epochs done): loss_guidance, loss_cycle and
    loss_consistency (per-step means since the last report) and the metrics of ``evaluate``.
    """
    if cfg.eta_cycle > 0 and time_classifier is None:
        raise ValueError("eta_cycle > 0 needs a time_classifier")
    if cfg.eta_consistency > 0 and score_model is None:
        raise ValueError("eta_consistency > 0 needs the source score_model")
    if cfg.target == "pooled" and target_log_ratio is None:
        raise ValueError("guidance.target 'pooled' needs target_log_ratio (log r at the target samples)")
    xs, xt = data["source_x"].to(device), data["target_x"].to(device)
    ys, yt = labels(data, "source_y", cfg.conditional), labels(data, "target_y", cfg.conditional)
    ys, yt = (ys.to(device), yt.to(device)) if cfg.conditional else (None, None)
    ratio, log_norm = normalised_ratio_targets(log_ratio.to(device), cfg.log_ratio_clip)
    # once, not per step: the posterior target averages in log space
    log_targets = log_ratio_on_target_scale(log_ratio.to(device), cfg.log_ratio_clip, log_norm)
    pool = None
    if cfg.target == "pooled":
        pool = (xt, yt, log_ratio_on_target_scale(target_log_ratio.to(device), cfg.log_ratio_clip, log_norm))
    torch.manual_seed(cfg.seed)  # the net's initial weights
    h = build_guidance(cfg, tuple(xs.shape[1:]), num_labels(data, cfg.conditional)).to(device).train()
    # The regression targets are heavy-tailed (importance weights q/p of source points), so the
    # gradient noise is large; an EMA of the weights averages it out (Polyak averaging).
    ema = copy.deepcopy(h).eval().requires_grad_(False)
    opt = optimiser(h, cfg.lr, cfg.weight_decay)
    g = seeds.minibatch_generator(cfg.seed)
    for frozen in (score_model, time_classifier):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
    bs = rank_batch(cfg.batch_size, xs.shape[0])
    tbs = rank_batch(cfg.target_batch_size, max(xs.shape[0], 1))
    steps_per_epoch = max(xs.shape[0] // (bs * D.world_size()), 1)
    shuffled: dict[int, torch.Tensor] = {}  # epoch -> this rank's shard of that epoch's permutation

    def step(global_step: int) -> tuple[torch.Tensor, dict[str, float]]:
        epoch, k = divmod(global_step, steps_per_epoch)
        if epoch not in shuffled:  # its own generator: the epoch's order does not depend on g's state
            perm_g = torch.Generator().manual_seed(seeds.guidance_epoch(cfg.seed, epoch))
            shuffled.clear()
            shuffled[epoch] = D.shard(torch.randperm(xs.shape[0], generator=perm_g))
        idx = shuffled[epoch][k * bs:(k + 1) * bs].to(device)
        x_t, t, _ = noised(xs[idx], schedule, g, cfg.time_power)
        batch_ratio = ratio[idx]
        if cfg.target != "sample":
            batch_ratio = _posterior_ratio(x_t, t, idx, xs, ys, log_targets, schedule, cfg.references, g, pool)
        loss_g = losses.guidance_regression(h(x_t, t, None if ys is None else ys[idx]), batch_ratio, cfg.loss).mean()
        loss, metrics = loss_g, {"loss_guidance": loss_g.item(), "loss_cycle": 0.0, "loss_consistency": 0.0}
        if cfg.eta_cycle > 0 or cfg.eta_consistency > 0:
            j = torch.randint(0, xt.shape[0], (tbs,), generator=g).to(device)
            yj = None if yt is None else yt[j]
            xt_t, tt, eps = noised(xt[j], schedule, g, cfg.time_power)
            if cfg.eta_cycle > 0:
                with torch.no_grad():
                    tc_log_ratio = losses.log_ratio_from_logits(time_classifier(xt_t, tt, yj))
                # c' is balanced, so its ratio already has source mean 1, the scale the guidance targets
                # are normalised to: shifting it by the classifier's log_norm as well would pull h down
                # at the target points by that factor whenever the classifier's ratio is inflated.
                target = tc_log_ratio.clamp(-cfg.log_ratio_clip, cfg.log_ratio_clip)
                loss_c = losses.cycle(h(xt_t, tt, yj), target).mean()
                loss = loss + cfg.eta_cycle * loss_c
                metrics["loss_cycle"] = loss_c.item()
            if cfg.eta_consistency > 0:
                with torch.no_grad():
                    eps_src = score_model(xt_t, tt, yj)
                grad = losses.grad_log_h(lambda z: h(z, tt, yj), xt_t, create_graph=True)
                loss_k = losses.consistency(eps_src, grad, eps, schedule.sigma(tt)).mean()
                loss = loss + cfg.eta_consistency * loss_k
                metrics["loss_consistency"] = loss_k.item()
        return loss, metrics

    training_loop(stage="guidance", model=h, opt=opt, generator=g, step_fn=step, units=cfg.epochs,
                  steps_per_unit=steps_per_epoch, report_every=cfg.report_every, reporter=reporter, device=device,
                  lr=cfg.lr, ema=ema, ema_decay=cfg.ema,
                  evaluate=None if evaluate is None else (lambda epoch: evaluate(ema, epoch)),
                  report_epoch=lambda epoch: epoch,  # the guidance epoch: ASHA's time attribute in the study
                  extra_state={"log_norm": log_norm})
    return ema
