"""The TGDP stages: plain functions of (config, data, device, reporter) -> trained artefact.

One module per stage family, all driven by the one training loop of ``tgdp.training``:
``score`` (stage A and the vanilla / finetune baselines), ``classifier`` (stage B, the domain classifier,
and B', the time classifier) and ``guidance`` (stage C). Each stage checkpoints through the reporter at
report boundaries and continues from ``reporter.restore(stage)`` when it was interrupted; a finished
stage returns at once on a rerun. Data-parallel when torch.distributed is initialised (Ray Train): every
rank draws its own minibatches (``seeds.minibatch``) of batch_size / world_size samples, gradients are
all-reduced, metrics all-reduced; only rank 0's checkpoint state is kept by the reporter.

``data`` is a dict of tensors: source_x (m, *shape), target_x (n, *shape) and, for the conditional
version, source_y / target_y (N, num_labels). Sampling lives in ``tgdp.sampling``.
"""

from __future__ import annotations

from tgdp.stages.classifier import (DomainClassifier, build_classifier, build_time_classifier, classifier_log_ratio,
                                    fit_ratio_tilt, train_classifier, train_time_classifier)
from tgdp.stages.guidance import build_guidance, log_ratio_on_target_scale, normalised_ratio_targets, train_guidance
from tgdp.stages.score import build_score, finetune, pretrain_source, train_score, train_vanilla

__all__ = [
    "DomainClassifier", "build_classifier", "build_guidance", "build_score", "build_time_classifier",
    "classifier_log_ratio", "finetune", "fit_ratio_tilt", "log_ratio_on_target_scale", "normalised_ratio_targets",
    "pretrain_source", "train_classifier", "train_guidance", "train_score", "train_time_classifier", "train_vanilla",
]
