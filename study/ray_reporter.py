"""Reporting from a trial to Ray: ``RayReporter`` (the ``tgdp.reporter.Reporter`` of the study) and its checkpoints.

With Train workers every report is ``ray.train.report`` on every rank (a barrier) with a checkpoint written by
rank 0; only reports that carry ``"epoch"`` (guidance epochs and the final evaluation) are forwarded to Tune
(``forward_callback``), so ASHA and Optuna always see the objective. ``"epoch"`` is the guidance epoch (1..E);
the final evaluation reports epoch E + 1 (ASHA's ``max_t`` is max_epochs + 1, so ASHA never cuts a trial
between its last guidance epoch and its final evaluation). With ``workers_per_trial: 0`` (in-process
TorchTrainer, which forwards nothing to Tune) the Tune-bound reports go straight to ``ray.tune.report``.

A checkpoint (``CKPT_FILE``) holds every stage state so far and the report rows; it is read back with
``torch.load(weights_only=True)``, falling back to the previous checkpoint when the newest is damaged.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from study.cache import torch_file_problem
from tgdp import distributed as D

CKPT_FILE = "trial_state.pt"
log = logging.getLogger("study.trial")


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
                # the Checkpoint class of the API that reports it: ray.train's passed to tune.report is deprecated
                # (a RayDeprecationWarning from every trial process)
                ck = (ray.train.Checkpoint if self.mode == "train" else tune.Checkpoint).from_directory(d)
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


def forward_callback():
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


__all__ = ["CKPT_FILE", "RayReporter", "forward_callback", "load_checkpoint_state"]
