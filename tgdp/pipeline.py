"""Stage order of one TGDP fit and of each baseline, shared by the GMM experiment, the ECG
experiment and the study system (which runs the same functions inside Ray Train workers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tgdp import stages
from tgdp.config import SampleConfig, TGDPConfig
from tgdp.reporter import Reporter
from tgdp.sampling import EpsFn
from tgdp.schedules import VPSchedule

BASELINES = ("vanilla", "finetune", "source_only")


@dataclass
class TGDPModels:
    """What a TGDP fit produces on top of the frozen source model."""

    classifier: nn.Module
    guidance: nn.Module
    time_classifier: nn.Module | None = None


def fit_tgdp(cfg: TGDPConfig, data: dict, source_model: nn.Module, schedule: VPSchedule, device: torch.device,
             reporter: Reporter, *, classifier: nn.Module | None = None, evaluate=None) -> TGDPModels:
    """Stages B (and B' when eta_1 > 0) then C. A ready ``classifier`` (e.g. from the stage cache) is reused."""
    if classifier is None:
        classifier = stages.train_classifier(cfg.classifier, data, device, reporter)
    time_classifier = None
    if cfg.guidance.eta_cycle > 0:
        time_classifier = stages.train_time_classifier(cfg.time_classifier, data, schedule, device, reporter)
    log_ratio, target_log_ratio = (
        stages.classifier_log_ratio(classifier.to(device), data[f"{domain}_x"].to(device),
                                    data.get(f"{domain}_y") if cfg.classifier.conditional else None)
        for domain in ("source", "target"))
    h = stages.train_guidance(cfg.guidance, data, log_ratio, schedule, device, reporter, score_model=source_model,
                              time_classifier=time_classifier, target_log_ratio=target_log_ratio, evaluate=evaluate)
    return TGDPModels(classifier=classifier, guidance=h, time_classifier=time_classifier)


def label_draw(data: dict, num: int, seed: int) -> torch.Tensor | None:
    """Labels for conditional sampling: drawn from the target's empirical label distribution."""
    if data.get("target_y") is None:
        return None
    idx = torch.randint(0, data["target_y"].shape[0], (num,), generator=torch.Generator().manual_seed(seed + 17))
    return data["target_y"][idx]


def sample_eps(cfg: SampleConfig, eps_of_labels, shape: tuple[int, ...], schedule: VPSchedule,
               device: torch.device, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Sample with an eps-function built per batch from that batch's labels (None when unconditional)."""
    def make(rows: slice) -> EpsFn:
        return eps_of_labels(None if labels is None else labels[rows].to(device))
    return stages.sample(cfg, make, shape, schedule, device)


def tgdp_samples(cfg: SampleConfig, source_model: nn.Module, h: nn.Module, schedule: VPSchedule,
                 device: torch.device, shape: tuple[int, ...], labels: torch.Tensor | None = None,
                 scale: float | None = None) -> torch.Tensor:
    """Guided samples: eps_theta - gamma sigma_t grad log h_psi."""
    gamma = cfg.guidance_scale if scale is None else scale
    return sample_eps(cfg, lambda y: stages.tgdp_eps(source_model, h, schedule, gamma, y, cfg.guidance_t_max),
                      shape, schedule, device, labels)


def model_samples(cfg: SampleConfig, model: nn.Module, schedule: VPSchedule, device: torch.device,
                  shape: tuple[int, ...], labels: torch.Tensor | None = None) -> torch.Tensor:
    return sample_eps(cfg, lambda y: stages.model_eps(model, y), shape, schedule, device, labels)


def fit_baseline(name: str, cfg: TGDPConfig, data: dict, source_model: nn.Module, schedule: VPSchedule,
                 device: torch.device, reporter: Reporter) -> nn.Module:
    """The score model of a baseline: vanilla (target only), finetune (source + target), source_only."""
    if name == "vanilla":
        return stages.train_vanilla(cfg.vanilla, data, schedule, device, reporter)
    if name == "finetune":
        return stages.finetune(cfg.finetune, data, source_model, schedule, device, reporter)
    if name == "source_only":
        return source_model
    raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
