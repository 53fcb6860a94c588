"""The ``arrays`` experiment end to end: the shipped search_spaces/arrays_smoke.yaml, unmodified, on the demo
files its header's snippet writes, with real Ray (local, 2 CPUs), Optuna and MLflow (sqlite).

The snippet runs in ``tmp_path`` (the working directory of the test), so the spec's relative paths resolve
there, as they would for a user running ``tgdp-study run`` from their data's parent directory.
"""

from __future__ import annotations

import csv
import math
import time

import pytest
import yaml

from study.spec import load_spec
from tests.study_util import artifacts, by_kind, optuna_trials, runs
from tests.study.test_arrays import ARRAYS_SMOKE, demo_snippet

pytestmark = pytest.mark.ray
BASELINES = ("vanilla", "finetune", "domain_guidance", "source_only")  # ArraysExperiment.baselines: no oracle


@pytest.fixture(scope="module")
def local_ray():
    """conftest's ``local_ray`` (2 CPUs), started with ``address="local"``: without an address ``ray.init``
    joins any Ray instance already running on the machine (another test session's) and then refuses num_cpus."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_arrays_smoke_study_end_to_end(local_ray, tmp_path, monkeypatch):
    from study.runner import run_study

    monkeypatch.chdir(tmp_path)
    exec(demo_snippet(), {})  # writes data/arrays_demo/{source,target}.npy under tmp_path
    spec = load_spec(ARRAYS_SMOKE)
    study = tmp_path / "studies" / spec.name
    t0 = time.time()
    assert run_study(spec, study, None, None) == 0
    print(f"arrays smoke study wall time {time.time() - t0:.1f} s")

    # the study's own spec holds absolute paths and the files' fingerprint (resume from anywhere; changed files refused)
    stored = yaml.safe_load((study / "spec.yaml").read_text())["data"]
    assert stored["source"] == str(tmp_path / "data" / "arrays_demo" / "source.npy")
    assert len(stored["fingerprint"]) == 16

    # the report: tgdp (best trial, selected on validation) and every baseline, finite test metrics
    rows = {r["method"]: r for r in csv.DictReader((study / "report" / "summary.csv").open())}
    assert set(rows) == {"tgdp (best)", *BASELINES}
    for method, r in rows.items():
        for metric in ("energy_distance", "sliced_w2"):
            assert math.isfinite(float(r[metric])), (method, metric, r[metric])
    assert all(math.isfinite(float(rows["tgdp (best)"][k])) for k in ("logr_source", "logr_target_val"))

    # MLflow: one parent (n = 50), both trials, one run per baseline, the summary; nothing left RUNNING
    uri = f"sqlite:///{study / 'mlflow.db'}"
    rs = runs(uri, spec.name)
    assert all(r.info.status == "FINISHED" for r in rs), [(r.info.run_name, r.info.status) for r in rs]
    assert [r.info.run_name for r in by_kind(rs, "n")] == ["n50"]
    trials = by_kind(rs, "trial")
    assert len(trials) == 2 and len(by_kind(rs, "baseline")) == len(BASELINES) and len(by_kind(rs, "summary")) == 1
    done = [t for t in trials if t.data.tags.get("finalized") == "true"]
    assert done, "no trial reached its final evaluation"
    t = done[0]
    assert {"val_energy_distance", "val_sliced_w2", "test_energy_distance", "val_logr_target_val"} <= \
        set(t.data.metrics)
    assert t.data.params["data.source"] == stored["source"]  # the resolved data config is logged
    assert "plots/samples.png" in artifacts(uri, t.info.run_id)  # 3-d rows: coordinates 1-2, no GMM density

    # Optuna: both trials of the n = 50 study told, each COMPLETE (finished) or PRUNED (stopped early by ASHA)
    states = [x.state.name for x in optuna_trials(study, f"{spec.name}-n50")]
    assert len(states) == 2 and "COMPLETE" in states and set(states) <= {"COMPLETE", "PRUNED"}, states
