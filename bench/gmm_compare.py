"""The final table of the comparison protocol (docs/protocol.md) on the Gaussian-mixture suite.

For each testbed (paper, asym, near, d8, partial): tune every method of ``search_spaces/gmm_compare.yaml`` on the
development seed (``tgdp-study run``, the testbed and the study name set in a copy of the spec), then freeze each
method's best configuration per n and run every method on the evaluation seeds 100-109
(``tgdp-study evaluate --jobs 2``). Each phase runs through the CLI exactly as a user would.

Written as it goes, so an interrupted run resumes where it stopped (the study with ``resume``, the evaluation by
skipping finished result files; without the study, from the committed ``frozen.json``, ``evaluate --frozen``):

    bench/results/gmm_compare/<testbed>/frozen.json, results/*.json, table.md, table.json   (evaluate's layout)
    bench/results/gmm_compare/timing.json   wall time of each phase, with the load average it ran under

Usage: ``.venv/bin/python bench/gmm_compare.py [--testbeds paper asym] [--seeds 100-109] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "search_spaces" / "gmm_compare.yaml"
OUT = ROOT / "bench" / "results" / "gmm_compare"
STUDIES = ROOT / "studies"
CLI = [sys.executable, "-m", "study.cli"]
SUITE = ("paper", "asym", "near", "d8", "partial")  # the goal's testbeds first


def testbed_spec(testbed: str) -> Path:
    """A copy of gmm_compare.yaml with ``data.testbed`` and the name set (under studies/, not committed)."""
    text = SPEC.read_text()
    for old, new in (("name: gmm-compare\n", f"name: gmm-compare-{testbed}\n"),
                     ("data: {testbed: paper}", f"data: {{testbed: {testbed}}}")):
        if old not in text:
            raise SystemExit(f"{SPEC}: expected {old!r} to set the testbed; update bench/gmm_compare.py")
        text = text.replace(old, new, 1)
    path = STUDIES / "specs" / f"gmm-compare-{testbed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def timed(phase: str, testbed: str, cmd: list[str]) -> None:
    """Run one CLI phase; append its wall time and load average to timing.json; stop on failure."""
    t0, load0 = time.time(), os.getloadavg()[0]
    print(f"[gmm_compare] {testbed} {phase}: {' '.join(cmd[2:])}", flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    record = {"testbed": testbed, "phase": phase, "seconds": round(time.time() - t0, 1), "returncode": rc,
              "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = OUT / "timing.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*rows, record], indent=1))
    if rc != 0:
        raise SystemExit(f"[gmm_compare] {testbed} {phase} failed with exit {rc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbeds", nargs="+", default=list(SUITE), choices=SUITE)
    ap.add_argument("--seeds", default="100-109", help="evaluation seeds (never the development seed 0)")
    ap.add_argument("--jobs", type=int, default=2, help="evaluation seeds in parallel")
    a = ap.parse_args()
    for tb in a.testbeds:
        study, frozen = STUDIES / f"gmm-compare-{tb}", OUT / tb / "frozen.json"
        rest = ["--seeds", a.seeds, "--jobs", str(a.jobs), "--out", str(OUT / tb)]
        if (study / "spec.yaml").is_file():  # started before: resume (returns quickly once finished)
            timed("tune", tb, [*CLI, "resume", str(study)])
        elif frozen.is_file():  # tuned elsewhere (the committed frozen.json): evaluate without the study
            timed("evaluate", tb, [*CLI, "evaluate", str(testbed_spec(tb)), "--frozen", str(frozen), *rest])
            continue
        else:
            timed("tune", tb, [*CLI, "run", str(testbed_spec(tb)), "--dir", str(STUDIES)])
        timed("evaluate", tb, [*CLI, "evaluate", str(study), *rest])


if __name__ == "__main__":
    main()
