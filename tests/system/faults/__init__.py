"""Fault injection against the real stack (local Ray, Optuna sqlite, MLflow sqlite or a 127.0.0.1 server).

Helpers: a small study spec, a driver started as a subprocess in its own session (so every Ray process it
starts can be cleaned up by its process group), watchers on the study directory and the progress output,
process-tree lookups from /proc (to find our own Ray Train workers), and ``check_study``: the invariants
after any fault + resume (every completed trial kept, the summary covers every trial, no MLflow run
duplicated or left RUNNING, no Optuna trial left RUNNING).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tests.study_util import by_kind, optuna_trials, runs, tiny_spec

SCRIPT = Path(sys.executable).with_name("tgdp-study")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}  # Ray token authentication as tests.study_util set it
LABEL = "n10"


def fault_spec(tmp: Path, name: str, epochs: int = 3, source_steps: int = 300, **changes) -> Path:
    """gmm_smoke.yaml cut down: n = 10 only, 2 trials, ``epochs`` guidance epochs (a mid-guidance point exists)."""
    base = dict(factors={"n": [10]}, budget={"trials_per_n": 2}, data={"m": 1000},
                fixed={"source": {"width": 32, "depth": 2, "steps": source_steps, "batch_size": 256, "report_every": 100},
                       "classifier": {"width": 16, "depth": 1, "steps": 60, "report_every": 20},
                       "time_classifier": {"width": 16, "depth": 1, "steps": 40, "report_every": 20},
                       "guidance": {"width": 16, "depth": 2, "epochs": epochs, "batch_size": 512},
                       "vanilla": {"width": 32, "depth": 2, "steps": 60, "report_every": 30},
                       "finetune": {"width": 32, "depth": 2, "steps": 30, "report_every": 15},
                       "sample": {"steps": 8, "num_samples": 500, "batch_size": 500}},
                space={"guidance.eta_consistency": {"kind": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True,
                                                    "off": 0.0},
                       "sample.guidance_scale": {"kind": "float", "low": 0.5, "high": 1.5}},
                early_stopping={"enabled": True, "grace_period": 1, "reduction_factor": 2, "max_epochs": 3},
                resources={"workers_per_trial": 0, "cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2})
    base.update(changes)
    return tiny_spec(tmp, name, **base)


class Driver:
    """``tgdp-study ARGS`` in its own session, output to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.log = log
        self._fh = open(log, "w")
        self.proc = subprocess.Popen([str(SCRIPT), *args], stdout=self._fh, stderr=subprocess.STDOUT,
                                     env=env or ENV, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
        deadline = time.time() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise AssertionError(f"driver exited ({self.proc.returncode}) before {what}:\n{self.output()[-4000:]}")
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")
            time.sleep(poll)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._fh.flush()

    def cleanup(self) -> None:
        """SIGKILL whatever is left of our session (Ray processes a killed driver leaves behind)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._fh.close()


def run_cli(args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env or ENV, timeout=timeout)


def descendants(pid: int) -> list[int]:
    """Every process whose parent chain reaches ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def completed_ids(study: Path, label: str = LABEL) -> set[str]:
    return {p.parent.name for p in (study / "trials" / label).glob("*/result.pt")}


def tune_checkpoints(study: Path, name: str, label: str = LABEL) -> list[Path]:
    return sorted((study / "ray" / f"{name}-{label}").glob("trial_*/checkpoint_*"))


def tune_epochs(study: Path, name: str, label: str = LABEL) -> list[int]:
    """The guidance epochs the trials of ``<name>-<label>`` reported to Tune, in file order (result.json lines)."""
    out = []
    for f in (study / "ray" / f"{name}-{label}").glob("trial_*/result.json"):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if "epoch" in r:
                out.append(int(r["epoch"]))
    return out


def check_study(study: Path, name: str, trials: int, kept: set[str], tracking_uri: str | None = None,
                labels: tuple[str, ...] = (LABEL,)) -> None:
    """The invariants after a fault and a resume."""
    uri = tracking_uri or f"sqlite:///{study / 'mlflow.db'}"
    complete_ids = set()
    for label in labels:
        ts = optuna_trials(study, f"{name}-{label}")
        assert not [t.number for t in ts if t.state.name == "RUNNING"], "Optuna trial left RUNNING"
        # told trials: finished (COMPLETE) or stopped early by ASHA (PRUNED); both count against the budget
        complete = [t for t in ts if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(complete) == trials, [(t.number, t.state.name) for t in ts]
        complete_ids |= {t.user_attrs["tune_trial_id"] for t in complete}
    assert kept <= complete_ids, f"completed before the fault but lost: {kept - complete_ids}"
    rs = runs(uri, name)
    assert not [(r.info.run_name, r.data.tags.get("kind")) for r in rs if r.info.status == "RUNNING"], \
        "MLflow run left RUNNING"
    trial_runs = by_kind(rs, "trial")
    ids = [r.data.tags["trial_id"] for r in trial_runs]
    assert len(ids) == len(set(ids)), f"duplicated trial runs: {sorted(ids)}"
    assert complete_ids <= set(ids)
    for r in trial_runs:
        if r.data.tags["trial_id"] in complete_ids and (study / "trials" / r.data.tags["label"] /
                                                         r.data.tags["trial_id"] / "result.pt").is_file():
            assert r.data.tags.get("finalized") == "true", r.data.tags
    parents = [r.info.run_name for r in by_kind(rs, "n")]
    assert sorted(parents) == sorted(labels), parents
    base = [(r.data.tags["label"], r.data.tags["method"]) for r in by_kind(rs, "baseline")]
    # one baseline run per shared method of the experiment and unit (from the registries, not a hard-coded count)
    assert len(base) == len(set(base)) == len(shared_gmm_methods()) * len(labels), base
    summ = by_kind(rs, "summary")
    assert len(summ) == 1 and summ[0].info.status == "FINISHED"
    with open(study / "report" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows) == trials * len(labels)
    assert {r["tune_trial_id"] for r in rows if r["state"] in ("COMPLETE", "PRUNED")} == complete_ids
    summary = (study / "report" / "summary.csv").read_text()
    assert summary.count("tgdp (best)") == len(labels)



def check_resumed_from_checkpoint(study: Path, name: str, before: list[int], epochs: int) -> None:
    """The one trial of ``study`` continued from its checkpoint after a kill: the epochs reported to Tune never go
    back (a restart from scratch would report epoch 1 again), every epoch up to the final evaluation (``epochs`` +
    1) arrived, each guidance epoch was trained once (restored rows + new ones), and the study is whole."""
    import torch

    seen = tune_epochs(study, name)
    assert before and seen[:len(before)] == before, (before, seen)
    assert all(b >= a for a, b in zip(seen, seen[1:])), seen
    assert seen.count(1) == 1 and seen[-1] == epochs + 1, seen
    res = torch.load(next((study / "trials" / LABEL).glob("*/result.pt")), weights_only=True)
    guidance = [row["epoch"] for row in res["rows"] if row["stage"] == "guidance"]
    assert guidance == sorted(set(guidance)), guidance
    check_study(study, name, trials=1, kept=set())

def shared_gmm_methods() -> list[str]:
    """The GMM experiment's shared (unsearched, cached) methods: one baseline run and cache entry each per unit."""
    from study.experiments import EXPERIMENTS
    from tgdp.methods import get_method

    return [m for m in EXPERIMENTS["gmm"].methods if get_method(m).shared]
