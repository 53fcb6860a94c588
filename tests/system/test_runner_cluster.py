"""The study system on a 2-node local Ray cluster: 2-worker gloo DDP trials, and an MLflow server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from study.spec import load_spec
from tests.study_util import by_kind, optuna_trials, runs, tiny_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def test_two_node_cluster_with_ddp_workers(cluster, tmp_path):
    """workers_per_trial 2 (real gloo DDP, one worker per node) for the shared stages and the trial."""
    import ray

    from study.runner import run_study

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    spec = load_spec(tiny_spec(
        tmp_path, "ddp", factors={"n": [10]}, budget={"trials_per_n": 1}, space={},
        early_stopping={"enabled": False},
        resources={"workers_per_trial": 2, "cpus_per_worker": 0.5, "cpus_per_trial": 0.5, "max_concurrent_trials": 1}))
    study = tmp_path / "studies" / "ddp"
    assert run_study(spec, study, cluster.address, None) == 0
    ts = optuna_trials(study, "ddp-n10")
    assert [t.state.name for t in ts] == ["COMPLETE"]
    rs = runs(f"sqlite:///{study / 'mlflow.db'}", "ddp")
    trial = by_kind(rs, "trial")[0]
    assert trial.info.status == "FINISHED" and trial.data.tags["finalized"] == "true"
    # both guidance epochs went through ray.train.report on both ranks and reached Tune and MLflow (val_* at
    # steps 1, 2), then the final evaluation (step 3) and the test draw
    from mlflow.tracking import MlflowClient
    hist = MlflowClient(f"sqlite:///{study / 'mlflow.db'}").get_metric_history(trial.info.run_id, "val_energy_distance")
    assert sorted(m.step for m in hist) == [1, 2, 3] and "test_energy_distance" in trial.data.metrics
    # the trial ran as its own Ray Train run under <study>/ray/_train_runs with a stable name
    assert (study / "ray" / "_train_runs" / f"ddp-n10-{trial.data.tags['trial_id']}").is_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_tracking(cluster, tmp_path):
    """--tracking-uri http://127.0.0.1:<port>: runs land on the server, artefacts in the study."""
    from study.runner import run_study

    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        spec = load_spec(tiny_spec(tmp_path, "srv", factors={"n": [10]}, budget={"trials_per_n": 1},
                                   fixed={"guidance": {"width": 32, "depth": 2, "epochs": 1, "batch_size": 512}},
                                   early_stopping={"enabled": False}))
        study = tmp_path / "studies" / "srv"
        assert run_study(spec, study, cluster.address, uri) == 0
        rs = runs(uri, "srv")
        assert len(by_kind(rs, "trial")) == 1 and len(by_kind(rs, "summary")) == 1
        from study.experiments import experiment_for
        assert len(by_kind(rs, "baseline")) == len(experiment_for(spec).baselines)  # one run per shared method
        assert not [r for r in rs if r.info.status == "RUNNING"]
        assert not (study / "mlflow.db").exists()  # nothing went to the default sqlite store
        assert list((study / "mlartifacts").rglob("samples.png"))  # artefacts under the study
    finally:
        server.terminate()
        server.wait(timeout=30)
