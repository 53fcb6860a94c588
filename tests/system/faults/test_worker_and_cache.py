"""A Ray Train worker SIGKILLed mid-trial (workers_per_trial: 2): the trial continues from its last
checkpoint, not from scratch. A corrupt / truncated stage-cache entry: detected, logged, recomputed. A truncated latest trial
checkpoint: detected, logged, the previous one is used."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.system.faults import (LABEL, Driver, check_resumed_from_checkpoint, check_study, cmdline, completed_ids,
                          descendants, fault_spec, run_cli, tune_checkpoints, tune_epochs)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_worker_sigkill_resumes_from_checkpoint(tmp_path):
    name = "worker"
    epochs = 40  # ~0.3 s each on 2 workers: a window to find and kill a worker mid-guidance
    spec = fault_spec(tmp_path, name, epochs=epochs, budget={"trials_per_n": 1}, space={},
                      early_stopping={"enabled": False},
                      resources={"workers_per_trial": 2, "cpus_per_worker": 0.5, "cpus_per_trial": 0.5,
                                 "max_concurrent_trials": 1, "num_cpus": 2})
    study = tmp_path / "studies" / name
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    try:
        d.wait_for(lambda: 1 in tune_epochs(study, name), 500, "guidance epoch 1 reported", poll=0.2)
        workers = [p for p in descendants(d.pid) if "RayTrainWorker" in cmdline(p)]
        assert len(workers) >= 2, [(p, cmdline(p)) for p in descendants(d.pid)]
        before = tune_epochs(study, name)
        import os
        os.kill(workers[-1], signal.SIGKILL)  # one of the two DDP ranks of the running trial
        code = d.wait(600)
    finally:
        d.cleanup()
    assert code == 0, d.output()[-4000:]
    check_resumed_from_checkpoint(study, name, before, epochs)


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    name = "corrupt"
    spec = fault_spec(tmp_path, name, budget={"trials_per_n": 1})
    study = tmp_path / "studies" / name
    cache = study / "cache"
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    try:  # kill once the source model and at least one baseline are cached
        d.wait_for(lambda: list(cache.glob("source-*.pt")) and list(cache.glob("baseline-*.pt")), 400,
                   "cached entries")
        d.signal(signal.SIGKILL)
        d.wait(30)
    finally:
        d.cleanup()
    source = next(cache.glob("source-*.pt"))
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])  # truncated
    baseline = next(cache.glob("baseline-*.pt"))
    raw = bytearray(baseline.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # one flipped byte: same size, bad CRC (or unreadable)
    baseline.write_bytes(bytes(raw))
    r = run_cli(["resume", str(study)], timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    log = (cache / "corrupt.log").read_text()
    assert source.name in log and baseline.name in log, log
    assert "corrupt entry" in r.stdout + r.stderr  # the warning reaches the user
    assert (cache / (source.name + ".corrupt")).is_file() and (cache / (baseline.name + ".corrupt")).is_file()
    for p in (source, baseline):  # recomputed, readable again
        assert torch.load(p, weights_only=True)
    check_study(study, name, trials=1, kept=set())


def _checkpoint_tune_restores(study: Path, name: str) -> Path:
    """The checkpoint of the last result in Tune's saved experiment state (its JSON, read as text)."""
    run = study / "ray" / f"{name}-{LABEL}"
    state = sorted(run.glob("experiment_state-*.json"))[-1].read_text()
    names = re.findall(r'checkpoint_dir_name\\?": \\?"(checkpoint_\d+)', state)
    assert names, f"no checkpoint recorded in {state[:2000]}"
    return next(run.glob("trial_*")) / max(names)


def test_corrupt_latest_trial_checkpoint_falls_back_to_the_previous(tmp_path):
    name = "ckpt"
    spec = fault_spec(tmp_path, name, epochs=40, budget={"trials_per_n": 1}, early_stopping={"enabled": False})
    d = yaml.safe_load(spec.read_text())  # small guidance batches: ~60 steps per epoch, the stop lands mid-guidance
    d["fixed"]["guidance"]["batch_size"] = 16
    spec.write_text(yaml.safe_dump(d, sort_keys=False))
    study = tmp_path / "studies" / name
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    try:  # Ctrl-C (Tune saves its state) once the trial has written a few checkpoints
        d.wait_for(lambda: len(tune_checkpoints(study, name)) >= 4, 400, "four trial checkpoints", poll=0.05)
        d.signal(signal.SIGINT)
        assert d.wait(180) == 130, d.output()[-4000:]
    finally:
        d.cleanup()
    assert not completed_ids(study), "the stop came after the trial finished"
    # Tune restores the checkpoint of its last recorded result or (measured) the one before: damage both,
    # so whichever it restores is corrupt and the fallback must reach the newest intact one.
    latest = _checkpoint_tune_restores(study, name)
    older = sorted(p for p in latest.parent.glob("checkpoint_*") if p.name < latest.name)
    assert len(older) >= 2, older
    damaged, intact = [latest, older[-1]], older[-2]
    for ck in damaged:
        state = ck / "trial_state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated
    r = run_cli(["resume", str(study)], timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert f"corrupt checkpoint {damaged[1]}" in out, out[-4000:]
    assert f"restored from the previous checkpoint {intact}" in out, out[-4000:]
    res = torch.load(next((study / "trials" / LABEL).glob("*/result.pt")), weights_only=True)
    guidance = [r["epoch"] for r in res["rows"] if r["stage"] == "guidance"]
    assert guidance == list(range(1, 41)), guidance  # resumed from the older state: every epoch once
    check_study(study, name, trials=1, kept=set())
