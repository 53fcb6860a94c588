"""One trial = one Ray Train run; plus the Train run of the shared (unsearched) stages.

``run_trial`` is the Tune trainable: it builds a ``TorchTrainer`` whose per-worker loop
(``trial_loop``) runs stages B (domain classifier, or the cached one) -> B' (time classifier, if
eta_cycle > 0) -> C (guidance, with a validation evaluation every report so ASHA can stop weak
trials) -> final sampling and evaluation. ``shared_loop`` computes, for one n, what no trial
searches (source model, baselines and oracles, the classifier when unsearched) into the stage cache.

Reporting. ``RayReporter`` implements ``tgdp.reporter.Reporter``. With Train workers every report is
``ray.train.report`` on every rank (a barrier) with a checkpoint written by rank 0; only reports that
carry ``"epoch"`` (guidance epochs and the final evaluation) are forwarded to Tune, so ASHA and
Optuna always see the objective. ``"epoch"`` is the guidance epoch (1..E); the final evaluation
reports epoch E + 1 (ASHA's ``max_t`` is max_epochs + 1, so ASHA never cuts a trial between its last
guidance epoch and its final evaluation). With ``workers_per_trial: 0`` (in-process TorchTrainer,
which forwards nothing to Tune) the Tune-bound reports go straight to ``ray.tune.report``.
A checkpoint holds every stage state so far (``torch.load(weights_only=True)`` on restore).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from study.cache import StageCache, atomic_save, classifier_key, source_key, torch_file_problem
from tgdp import distributed as D
from tgdp import pipeline, stages
from tgdp.config import to_dict

CKPT_FILE = "trial_state.pt"
RESULT_FILE = "result.pt"
EVAL_SAMPLES = 2000  # samples of the in-training evaluation (the final one uses sample.num_samples)
log = logging.getLogger("study.trial")
RT = "_rt"  # config key of the runtime constants (spec, n, seed, paths, resources); not a parameter


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The searched parameters of a Tune config (everything but the runtime constants)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


class RayReporter:
    """``tgdp.reporter.Reporter`` inside a Ray Train worker or an in-process Tune trial.

    mode "train": ``ray.train.report`` every time (barrier, all ranks), rank 0 adds the checkpoint.
    mode "tune":  in-process trial; only Tune-bound reports (with "epoch") go to ``ray.tune.report``.
    """

    def __init__(self, mode: str, prefix: str = "") -> None:
        import ray.train
        from ray import tune

        self.mode, self.prefix = mode, prefix
        self.rows: list[dict[str, Any]] = []
        self.states: dict[str, Any] = {}
        ck = ray.train.get_checkpoint() if mode == "train" else tune.get_checkpoint()
        saved = None if ck is None else load_checkpoint_state(ck)
        if saved is not None:
            self.rows, self.states = list(saved["rows"]), dict(saved["states"])
        self.restored = saved is not None

    # --- Reporter protocol --------------------------------------------------------------------
    def report(self, metrics: dict[str, float], *, stage: str, epoch: int, state: dict[str, Any] | None = None) -> None:
        stage = self.prefix + stage
        if state is not None:
            self.states[stage] = state
        self.rows.append({"stage": stage, "epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}})
        if stage == "guidance":
            out = {"epoch": int(epoch), **metrics}
        else:
            out = {f"{stage}_epoch": int(epoch), **{f"{stage}_{k}": v for k, v in metrics.items()}}
        self.send(out)

    def restore(self, stage: str) -> dict[str, Any] | None:
        return self.states.get(self.prefix + stage)

    def should_stop(self) -> bool:
        return False  # ASHA and the time budget stop trials from outside

    # --- transport ---------------------------------------------------------------------------------
    def send(self, metrics: dict[str, Any]) -> None:
        """Report ``metrics`` with a checkpoint of every stage state (rank 0 writes it)."""
        import ray.train
        from ray import tune

        to_tune = "epoch" in metrics
        if self.mode == "tune" and not to_tune:
            return  # kept in memory; checkpointed with the next Tune-bound report
        with tempfile.TemporaryDirectory() as d:
            ck = None
            if D.is_rank_zero():
                torch.save({"states": self.states, "rows": self.rows}, Path(d) / CKPT_FILE)
                ck = ray.train.Checkpoint.from_directory(d)
            if self.mode == "train":
                ray.train.report(metrics, checkpoint=ck)
            else:
                tune.report(metrics, checkpoint=ck)


def load_checkpoint_state(ck) -> dict[str, Any] | None:
    """The trial state saved in ``ck``; when it is damaged, the newest older checkpoint of the same run that
    is intact (Ray keeps two), else None (the trial then starts over). Each fallback is logged."""
    for cand in [ck, *_older_checkpoints(ck)]:
        with cand.as_directory() as d:
            path = Path(d) / CKPT_FILE
            problem = torch_file_problem(path) if path.is_file() else f"{CKPT_FILE} missing"
            if problem is None:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as e:  # noqa: BLE001 - intact zip but unreadable content: same remedy
                    problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if problem is None:
            if cand is not ck:
                log.warning("trial checkpoint: restored from the previous checkpoint %s", cand.path)
            return state
        log.warning("trial checkpoint: corrupt checkpoint %s (%s); trying the previous one", cand.path, problem[:300])
    log.warning("trial checkpoint: no intact checkpoint left; the trial starts from its first stage")
    return None


def _older_checkpoints(ck) -> list:
    """Checkpoints of the same run older than ``ck``, newest first (their directory names are timestamps
    or counters, so name order is age order)."""
    import pyarrow.fs as pafs
    import ray.train

    parent, _, name = ck.path.rstrip("/").rpartition("/")
    infos = ck.filesystem.get_file_info(pafs.FileSelector(parent))
    older = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [ray.train.Checkpoint(f"{parent}/{n}", filesystem=ck.filesystem) for n in older]


def _forward_callback():
    """TuneReportCallback that forwards only Tune-bound reports (those with "epoch").

    Stage reports (source, classifier, ...) do not carry the objective; OptunaSearch and Tune's
    strict metric check would refuse them. They still checkpoint inside the Train run.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochOnlyTuneReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and "epoch" in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return EpochOnlyTuneReportCallback()


def _device(rt: dict[str, Any]) -> torch.device:
    if rt["workers"] > 0 and rt["gpus_per_worker"] > 0:
        import ray.train.torch
        return ray.train.torch.get_device()
    return torch.device("cpu")


def quiet_ray_logs() -> None:
    """Per-report INFO lines of Ray Train/Tune ("Reported metrics", "Checkpoint created") drown the progress."""
    import logging

    for name in ("ray.train", "ray.tune", "ray.air"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _threads(rt: dict[str, Any]) -> None:
    quiet_ray_logs()
    cpus = rt["cpus_per_worker"] if rt["workers"] > 0 else rt["cpus_per_trial"]
    torch.set_num_threads(max(1, int(cpus)))


def _spec(rt: dict[str, Any]):
    from study.spec import parse_spec
    return parse_spec(rt["spec"], rt.get("spec_file", "<spec>"))


def load_source(cache: StageCache, data_cfg, cfg, exp, task, data) -> torch.nn.Module:
    """The cached source model, rebuilt by the experiment adapter ``exp``."""
    entry = cache.get("source", source_key(data_cfg, cfg))
    if entry is None:
        raise RuntimeError(f"source model missing from the stage cache {cache.root}; run the shared stages first")
    return exp.source_net(cfg, task, data, entry["state"])


def load_classifier(cache: StageCache, data_cfg, cfg, exp, task, data) -> torch.nn.Module | None:
    """The cached domain classifier (None when not cached), rebuilt by the experiment adapter ``exp``."""
    entry = cache.get("classifier", classifier_key(data_cfg, cfg))
    return None if entry is None else exp.classifier_net(cfg, task, data, entry["state"])


# --- the trial ----------------------------------------------------------------------------------------

def trial_loop(config: dict[str, Any]) -> None:
    """Per-worker loop of one trial: stages B, B', C, final sampling and evaluation (``study.experiments``)."""
    from study.experiments import experiment_for

    rt = config[RT]
    _threads(rt)
    spec, params = _spec(rt), trial_params(config)
    exp = experiment_for(spec)
    data_cfg, cfg = spec.resolved_config(rt["n"], rt["seed"], params)
    task, data = exp.load(data_cfg)
    device = _device(rt)
    cache = StageCache(rt["cache_dir"])
    reporter = RayReporter("train" if rt["workers"] > 0 else "tune")
    source = load_source(cache, data_cfg, cfg, exp, task, data).to(device)
    classifier = None if rt["classifier_searched"] else load_classifier(cache, data_cfg, cfg, exp, task, data)
    if classifier is None:
        classifier = stages.train_classifier(cfg.classifier, data, device, reporter)
    classifier = classifier.to(device).eval()
    before = {k: v for k, v in exp.diagnostics(task, classifier, None, cfg).items() if k != "guidance_grad_rmse"}
    evaluate = exp.guidance_evaluator(cfg, task, data, source, device, rt["eval_samples"], lambda: before)
    models = pipeline.fit_tgdp(cfg, data, source, task_schedule(task), device, reporter, classifier=classifier,
                               evaluate=evaluate)
    h = models.guidance
    res = exp.evaluate("tgdp", cfg, task, data, device, source=source, h=h)
    extra = exp.diagnostics(task, classifier, h, cfg)
    val, test = {**res["validation"], **extra}, {**res["test"], **extra}
    grid = exp.ratio_grid(task, classifier, cfg)
    if D.is_rank_zero():
        atomic_save({"trial_id": rt["trial_id"], "n": rt["n"], "seed": rt["seed"], "params": params,
                     "config": to_dict(cfg), "data": to_dict(data_cfg), "validation": val, "test": test,
                     "samples": res["validation_samples"], "guidance": {k: v.cpu() for k, v in h.state_dict().items()},
                     "rows": reporter.rows, "epochs": cfg.guidance.epochs, "ratio_grid": grid,
                     "experiment": spec.experiment, "torch_threads": torch.get_num_threads()},
                    Path(rt["trial_dir"]) / RESULT_FILE)
    # The final report: epoch E + 1 (see module doc), the full-size validation metrics.
    reporter.send({"epoch": cfg.guidance.epochs + 1, "final": 1.0, **val})


def task_schedule(task):
    """The noise schedule of a task (GMMTask carries one; the ECG experiment uses the default VP schedule)."""
    from tgdp.schedules import VPSchedule
    return getattr(task, "schedule", None) or VPSchedule()


def ratio_grid(task, classifier: torch.nn.Module, size: int = 60) -> dict[str, torch.Tensor] | None:
    """Learned (classifier) and exact log r on a 2-D grid, for the log-ratio field plot (dim 2 only)."""
    if task.cfg.dim != 2:
        return None
    lim = 1.5 * float(max(max(map(abs, task.cfg.mu_source)), max(map(abs, task.cfg.mu_target)))) + 1.0
    ax = torch.linspace(-lim, lim, size)
    gx, gy = torch.meshgrid(ax, ax, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    dev = next(classifier.parameters()).device
    learned = stages.classifier_log_ratio(classifier, pts.to(dev)).cpu()
    return {"x": ax, "learned": learned.reshape(size, size), "exact": task.log_ratio(pts).reshape(size, size)}


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: one Ray Train run for the whole trial, named so that a restore resumes it."""
    import ray.train
    import ray.train.torch
    from ray import tune

    quiet_ray_logs()
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    rt = dict(config[RT])
    rt["trial_id"] = trial_id
    rt["trial_dir"] = os.path.join(rt["trials_dir"], trial_id)
    done = Path(rt["trial_dir"]) / RESULT_FILE
    if done.is_file():  # finished before a driver crash that Tune's experiment state did not record
        res = torch.load(done, map_location="cpu", weights_only=True)
        tune.report({"epoch": res["epochs"] + 1, "final": 1.0, **res["validation"]})
        return
    gpu = rt["workers"] > 0 and rt["gpus_per_worker"] > 0
    per_worker = {"CPU": rt["cpus_per_worker"], **({"GPU": rt["gpus_per_worker"]} if gpu else {})}
    trainer = ray.train.torch.TorchTrainer(
        trial_loop, train_loop_config={**config, RT: rt},
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=rt["workers"], use_gpu=gpu,
                                               resources_per_worker=per_worker if rt["workers"] else None),
        run_config=ray.train.RunConfig(
            name=f"{ctx.get_experiment_name()}-{trial_id}", storage_path=rt["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[_forward_callback()] if rt["workers"] else None))
    trainer.fit()


# --- shared stages ------------------------------------------------------------------------------------

def shared_loop(config: dict[str, Any]) -> None:
    """Per-worker loop: for one n and every seed, fill the stage cache with what no trial searches."""
    from study.experiments import experiment_for

    rt = config[RT]
    _threads(rt)
    spec = _spec(rt)
    exp = experiment_for(spec)
    cache = StageCache(rt["cache_dir"])
    device = _device(rt)
    for seed in rt["seeds"]:
        data_cfg, cfg = spec.resolved_config(rt["n"], seed)
        task, data = exp.load(data_cfg)
        schedule = task_schedule(task)
        reporter = RayReporter("train", prefix=f"s{seed}/")
        skey = source_key(data_cfg, cfg)
        if not cache.has("source", skey):
            model = stages.pretrain_source(cfg.source, data, schedule, device, reporter)
            if D.is_rank_zero():
                cache.put("source", skey, {"state": {k: v.cpu() for k, v in model.state_dict().items()},
                                           "config": to_dict(cfg.source), "data": to_dict(data_cfg)})
            D_barrier()
        source = load_source(cache, data_cfg, cfg, exp, task, data).to(device)
        if not rt["classifier_searched"]:
            ckey = classifier_key(data_cfg, cfg)
            if not cache.has("classifier", ckey):
                clf = stages.train_classifier(cfg.classifier, data, device, reporter)
                if D.is_rank_zero():
                    cache.put("classifier", ckey, {
                        "state": {k: v.cpu() for k, v in clf.state_dict().items()},
                        "config": to_dict(cfg.classifier), "data": to_dict(data_cfg),
                        **exp.diagnostics(task, clf, None, cfg)})
        for method in exp.baselines:
            bkey = exp.baseline_key(method, data_cfg, cfg)
            if cache.has("baseline", bkey):
                continue
            model = None
            if method in ("vanilla", "finetune"):
                model = pipeline.fit_baseline(method, cfg, data, source, schedule, device, reporter)
            elif method == "source_only":
                model = source
            res = exp.evaluate(method, cfg, task, data, device, source=source, model=model)
            if D.is_rank_zero():
                entry = {"method": method, "n": rt["n"], "seed": seed, "validation": res["validation"],
                         "test": res["test"], "samples": res["validation_samples"], "data": to_dict(data_cfg),
                         "config": to_dict(cfg), "key": bkey}
                if method in ("vanilla", "finetune"):
                    entry["state"] = {k: v.cpu() for k, v in model.state_dict().items()}
                cache.put("baseline", bkey, entry)
    reporter.send({"shared_done": 1.0, "shared_n": float(rt["n"])})


def D_barrier() -> None:
    """All ranks wait until rank 0 has written a cache entry (no-op when not distributed)."""
    if D.is_distributed():
        torch.distributed.barrier()


def run_shared(rt: dict[str, Any], name: str) -> None:
    """Run ``shared_loop`` as its own Ray Train run from the driver (outside Tune)."""
    import ray.train
    import ray.train.torch

    gpu = rt["workers"] > 0 and rt["gpus_per_worker"] > 0
    per_worker = {"CPU": rt["cpus_per_worker"], **({"GPU": rt["gpus_per_worker"]} if gpu else {})}
    ray.train.torch.TorchTrainer(
        shared_loop, train_loop_config={RT: rt},
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=rt["workers"], use_gpu=gpu,
                                               resources_per_worker=per_worker if rt["workers"] else None),
        run_config=ray.train.RunConfig(name=name, storage_path=rt["train_storage"],
                                       failure_config=ray.train.FailureConfig(max_failures=1),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
    ).fit()


__all__ = ["RayReporter", "run_shared", "run_trial", "shared_loop", "trial_loop", "trial_params"]
