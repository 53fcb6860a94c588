"""SIGKILL the driver at five points of a study, then `tgdp-study resume`: nothing finished is lost,
nothing is duplicated or left RUNNING, the summary covers every trial. The points are found by watching
the study directory and the progress output of the driver (a subprocess)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.system.faults import (Driver, check_study, completed_ids, fault_spec, run_cli, shared_gmm_methods,
                                 tune_checkpoints)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
NAME = "kill"


def _cache(study: Path, kind: str) -> list[Path]:
    return list((study / "cache").glob(f"{kind}-*.pt"))


# point -> (condition on (study, driver output) to kill at, check of the precondition at kill time)
POINTS = {
    # the line is printed right before the shared Train run starts; the kill follows 2 s later (DELAY)
    "source-pretraining": (lambda s, out: "shared stages (source" in out,
                           lambda s: not _cache(s, "source")),
    "baseline-stage": (lambda s, out: bool(_cache(s, "source")) and len(_cache(s, "baseline")) >= 1,
                       lambda s: len(_cache(s, "baseline")) < 5),
    "mid-guidance": (lambda s, out: len(tune_checkpoints(s, NAME)) >= 1,
                     lambda s: not completed_ids(s)),
    "sampling": (lambda s, out: any(p.name == "checkpoint_000002" for p in tune_checkpoints(s, NAME)),
                 lambda s: len(completed_ids(s)) < 2),
    "summary": (lambda s, out: "all units done" in out,
                lambda s: len(completed_ids(s)) == 2),
}
DELAY = {"source-pretraining": 2.0}  # seconds between the point showing and the kill
# On a quiet machine the smoke source model trains in under 2 s and the kill would land after it:
# a longer source run keeps the point inside pretraining whatever the load.
SOURCE_STEPS = {"source-pretraining": 6000}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_driver_then_resume(tmp_path, point):
    spec = fault_spec(tmp_path, NAME, source_steps=SOURCE_STEPS.get(point, 300))
    study = tmp_path / "studies" / NAME
    when, pre = POINTS[point]
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies")], tmp_path / "run.log")
    try:
        d.wait_for(lambda: when(study, d.output()), 400, f"the {point} point")
        time.sleep(DELAY.get(point, 0.0))
        d.signal(signal.SIGKILL)
        d.wait(30)
        assert pre(study), f"the kill missed the {point} point:\n{d.output()[-3000:]}"
    finally:
        d.cleanup()
    kept = completed_ids(study)
    t0 = time.time()
    r = run_cli(["resume", str(study)], timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    print(f"{point}: resume {time.time() - t0:.1f} s")
    check_study(study, NAME, trials=2, kept=kept)
    # each computed once, kept
    assert len(_cache(study, "source")) == 1 and len(_cache(study, "baseline")) == len(shared_gmm_methods())
