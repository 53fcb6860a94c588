"""Simulated ECG layouts of the real sizes, written once and reused by ``bench/ecg_data_load.py``.

    .venv/bin/python bench/ecg_layouts.py [--out /tmp/tgdp-ecg-bench] [--source-records 21837] [--target-records 6877]

PTB-XL layout: ``tgdp.data.ecg_sim.write_simulated_dataset`` unchanged (10 s records at 100 Hz, as the
real ``records100``). CPSC layout: the simulator draws record lengths uniformly between two bounds, but
ICBEB2018's lengths are skewed (6-144 s, mean 15.8 s, most 10-20 s: Liu et al. 2018, table 2), and the
loader's cost grows with the length. So this writes the CPSC layout record by record with the simulator's
own generation and WFDB writer, lengths drawn from ``cpsc_seconds``: 97 % log-normal around 13.2 s,
3 % uniform in 20-144 s, clipped to 6-144 s, the first record 6 s and the second 144 s (mean ~15.8 s).
Each layout's generation time is kept in ``<layout>/generation.json`` so later runs can report it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tgdp.data.ecg import TARGET_CLASSES, TWELVE_LEADS  # noqa: E402
from tgdp.data.ecg_sim import (SIM_FS, TARGET_SHIFT, _digital, _write_wfdb, draw_labels, simulate,  # noqa: E402
                               write_simulated_dataset)

REAL_SOURCE_RECORDS = 21_837  # PTB-XL v1.0.3
REAL_TARGET_RECORDS = 6_877  # ICBEB2018 / CPSC2018


def cpsc_seconds(records: int, rng: np.random.Generator) -> np.ndarray:
    """Record lengths in s with ICBEB2018's spread (see the module doc)."""
    s = np.where(rng.uniform(size=records) < 0.97, rng.lognormal(np.log(13.2), 0.3, size=records),
                 rng.uniform(20.0, 144.0, size=records))
    s = np.clip(s, 6.0, 144.0)
    s[: min(2, records)] = (6.0, 144.0)[: min(2, records)]
    return s


def write_cpsc_layout(out: str, records: int, seed: int) -> None:
    """CPSC2018 in the CinC 2020 WFDB form (``A0001.hea/.mat``, REFERENCE.csv with CRLF), lengths from
    ``cpsc_seconds``, generated one record at a time so memory stays small."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    labels = draw_labels(records, TARGET_SHIFT, rng)
    seconds = cpsc_seconds(records, rng)
    lines = ["Recording,First_label,Second_label,Third_label"]
    for i, (codes, sec) in enumerate(zip(labels, seconds), start=1):
        shift = replace(TARGET_SHIFT, min_seconds=float(sec), max_seconds=float(sec))
        x = simulate([codes], shift, seed * 100_003 + i)[0]
        name = f"A{i:04d}"
        dx = ",".join(TARGET_CLASSES[c - 1] for c in codes)
        _write_wfdb(os.path.join(out, name), _digital(x), SIM_FS, TWELVE_LEADS, mat=True, comments=[f"Dx: {dx}"])
        lines.append(",".join([name] + [str(c) for c in codes] + [""] * (3 - len(codes))))
    with open(os.path.join(out, "REFERENCE.csv"), "wb") as f:
        f.write(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def ensure_layouts(out: str, source_records: int, target_records: int, seed: int = 0) -> dict[str, dict]:
    """{"source": info, "target": info}: each layout's directory and generation time (written if missing)."""
    info = {}
    for domain, records in (("source", source_records), ("target", target_records)):
        root = os.path.join(out, f"{domain}-{records}-seed{seed}")
        marker = os.path.join(root, "generation.json")
        if not os.path.isfile(marker):
            t0 = time.perf_counter()
            if domain == "source":
                write_simulated_dataset(root, "source", records, seed, overwrite=True)
            else:
                write_cpsc_layout(root, records, seed + 1)
            seconds = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
            with open(marker, "w", encoding="utf-8") as f:
                json.dump({"records": records, "seconds": round(seconds, 1), "bytes": size,
                           "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}, f)
        with open(marker, encoding="utf-8") as f:
            info[domain] = {"root": root, **json.load(f)}
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tgdp-ecg-bench")
    ap.add_argument("--source-records", type=int, default=REAL_SOURCE_RECORDS)
    ap.add_argument("--target-records", type=int, default=REAL_TARGET_RECORDS)
    args = ap.parse_args()
    print(json.dumps(ensure_layouts(args.out, args.source_records, args.target_records), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
