"""Two drivers on one study directory (the second is refused, nothing corrupted); Ctrl-C (SIGINT) on
`run` stops cleanly, says how to resume, and `resume` completes the study."""

from __future__ import annotations

import signal
import time

import pytest

from tests.system.faults import Driver, check_study, completed_ids, fault_spec, run_cli
from tests.study.test_bad_input import tree_hash

pytestmark = pytest.mark.ray


def test_second_driver_is_refused(tmp_path):
    """While `run` holds the study, `resume` and a second `run` exit 2 with a clear message, change nothing."""
    name = "lock"
    spec = fault_spec(tmp_path, name)
    study = tmp_path / "studies" / name
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    try:
        lock = study / "lock"
        d.wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(d.pid), 120, "the lock")
        spec_before = {k: v for k, v in tree_hash(study).items() if k.startswith("spec")}
        r = run_cli(["resume", str(study)], timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"study {study} is in use by another process (pid {d.pid})" in r.stderr
        assert f"tgdp-study resume {study}" in r.stderr and "Traceback" not in r.stderr
        r = run_cli(["run", str(spec), "--dir", str(tmp_path / "studies")], timeout=120)
        assert r.returncode == 2 and f"study already exists: {study}" in r.stderr
        assert {k: v for k, v in tree_hash(study).items() if k.startswith("spec")} == spec_before
        assert lock.read_text().strip() == str(d.pid)  # the lock still names the first driver
        assert d.proc.poll() is None  # the first driver is unaffected
    finally:
        d.cleanup()


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_completes(tmp_path):
    name = "sigint"
    spec = fault_spec(tmp_path, name, budget={"trials_per_n": 1})
    study = tmp_path / "studies" / name
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    t0 = time.time()
    try:  # Ctrl-C once the (only) trial runs
        d.wait_for(lambda: "trial " in d.output() and " running: " in d.output(), 400, "the trial start")
        d.signal(signal.SIGINT)
        code = d.wait(180)
    finally:
        d.cleanup()
    out = d.output()
    assert code == 130, out[-4000:]
    assert f"Resume with:  tgdp-study resume {study}" in out
    assert "Traceback" not in out, out[-4000:]
    assert not (study / "trials" / "n10" / "DONE").exists()  # the interrupted unit is not taken as finished
    kept = completed_ids(study)
    r = run_cli(["resume", str(study)], timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    check_study(study, name, trials=1, kept=kept)
    print(f"SIGINT + resume: {time.time() - t0:.1f} s")
