"""The ECG methods and their evaluation (DESIGN §2): conditional TGDP against the baselines, scored by
"train on limited real + synthetic, test on real".

Methods (``run_ecg_methods``), the conditional version throughout: a label-conditional SSSD source model
s(x_t, y, t), a label-aware domain classifier c(x, y) and guidance net h(x_t, y, t) (``conditional=True``
is required in every stage config, ``tgdp.ecg_task.check_ecg_config``). Generation labels are drawn from
the limited target set's label distribution (``sampling.label_draw``); every method uses the same labels,
initial noise and sampler.

    real_only    the limited real target records alone (no synthetic data)
    vanilla      SSSD trained on the n target records only
    finetune     the source model trained further on the n target records
    source_only  the source model as is (no transfer; optional, not in METHODS)
    tgdp         frozen source model + guidance, eta_1 = eta_2 = 0
    tgdp_reg     the same with the cycle and consistency terms: the config's eta_1/eta_2, or
                 ``REG_ETAS`` when the config has both at 0; reuses tgdp's domain classifier

Evaluation per method: "train on limited real + synthetic, test on real" with the 1-D ResNet of
``tgdp.ecg_eval`` (one training; scored on the test split -> macro_auroc, f_beta2, g_beta2 with bootstrap
_lo/_hi, and on the validation split -> val_*; thresholds from the training predictions as in
``utility_eval``), and ``embedding_distances`` (feat_energy, feat_frechet) between the generated records
and the real validation records (for real_only: the limited real records themselves, a reference).
Selection (a study objective) must use val_*; the test columns are for reporting. The command-line
program that runs every method and writes the tables is ``study.programs.ecg`` (``tgdp-study ecg``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Sequence

import torch

from tgdp import pipeline, sampling, stages
from tgdp.config import SampleConfig, TGDPConfig
from tgdp.data.ecg import to_twelve_leads
from tgdp.ecg_config import ECGDataConfig, UtilityConfig
from tgdp.ecg_eval import evaluate_predictions, predict, select_thresholds, train_classifier
from tgdp.ecg_features import embedding_distances
from tgdp.ecg_task import ECGTask, check_ecg_config, load_ecg_task
from tgdp.methods import get_method
from tgdp.reporter import MemoryReporter, Reporter
from tgdp.schedules import VPSchedule

METHODS: tuple[str, ...] = ("real_only", "vanilla", "finetune", "tgdp", "tgdp_reg")
ALL_METHODS: tuple[str, ...] = METHODS + ("source_only",)
ECG_METRICS: tuple[str, ...] = ("macro_auroc", "f_beta2", "g_beta2", "feat_energy", "feat_frechet")
REG_ETAS: tuple[float, float] = (0.1, 0.01)  # (eta_1, eta_2) of tgdp_reg when the config leaves both at 0


class ScopedReporter:
    """Prefixes stage names, so two fits (tgdp / tgdp_reg, or two n) never restore each other's state."""

    def __init__(self, inner: Reporter, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def report(self, metrics, *, stage, epoch, state=None):
        self.inner.report(metrics, stage=f"{self.prefix}{stage}", epoch=epoch, state=state)

    def restore(self, stage):
        return self.inner.restore(f"{self.prefix}{stage}")

    def should_stop(self):
        return self.inner.should_stop()


def utility_scores(train_x: torch.Tensor, train_y: torch.Tensor, held_out: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   cfg: UtilityConfig, device: torch.device) -> dict[str, float]:
    """``ecg_eval.utility_eval`` with one classifier scored on several held-out sets (keys prefix the metrics).

    Same steps as utility_eval (train-only standardisation, training-set thresholds, bootstrap); the
    metric "auroc" is renamed "macro_auroc". A prefix "" gives utility_eval's numbers exactly.
    """
    prep = (lambda x: to_twelve_leads(x.float())) if cfg.twelve_leads else (lambda x: x.float())  # noqa: E731
    x_tr, y_tr = prep(train_x), train_y.float()
    mean, std = (x_tr.mean(dim=(0, 2), keepdim=True), x_tr.std(dim=(0, 2), keepdim=True).clamp_min(1e-6)) \
        if cfg.standardize else (0.0, 1.0)
    model = train_classifier((x_tr - mean) / std, y_tr, cfg, device)
    thr = select_thresholds(y_tr.numpy(), predict(model, (x_tr - mean) / std, device, cfg.eval_batch_size), cfg.beta)
    out: dict[str, float] = {}
    for prefix, (x, y) in held_out.items():
        scores = predict(model, (prep(x) - mean) / std, device, cfg.eval_batch_size)
        res = evaluate_predictions(y.numpy().astype(bool), scores, thr, beta=cfg.beta,
                                   bootstrap_reps=cfg.bootstrap_reps, ci=cfg.ci, seed=cfg.seed)
        for key, value in res.items():
            out[prefix + key.replace("auroc", "macro_auroc")] = value
    return out


def _tgdp_variant(cfg: TGDPConfig, regularised: bool, reg_etas: tuple[float, float]) -> TGDPConfig:
    g = cfg.guidance
    if not regularised:
        return replace(cfg, guidance=replace(g, eta_cycle=0.0, eta_consistency=0.0))
    if g.eta_cycle == 0 and g.eta_consistency == 0:
        return replace(cfg, guidance=replace(g, eta_cycle=reg_etas[0], eta_consistency=reg_etas[1]))
    return cfg


def sample_records(task: ECGTask, sample: SampleConfig, device: torch.device, labels: torch.Tensor | None = None, *,
                   model: torch.nn.Module | None = None, source_model: torch.nn.Module | None = None,
                   guidance: torch.nn.Module | None = None) -> torch.Tensor:
    """Records (num_samples, 8, L), normalised units, of a fitted score ``model`` or of TGDP (``source_model`` +
    ``guidance``). ``labels`` default to ``generation_labels(task, sample)``."""
    schedule, shape = VPSchedule(), tuple(task.data["source_x"].shape[1:])
    labels = generation_labels(task, sample) if labels is None else labels
    if guidance is not None:
        return sampling.tgdp_samples(sample, source_model.to(device), guidance.to(device), schedule, device, shape,
                                     labels)
    return sampling.model_samples(sample, model.to(device), schedule, device, shape, labels)


def generation_labels(task: ECGTask, sample: SampleConfig) -> torch.Tensor:
    """The labels every method generates with: drawn from the limited target set's label distribution."""
    return sampling.label_draw(task.data, sample.num_samples, sample.seed)


def score_records(task: ECGTask, gen_x: torch.Tensor | None, gen_y: torch.Tensor | None, utility: UtilityConfig,
                  device: torch.device) -> dict[str, dict[str, float]]:
    """{"validation": metrics, "test": metrics} of generated records ``gen_x`` (mV) with labels ``gen_y``.

    One utility classifier trained on the limited real records + the generated ones (``gen_x`` None: the
    real records alone, i.e. real_only), scored on the validation and on the test split (``utility_scores``:
    macro_auroc, f_beta2, g_beta2 and their bootstrap _lo/_hi); feat_energy / feat_frechet of the generated
    records against the real records of the same split (real_only: the limited real records themselves).
    """
    real_x, real_y = task.mv("train"), task.data["target_y"]
    train_x, train_y = (real_x, real_y) if gen_x is None else (torch.cat([real_x, gen_x]), torch.cat([real_y, gen_y]))
    scores = utility_scores(train_x, train_y, {"": (task.mv("test"), task.test_y), "val_": (task.mv("val"), task.val_y)},
                            utility, device)
    gen = real_x if gen_x is None else gen_x
    out = {}
    for split, rows, prefix in (("validation", "val", "val_"), ("test", "test", "")):
        m = {k[len(prefix):]: v for k, v in scores.items() if k.startswith(prefix) and
             (prefix or not k.startswith("val_"))}
        m.update(embedding_distances(gen, task.mv(rows)) if torch.isfinite(gen).all() else
                 {"feat_energy": float("nan"), "feat_frechet": float("nan")})
        out[split] = m
    return out


def generate(method: str, task: ECGTask, cfg: TGDPConfig, source_model: torch.nn.Module, labels: torch.Tensor,
             device: torch.device, reporter: Reporter, *, classifier: torch.nn.Module | None = None,
             reg_etas: tuple[float, float] = REG_ETAS) -> tuple[torch.Tensor, dict[str, Any]]:
    """Generated records (num_samples, 8, L) in normalised units for one method, plus diagnostics."""
    schedule = VPSchedule()
    if method in ("vanilla", "finetune", "source_only"):
        model = get_method(method).fit(cfg, task.data, source_model, schedule, device, reporter).model
        return sample_records(task, cfg.sample, device, labels, model=model), {}
    if method not in ("tgdp", "tgdp_reg"):
        raise ValueError(f"unknown method {method!r}; known: {ALL_METHODS}")
    run_cfg = _tgdp_variant(cfg, method == "tgdp_reg", reg_etas)
    fit = pipeline.fit_tgdp(run_cfg, task.data, source_model, schedule, device, reporter, classifier=classifier)
    x = sample_records(task, run_cfg.sample, device, labels, source_model=source_model, guidance=fit.guidance)
    # Ratio diagnostics: mean log r on source, on the limited target and on unseen target records;
    # a calibrated joint-ratio classifier puts unseen target records well above the source.
    lr = lambda x, y: float(stages.classifier_log_ratio(fit.classifier.to(device), x.to(device), y.to(device)).mean())  # noqa: E731
    diag = {"logr_source": lr(task.data["source_x"], task.data["source_y"]),
            "logr_target_train": lr(task.data["target_x"], task.data["target_y"]),
            "logr_target_val": lr(task.val_x, task.val_y),
            "eta_cycle": run_cfg.guidance.eta_cycle, "eta_consistency": run_cfg.guidance.eta_consistency,
            "_classifier": fit.classifier}
    return x, diag


def run_ecg_methods(data_cfg: ECGDataConfig, tgdp_cfg: TGDPConfig, device: torch.device | str = "cpu",
                    reporter: Reporter | None = None, *, methods: Sequence[str] = METHODS,
                    utility: UtilityConfig | None = None, task: ECGTask | None = None,
                    source_model: torch.nn.Module | None = None, reg_etas: tuple[float, float] = REG_ETAS,
                    samples_out: dict[str, torch.Tensor] | None = None, log=None) -> list[dict[str, Any]]:
    """One row per method: test metrics (+ bootstrap _lo/_hi), val_* metrics, feat_* distances, timings.

    ``task`` / ``source_model`` reuse a loaded task / trained source model (e.g. across n). Generated
    records (mV) are put into ``samples_out[method]`` when given. See the module doc for the methods.
    """
    check_ecg_config(tgdp_cfg)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {ALL_METHODS}")
    device, reporter = torch.device(device), reporter or MemoryReporter()
    utility = utility or UtilityConfig()
    say = log or (lambda msg: None)
    task = task or load_ecg_task(data_cfg)
    n = int(task.data["target_x"].shape[0])
    if source_model is None and any(m != "real_only" for m in methods):
        t0 = time.time()
        source_model = stages.pretrain_source(tgdp_cfg.source, task.data, VPSchedule(), device, reporter)
        say(f"source model: {time.time() - t0:.0f} s")
    labels = sampling.label_draw(task.data, tgdp_cfg.sample.num_samples, tgdp_cfg.sample.seed)
    real_x, real_y = task.mv("train"), task.data["target_y"]
    held = {"": (task.mv("test"), task.test_y), "val_": (task.mv("val"), task.val_y)}
    rows, classifier = [], None
    for method in methods:
        t0 = time.time()
        diag: dict[str, Any] = {}
        if method == "real_only":
            gen_x, train_x, train_y = real_x, real_x, real_y
        else:
            z, diag = generate(method, task, tgdp_cfg, source_model, labels, device,
                               ScopedReporter(reporter, f"n{n}/{method}/"), classifier=classifier,
                               reg_etas=reg_etas)
            classifier = diag.pop("_classifier", classifier)
            gen_x = task.norm.invert(z)
            train_x, train_y = torch.cat([real_x, gen_x]), torch.cat([real_y, labels])
            if samples_out is not None:
                samples_out[method] = gen_x
        t_gen = time.time() - t0
        row: dict[str, Any] = {"method": method, "n": n, **utility_scores(train_x, train_y, held, utility, device)}
        if not torch.isfinite(gen_x).all():
            row.update(feat_energy=float("nan"), feat_frechet=float("nan"))
        else:
            row.update(embedding_distances(gen_x, task.mv("val")))
        row.update(diag, n_generated=0 if method == "real_only" else int(gen_x.shape[0]),
                   seconds_generate=round(t_gen, 1), seconds_total=round(time.time() - t0, 1))
        rows.append(row)
        say(f"n={n} {method}: macro_auroc {row['macro_auroc']:.3f} [{row['macro_auroc_lo']:.3f}, "
            f"{row['macro_auroc_hi']:.3f}] val {row['val_macro_auroc']:.3f} feat_energy {row['feat_energy']:.3f} "
            f"({row['seconds_total']:.0f} s)")
    return rows
