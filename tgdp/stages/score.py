"""Stage A and the vanilla / finetune baselines: an eps-prediction diffusion model trained by denoising
score matching, driven by the shared training loop (tgdp.training)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from tgdp import losses, seeds
from tgdp.config import ScoreConfig
from tgdp.models import SCORE_NETS, Autocast, GaussianSkip, build
from tgdp.reporter import Reporter
from tgdp.schedules import VPSchedule
from tgdp.stages.common import labels, noised
from tgdp.training import optimiser, rank_batch, training_loop


def build_score(cfg: ScoreConfig, shape: tuple[int, ...], num_labels: int = 0,
                schedule: VPSchedule | None = None) -> nn.Module:
    """The score net of ``cfg``; also reloads cached weights. ``schedule`` is the one the net is trained and
    sampled with: the Gaussian skip's sigma_t must be that schedule's, or the skip is no longer the exact eps."""
    net = build(SCORE_NETS, cfg.arch, tuple(shape), cfg.width, cfg.depth, num_labels)
    net = Autocast(net) if cfg.precision == "bf16" else net
    return GaussianSkip(net, (schedule or VPSchedule()).sigma) if cfg.gaussian_skip else net


def train_score(cfg: ScoreConfig, x: torch.Tensor, y: torch.Tensor | None, schedule: VPSchedule,
                device: torch.device, reporter: Reporter, *, stage: str = "source",
                init: nn.Module | None = None) -> nn.Module:
    """Denoising score matching on x (N, *shape) [with labels y (N, num_labels)]; returns the EMA model in
    eval mode. ``init`` starts from another model's weights (finetune); otherwise a fresh ``cfg.arch`` net.

    Reports ``dsm_loss`` (mean over the steps since the last report) every ``cfg.report_every`` steps.
    """
    num_labels = int(y.shape[1]) if (cfg.conditional and y is not None) else 0
    if cfg.conditional and y is None:
        raise ValueError(f"{stage}: conditional=True needs labels")
    torch.manual_seed(cfg.seed)  # the net's initial weights
    model = copy.deepcopy(init) if init is not None else build_score(cfg, tuple(x.shape[1:]), num_labels, schedule)
    model = model.to(device).train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # the compiled module shares ``model``'s parameters: checkpoints and the EMA keep the eager state-dict keys
    net = torch.compile(model) if cfg.compile else model
    opt = optimiser(model, cfg.lr, cfg.weight_decay)
    g = seeds.minibatch_generator(cfg.seed)
    x, y = x.to(device), (y.to(device) if num_labels else None)
    bs = rank_batch(cfg.batch_size, x.shape[0])

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.randint(0, x.shape[0], (bs,), generator=g).to(device)
        x_t, t, eps = noised(x[idx], schedule, g)
        loss = losses.denoising_score_matching(net(x_t, t, y[idx] if num_labels else None), eps).mean()
        return loss, {"dsm_loss": loss.item()}

    training_loop(stage=stage, model=model, opt=opt, generator=g, step_fn=step, units=cfg.steps,
                  report_every=cfg.report_every, reporter=reporter, device=device, lr=cfg.lr, ema=ema,
                  ema_decay=cfg.ema)
    return ema


def pretrain_source(cfg: ScoreConfig, data: dict, schedule: VPSchedule, device: torch.device,
                    reporter: Reporter) -> nn.Module:
    """Stage A: the source model on the m source samples (frozen afterwards)."""
    return train_score(cfg, data["source_x"], labels(data, "source_y", cfg.conditional), schedule, device,
                       reporter, stage="source")


def train_vanilla(cfg: ScoreConfig, data: dict, schedule: VPSchedule, device: torch.device,
                  reporter: Reporter) -> nn.Module:
    """Baseline: a diffusion model trained on the n target samples only."""
    return train_score(cfg, data["target_x"], labels(data, "target_y", cfg.conditional), schedule, device,
                       reporter, stage="vanilla")


def finetune(cfg: ScoreConfig, data: dict, source_model: nn.Module, schedule: VPSchedule,
             device: torch.device, reporter: Reporter) -> nn.Module:
    """Baseline: the source model trained further on the n target samples."""
    return train_score(cfg, data["target_x"], labels(data, "target_y", cfg.conditional), schedule, device,
                       reporter, stage="finetune", init=source_model)
