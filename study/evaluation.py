"""Evaluation of samplers on the GMM testbed, shared by trials, baselines and reports.

Selection uses the *validation* reference draw (``GMMTask.fresh_target(.., "validation")``);
reports use the *test* draw, with fresh sampler noise (sample seed + 1) so the test numbers do not
reuse the validation samples. Every function here is collective under torch.distributed (sampling
all-gathers), so every rank must call it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from tgdp import pipeline, stages
from tgdp.config import GMMConfig, SampleConfig, TGDPConfig
from tgdp.data.gmm import GMMTask
from tgdp.metrics import guidance_grad_rmse, log_ratio_rmse, sample_metrics
from tgdp.sampling import guided_eps

REFERENCE_SIZE = 10000  # rows of a validation/test reference draw (at most)
TEST_SEED_OFFSET = 1  # sampler noise seed offset of test samples


def reference(task: GMMTask, split: str, num: int) -> torch.Tensor:
    """Fresh true-target samples of ``split`` ("validation" or "test"), at most REFERENCE_SIZE."""
    return task.fresh_target(min(num, REFERENCE_SIZE), split)


def score_net(cfg: TGDPConfig, section: str, task: GMMTask, state: dict[str, Any] | None = None) -> nn.Module:
    """A score net of ``cfg.<section>`` (source / vanilla / finetune), with ``state`` loaded, in eval mode."""
    c = getattr(cfg, section)
    model = stages.build_score(c, (task.cfg.dim,), 2 if c.conditional else 0, task.schedule)  # the stage's builder
    if state is not None:
        model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def _labels(cfg: TGDPConfig, data: dict, sample: SampleConfig) -> torch.Tensor | None:
    return pipeline.label_draw(data, sample.num_samples, sample.seed) if cfg.source.conditional else None


def draw(method: str, cfg: TGDPConfig, sample: SampleConfig, task: GMMTask, data: dict, device: torch.device, *,
         source: nn.Module | None = None, model: nn.Module | None = None, h: nn.Module | None = None) -> torch.Tensor:
    """Samples (num, dim) of ``method``: tgdp (source + h), a score ``model``, or an oracle."""
    shape, sched = (task.cfg.dim,), task.schedule
    labels = _labels(cfg, data, sample)
    if method == "tgdp":
        return pipeline.tgdp_samples(sample, source.to(device), h.to(device), sched, device, shape, labels)
    if method == "oracle_target":
        exact = task.exact_eps("target")
        return pipeline.sample_eps(sample, lambda y: exact, shape, sched, device, None)
    if method == "oracle_guidance":
        src = source.to(device)
        return pipeline.sample_eps(
            sample, lambda y: guided_eps(stages.model_eps(src, y), task.grad_log_h_star, sched, 1.0),
            shape, sched, device, labels)
    return pipeline.model_samples(sample, model.to(device), sched, device, shape, labels)


def metrics_of(samples: torch.Tensor, ref: torch.Tensor, task: GMMTask) -> dict[str, float]:
    """Sample metrics against a reference draw, as plain floats (NaN-safe)."""
    return {k: float(v) for k, v in sample_metrics(samples, ref, task).items()}


def ratio_metrics(task: GMMTask, classifier: nn.Module | None, h: nn.Module | None,
                  conditional: bool) -> dict[str, float]:
    """log_ratio_rmse of the classifier and guidance_grad_rmse of h (NaN when not applicable)."""
    out = {"log_ratio_rmse": math.nan, "guidance_grad_rmse": math.nan}
    if classifier is not None and not conditional:
        cpu = next(classifier.parameters()).device
        out["log_ratio_rmse"] = log_ratio_rmse(
            lambda x: stages.classifier_log_ratio(classifier, x.to(cpu)).cpu(), task)
    if h is not None and not conditional:
        dev = next(h.parameters()).device
        grad = stages.guidance_grad(h)
        with torch.enable_grad():
            out["guidance_grad_rmse"] = guidance_grad_rmse(lambda x, t: grad(x.to(dev), t.to(dev)).cpu(), task)
    return out


def evaluate_method(method: str, cfg: TGDPConfig, task: GMMTask, data: dict, device: torch.device, *,
                    splits: tuple[str, ...] = ("validation", "test"), num: int | None = None,
                    **models: Any) -> dict[str, dict[str, float]]:
    """{split: metrics} of one method; validation uses ``cfg.sample``, test its seed + TEST_SEED_OFFSET."""
    out = {}
    for split in splits:
        sample = cfg.sample if num is None else replace(cfg.sample, num_samples=min(num, cfg.sample.num_samples))
        if split == "test":
            sample = replace(sample, seed=sample.seed + TEST_SEED_OFFSET)
        x = draw(method, cfg, sample, task, data, device, **models)
        out[split] = metrics_of(x, reference(task, split, sample.num_samples), task)
        out[split + "_samples"] = x  # type: ignore[assignment]
    return out


def make_task(data_cfg: GMMConfig) -> tuple[GMMTask, dict]:
    task = GMMTask(data_cfg)
    return task, task.draw("train")


def guidance_evaluator(cfg: TGDPConfig, task: GMMTask, data: dict, source: nn.Module, device: torch.device,
                       num: int, extra: Callable[[], dict[str, float]]) -> Callable[[nn.Module, int], dict[str, float]]:
    """``evaluate(h, epoch)`` for ``fit_tgdp``: validation metrics of ``num`` guided samples."""
    sample = replace(cfg.sample, num_samples=min(num, cfg.sample.num_samples))
    ref = reference(task, "validation", sample.num_samples)

    def evaluate(h: nn.Module, epoch: int) -> dict[str, float]:
        x = draw("tgdp", cfg, sample, task, data, device, source=source, h=h)
        return {**metrics_of(x, ref, task), **extra(),
                **{k: v for k, v in ratio_metrics(task, None, h, cfg.guidance.conditional).items()
                   if k == "guidance_grad_rmse"}}

    return evaluate
