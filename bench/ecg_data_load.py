"""Benchmark: full-size ECG data through the preprocessed-data cache (``tgdp.data.ecg_cache``).

    .venv/bin/python bench/ecg_data_load.py [--data /tmp/tgdp-ecg-bench] [--workers N] [--no-direct]

Layouts: simulated PTB-XL (21 837 records, 10 s at 100 Hz) and CPSC2018 (6 877 records, 500 Hz, ICBEB2018's
6-144 s length spread), written once by ``bench/ecg_layouts.py`` into ``--data`` and reused; their
generation time is reported. Every measurement runs in a fresh child process (``--child``) so its peak
memory is its own:

* direct: the loaders without the cache (serial; what every trial paid before);
* cold: the cache emptied, then ``load_cached`` builds both entries (process pool, ``--workers``);
* warm: ``load_cached`` again: key (file list walk), checks (sizes, CRC-32) and memory maps;
* task: ``load_ecg_task`` on the warm cache (adds the split and the normalised copy of the records);
* shared: two processes map the warm entries and touch every page; their Rss and Pss (whole process:
  ``/proc/self/smaps_rollup``; the cache's mappings alone: ``/proc/self/smaps``) while both hold them show
  whether the node keeps one copy.

Peak memory is ``resource.getrusage`` (ru_maxrss of the process; the forkserver's pool workers are not its
children, so ``*_children`` stays 0) and, for warm, the ``tracemalloc`` peak (Python and numpy allocations:
a mapped array allocates none). CPU seconds: ``time.process_time`` around each load, and the pool's own
from each entry's ``index.json`` (``build.pool_cpu_seconds``). The box is shared with other work:
``os.getloadavg()`` is recorded around every phase.
Goals (issue 17): cold <= 60 s on 2 cores, warm <= 5 s, one copy in memory per node.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, environment, verdict, write_result  # noqa: E402
from ecg_layouts import REAL_SOURCE_RECORDS, REAL_TARGET_RECORDS, ensure_layouts  # noqa: E402

GOALS = {"cold_s": 60.0, "warm_s": 5.0}
KINDS = (("ptbxl", "source"), ("cpsc2018", "target"))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _smaps() -> dict[str, float]:
    """Rss / Pss / shared / private of this process in MB (Linux smaps_rollup; empty elsewhere)."""
    out = {}
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty"):
                    out[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def _mapped(prefix: str) -> dict[str, float]:
    """Rss and Pss in MB of this process's mappings of files under ``prefix`` (the cache entries), from
    /proc/self/smaps: Pss splits each shared page among the processes mapping it."""
    out = {"mapped_rss_mb": 0.0, "mapped_pss_mb": 0.0}
    inside = False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            for line in f:
                first = line.split(maxsplit=1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line: address range ... path
                    inside = line.rstrip().split(maxsplit=5)[-1].startswith(prefix)
                elif inside and first in ("Rss:", "Pss:"):
                    out[f"mapped_{first[:-1].lower()}_mb"] += int(line.split()[1]) / 1024
    except OSError:
        pass
    return {k: round(v, 1) for k, v in out.items()}


def _maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux reports KiB


# --- child modes ----------------------------------------------------------------------------------------

def child(mode: str, roots: dict[str, str], cache: str, workers: int) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns what it saw."""
    import tracemalloc

    from tgdp.data import ecg_cache
    from tgdp.data.cpsc import load_cpsc
    from tgdp.data.ptbxl import load_ptbxl

    out: dict[str, Any] = {"mode": mode, "loadavg_before": _load()}
    if mode == "task":
        from tgdp.ecg_config import ECGDataConfig
        from tgdp.ecg_task import load_ecg_task

        t0 = time.perf_counter()
        task = load_ecg_task(ECGDataConfig(source_root=roots["source"], target_root=roots["target"], n=10),
                             cache_dir=cache)
        out.update(seconds=round(time.perf_counter() - t0, 2), records=[len(task.source), len(task.target)])
    else:
        if mode == "warm":
            tracemalloc.start()
        held = []
        for kind, domain in KINDS:
            t0, c0 = time.perf_counter(), time.process_time()
            if mode == "direct":
                ds = (load_ptbxl if kind == "ptbxl" else load_cpsc)(roots[domain])
            else:
                ds = ecg_cache.load_cached(kind, roots[domain], cache, workers=workers)
            out[f"{kind}_s"] = round(time.perf_counter() - t0, 2)
            out[f"{kind}_cpu_s"] = round(time.process_time() - c0, 2)  # this process only, not its pool
            out[f"{kind}_records"] = len(ds)
            out[f"{kind}_x_mb"] = round(ds.x.numel() * 4 / 2**20, 1)
            held.append(ds)
        out["seconds"] = round(sum(out[f"{k}_s"] for k, _ in KINDS), 2)
        if mode == "warm":
            out["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()
            t0 = time.perf_counter()
            for kind, domain in KINDS:
                ecg_cache.file_list_digest(roots[domain])
            out["file_list_walk_s"] = round(time.perf_counter() - t0, 2)
        if mode in ("warm", "shared"):
            out["smaps_before_touch"] = {**_smaps(), **_mapped(os.path.abspath(cache))}
            out["checksum"] = [float(ds.x.sum()) for ds in held]  # reads every page of x
            out["smaps_after_touch"] = {**_smaps(), **_mapped(os.path.abspath(cache))}
        if mode == "shared":  # hold the mapping until the parent has read the other process too
            print(json.dumps(out), flush=True)
            sys.stdin.readline()
            out = {"smaps_both_alive": {**_smaps(), **_mapped(os.path.abspath(cache))}}
    for who, name in ((resource.RUSAGE_SELF, "cpu_s"), (resource.RUSAGE_CHILDREN, "cpu_children_s")):
        r = resource.getrusage(who)
        out[name] = round(r.ru_utime + r.ru_stime, 2)  # CPU seconds: less bent by the shared box than wall
    out["maxrss_mb"] = _maxrss_mb()
    out["maxrss_children_mb"] = _maxrss_mb(resource.RUSAGE_CHILDREN)
    out["loadavg_after"] = _load()
    return out


def _run_child(mode: str, args: argparse.Namespace, roots: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--cache", args.cache, "--workers", str(args.workers),
           "--roots", json.dumps(roots)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _shared(args: argparse.Namespace, roots: dict[str, str]) -> dict[str, Any]:
    """Two processes mapping the warm entries at once: their smaps while both are alive."""
    cmd = [sys.executable, __file__, "--child", "shared", "--cache", args.cache, "--workers", "1",
           "--roots", json.dumps(roots)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
             for _ in range(2)]
    first = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    second = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:  # only now may they exit (an exiting process unmaps and shifts the other's Pss)
        p.stdin.close()
        p.wait(timeout=120)
    return {"processes": [{**a, **b} for a, b in zip(first, second)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/tgdp-ecg-bench", help="where the layouts are (written if missing)")
    ap.add_argument("--cache", default="", help="cache directory (default: <data>/cache; emptied for cold)")
    ap.add_argument("--workers", type=int, default=0, help="cold-load processes (0: the CPUs available)")
    ap.add_argument("--source-records", type=int, default=REAL_SOURCE_RECORDS)
    ap.add_argument("--target-records", type=int, default=REAL_TARGET_RECORDS)
    ap.add_argument("--no-direct", action="store_true", help="skip the uncached serial load")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--roots", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.roots), args.cache, args.workers or None)), flush=True)
        if args.child == "shared":  # keep the mapping until the other process has read its smaps too
            sys.stdin.readline()
        return 0
    from tgdp.data.ecg_cache import available_cpus

    args.cache = args.cache or os.path.join(args.data, "cache")
    args.workers = args.workers or available_cpus()
    layouts = ensure_layouts(args.data, args.source_records, args.target_records)
    roots = {d: layouts[d]["root"] for d in ("source", "target")}
    raw: dict[str, Any] = {}
    if not args.no_direct:
        raw["direct"] = _run_child("direct", args, roots)
    shutil.rmtree(args.cache, ignore_errors=True)
    raw["cold"] = _run_child("cold", args, roots)
    raw["cold"]["build"] = {p.name.split("-")[0]: json.loads((p / "index.json").read_text())["build"]
                            for p in Path(args.cache, "ecg-data").iterdir() if p.is_dir()}
    raw["warm"] = _run_child("warm", args, roots)
    raw["task"] = _run_child("task", args, roots)
    raw["shared"] = _shared(args, roots)
    entry_mb = sum(raw["warm"][f"{k}_x_mb"] for k, _ in KINDS)
    both = [p["smaps_both_alive"] for p in raw["shared"]["processes"]]
    summary = {
        "cold_s": raw["cold"]["seconds"], "warm_s": raw["warm"]["seconds"],
        "direct_s": raw.get("direct", {}).get("seconds"),
        "load_cpu_s": {m: {k: raw[m].get(f"{k}_cpu_s") for k, _ in KINDS} for m in ("direct", "cold", "warm")
                       if m in raw},
        "cold_pool_cpu_s": {k: b["pool_cpu_seconds"] for k, b in raw["cold"]["build"].items()},
        "cold_peak_rss_mb": raw["cold"]["maxrss_mb"],
        "warm_peak_rss_mb": raw["warm"]["maxrss_mb"], "warm_tracemalloc_peak_mb": raw["warm"]["tracemalloc_peak_mb"],
        "direct_peak_rss_mb": raw.get("direct", {}).get("maxrss_mb"), "task_peak_rss_mb": raw["task"]["maxrss_mb"],
        "mapped_x_mb": entry_mb,
        "two_processes_rss_mb": [b.get("rss_mb") for b in both],
        "two_processes_pss_mb": [b.get("pss_mb") for b in both],
        "two_processes_mapped_rss_mb": [b.get("mapped_rss_mb") for b in both],
        "two_processes_mapped_pss_mb": [b.get("mapped_pss_mb") for b in both],
    }
    # one copy per node: each process sees the whole entry resident (Rss) but is charged half of it (Pss)
    shared_ok = all(b.get("mapped_rss_mb", 0) >= 0.9 * entry_mb and b.get("mapped_pss_mb", 1e9)
                    <= 0.6 * b["mapped_rss_mb"] for b in both)
    passes = {"cold": summary["cold_s"] <= GOALS["cold_s"], "warm": summary["warm_s"] <= GOALS["warm_s"],
              "one_copy_per_node": shared_ok}
    payload = {"name": "ecg_data_load",
               "inputs": {"layouts": layouts, "workers": args.workers, "cache": args.cache,
                          "note": "2-core box shared with other helpers' work: see loadavg in every phase"},
               "environment": environment(), "raw": raw, "summary": summary, "goal": GOALS, "pass": passes}
    path = write_result("ecg_data_load", payload)
    print(json.dumps(summary, indent=1))
    print(f"cold {verdict(passes['cold'])}, warm {verdict(passes['warm'])}, "
          f"one copy per node {verdict(shared_ok)} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
