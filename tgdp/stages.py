"""The TGDP stages: plain functions of (config, data, device, reporter) -> trained artefact.

Each stage checkpoints through the reporter at report boundaries and continues from
``reporter.restore(stage)`` when it was interrupted; a finished stage returns at once on a rerun.
Data-parallel when torch.distributed is initialised (Ray Train): every rank draws its own
minibatches (seed + rank) of batch_size / world_size samples, gradients are averaged by DDP,
metrics all-reduced; only rank 0's checkpoint state is kept by the reporter.

``data`` is a dict of tensors: source_x (m, *shape), target_x (n, *shape) and, for the conditional
version, source_y / target_y (N, num_labels).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from tgdp import distributed as D
from tgdp import losses
from tgdp.config import ClassifierConfig, GuidanceConfig, SampleConfig, ScoreConfig, TimeClassifierConfig
from tgdp.models import CLASSIFIER_NETS, GUIDANCE_NETS, SCORE_NETS, TIME_CLASSIFIER_NETS, build
from tgdp.reporter import Reporter
from tgdp.sampling import SOLVERS, EpsFn, guided_eps
from tgdp.schedules import VPSchedule


def _labels(data: dict, key: str, conditional: bool) -> torch.Tensor | None:
    if not conditional:
        return None
    if data.get(key) is None:
        raise ValueError(f"conditional=True needs labels under {key!r}")
    return data[key]


def _num_labels(data: dict, conditional: bool) -> int:
    return int(data["source_y"].shape[1]) if conditional else 0


def _optimiser(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _cosine_lr(opt: torch.optim.Optimizer, base_lr: float, step: int, total: int) -> None:
    """Cosine decay from base_lr to 10% of it: stable ends without a tuned schedule."""
    frac = min(step / max(total, 1), 1.0)
    for group in opt.param_groups:
        group["lr"] = base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1009 + D.rank())


def _rank_batch(batch_size: int, available: int) -> int:
    return max(1, min(batch_size, available) // D.world_size())


def _noised(x0: torch.Tensor, schedule: VPSchedule, g: torch.Generator):
    t = schedule.sample_t(x0.shape[0], generator=g).to(x0.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_t = schedule.alpha(t).reshape(shape) * x0 + schedule.sigma(t).reshape(shape) * eps
    return x_t, t, eps


def _state(model: nn.Module, opt, step: int, g: torch.Generator, done: bool, **extra) -> dict[str, Any]:
    return {"model": D.unwrap(model).state_dict(), "opt": opt.state_dict(), "step": step,
            "rng": g.get_state(), "done": done, **extra}


# --- Stage A (and the vanilla / finetune baselines): eps-prediction diffusion model --------------------

def train_score(cfg: ScoreConfig, x: torch.Tensor, y: torch.Tensor | None, schedule: VPSchedule,
                device: torch.device, reporter: Reporter, *, stage: str = "source",
                init: nn.Module | None = None) -> nn.Module:
    """Denoising score matching on x (N, *shape); returns the EMA model in eval mode.

    ``init`` starts from another model's weights (finetune); otherwise a fresh ``cfg.arch`` net.
    """
    num_labels = int(y.shape[1]) if (cfg.conditional and y is not None) else 0
    if cfg.conditional and y is None:
        raise ValueError(f"{stage}: conditional=True needs labels")
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(init) if init is not None else build(
        SCORE_NETS, cfg.arch, tuple(x.shape[1:]), cfg.width, cfg.depth, num_labels)
    model = model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = _optimiser(model, cfg.lr, cfg.weight_decay)
    g = _generator(cfg.seed)
    step = 0
    if (st := reporter.restore(stage)) is not None:
        model.load_state_dict(st["model"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        g.set_state(st["rng"]); step = st["step"]
    if step >= cfg.steps:
        return ema
    ddp = D.wrap_ddp(model, device)
    x, y = x.to(device), (y.to(device) if num_labels else None)
    bs = _rank_batch(cfg.batch_size, x.shape[0])
    running = 0.0
    while step < cfg.steps:
        idx = torch.randint(0, x.shape[0], (bs,), generator=g).to(device)
        x_t, t, eps = _noised(x[idx], schedule, g)
        loss = losses.denoising_score_matching(ddp(x_t, t, y[idx] if num_labels else None), eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _cosine_lr(opt, cfg.lr, step, cfg.steps)
        opt.step()
        with torch.no_grad():
            decay = cfg.ema if step > 0 else 0.0
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - decay)
        step += 1
        running += loss.item()
        if step % cfg.report_every == 0 or step == cfg.steps:
            done = step == cfg.steps
            n_avg = cfg.report_every if step % cfg.report_every == 0 else step % cfg.report_every
            reporter.report({"dsm_loss": D.all_reduce_mean(running / n_avg, device)}, stage=stage,
                            epoch=step // cfg.report_every,
                            state=_state(model, opt, step, g, done, ema=ema.state_dict()))
            running = 0.0
    return ema


def pretrain_source(cfg: ScoreConfig, data: dict, schedule: VPSchedule, device: torch.device,
                    reporter: Reporter) -> nn.Module:
    """Stage A: the source model on the m source samples (frozen afterwards)."""
    return train_score(cfg, data["source_x"], _labels(data, "source_y", cfg.conditional), schedule, device,
                       reporter, stage="source")


def train_vanilla(cfg: ScoreConfig, data: dict, schedule: VPSchedule, device: torch.device,
                  reporter: Reporter) -> nn.Module:
    """Baseline: a diffusion model trained on the n target samples only."""
    return train_score(cfg, data["target_x"], _labels(data, "target_y", cfg.conditional), schedule, device,
                       reporter, stage="vanilla")


def finetune(cfg: ScoreConfig, data: dict, source_model: nn.Module, schedule: VPSchedule,
             device: torch.device, reporter: Reporter) -> nn.Module:
    """Baseline: the source model trained further on the n target samples."""
    return train_score(cfg, data["target_x"], _labels(data, "target_y", cfg.conditional), schedule, device,
                       reporter, stage="finetune", init=source_model)
