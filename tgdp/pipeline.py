"""Stage order of one TGDP fit and of each baseline, shared by the GMM experiment, the ECG
experiment and the study system (which runs the same functions inside Ray Train workers).
Drawing samples from what these return is ``tgdp.sampling``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tgdp import stages
from tgdp.config import TGDPConfig
from tgdp.reporter import Reporter
from tgdp.schedules import VPSchedule

@dataclass
class TGDPModels:
    """What a TGDP fit produces on top of the frozen source model."""

    classifier: nn.Module  # c(x[, y]); log r = -logit (stages.classifier_log_ratio)
    guidance: nn.Module  # the EMA guidance net h_psi(x_t, t[, y])


def fit_tgdp(cfg: TGDPConfig, data: dict, source_model: nn.Module, schedule: VPSchedule, device: torch.device,
             reporter: Reporter, *, classifier: nn.Module | None = None,
             evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None) -> TGDPModels:
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
    return TGDPModels(classifier=classifier, guidance=h)
