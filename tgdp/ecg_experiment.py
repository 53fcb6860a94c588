"""The ECG experiment (DESIGN §2): PTB-XL (source) -> CPSC2018 (target), conditional TGDP vs the baselines.

Data (``load_ecg_task``). The source is PTB-XL (or the simulator's PTB-XL layout), the target CPSC2018 (or
its simulated layout), both as (N, 8, 1000) records at 100 Hz with 9-class multi-hot labels. The target
is split by ``split_target`` into the limited training set (n records or a fraction, stratified, seeded),
a validation and a test split, pairwise disjoint. **Normalisation rule:** one per-lead ``LeadNorm`` is
fitted on the *source training records only* (all loaded source records; the source has no held-out use
here) and applied to every set, so the source model, the classifiers, the guidance net and the target
baselines all work in one space, and no target record (limited, validation or test) influences it.
Generated records are mapped back to mV (``LeadNorm.invert``) before they are evaluated.

Methods (``run_ecg_methods``), the conditional version throughout: a label-conditional SSSD source model
s(x_t, y, t), a label-aware domain classifier c(x, y) and guidance net h(x_t, y, t) (``conditional=True``
is required in every stage config). Generation labels are drawn from the limited target set's label
distribution (``pipeline.label_draw``); every method uses the same labels, initial noise and sampler.

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
Selection (a study objective) must use val_*; the test columns are for reporting.

CLI. ``study/cli.py`` wires the subcommand with ``add_parser(subparsers)`` (adds ``ecg``, sets
``func=run``) and ``run(args) -> int``; ``main(argv)`` / ``python -m tgdp.ecg_experiment`` run it alone:

    tgdp-study ecg --sim [--sim-source-records 400 --sim-target-records 600] --n 10 100 --seed 0 --out DIR
    tgdp-study ecg --source PTBXL_DIR --target CPSC_DIR --n 10 --preset cpu --out DIR

It writes ``ecg_results.csv``, ``ecg_results.md`` (method x metric x n), ``ecg_results.json`` and
``config.json`` (resolved data/TGDP/utility configs) into DIR. Presets: ``PRESETS`` = micro (tests),
cpu (2 CPU cores, minutes per n), paper (36 x 256 SSSD and the paper's iterations/lrs, GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from tgdp import pipeline, stages
from tgdp.config import (ClassifierConfig, GuidanceConfig, SampleConfig, ScoreConfig, TGDPConfig,
                         TimeClassifierConfig, to_dict)
from tgdp.data.cpsc import load_cpsc
from tgdp.data.ecg import ECGDataset, LeadNorm, TargetSplit, fit_lead_norm, split_target, to_twelve_leads
from tgdp.data.ptbxl import load_ptbxl
from tgdp.ecg_eval import UtilityConfig, evaluate_predictions, predict, select_thresholds, train_classifier
from tgdp.ecg_config import ECGDataConfig
from tgdp.ecg_features import EMBEDDING_VERSION, embedding_distances
from tgdp.reporter import MemoryReporter, Reporter
from tgdp.schedules import VPSchedule

METHODS: tuple[str, ...] = ("real_only", "vanilla", "finetune", "tgdp", "tgdp_reg")
ALL_METHODS: tuple[str, ...] = METHODS + ("source_only",)
ECG_METRICS: tuple[str, ...] = ("macro_auroc", "f_beta2", "g_beta2", "feat_energy", "feat_frechet")
REG_ETAS: tuple[float, float] = (0.1, 0.01)  # (eta_1, eta_2) of tgdp_reg when the config leaves both at 0


# --- data ----------------------------------------------------------------------------------------------

@dataclass
class ECGTask:
    """The loaded experiment. Tensors named *_x are normalised (``norm``); raw datasets stay in mV."""

    data: dict[str, torch.Tensor]  # source_x (m, 8, L), source_y (m, 9), target_x (n, 8, L), target_y (n, 9)
    val_x: torch.Tensor  # (n_val, 8, L) normalised target validation records
    val_y: torch.Tensor  # (n_val, 9)
    test_x: torch.Tensor  # (n_test, 8, L) normalised target test records
    test_y: torch.Tensor  # (n_test, 9)
    norm: LeadNorm  # fitted on the source training records only
    split: TargetSplit  # row indices of train / val / test in ``target``
    source: ECGDataset  # raw source records (mV)
    target: ECGDataset  # raw target records (mV), all rows
    config: ECGDataConfig | None = None  # what was loaded (load_ecg_task sets it)

    def mv(self, rows: str) -> torch.Tensor:
        """Raw target records (mV) of split ``rows`` ("train", "val" or "test")."""
        return self.target.x[list(getattr(self.split, rows))]


def simulated_roots(cfg: ECGDataConfig) -> tuple[str, str]:
    """(source dir, target dir) of the simulated sets, written once; safe when trials race (atomic rename)."""
    base = cfg.sim_dir or os.environ.get("TGDP_ECG_SIM_DIR") or os.path.join(tempfile.gettempdir(), "tgdp-ecg-sim")
    from tgdp.data.ecg_sim import SIM_VERSION, write_simulated_dataset  # noqa: PLC0415 - only needed for simulate
    roots = []
    for domain, records, seed in (("source", cfg.sim_source_records, cfg.sim_seed),
                                  ("target", cfg.sim_target_records, cfg.sim_seed + 1)):
        final = os.path.join(base, f"{domain}-{records}-seed{seed}-v{SIM_VERSION}")
        if not os.path.exists(os.path.join(final, "simulation.json")):
            os.makedirs(base, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{domain}-", dir=base)
            write_simulated_dataset(tmp, domain, records, seed, overwrite=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process got there first: its copy is identical
                shutil.rmtree(tmp, ignore_errors=True)
        roots.append(final)
    return roots[0], roots[1]


def load_ecg_task(cfg: ECGDataConfig) -> ECGTask:
    """Load source and target, split the target, fit the normalisation on the source, build the data dict."""
    src_root, tgt_root = simulated_roots(cfg) if cfg.simulate else (cfg.source_root, cfg.target_root)
    source = load_ptbxl(src_root, min_length=cfg.min_length, skip_bad=cfg.skip_bad,
                        limit=cfg.source_limit or None)
    target = load_cpsc(tgt_root, min_length=cfg.min_length, skip_bad=cfg.skip_bad)
    if len(source) == 0 or len(target) == 0:
        raise ValueError(f"no usable records: {len(source)} source, {len(target)} target")
    n = int(cfg.n) if float(cfg.n) >= 1 else float(cfg.n)
    split = split_target(target.y, n, seed=cfg.seed, val=_size(cfg.val), test=_size(cfg.test),
                         record_ids=target.record_ids)
    norm = fit_lead_norm(source.x, source.lengths)  # source training records only (see the module doc)

    def normed(rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        sub = target.subset(list(rows))
        return norm.apply(sub.x, sub.lengths), sub.y

    tx, ty = normed(split.train)
    vx, vy = normed(split.val)
    sx, sy = normed(split.test)
    data = {"source_x": norm.apply(source.x, source.lengths), "source_y": source.y, "target_x": tx, "target_y": ty}
    return ECGTask(data, vx, vy, sx, sy, norm, split, source, target, cfg)


def _size(v: int | float) -> int | float:
    return int(v) if float(v) >= 1 else float(v)


# --- configs -------------------------------------------------------------------------------------------

def _preset(width: int, depth: int, steps: int, *, cls: tuple[int, int, int], guid: tuple[int, int, int],
            vanilla: int, finetune: int, batch: int, lr: float, samples: int, solver_steps: int,
            report: int, guidance_lr: float = 1e-3, vanilla_lr: float | None = None,
            finetune_lr: float | None = None) -> TGDPConfig:
    score = ScoreConfig(arch="sssd", width=width, depth=depth, steps=steps, batch_size=batch, lr=lr, ema=0.99,
                        report_every=report, conditional=True, gaussian_skip=True)
    return TGDPConfig(
        source=score,
        classifier=ClassifierConfig(arch="cnn", width=cls[0], depth=cls[1], steps=cls[2], batch_size=batch,
                                    report_every=max(cls[2] // 10, 1), conditional=True),
        time_classifier=TimeClassifierConfig(arch="cnn", width=cls[0], depth=cls[1], steps=cls[2],
                                             batch_size=batch, report_every=max(cls[2] // 2, 1), conditional=True),
        guidance=GuidanceConfig(arch="cnn", width=guid[0], depth=guid[1], epochs=guid[2], batch_size=batch,
                                target_batch_size=batch, lr=guidance_lr, conditional=True),
        vanilla=replace(score, steps=vanilla, lr=vanilla_lr or lr, report_every=max(min(report, vanilla), 1)),
        finetune=replace(score, steps=finetune, lr=finetune_lr or lr / 10, report_every=max(min(report, finetune), 1)),
        sample=SampleConfig(steps=solver_steps, num_samples=samples, batch_size=min(samples, 64)),
    )


# micro: seconds, for tests. cpu: the 2-core benchmark (measured: see bench/ecg_sim_compare.py); its guidance
# gets 30 epochs (750 steps at n = 100, 14 s): with 3 the loss stayed flat and the samples moved by 1e-6.
# paper: SSSD-ECG size (36 residual layers x 256 channels); DESIGN §2 iterations and lrs: vanilla 100k
# iterations lr 2e-4, finetune 50k lr 2e-5, guidance 50k iterations lr 2e-4 (= 75 epochs of batch 32 over
# ~21k PTB-XL records); the source model is not given there and gets the vanilla budget (100k, lr 2e-4).
PRESETS: dict[str, TGDPConfig] = {
    "micro": _preset(8, 1, 2, cls=(8, 1, 2), guid=(8, 1, 1), vanilla=2, finetune=1, batch=4, lr=1e-3,
                     samples=4, solver_steps=2, report=1),
    "cpu": _preset(16, 2, 300, cls=(16, 3, 300), guid=(16, 3, 30), vanilla=150, finetune=75, batch=16, lr=2e-3,
                   samples=48, solver_steps=10, report=50),
    "paper": _preset(256, 36, 100_000, cls=(64, 4, 5000), guid=(128, 4, 75), vanilla=100_000, finetune=50_000,
                     batch=32, lr=2e-4, samples=5000, solver_steps=25, report=1000, guidance_lr=2e-4,
                     vanilla_lr=2e-4, finetune_lr=2e-5),
}
UTILITY_PRESETS: dict[str, UtilityConfig] = {
    "micro": UtilityConfig(epochs=1, width=8, stages=1, bootstrap_reps=5, batch_size=8),
    "cpu": UtilityConfig(epochs=15, width=16, stages=3, bootstrap_reps=200, batch_size=32),
    "paper": UtilityConfig(epochs=30, width=64, stages=4, blocks=2, bootstrap_reps=1000),
}


def check_ecg_config(cfg: TGDPConfig) -> None:
    """The ECG experiment is the conditional version: every stage must be label-aware."""
    off = [sec for sec in ("source", "vanilla", "finetune", "classifier", "time_classifier", "guidance")
           if not getattr(cfg, sec).conditional]
    if off:
        raise ValueError(f"ECG runs the conditional version: set conditional=True in {off}")


# --- methods -------------------------------------------------------------------------------------------

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
        return pipeline.tgdp_samples(sample, source_model.to(device), guidance.to(device), schedule, device, shape,
                                     labels)
    return pipeline.model_samples(sample, model.to(device), schedule, device, shape, labels)


def generation_labels(task: ECGTask, sample: SampleConfig) -> torch.Tensor:
    """The labels every method generates with: drawn from the limited target set's label distribution."""
    return pipeline.label_draw(task.data, sample.num_samples, sample.seed)


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
        model = pipeline.fit_baseline(method, cfg, task.data, source_model, schedule, device, reporter)
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
    labels = pipeline.label_draw(task.data, tgdp_cfg.sample.num_samples, tgdp_cfg.sample.seed)
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


# --- tables and the command line ----------------------------------------------------------------------

TABLE_COLUMNS = ("macro_auroc", "f_beta2", "g_beta2", "val_macro_auroc", "feat_energy", "feat_frechet")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """method x metric x n; test metrics with their bootstrap interval."""
    head = "| n | method | " + " | ".join(TABLE_COLUMNS) + " | s |\n|---|---|" + "---|" * (len(TABLE_COLUMNS) + 1)
    lines = [head]
    for r in rows:
        cells = []
        for c in TABLE_COLUMNS:
            v = r.get(c, float("nan"))
            lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
            cells.append(f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v:.3f}")
        lines.append(f"| {r['n']} | {r['method']} | " + " | ".join(cells) + f" | {r['seconds_total']:.0f} |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict[str, Any]], out: str, meta: dict[str, Any]) -> None:
    import pandas as pd  # noqa: PLC0415
    os.makedirs(out, exist_ok=True)
    pd.DataFrame(list(rows)).to_csv(os.path.join(out, "ecg_results.csv"), index=False)
    with open(os.path.join(out, "ecg_results.md"), "w", encoding="utf-8") as f:
        f.write(f"# ECG utility: train on limited real + synthetic, test on real\n\n{markdown_table(rows)}\n"
                f"Intervals: {meta.get('ci', 0.95):.0%} percentile bootstrap over test records. feat_*: "
                f"{EMBEDDING_VERSION} distances to the real validation records (lower is closer).\n")
    with open(os.path.join(out, "ecg_results.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": list(rows), **meta}, f, indent=2, default=str)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ecg`` subcommand to ``subparsers`` (sets ``func=run``)."""
    p = subparsers.add_parser("ecg", help="run the ECG experiment (all methods, a preset config) without a study")
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _number(text: str) -> int | float:
    v = float(text)
    return int(v) if v >= 1 and v.is_integer() else v


def _add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="simulated PTB-XL/CPSC data (tgdp.data.ecg_sim)")
    src.add_argument("--source", default=None, help="PTB-XL directory (with --target)")
    p.add_argument("--target", default=None, help="CPSC2018 directory")
    p.add_argument("--n", type=_number, nargs="+", default=[10, 100], help="limited target sizes (count or fraction)")
    p.add_argument("--seed", type=int, default=0, help="split, stage, utility and (with --sim) simulator seed")
    p.add_argument("--out", default="ecg_results", help="output directory")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--val", type=_number, default=0.2)
    p.add_argument("--test", type=_number, default=0.2)
    p.add_argument("--sim-dir", default="")
    p.add_argument("--sim-source-records", type=int, default=400)
    p.add_argument("--sim-target-records", type=int, default=600)
    p.add_argument("--source-limit", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print every stage report (losses per report interval)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default; 1 is much faster on a shared, busy box)")


def run(args: argparse.Namespace) -> int:
    """Run every n with one source model; write CSV / Markdown / JSON into ``args.out``."""
    if not args.sim and not args.target:
        raise SystemExit("--source needs --target")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base = ECGDataConfig(source_root=args.source or "", target_root=args.target or "", simulate=args.sim,
                         sim_dir=args.sim_dir, sim_source_records=args.sim_source_records,
                         sim_target_records=args.sim_target_records, sim_seed=args.seed,
                         source_limit=args.source_limit, seed=args.seed, val=args.val, test=args.test,
                         skip_bad=args.skip_bad, n=args.n[0])
    cfg = PRESETS[args.preset]
    cfg = replace(cfg, **{sec: replace(getattr(cfg, sec), seed=args.seed) for sec in cfg.__dataclass_fields__})
    utility = replace(UTILITY_PRESETS[args.preset], seed=args.seed)
    reporter, rows, source_model, t_start = MemoryReporter(verbose=args.verbose), [], None, time.time()
    for n in args.n:
        data_cfg = replace(base, n=n)
        task = load_ecg_task(data_cfg)
        print(f"n={n}: {task.data['source_x'].shape[0]} source, {len(task.split.train)} train / "
              f"{len(task.split.val)} val / {len(task.split.test)} test target records", flush=True)
        if source_model is None and any(m != "real_only" for m in args.methods):
            t0 = time.time()
            source_model = stages.pretrain_source(cfg.source, task.data, VPSchedule(), torch.device(args.device),
                                                    reporter)
            print(f"source model: {time.time() - t0:.0f} s", flush=True)
        rows += run_ecg_methods(data_cfg, cfg, args.device, reporter, methods=args.methods, utility=utility,
                                task=task, source_model=source_model, log=lambda m: print(m, flush=True))
    meta = {"data": asdict(base), "n": list(args.n), "preset": args.preset, "tgdp": to_dict(cfg),
            "utility": asdict(utility), "reg_etas": REG_ETAS, "embedding": EMBEDDING_VERSION,
            "ci": utility.ci, "seconds": round(time.time() - t_start, 1), "torch_threads": torch.get_num_threads()}
    write_results(rows, args.out, meta)
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump({k: meta[k] for k in ("data", "n", "preset", "tgdp", "utility", "reg_etas")}, f, indent=2)
    print(markdown_table(rows))
    print(f"wrote {args.out}/ecg_results.{{csv,md,json}} in {meta['seconds']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tgdp-study ecg", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
