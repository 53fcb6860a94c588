"""Benchmark 2: the stage cache. Time to the first trial result, a first study vs a repeat study that
shares the cache directory (``TGDP_STUDY_CACHE_DIR``).

    .venv/bin/python bench/stage_cache.py [--smoke] [--running-ray]

The spec is ``search_spaces/gmm_smoke.yaml`` with the shared stages at the *default study's* sizes
(``search_spaces/gmm.yaml`` leaves source / classifier / vanilla / finetune and the data at the
``tgdp.config`` defaults: source 3000 steps of a 256 x 4 net on m = 10000, vanilla 3000, finetune 1500),
one n (10) and one trial; the trial and the sampling stay at smoke sizes. ``--smoke`` uses the smoke
spec unchanged (there the shared stages take ~3 s and the fixed Ray start-up dominates).
Both studies run ``tgdp-study run`` in fresh study directories with the same ``TGDP_STUDY_CACHE_DIR``;
the first fills it, the repeat finds every entry and skips the shared Train run. "Time to first trial
result" is from process start to the first ``trial ... finished|stopped`` line. Goal: first / repeat >= 5.
``--running-ray``: both studies join one Ray started before them (``ray start --head``, 2 CPUs, loopback,
authentication off for this throw-away node) with ``--address``, as on a cluster or a workstation that keeps
Ray running: what is left when no study pays ``ray.init``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, ROOT, environment, judge, run_timed, single_thread_env, study_timeline, verdict, \
    write_result  # noqa: E402

GOAL = 5.0


def bench_spec(smoke: bool) -> dict:
    spec = yaml.safe_load((ROOT / "search_spaces" / "gmm_smoke.yaml").read_text())
    spec["name"] = "bench-cache"
    if not smoke:
        spec["data"] = {}
        for stage in ("source", "classifier", "vanilla", "finetune"):
            spec["fixed"].pop(stage, None)
        spec["factors"]["n"] = [10]
        spec["budget"]["trials_per_n"] = 1
    return spec


@contextmanager
def running_ray(temp_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """A single-node Ray (``ray start --block --head``, its own process group) for the block; yields its address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--head", "--port", str(port), "--num-cpus", "2",
                             "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", str(temp_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while subprocess.run([str(BIN / "ray"), "status", "--address", address], env=env,
                             capture_output=True).returncode != 0:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"stage_cache: the Ray head at {address} did not come up")
            time.sleep(1)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the smoke spec unchanged (tiny shared stages)")
    ap.add_argument("--running-ray", action="store_true", help="both studies join a Ray started before them")
    args = ap.parse_args()
    spec = bench_spec(args.smoke)
    runs = {}
    # short: Ray's Unix sockets live under its temp dir, and a socket path has at most 107 bytes
    with tempfile.TemporaryDirectory(prefix="bc-", dir="/tmp") as tmp:
        tmp_p = Path(tmp)
        spec_file = tmp_p / "bench-cache.yaml"
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        env = single_thread_env({"TGDP_STUDY_CACHE_DIR": str(tmp_p / "shared-cache")})
        address: list[str] = []
        with (running_ray(tmp_p / "ray", {**env, "RAY_AUTH_MODE": "disabled"}) if args.running_ray
              else nullcontext()) as addr:
            if addr:
                env["RAY_AUTH_MODE"], address = "disabled", ["--address", addr]
            for which in ("first", "repeat"):
                print(f"stage_cache: {which} study ...", flush=True)
                wall, lines, rc = run_timed([str(BIN / "tgdp-study"), "run", str(spec_file), "--dir",
                                             str(tmp_p / which), *address], env)
                if rc != 0:
                    print("\n".join(s for _, s in lines[-40:]))
                    raise SystemExit(f"tgdp-study run failed (exit {rc})")
                runs[which] = study_timeline(lines, wall)
                runs[which]["shared_stage_lines"] = [s for _, s in lines if "shared stages" in s]
        cached = sorted(p.name.split("-")[0] for p in (tmp_p / "shared-cache").glob("*.pt"))
    first, repeat = (runs[k]["first_trial_result_at_s"] for k in ("first", "repeat"))
    ratio = first / repeat
    start_first = runs["first"]["startup_s (imports, MLflow db, ray.init)"]
    start_repeat = runs["repeat"]["startup_s (imports, MLflow db, ray.init)"]
    payload = {
        "name": "stage_cache",
        "inputs": {"spec": spec, "smoke": args.smoke, "running_ray": args.running_ray, "cache_entries": {k: cached.count(k) for k in set(cached)}},
        "environment": environment(),
        "raw": runs,
        "time_to_first_trial_result_s": {"first": first, "repeat": repeat},
        "ratios": {"first / repeat (time to first trial result)": ratio,
                   "first / repeat, after Ray start-up": (first - start_first) / (repeat - start_repeat),
                   "first / repeat (whole study wall)": runs["first"]["wall_s"] / runs["repeat"]["wall_s"]},
        "fixed_startup_s (imports, MLflow db, ray.init)": {"first": start_first, "repeat": start_repeat},
        "goal": f"first / repeat >= {GOAL}", "pass": judge(ratio >= GOAL),
    }
    path = write_result("stage_cache" + ("_smoke" if args.smoke else "") + ("_running_ray" if args.running_ray else ""),
                        payload)
    print(f"stage_cache: time to first trial result {first:.1f} s (first study) vs {repeat:.1f} s (repeat, cache hit) "
          f"-> {ratio:.2f}x (goal >= {GOAL}: {verdict(ratio >= GOAL)}); after Ray start-up "
          f"{payload['ratios']['first / repeat, after Ray start-up']:.2f}x; {runs['first']['shared_stage_lines'][-1:]}"
          f"\n  -> {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
