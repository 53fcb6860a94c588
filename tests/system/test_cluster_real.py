"""The study system on a real multi-process Ray cluster: ``ray start --head`` and two ``ray start --address``
worker nodes, each its own process group, temp dir and ports, on this machine. The dashboard (state API,
Jobs) and the client server listen on 127.0.0.1; the node IP cannot be loopback: ``ray start`` replaces
a ``--node-ip-address`` of 127.0.0.1 by the machine's own address (``services.resolve_ip_for_localhost``).

The head has no CPUs, so every Tune trial must land on a worker node (each worker node carries a custom
resource, ``node_w1`` / ``node_w2``, that names it in the state API). ``tgdp-study run --address`` drives
a study there and loses the worker node of the running trial (its whole process group SIGKILLed): the
trial is retried from its checkpoint on the other node (``resources.max_failures``). ``ray job submit``
runs a study as a Ray Job on the head. Cleanup stops only the process groups this module started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.system.faults import ENV, Driver, check_resumed_from_checkpoint, check_study, fault_spec, tune_epochs

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# RAY_AUTH_MODE=disabled: a throw-away multi-process test cluster bound to 127.0.0.1 only; token auth (on for
# local studies) would need the token handed to every `ray start`, `ray job submit` and the driver alike.
CLUSTER_ENV = {**ENV, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
CLUSTER_ENV.pop("RAY_ADDRESS", None)  # never join a Ray of someone else's


def _free_ports(k: int) -> list[int]:
    """``k`` distinct ports free on 127.0.0.1 now (held open together, so no two are the same)."""
    socks = []
    try:
        for _ in range(k):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    """One ``ray start --block`` in its own session: killing its process group kills the whole node."""

    def __init__(self, name: str, args: list[str], temp_dir: str) -> None:
        agent, grpc, metrics, runtime_env = _free_ports(4)
        self.name, self.log = name, Path(temp_dir) / f"{name}.log"
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
               "--temp-dir", str(Path(temp_dir) / name), "--object-store-memory", str(100 * 2**20),
               "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env), *args]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=CLUSTER_ENV,
                                         start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """SIGTERM the node's group (ray start --block stops its processes), then SIGKILL what is left."""
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)
        self.proc.wait(timeout=10)


class Cluster:
    """A head (0 CPUs, dashboard for the state API and Jobs) and two 1-CPU worker nodes."""

    def __init__(self) -> None:
        # short: Ray's Unix sockets live under the temp dir, and a socket path has at most 107 bytes
        self.temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
        gcs, dashboard, client = _free_ports(3)
        self.address, self.dashboard = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        self.nodes: dict[str, Node] = {}
        self.nodes["head"] = Node("head", ["--head", "--port", str(gcs), "--num-cpus", "0", "--num-gpus", "0",
                                           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                           "--dashboard-port", str(dashboard), "--ray-client-server-port",
                                           str(client)], self.temp_dir)
        self._wait(lambda: len(self.alive()) == 1, 120, "the head node")
        for w in ("w1", "w2"):
            self.nodes[w] = Node(w, ["--address", self.address, "--num-cpus", "1", "--num-gpus", "0",
                                     "--resources", json.dumps({f"node_{w}": 1})], self.temp_dir)
        self._wait(lambda: len(self.alive()) == 3, 180, "two worker nodes")
        self._wait(self._jobs_ready, 120, "the head's job server")

    def alive(self) -> dict[str, str]:
        """node_id -> our node name ("head", "w1", "w2") of the nodes the cluster reports ALIVE."""
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(address=self.address, detail=True)
        except Exception:  # the state API is not up yet
            return {}
        out = {}
        for n in nodes:
            if n.state == "ALIVE":
                names = [k[len("node_"):] for k in n.resources_total if k in ("node_w1", "node_w2")]
                out[n.node_id] = names[0] if names else "head"
        return out

    def trial_actors(self) -> list:
        """Every Tune function-trainable actor (alive or dead) with its node id."""
        from ray.util.state import list_actors

        return list_actors(address=self.address, filters=[("class_name", "=", "ImplicitFunc")], detail=True,
                           limit=1000)

    def _jobs_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard}/api/jobs/", timeout=5):
                return True
        except OSError:
            return False

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not cond():
            dead = [n.name for n in self.nodes.values() if n.proc.poll() is not None]
            if dead or time.time() > deadline:
                logs = "\n".join(f"--- {n.name}\n{n.log.read_text()[-2000:]}" for n in self.nodes.values())
                raise AssertionError(f"waiting for {what}: nodes exited {dead} or timed out\n{logs}")
            time.sleep(1)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


def test_ray_job_submit_runs_a_study_on_the_cluster(cluster, tmp_path):
    """The Ray Jobs command of docs/cluster.md: the study's driver runs as a job on the head, trials on the workers."""
    name = "job"
    spec = fault_spec(tmp_path, name, budget={"trials_per_n": 1}, space={}, early_stopping={"enabled": False})
    studies = tmp_path / "studies"
    t0 = time.time()
    r = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT),
         # .venv is a symlink here (.gitignore's `.venv/` matches only a directory): keep it out of the upload
         "--runtime-env-json", json.dumps({"excludes": [".venv", ".git"], "env_vars": {"PYTHONPATH": "."}}),
         "--", "tgdp-study", "run", str(spec), "--dir", str(studies), "--address", "auto"],
        capture_output=True, text=True, env=CLUSTER_ENV, timeout=900)
    print(f"ray job submit: {time.time() - t0:.1f} s")
    # guards the job's success end to end: `ray job submit` waits for the job and fails with it
    assert r.returncode == 0 and "succeeded" in r.stdout, (r.stdout + r.stderr)[-4000:]
    check_study(studies / name, name, trials=1, kept=set())
    # guards the placement: the trial ran on a worker node (the head has no CPUs)
    workers = {i for i, n in cluster.alive().items() if n != "head"}
    assert {a.node_id for a in cluster.trial_actors()} & workers


def test_trials_on_worker_nodes_survive_losing_one(cluster, tmp_path):
    """A trial whose worker node dies mid-guidance is retried on the other node from its last checkpoint."""
    name = "nodeloss"
    epochs = 30  # ~0.2 s each on a loaded core: a window to kill the node mid-guidance
    spec = fault_spec(tmp_path, name, epochs=epochs, budget={"trials_per_n": 1}, space={},
                      early_stopping={"enabled": False},
                      resources={"workers_per_trial": 0, "cpus_per_trial": 1, "max_concurrent_trials": 1,
                                 "max_failures": 2})
    study = tmp_path / "studies" / name
    nodes_before = cluster.alive()
    t0 = time.time()
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies"), "--address", cluster.address],
               tmp_path / "run.log", env=CLUSTER_ENV)
    try:
        d.wait_for(lambda: 1 in tune_epochs(study, name), 600, "guidance epoch 1 reported", poll=0.2)
        running = [a for a in cluster.trial_actors() if a.state == "ALIVE"]
        assert len(running) == 1, running
        victim = nodes_before[running[0].node_id]
        assert victim in ("w1", "w2"), victim  # the head has no CPUs: a trial can only run on a worker node
        before = tune_epochs(study, name)
        cluster.nodes[victim].kill()  # the whole node: raylet, object store, the trial's worker process
        code = d.wait(900)
    finally:
        d.cleanup()
    print(f"node-loss study: {time.time() - t0:.1f} s")
    assert code == 0, d.output()[-4000:]
    # guards the node loss: the cluster lost exactly the victim (the GCS marks a node dead after its health
    # checks fail, which can come after a fast retry has already finished the study)
    expected, deadline = sorted(n for n in ("head", "w1", "w2") if n != victim), time.time() + 120
    while sorted(cluster.alive().values()) != expected and time.time() < deadline:
        time.sleep(2)
    assert sorted(cluster.alive().values()) == expected
    # guards the placement: every trial actor ran on a worker node; the retry ran on the surviving one
    actors = cluster.trial_actors()
    assert {nodes_before.get(a.node_id) for a in actors} <= {"w1", "w2"}
    survivor = next(n for n in ("w1", "w2") if n != victim)
    assert any(nodes_before.get(a.node_id) == survivor for a in actors)
    check_resumed_from_checkpoint(study, name, before, epochs)  # the retry continued from the checkpoint
