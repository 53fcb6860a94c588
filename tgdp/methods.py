"""The methods TGDP is compared with, and TGDP itself: one small object each, one interface.

A method answers four questions, the same ones for every method, so that the study system (cache,
trials, report) and the comparison programs never list methods by name:

    sections       the ``TGDPConfig`` sections it trains with: its own config, what its cache key holds
                   and what a study could search for it (today only ``tgdp``'s are searched)
    uses_source    whether it builds on the shared source model (then the source key is in its cache key)
    shared         True: not searched, computed once per (n, seed) unit and cached; False: ``tgdp`` and
                   ``tgdp_reg``, trained inside every trial
    fit / draw     ``fit(...) -> Fitted`` trains what it needs; ``eps_of_labels(...)`` gives the
                   eps-function it samples with and ``draw(...)`` samples it (None: generates nothing)

The oracles need the task's exact functions (``task.exact_eps("target")``, ``task.grad_log_h_star``);
only experiments with an analytic target (the Gaussian mixture) offer them. ``oracle_guidance`` cuts
its guidance at ``sample.guidance_t_max`` exactly as the learned guidance does, so the two differ only
in h. ``tgdp_reg`` is ``tgdp`` with the experiment's ``regularised`` guidance overrides (a config
transform, ``configure``); the values live on each experiment, next to why they were chosen.

``domain_guidance`` (Zhong et al., ICLR 2025) trains nothing beyond finetune: its fit runs the finetune
stage (``cfg.finetune``, stage name "finetune") and wraps source and fine-tuned nets into one eps-net,
eps_src + w (eps_ft - eps_src) with w = ``cfg.domain_guidance.weight``. A method cannot see another
method's ``Fitted`` (the study's shared loop fits each method on its own), so the finetune model is reused
through the reporter: a reporter that already holds the finished "finetune" stage (the shared loop fits
finetune first, with the same config and reporter) hands its weights back at once. Elsewhere (a fresh
reporter, or finetune already in the stage cache) it trains finetune again: same config and seed, same
weights, the cost of one finetune fit (1500 steps by default). The cache entry stores the fine-tuned weights.

Pure torch: no Ray, MLflow or Optuna here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from tgdp import pipeline, sampling, stages
from tgdp.config import SampleConfig, TGDPConfig
from tgdp.reporter import Reporter
from tgdp.sampling import EpsFn
from tgdp.schedules import VPSchedule

EpsOfLabels = Callable[[torch.Tensor | None], EpsFn]  # labels of one sampling batch (or None) -> eps-function


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A module's weights on the CPU: what a cache entry or a result file stores."""
    return {k: v.cpu() for k, v in model.state_dict().items()}


@dataclass
class Fitted:
    """What a method's ``fit`` produced (None where the method has no such part)."""

    model: nn.Module | None = None  # a score model sampled as is (vanilla, finetune, source_only, domain_guidance)
    guidance: nn.Module | None = None  # h_psi, added to the source model's eps (tgdp, tgdp_reg)
    classifier: nn.Module | None = None  # the stage-B domain classifier behind h (reusable by tgdp_reg)


class Method:
    """One method. Subclasses set the class attributes and override ``fit`` / ``eps_of_labels``."""

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()  # TGDPConfig sections it trains with (its searchable config)
    uses_source: ClassVar[bool] = False  # builds on (or samples) the shared source model
    shared: ClassVar[bool] = True  # unsearched: once per unit, cached; False: trained in every trial
    generates: ClassVar[bool] = True  # False: real_only (its "samples" are the real target records)
    needs_task: ClassVar[bool] = False  # samples with the task's exact functions (an analytic target only)
    # Bumped when what the method computes changes for the same configs, so stale cache entries are not reused.
    revision: ClassVar[int] = 0

    def configure(self, cfg: TGDPConfig, regularised: Mapping[str, Any] | None = None) -> TGDPConfig:
        """The config the method runs with (identity except for ``tgdp_reg``)."""
        return cfg

    def fit(self, cfg: TGDPConfig, data: dict, source: nn.Module | None, schedule: VPSchedule,
            device: torch.device, reporter: Reporter, *, classifier: nn.Module | None = None,
            evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None) -> Fitted:
        """Train what the method needs on ``data`` (stage dict: source_x/_y, target_x/_y).

        ``classifier``: a ready domain classifier to reuse (tgdp); ``evaluate(h, epoch)``: the in-training
        hook of the guidance stage (tgdp). Methods that train nothing return an empty ``Fitted``."""
        return Fitted()

    def eps_of_labels(self, fitted: Fitted, sample: SampleConfig, schedule: VPSchedule, device: torch.device, *,
                      source: nn.Module | None = None, task: Any = None) -> EpsOfLabels | None:
        """labels -> eps-function of one sampling batch; None when the method generates nothing."""
        return None

    def draw(self, fitted: Fitted, sample: SampleConfig, schedule: VPSchedule, device: torch.device,
             shape: tuple[int, ...], labels: torch.Tensor | None = None, *, source: nn.Module | None = None,
             task: Any = None) -> torch.Tensor | None:
        """``sample.num_samples`` samples of ``shape`` (on CPU), or None (real_only). Collective under
        torch.distributed (every rank must call it); the initial noise depends only on ``sample.seed``."""
        make = self.eps_of_labels(fitted, sample, schedule, device, source=source, task=task)
        return None if make is None else sampling.sample_eps(sample, make, shape, schedule, device, labels)

    def state(self, fitted: Fitted) -> dict[str, torch.Tensor] | None:
        """The trained weights a cache entry keeps (vanilla, finetune), None when it trained no score model."""
        return cpu_state(fitted.model) if self.sections and fitted.model is not None else None

    def __repr__(self) -> str:
        return f"<method {self.name}>"


class _ScoreModel(Method):
    """A method sampled from one score model (no guidance)."""

    def eps_of_labels(self, fitted, sample, schedule, device, *, source=None, task=None):
        model = fitted.model.to(device)
        return lambda y: sampling.model_eps(model, y)


class RealOnly(Method):
    """The limited real target records alone: trains and generates nothing (the utility floor)."""

    name = "real_only"
    generates = False


class SourceOnly(_ScoreModel):
    """The source model as is: no transfer (how far the source is from the target)."""

    name = "source_only"
    uses_source = True

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        return Fitted(model=source)


class Vanilla(_ScoreModel):
    """A diffusion model trained on the n target samples only (no source)."""

    name = "vanilla"
    sections = ("vanilla",)

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        return Fitted(model=stages.train_vanilla(cfg.vanilla, data, schedule, device, reporter))


class Finetune(_ScoreModel):
    """The source model trained further on the n target samples."""

    name = "finetune"
    sections = ("finetune",)
    uses_source = True

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        return Fitted(model=stages.finetune(cfg.finetune, data, source, schedule, device, reporter))


class DomainGuidedScore(nn.Module):
    """The source and the fine-tuned eps-nets as one: eps_src + weight * (eps_ft - eps_src)
    (``sampling.domain_guidance_eps``); x (B, *shape), t (B,), y (B, num_labels) given to both nets or None."""

    def __init__(self, source: nn.Module, finetuned: nn.Module, weight: float) -> None:
        super().__init__()
        self.source, self.finetuned, self.weight = source, finetuned, float(weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        eps = sampling.domain_guidance_eps(sampling.model_eps(self.source, y), sampling.model_eps(self.finetuned, y),
                                           self.weight)
        return eps(x, t)


class DomainGuidance(_ScoreModel):
    """Domain Guidance: the fine-tuned model guided away from the source model by ``domain_guidance.weight``."""

    name = "domain_guidance"
    sections = ("finetune", "domain_guidance")  # + the source key (uses_source) and the sampler, as every method
    uses_source = True

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        finetuned = stages.finetune(cfg.finetune, data, source, schedule, device, reporter)  # see module doc
        return Fitted(model=DomainGuidedScore(source, finetuned, cfg.domain_guidance.weight))

    def state(self, fitted: Fitted) -> dict[str, torch.Tensor] | None:
        """The fine-tuned weights (the source model has its own cache entry; the weight is in the key)."""
        return cpu_state(fitted.model.finetuned)


class TGDP(Method):
    """Frozen source model + guidance h_psi learned from the domain classifier (stages B, B', C)."""

    name = "tgdp"
    sections = ("classifier", "time_classifier", "guidance")
    uses_source = True
    shared = False

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        fit = pipeline.fit_tgdp(cfg, data, source, schedule, device, reporter, classifier=classifier,
                                evaluate=evaluate)
        return Fitted(guidance=fit.guidance, classifier=fit.classifier)

    def eps_of_labels(self, fitted, sample, schedule, device, *, source=None, task=None):
        src, h = source.to(device), fitted.guidance.to(device)
        return lambda y: sampling.tgdp_eps(src, h, schedule, sample.guidance_scale, y, sample.guidance_t_max)


class TGDPRegularised(TGDP):
    """``tgdp`` with the cycle and consistency terms: the experiment's ``regularised`` guidance overrides."""

    name = "tgdp_reg"

    def configure(self, cfg: TGDPConfig, regularised: Mapping[str, Any] | None = None) -> TGDPConfig:
        """``cfg`` with ``cfg.guidance`` updated by ``regularised`` (field -> value); a ValueError when the
        experiment states none (tgdp_reg would silently be tgdp)."""
        if not regularised:
            raise ValueError("tgdp_reg needs the experiment's `regularised` guidance overrides; none given")
        return replace(cfg, guidance=replace(cfg.guidance, **dict(regularised)))


class OracleGuidance(Method):
    """The learned source model guided by the exact grad log h* of the task (upper bound for TGDP's h)."""

    name = "oracle_guidance"
    uses_source = True
    needs_task = True
    revision = 1  # 1: honours sample.guidance_t_max (revision 0 guided at every t)

    def fit(self, cfg, data, source, schedule, device, reporter, *, classifier=None, evaluate=None):
        return Fitted(model=source)

    def eps_of_labels(self, fitted, sample, schedule, device, *, source=None, task=None):
        src = (source if source is not None else fitted.model).to(device)
        return lambda y: sampling.oracle_guidance_eps(src, task.grad_log_h_star, schedule, y, sample.guidance_t_max)


class OracleTarget(Method):
    """The exact target score (the solver's own error floor)."""

    name = "oracle_target"
    needs_task = True

    def eps_of_labels(self, fitted, sample, schedule, device, *, source=None, task=None):
        exact = task.exact_eps("target")
        return lambda y: exact


METHODS: dict[str, Method] = {m.name: m for m in (
    RealOnly(), SourceOnly(), Vanilla(), Finetune(), DomainGuidance(), TGDP(), TGDPRegularised(), OracleGuidance(),
    OracleTarget())}


def get_method(name: str) -> Method:
    """The registered method ``name``; a ValueError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "DomainGuidedScore", "Fitted", "Method", "cpu_state", "get_method"]
