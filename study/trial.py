"""One trial = one Ray Train run; plus the Train run of the shared (unsearched) stages of a unit.

``run_trial(config, runtime)`` is the Tune trainable: ``config`` holds the trial's searched values and
``runtime`` (a ``study.runtime.TrialRuntime``, bound by ``tune.with_parameters``) everything else. It
resolves the trial's config (``study.runtime.resolve``) and runs ``trial_loop`` on every worker of one Ray
Train run named after the trial, so that a restore resumes it from its checkpoint. ``trial_loop`` runs
stages B (domain classifier, or the cached one) -> B' (time classifier, if eta_cycle > 0) -> C (guidance,
with a validation evaluation every report so ASHA can stop weak trials) -> final sampling and evaluation,
and rank 0 writes ``result.pt``. ``shared_loop`` computes what no trial searches (the source model, the
experiment's shared methods, the classifier when unsearched) into the stage cache; the driver runs it with
``run_shared``. Both go through ``train_run``, the one place a Train run is set up.

Reporting and checkpoints: ``study.ray_reporter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from study.cache import StageCache, atomic_save, classifier_key, source_key
from study.paths import RESULT_FILE
from study.ray_reporter import RayReporter, forward_callback
from study.runtime import EVAL_SAMPLES, ResolvedTrial, TrialRuntime, resolve
from tgdp import distributed as D
from tgdp import pipeline, stages
from tgdp.config import to_dict


def quiet_ray_logs() -> None:
    """Per-report INFO lines of Ray Train/Tune ("Reported metrics", "Checkpoint created") drown the progress."""
    import logging

    for name in ("ray.train", "ray.tune", "ray.air"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ignore_stop_exit() -> None:
    """When ASHA stops a trial, Ray ends its training thread with ``sys.exit(0)`` inside the report call; the
    SystemExit then also surfaces where Python cannot raise it (finalisers of the unwound frames) as an
    "Exception ignored ... SystemExit" traceback in the driver's console. That one is expected: drop it,
    print every other unraisable exception as Python does."""
    import sys

    if getattr(sys.unraisablehook, "_study", False):
        return
    default = sys.unraisablehook

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    hook._study = True
    sys.unraisablehook = hook


def _setup(rt: TrialRuntime) -> torch.device:
    """Quiet logs, the worker's torch threads, and its device."""
    quiet_ray_logs()
    _ignore_stop_exit()
    torch.set_num_threads(rt.threads)
    if rt.use_gpu:
        import ray.train.torch
        return ray.train.torch.get_device()
    return torch.device("cpu")


def train_run(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], rt: TrialRuntime, *,
              name: str, to_tune: bool, keep: int) -> None:
    """Run ``loop(loop_config)`` as one Ray Train run on the workers of ``rt`` (in-process with 0 workers).

    ``name`` must be stable: a restored run continues from its latest checkpoint. ``to_tune``: forward the
    Tune-bound reports to the Tune trial around it; ``keep``: checkpoints kept (a damaged newest one falls
    back to the previous, ``study.ray_reporter.load_checkpoint_state``)."""
    import ray.train
    import ray.train.torch

    gpu = rt.use_gpu
    per_worker = {"CPU": rt.cpus_per_worker, **({"GPU": rt.gpus_per_worker} if gpu else {})}
    ray.train.torch.TorchTrainer(
        loop, train_loop_config=loop_config,
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=rt.workers, use_gpu=gpu,
                                               resources_per_worker=per_worker if rt.workers else None),
        run_config=ray.train.RunConfig(name=name, storage_path=rt.train_storage,
                                       failure_config=ray.train.FailureConfig(max_failures=rt.max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
                                       callbacks=[forward_callback()] if to_tune and rt.workers else None),
    ).fit()


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

def run_trial(config: dict[str, Any], runtime: TrialRuntime) -> None:
    """Tune trainable: resolve the trial's config, then one Ray Train run of ``trial_loop``."""
    from ray import tune

    quiet_ray_logs()
    _ignore_stop_exit()
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    done = Path(runtime.trial_dir(trial_id)) / RESULT_FILE
    if done.is_file():  # finished before a driver crash that Tune's experiment state did not record
        res = torch.load(done, map_location="cpu", weights_only=True)
        tune.report({"epoch": res["epochs"] + 1, "final": 1.0, **res["validation"]})
        return
    _, cfg = resolve(runtime, config)
    trial = ResolvedTrial(runtime=runtime, trial_id=trial_id, params=dict(config), cfg=cfg)
    train_run(trial_loop, {"trial": trial}, runtime, name=f"{ctx.get_experiment_name()}-{trial_id}",
              to_tune=True, keep=2)


def trial_loop(config: dict[str, Any]) -> None:
    """Per-worker loop of one trial: stages B, B', C, final sampling and evaluation (``study.experiments``)."""
    from study.experiments import experiment_for
    from tgdp.methods import get_method

    trial: ResolvedTrial = config["trial"]
    rt, cfg, data_cfg = trial.runtime, trial.cfg, trial.runtime.data
    device = _setup(rt)
    exp = experiment_for(rt)
    task, data = exp.load(data_cfg)
    cache = StageCache(rt.cache_dir)
    reporter = RayReporter("train" if rt.workers > 0 else "tune")
    source = load_source(cache, data_cfg, cfg, exp, task, data).to(device)
    if get_method(rt.method).shared:  # a tuned baseline (not tgdp / tgdp_reg): no guidance, no epochs
        return method_trial(trial, exp, task, data, source, reporter, device)
    classifier = None if rt.classifier_searched else load_classifier(cache, data_cfg, cfg, exp, task, data)
    if classifier is None:
        classifier = stages.train_classifier(cfg.classifier, data, device, reporter)
    classifier = classifier.to(device).eval()
    before = {k: v for k, v in exp.diagnostics(task, classifier, None, cfg).items() if k != "guidance_grad_rmse"}
    evaluate = exp.guidance_evaluator(cfg, task, data, source, device, rt.eval_samples, lambda: before)
    models = pipeline.fit_tgdp(cfg, data, source, exp.schedule(task), device, reporter, classifier=classifier,
                               evaluate=evaluate)
    h = models.guidance
    res = exp.evaluate("tgdp", cfg, task, data, device, source=source, h=h)
    extra = exp.diagnostics(task, classifier, h, cfg)
    val, test = {**res["validation"], **extra}, {**res["test"], **extra}
    grid = exp.ratio_grid(task, classifier, cfg)
    if D.is_rank_zero():
        atomic_save({"trial_id": trial.trial_id, "n": rt.n, "seed": rt.seed, "method": rt.method,
                     "params": dict(trial.params),
                     "config": to_dict(cfg), "data": to_dict(data_cfg), "validation": val, "test": test,
                     "samples": res["validation_samples"], "guidance": {k: v.cpu() for k, v in h.state_dict().items()},
                     "rows": reporter.rows, "epochs": cfg.guidance.epochs, "ratio_grid": grid,
                     "experiment": rt.experiment, "torch_threads": torch.get_num_threads()},
                    Path(trial.trial_dir) / RESULT_FILE)
    # The final report: epoch E + 1 (see study.ray_reporter), the full-size validation metrics.
    reporter.send({"epoch": cfg.guidance.epochs + 1, "final": 1.0, **val})


def method_trial(trial: ResolvedTrial, exp: Any, task: Any, data: dict, source: torch.nn.Module,
                 reporter: RayReporter, device: torch.device) -> None:
    """A trial of a tuned baseline (vanilla, finetune, domain_guidance): fit it with the trial's config on the
    cached source model, evaluate it, write ``result.pt`` and report once, as epoch 1 (its Tune run is FIFO)."""
    import math

    from tgdp.methods import get_method

    rt, cfg = trial.runtime, trial.cfg
    method = get_method(rt.method)
    fitted = method.fit(cfg, data, source, exp.schedule(task), device, reporter)
    res = exp.evaluate(rt.method, cfg, task, data, device, source=source, model=fitted.model)
    pad = {m: math.nan for m in rt.metrics if m not in res["validation"]}  # e.g. log_ratio_rmse: no classifier
    val, test = {**pad, **res["validation"]}, {**pad, **res["test"]}
    if D.is_rank_zero():
        atomic_save({"trial_id": trial.trial_id, "n": rt.n, "seed": rt.seed, "method": rt.method,
                     "params": dict(trial.params), "config": to_dict(cfg), "data": to_dict(rt.data), "validation": val,
                     "test": test, "samples": res["validation_samples"], "model": method.state(fitted) or {},
                     "rows": reporter.rows, "epochs": 0, "ratio_grid": None, "experiment": rt.experiment,
                     "torch_threads": torch.get_num_threads()},
                    Path(trial.trial_dir) / RESULT_FILE)
    reporter.send({"epoch": 1, "final": 1.0, **val})


# --- shared stages ------------------------------------------------------------------------------------

def run_shared(rt: TrialRuntime, name: str) -> None:
    """Run ``shared_loop`` for the unit of ``rt`` as its own Ray Train run (from the driver, outside Tune)."""
    train_run(shared_loop, {"runtime": rt}, rt, name=name, to_tune=False, keep=1)


def shared_loop(config: dict[str, Any]) -> None:
    """Per-worker loop: fill the stage cache with what no trial of the unit searches."""
    from study.experiments import experiment_for
    from tgdp.methods import get_method

    rt: TrialRuntime = config["runtime"]
    device = _setup(rt)
    exp = experiment_for(rt)
    cache = StageCache(rt.cache_dir)
    data_cfg, cfg = rt.data, rt.base
    task, data = exp.load(data_cfg)
    schedule = exp.schedule(task)
    reporter = RayReporter("train", prefix=f"s{rt.seed}/")
    skey = source_key(data_cfg, cfg)
    if not cache.has("source", skey):
        model = stages.pretrain_source(cfg.source, data, schedule, device, reporter)
        if D.is_rank_zero():
            cache.put("source", skey, {"state": {k: v.cpu() for k, v in model.state_dict().items()},
                                       "config": to_dict(cfg.source), "data": to_dict(data_cfg)})
        _barrier()
    source = load_source(cache, data_cfg, cfg, exp, task, data).to(device)
    if not rt.classifier_searched:
        ckey = classifier_key(data_cfg, cfg)
        if not cache.has("classifier", ckey):
            clf = stages.train_classifier(cfg.classifier, data, device, reporter)
            if D.is_rank_zero():
                cache.put("classifier", ckey, {
                    "state": {k: v.cpu() for k, v in clf.state_dict().items()},
                    "config": to_dict(cfg.classifier), "data": to_dict(data_cfg),
                    **exp.diagnostics(task, clf, None, cfg)})
    for name in exp.baselines:
        bkey = exp.baseline_key(name, data_cfg, cfg)
        if cache.has("baseline", bkey):
            continue
        method = get_method(name)
        fitted = method.fit(cfg, data, source, schedule, device, reporter)
        res = exp.evaluate(name, cfg, task, data, device, source=source, model=fitted.model)
        if D.is_rank_zero():
            entry = {"method": name, "n": rt.n, "seed": rt.seed, "validation": res["validation"],
                     "test": res["test"], "samples": res["validation_samples"], "data": to_dict(data_cfg),
                     "config": to_dict(cfg), "key": bkey}
            state = method.state(fitted)
            if state is not None:
                entry["state"] = state
            cache.put("baseline", bkey, entry)
    reporter.send({"shared_done": 1.0, "shared_n": float(rt.n)})


def _barrier() -> None:
    """All ranks wait until rank 0 has written a cache entry (no-op when not distributed)."""
    if D.is_distributed():
        torch.distributed.barrier()


__all__ = ["EVAL_SAMPLES", "RayReporter", "method_trial", "run_shared", "run_trial", "shared_loop", "train_run", "trial_loop"]
