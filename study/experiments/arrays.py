"""The ``arrays`` experiment: TGDP studies on a user's own vector data (``tgdp.data.arrays``).

Source and target rows come from the user's ``.npy`` / ``.npz`` files; optional integer labels make it
the conditional version. Everything a study needs beyond the files is generic: MLP nets (``arch: mlp``,
the GMM's) on the data dimension d, the VP schedule, and sample metrics against held-out *real* target
rows, since no density is known (hence no oracle methods and no exact-ratio diagnostics):

* ``energy_distance`` and ``sliced_w2`` (``tgdp.metrics``) of ``sample.num_samples`` generated rows
  against the validation rows of the target file (selection, and what ASHA sees every guidance epoch) and
  against its test rows (the report, with fresh sampler noise: ``tgdp.seeds.noise_of_test_split``). Both
  in standardised units (``tgdp.data.arrays``: source statistics), so every column weighs the same.
  Non-finite generated rows are counted, as on the GMM (``tgdp.metrics.sample_metrics``): up to 1 % of them
  the metrics score the finite rows, above it the run is failed (NaN metrics, ``failed`` = 1.0).
* diagnostics of the domain classifier: mean log r on the source rows, the target training rows and the
  target validation rows (as for the ECG): a calibrated ratio puts unseen target rows above the source.

Spec-time checks (``check_data`` / ``check_spec``, before a study directory exists): the files are read
and checked (``tgdp.data.arrays.check_arrays``), the target must hold max(factors.n) + val + test rows,
and labels given <=> every stage ``conditional: true`` (the conditional version needs label-aware nets
in every stage; without labels no stage can be). ``resolve_data`` stores absolute file paths (relative
ones are resolved against the working directory when the spec is validated) and the files' content
fingerprint in the study's spec, so a resumed study refuses changed files and the stage cache (keyed by
the data config) never serves a model trained on other contents.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from study.experiments.base import Experiment
from tgdp.config import TGDPConfig, from_dict
from tgdp.data.arrays import PATH_KEYS, ArraysConfig, check_arrays, check_fingerprint, fingerprint, resolve_paths

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tgdp.data.arrays import ArraysTask

CONDITIONAL_SECTIONS = ("source", "classifier", "time_classifier", "guidance", "vanilla", "finetune")


def sample_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """energy_distance and sliced_w2 of generated rows against real reference rows, with ``nonfinite_fraction``
    and ``failed``: the finite rows are scored up to 1 % non-finite rows, above it every metric is NaN and
    ``failed`` = 1.0 (``tgdp.metrics.finite_rows``)."""
    from tgdp.metrics import energy_distance, failed_metrics, finite_rows, sliced_wasserstein2

    x, fraction, failed = finite_rows(samples)
    if failed:
        return failed_metrics(("energy_distance", "sliced_w2"), fraction)
    x = x.float().cpu()
    return {"energy_distance": float(energy_distance(x, reference)),
            "sliced_w2": float(sliced_wasserstein2(x, reference)), "nonfinite_fraction": fraction, "failed": 0.0}


class ArraysExperiment(Experiment):
    """Source and target rows from the user's files; TGDP against the baselines on held-out target rows."""

    name = "arrays"
    data_class = ArraysConfig
    metrics = {
        "energy_distance": "minimize",  # generated rows vs held-out target rows (standardised units)
        "sliced_w2": "minimize",  # sliced Wasserstein-2, same rows
    }
    table_metrics = ("energy_distance", "sliced_w2", "logr_source", "logr_target_train", "logr_target_val")
    methods = ("tgdp", "tgdp_reg", "vanilla", "finetune", "domain_guidance", "source_only")
    # tgdp_reg on user arrays: the GMM's values (eta_1 = 1, eta_2 = 0.1 on 64-point target batches). The
    # rows are standardised to unit scale like the GMM's, and nothing is known about a user's data to
    # choose otherwise; untuned here: a study searches the etas itself.
    regularised = {"eta_cycle": 1.0, "eta_consistency": 0.1, "target_batch_size": 64}

    # --- spec layer -------------------------------------------------------------------------------------

    def resolve_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """Absolute file paths (against the working directory) and, when the files can be read and no
        fingerprint is given, their content fingerprint: what the study stores (module docstring)."""
        out = resolve_paths(data)
        if not out.get("fingerprint") and all(isinstance(out.get(k, ""), str) for k in PATH_KEYS):
            try:
                out["fingerprint"] = fingerprint(out)
            except OSError:
                pass  # a missing / unreadable file: check_data names it
        return out

    def check_data(self, data: dict[str, Any]) -> None:
        """``ArraysConfig`` fields except n and seed, then the files themselves (``check_arrays``) and the
        recorded fingerprint, if any. ``ValueError('data.<key>: <file>: <problem>; allowed: ...')``."""
        super().check_data(data)
        cfg = self.data_config(resolve_paths(data), 1, 0)
        check_arrays(cfg)
        check_fingerprint(cfg)

    def check_spec(self, spec: Any) -> None:
        """Enough target rows for the largest n, and labels <=> conditional stages (module docstring)."""
        cfg = self.data_config(dict(spec.data), max(spec.factors.n), 0)
        info, _ = check_arrays(cfg)
        base = spec.base_config()
        off = [s for s in CONDITIONAL_SECTIONS if not getattr(base, s).conditional]
        on = [s for s in CONDITIONAL_SECTIONS if getattr(base, s).conditional]
        if cfg.conditional and off:
            raise ValueError(f"fixed.{off[0]}.conditional: labels are given (data.label_key / *_labels), so TGDP "
                             f"runs its conditional version, but {off} are unconditional; allowed: "
                             f"conditional: true in every one of {list(CONDITIONAL_SECTIONS)}")
        if not cfg.conditional and on:
            raise ValueError(f"fixed.{on[0]}.conditional: no labels are given; allowed: conditional: false (the "
                             "default), or labels via data.label_key / data.source_labels + data.target_labels")

    def data_config(self, data: dict[str, Any], n: int, seed: int) -> ArraysConfig:
        return from_dict(ArraysConfig, {**data, "n": n, "seed": seed})

    # --- tasks ------------------------------------------------------------------------------------------

    def load(self, data_cfg: ArraysConfig) -> tuple[ArraysTask, dict]:
        """The split, standardised rows of one unit (``tgdp.data.arrays.load_arrays``) and their stage dict."""
        from tgdp.data.arrays import load_arrays

        task = load_arrays(data_cfg)
        return task, task.data

    # --- evaluation -------------------------------------------------------------------------------------

    def _draw(self, method: str, cfg: TGDPConfig, sample: Any, task: ArraysTask, data: dict, device: torch.device,
              *, source: nn.Module | None = None, model: nn.Module | None = None,
              h: nn.Module | None = None) -> torch.Tensor:
        """``sample.num_samples`` rows (num, d) of ``method`` (labels drawn from the target training labels)."""
        from tgdp.methods import Fitted, get_method
        from tgdp.sampling import label_draw

        labels = label_draw(data, sample.num_samples, sample.seed) if cfg.source.conditional else None
        return get_method(method).draw(Fitted(model=model, guidance=h), sample, self.schedule(task), device,
                                       self.shape(data), labels, source=source, task=task)

    def evaluate(self, method: str, cfg: TGDPConfig, task: ArraysTask, data: dict, device: torch.device, *,
                 source: nn.Module | None = None, model: nn.Module | None = None,
                 h: nn.Module | None = None) -> dict[str, Any]:
        """Validation metrics (``cfg.sample``) and test metrics (fresh noise) against the held-out rows."""
        from tgdp import seeds

        out: dict[str, Any] = {}
        for split, ref in (("validation", task.val_x), ("test", task.test_x)):
            sample = cfg.sample if split == "validation" else \
                replace(cfg.sample, seed=seeds.noise_of_test_split(cfg.sample.seed))
            x = self._draw(method, cfg, sample, task, data, device, source=source, model=model, h=h)
            out[split], out[f"{split}_samples"] = sample_metrics(x, ref), x
        return out

    def guidance_evaluator(self, cfg: TGDPConfig, task: ArraysTask, data: dict, source: nn.Module,
                           device: torch.device, num: int, extra: Callable[[], dict[str, float]]
                           ) -> Callable[[nn.Module, int], dict[str, float]]:
        """Both metrics of ``num`` guided rows against the validation rows each epoch (+ ``extra()``)."""
        sample = replace(cfg.sample, num_samples=min(num, cfg.sample.num_samples))

        def evaluate(h: nn.Module, epoch: int) -> dict[str, float]:
            x = self._draw("tgdp", cfg, sample, task, data, device, source=source, h=h)
            return {**sample_metrics(x, task.val_x), **extra()}

        return evaluate

    def diagnostics(self, task: ArraysTask, classifier: nn.Module | None, h: nn.Module | None,
                    cfg: TGDPConfig) -> dict[str, float]:
        """Mean log r of the (joint-ratio, when labelled) classifier on source, target training and target
        validation rows; {} without a classifier."""
        if classifier is None:
            return {}
        import torch

        from tgdp import stages

        dev = next(classifier.parameters()).device
        conditional = cfg.classifier.conditional

        def mean_log_r(x: torch.Tensor, y: torch.Tensor | None) -> float:
            with torch.no_grad():
                y = y.to(dev) if conditional and y is not None else None
                return float(stages.classifier_log_ratio(classifier, x.to(dev), y).mean())

        d = task.data
        return {"logr_source": mean_log_r(d["source_x"], d.get("source_y")),
                "logr_target_train": mean_log_r(d["target_x"], d.get("target_y")),
                "logr_target_val": mean_log_r(task.val_x, task.val_y)}


__all__ = ["ArraysExperiment", "CONDITIONAL_SECTIONS", "sample_metrics"]
