"""CPU benchmark: the ECG methods on simulated PTB-XL -> CPSC data with the "cpu" preset.

    .venv/bin/python bench/ecg_sim_compare.py [--n 10 100] [--seed 0]

Writes bench/results/ecg_sim_compare.{json,md,csv} (same content as ``tgdp-study ecg --sim --preset cpu``,
plus source_only) and prints the table. Measured wall time is in the JSON ("seconds").
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from study.programs.ecg import main
from tgdp.ecg_methods import ALL_METHODS

HERE = os.path.dirname(os.path.abspath(__file__))


def bench(argv: list[str]) -> int:
    out = tempfile.mkdtemp(prefix="ecg_sim_compare-")
    extra = argv or ["--n", "10", "100"]
    code = main(["--sim", "--preset", "cpu", "--methods", *ALL_METHODS, "--threads", "1", "--verbose",
                 "--out", out, *extra])
    dest = os.path.join(HERE, "results")
    os.makedirs(dest, exist_ok=True)
    for ext in ("json", "md", "csv"):
        shutil.copy(os.path.join(out, f"ecg_results.{ext}"), os.path.join(dest, f"ecg_sim_compare.{ext}"))
    return code


if __name__ == "__main__":
    sys.exit(bench(sys.argv[1:]))
