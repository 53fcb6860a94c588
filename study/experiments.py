"""Per-experiment adapters: what the study system runs and evaluates for each ``spec.experiment``.

The runner, the trials (``study.trial``) and the report drive the same stage order for every
experiment (shared stages -> per-trial classifier, guidance, sampling, evaluation); an adapter supplies
the parts that differ:

    load(data_cfg)                  -> (task, data dict of the stages)
    baselines, baseline_key(...)    the shared comparison methods and their stage-cache keys
    source_net / classifier_net     rebuild cached models
    evaluate(method, ...)           {"validation": metrics, "test": metrics, "validation_samples": x}
    guidance_evaluator(...)         the in-training ``evaluate(h, epoch)`` hook (what ASHA sees)
    asha_metric(spec)               the metric ASHA stops on, and its mode
    diagnostics / ratio_grid        extra trial metrics and the log-ratio field (GMM only)
    table_metrics                   the columns of the report table

GMM (``GMMExperiment``) wraps ``study.evaluation`` unchanged: baselines vanilla, finetune, source_only
and the two oracles; the in-training evaluation draws ``EVAL_SAMPLES`` guided samples and reports every
GMM metric, so ASHA uses the first objective.

ECG (``ECGExperiment``) reuses ``tgdp.ecg_experiment``: the conditional version throughout, baselines
real_only, vanilla, finetune, source_only (no oracle exists). Evaluation of a method = generate
``sample.num_samples`` records (labels drawn from the limited target set), train *one* utility classifier
on limited real + generated records (``spec.evaluation`` = ``UtilityConfig`` overrides, seed = the unit
seed unless given) and score it on the validation split (selection) and the test split (report);
feat_energy / feat_frechet against the real records of the same split.

The ECG in-training hook (the choice for ASHA): a utility classifier per epoch would cost as much as the
final evaluation, so each guidance epoch reports a cheap *proxy*: feat_energy and feat_frechet of
``ECG_EPOCH_RECORDS`` guided records against the validation records, with ``proxy = 1``. Objectives the
proxy does not produce (macro_auroc, f_beta2, g_beta2) are reported as NaN so Tune's metric check
passes; ``TaggingOptunaSearch`` ignores proxy results as Optuna intermediate values. ASHA stops on the
first objective when the proxy produces it (feat_*), otherwise on feat_energy (minimised). A trial that
ASHA stops early therefore has no value of the objective and ends PRUNED in Optuna (never selected);
only trials that reach the final evaluation are ranked.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from study import UserError
from study.cache import BASELINE_METHODS, baseline_key

ECG_BASELINES = ("real_only", "vanilla", "finetune", "source_only")
ECG_EPOCH_RECORDS = 8  # guided records of the ECG in-training proxy evaluation
ECG_PROXY_METRICS = ("feat_energy", "feat_frechet")
GMM_TABLE = ("energy_distance", "sliced_w2", "mean_log_q", "mode_balance_error", "log_ratio_rmse",
             "guidance_grad_rmse")
ECG_TABLE = ("macro_auroc", "macro_auroc_lo", "macro_auroc_hi", "f_beta2", "g_beta2", "feat_energy", "feat_frechet")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in model.state_dict().items()}


class GMMExperiment:
    """The Gaussian-mixture testbed: ``study.evaluation`` as the runner used it before adapters."""

    name = "gmm"
    baselines = BASELINE_METHODS
    table_metrics = GMM_TABLE

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def load(self, data_cfg: Any) -> tuple[Any, dict]:
        from study.evaluation import make_task
        return make_task(data_cfg)

    def baseline_key(self, method: str, data_cfg: Any, cfg: Any) -> str:
        return baseline_key(method, data_cfg, cfg)

    def source_net(self, cfg: Any, task: Any, data: dict, state: dict) -> nn.Module:
        from study.evaluation import score_net
        return score_net(cfg, "source", task, state)

    def classifier_net(self, cfg: Any, task: Any, data: dict, state: dict) -> nn.Module:
        from tgdp import stages
        c = cfg.classifier
        model = stages.build_classifier(c, (task.cfg.dim,), 2 if c.conditional else 0)
        model.load_state_dict(state)
        return model.eval()

    def evaluate(self, method: str, cfg: Any, task: Any, data: dict, device: torch.device, *,
                 source: nn.Module | None = None, model: nn.Module | None = None,
                 h: nn.Module | None = None) -> dict[str, Any]:
        from study.evaluation import evaluate_method
        models = {"source": source, **({"model": model} if h is None else {"h": h})}
        return evaluate_method(method, cfg, task, data, device, **models)

    def diagnostics(self, task: Any, classifier: nn.Module | None, h: nn.Module | None, cfg: Any) -> dict[str, float]:
        from study.evaluation import ratio_metrics
        conditional = cfg.guidance.conditional if h is not None else cfg.classifier.conditional
        return ratio_metrics(task, classifier, h, conditional)

    def guidance_evaluator(self, cfg: Any, task: Any, data: dict, source: nn.Module, device: torch.device,
                           num: int, extra: Callable[[], dict[str, float]]):
        from study.evaluation import guidance_evaluator
        return guidance_evaluator(cfg, task, data, source, device, num, extra)

    def ratio_grid(self, task: Any, classifier: nn.Module, cfg: Any) -> dict[str, torch.Tensor] | None:
        if cfg.classifier.conditional:
            return None
        from study.trial import ratio_grid
        return ratio_grid(task, classifier)

    def asha_metric(self) -> tuple[str, str]:
        return self.spec.metrics[0], "min" if self.spec.directions[0] == "minimize" else "max"


class ECGExperiment:
    """PTB-XL -> CPSC2018 (or simulated), conditional TGDP; evaluation by ``tgdp.ecg_experiment``."""

    name = "ecg"
    baselines = ECG_BASELINES
    table_metrics = ECG_TABLE

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def utility(self, seed: int):
        from tgdp.config import from_dict
        from tgdp.ecg_config import UtilityConfig
        return from_dict(UtilityConfig, {"seed": seed, **(self.spec.evaluation or {})}, where="evaluation")

    def load(self, data_cfg: Any) -> tuple[Any, dict]:
        from tgdp.ecg_experiment import load_ecg_task
        task = load_ecg_task(data_cfg)
        return task, task.data

    def baseline_key(self, method: str, data_cfg: Any, cfg: Any) -> str:
        return baseline_key(method, data_cfg, cfg, evaluation=self.utility(data_cfg.seed))

    @staticmethod
    def _labels(data: dict) -> int:
        return int(data["source_y"].shape[1])

    def source_net(self, cfg: Any, task: Any, data: dict, state: dict) -> nn.Module:
        from study.trial import task_schedule
        from tgdp import stages
        model = stages.build_score(cfg.source, tuple(data["source_x"].shape[1:]),
                                   self._labels(data) if cfg.source.conditional else 0, task_schedule(task))
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    def classifier_net(self, cfg: Any, task: Any, data: dict, state: dict) -> nn.Module:
        from tgdp import stages
        model = stages.build_classifier(cfg.classifier, tuple(data["source_x"].shape[1:]),
                                        self._labels(data) if cfg.classifier.conditional else 0)
        model.load_state_dict(state)
        return model.eval()

    def evaluate(self, method: str, cfg: Any, task: Any, data: dict, device: torch.device, *,
                 source: nn.Module | None = None, model: nn.Module | None = None,
                 h: nn.Module | None = None) -> dict[str, Any]:
        """Generate (tgdp: source + h; vanilla/finetune/source_only: ``model``; real_only: nothing) and score."""
        from tgdp.ecg_experiment import check_ecg_config, generation_labels, sample_records, score_records

        check_ecg_config(cfg)
        if method == "real_only":
            gen_x = gen_y = None
        else:
            gen_y = generation_labels(task, cfg.sample)
            z = sample_records(task, cfg.sample, device, gen_y, model=model, source_model=source, guidance=h)
            gen_x = task.norm.invert(z.cpu())
        res = score_records(task, gen_x, gen_y, self.utility(task.config.seed), device)
        samples = task.mv("train") if gen_x is None else gen_x
        return {**res, "validation_samples": samples}

    def diagnostics(self, task: Any, classifier: nn.Module | None, h: nn.Module | None, cfg: Any) -> dict[str, float]:
        """Mean log r of the (joint-ratio) classifier on source, limited target and validation records."""
        if classifier is None:
            return {}
        from tgdp import stages
        dev = next(classifier.parameters()).device

        def mean_log_r(x: torch.Tensor, y: torch.Tensor) -> float:
            with torch.no_grad():
                return float(stages.classifier_log_ratio(classifier, x.to(dev), y.to(dev)).mean())

        return {"logr_source": mean_log_r(task.data["source_x"], task.data["source_y"]),
                "logr_target_train": mean_log_r(task.data["target_x"], task.data["target_y"]),
                "logr_target_val": mean_log_r(task.val_x, task.val_y)}

    def guidance_evaluator(self, cfg: Any, task: Any, data: dict, source: nn.Module, device: torch.device,
                           num: int, extra: Callable[[], dict[str, float]]):
        """The per-epoch proxy (module doc): feat_* of a few guided records vs the validation records."""
        from tgdp.ecg_experiment import generation_labels, sample_records
        from tgdp.ecg_features import embedding_distances

        sample = replace(cfg.sample, num_samples=min(num, ECG_EPOCH_RECORDS, cfg.sample.num_samples))
        labels = generation_labels(task, sample)
        real = task.mv("val")
        pad = {m: math.nan for m in self.spec.metrics if m not in ECG_PROXY_METRICS}

        def evaluate(h: nn.Module, epoch: int) -> dict[str, float]:
            x = task.norm.invert(sample_records(task, sample, device, labels, source_model=source, guidance=h).cpu())
            feats = embedding_distances(x, real) if torch.isfinite(x).all() else \
                {k: math.nan for k in ECG_PROXY_METRICS}
            return {**feats, **pad, "proxy": 1.0, **extra()}

        return evaluate

    def ratio_grid(self, task: Any, classifier: nn.Module, cfg: Any) -> None:
        return None

    def asha_metric(self) -> tuple[str, str]:
        m0 = self.spec.metrics[0]
        if m0 in ECG_PROXY_METRICS:
            return m0, "min" if self.spec.directions[0] == "minimize" else "max"
        return "feat_energy", "min"


ADAPTERS: dict[str, type] = {"gmm": GMMExperiment, "ecg": ECGExperiment}


def experiment_for(spec: Any):
    """The adapter of ``spec.experiment``; a UserError (before anything is written) when there is none."""
    cls = ADAPTERS.get(spec.experiment)
    if cls is None:
        raise UserError(f"experiment {spec.experiment!r}: the study runner supports {', '.join(ADAPTERS)}")
    return cls(spec)


__all__ = ["ADAPTERS", "ECGExperiment", "ECG_BASELINES", "GMMExperiment", "experiment_for"]
