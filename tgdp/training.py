"""The one training loop every stage runs (edm's ``training_loop.py`` in miniature), and its parts.

A stage builds its net, optimiser and minibatch generator, then hands the loop a *step function*:
``step_fn(step) -> (loss, metrics)`` draws one minibatch from the generator and returns the scalar loss
to minimise and the per-step values to average into the next report. The loop owns everything else,
in this order per step: zero_grad, backward, the gradient all-reduce (data parallel), the cosine learning
rate, the optimiser step, the EMA update. Every ``report_every`` units (and at the end) it reports the
averaged metrics plus any evaluation, with a checkpoint of everything needed to continue exactly
(model, optimiser, progress, generator state, done flag, EMA, early-stopping state, extras).

Progress is counted in *units*: one optimiser step for the step-budgeted stages, one epoch of
``steps_per_unit`` steps for the guidance (whose config, reports and checkpoints count epochs). A
checkpoint always sits at a report boundary, so a resumed run replays nothing and skips nothing.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from tgdp import distributed as D
from tgdp.reporter import Reporter

StepFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]
"""step (global optimiser-step index) -> (loss to minimise, {metric: value averaged into the next report})."""


def optimiser(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW for every stage: decoupled weight decay, so the decay does not depend on the gradient scale."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def cosine_lr(opt: torch.optim.Optimizer, base_lr: float, step: int, total: int) -> None:
    """Cosine decay from base_lr to 10% of it: stable ends without a tuned schedule."""
    frac = min(step / max(total, 1), 1.0)
    for group in opt.param_groups:
        group["lr"] = base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA with warm-up: the decay ramps as (1 + step) / (10 + step), so a short run's EMA is not
    dominated by the random initial weights (0.999^400 would still weigh them by 0.67)."""
    decay = min(decay, (1.0 + step) / (10.0 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - decay)


def rank_batch(batch_size: int, available: int) -> int:
    """This rank's share of a global batch (clipped to the data size): the ranks together see ``batch_size``."""
    return max(1, min(batch_size, available) // D.world_size())


class EarlyStopping:
    """Held-out evaluation at every report, with patience; keeps the best state (the domain classifier).

    With n tiny the classifier over-fits the n target points long before its step budget; the state with
    the best held-out loss is the one to keep, and ``patience`` reports without a gain end the stage for
    good (the checkpoint is marked done). ``evaluate()`` returns (train loss, held-out loss) of this rank.
    """

    def __init__(self, model: nn.Module, evaluate: Callable[[], tuple[float, float]], patience: int,
                 device: torch.device, min_gain: float = 1e-4) -> None:
        self.model, self.evaluate, self.patience, self.device = model, evaluate, patience, device
        self.min_gain = min_gain  # a held-out loss must beat the best by this much to count as a gain
        self.best, self.best_state, self.bad = math.inf, copy.deepcopy(model.state_dict()), 0

    def report(self) -> dict[str, float]:
        """Evaluate, update best / patience, and return the metrics of this report."""
        train_loss, held = self.evaluate()
        held = D.all_reduce_mean(held, self.device)
        if held < self.best - self.min_gain:
            self.best, self.best_state, self.bad = held, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.bad += 1
        return {"train_loss": D.all_reduce_mean(train_loss, self.device), "holdout_loss": held}

    @property
    def exhausted(self) -> bool:
        return self.bad >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_state": self.best_state, "bad": self.bad}

    def load(self, st: dict[str, Any]) -> None:
        self.best, self.best_state, self.bad = st["best"], st["best_state"], st["bad"]


def training_loop(*, stage: str, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
                  step_fn: StepFn, units: int, report_every: int, reporter: Reporter, device: torch.device,
                  steps_per_unit: int = 1, lr: float | None = None, ema: nn.Module | None = None,
                  ema_decay: float = 0.0, evaluate: Callable[[int], dict[str, float]] | None = None,
                  early_stopping: EarlyStopping | None = None, report_epoch: Callable[[int], int] | None = None,
                  extra_state: dict[str, Any] | None = None) -> None:
    """Train ``model`` in place for ``units`` units of ``steps_per_unit`` optimiser steps, continuing from
    ``reporter.restore(stage)`` when the stage was interrupted (a finished stage returns at once).

    ``lr``: base learning rate of the cosine schedule over all steps (None: the optimiser's constant rate).
    ``ema``: a copy of ``model`` updated after every step with ``ema_decay`` (warm-up, see ``ema_update``).
    ``evaluate(unit)``: extra metrics for each report (e.g. the study objective, so a scheduler can stop
    weak trials). ``early_stopping``: its metrics join each report and its patience can end the stage.
    ``report_epoch(unit)``: the ``epoch`` a report carries (default: the report index, unit // report_every).
    ``extra_state``: constants saved with every checkpoint. After each report ``reporter.should_stop()``
    pauses the stage (the checkpoint is not marked done, so a rerun continues).
    """
    unit, done = 0, False
    if (st := reporter.restore(stage)) is not None:
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); generator.set_state(st["rng"])
        unit, done = st["step"], st["done"]
        if ema is not None:
            ema.load_state_dict(st["ema"])
        if early_stopping is not None:
            early_stopping.load(st)
    total_steps = units * steps_per_unit
    window: dict[str, float] = {}  # metric sums since the last report
    window_steps = 0
    while not done and unit < units:
        for k in range(steps_per_unit):
            step = unit * steps_per_unit + k
            loss, metrics = step_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            D.average_gradients(model)
            if lr is not None:
                cosine_lr(opt, lr, step, total_steps)
            opt.step()
            if ema is not None:
                ema_update(ema, model, ema_decay, step)
            for key, value in metrics.items():
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
        unit += 1
        if unit % report_every != 0 and unit != units:
            continue
        report = {key: D.all_reduce_mean(total / window_steps, device) for key, total in window.items()}
        window, window_steps = {}, 0
        if early_stopping is not None:
            report.update(early_stopping.report())
        if evaluate is not None:
            report.update(evaluate(unit))
        done = unit == units or (early_stopping is not None and early_stopping.exhausted)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": unit, "rng": generator.get_state(),
                 "done": done, **(extra_state or {}), **({"ema": ema.state_dict()} if ema is not None else {}),
                 **(early_stopping.state() if early_stopping is not None else {})}
        epoch = report_epoch(unit) if report_epoch is not None else unit // report_every
        reporter.report(report, stage=stage, epoch=epoch, state=state)
        if reporter.should_stop():
            break
