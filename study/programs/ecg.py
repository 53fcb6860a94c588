"""``tgdp-study ecg``: every ECG method at a preset config, without a study; writes the result tables.

    tgdp-study ecg --sim [--sim-source-records 400 --sim-target-records 600] --n 10 100 --seed 0 --out DIR
    tgdp-study ecg --source PTBXL_DIR --target CPSC_DIR --n 10 --preset cpu --out DIR

One source model for every n (``tgdp.ecg_task.load_ecg_task`` per n, ``tgdp.ecg_methods.run_ecg_methods``).
Writes ``ecg_results.csv``, ``ecg_results.md`` (method x metric x n), ``ecg_results.json`` and
``config.json`` (resolved data/TGDP/utility configs) into DIR. Presets: ``tgdp.ecg_task.PRESETS`` = micro
(tests), cpu (2 CPU cores, minutes per n), paper (36 x 256 SSSD and the paper's iterations/lrs, GPU).
``study/cli.py`` hands ``tgdp-study ecg ...`` to ``main(argv)`` (this parser owns the options).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from typing import Any, Sequence

import torch

from study.cli_help import EXAMPLES
from tgdp import stages
from tgdp.config import to_dict
from tgdp.ecg_config import ECGDataConfig
from tgdp.ecg_features import EMBEDDING_VERSION
from tgdp.ecg_methods import ALL_METHODS, METHODS, REG_ETAS, run_ecg_methods
from tgdp.ecg_task import PRESETS, UTILITY_PRESETS, load_ecg_task
from tgdp.reporter import MemoryReporter
from tgdp.schedules import VPSchedule

DESCRIPTION = ("The ECG experiment (DESIGN §2): PTB-XL (source) -> CPSC2018 (target), conditional TGDP vs the "
               "baselines.")  # the --help text
TABLE_COLUMNS = ("macro_auroc", "f_beta2", "g_beta2", "val_macro_auroc", "feat_energy", "feat_frechet")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """method x metric x n; test metrics with their bootstrap interval."""
    head = "| n | method | " + " | ".join(TABLE_COLUMNS) + " | s |\n|---|---|" + "---|" * (len(TABLE_COLUMNS) + 1)
    lines = [head]
    for r in rows:
        cells = []
        for c in TABLE_COLUMNS:
            v = r.get(c, float("nan"))
            lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
            cells.append(f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v:.3f}")
        lines.append(f"| {r['n']} | {r['method']} | " + " | ".join(cells) + f" | {r['seconds_total']:.0f} |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict[str, Any]], out: str, meta: dict[str, Any]) -> None:
    """ecg_results.csv, ecg_results.md (``markdown_table`` + how to read it) and ecg_results.json into ``out``."""
    import pandas as pd  # noqa: PLC0415
    os.makedirs(out, exist_ok=True)
    pd.DataFrame(list(rows)).to_csv(os.path.join(out, "ecg_results.csv"), index=False)
    with open(os.path.join(out, "ecg_results.md"), "w", encoding="utf-8") as f:
        f.write(f"# ECG utility: train on limited real + synthetic, test on real\n\n{markdown_table(rows)}\n"
                f"Intervals: {meta.get('ci', 0.95):.0%} percentile bootstrap over test records. feat_*: "
                f"{EMBEDDING_VERSION} distances to the real validation records (lower is closer).\n")
    with open(os.path.join(out, "ecg_results.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": list(rows), **meta}, f, indent=2, default=str)


def _number(text: str) -> int | float:
    """argparse type of --n / --val / --test: a count (>= 1, whole) or a fraction."""
    v = float(text)
    return int(v) if v >= 1 and v.is_integer() else v


def _add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="simulated PTB-XL/CPSC data (tgdp.data.ecg_sim)")
    src.add_argument("--source", default=None, help="PTB-XL directory (with --target)")
    p.add_argument("--target", default=None, help="CPSC2018 directory")
    p.add_argument("--n", type=_number, nargs="+", default=[10, 100], help="limited target sizes (count or fraction)")
    p.add_argument("--seed", type=int, default=0, help="split, stage, utility and (with --sim) simulator seed")
    p.add_argument("--out", default="ecg_results", help="output directory (default: %(default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="stage sizes and iterations: micro (tests, seconds), cpu (2 CPU cores, minutes per n), "
                   "paper (the paper's SSSD and iterations, a GPU) (default: %(default)s)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"methods to run, of {', '.join(ALL_METHODS)} (default: {' '.join(METHODS)})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device, e.g. cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--val", type=_number, default=0.2,
                   help="validation split of the target records: a count or a fraction (default: %(default)s)")
    p.add_argument("--test", type=_number, default=0.2,
                   help="test split of the target records: a count or a fraction (default: %(default)s)")
    p.add_argument("--sim-dir", default="",
                   help="--sim: cache of simulated data sets (default: $TGDP_ECG_SIM_DIR or <tmp>/tgdp-ecg-sim)")
    p.add_argument("--sim-source-records", type=int, default=400,
                   help="--sim: simulated PTB-XL-like source records (default: %(default)s)")
    p.add_argument("--sim-target-records", type=int, default=600,
                   help="--sim: simulated CPSC-like target records, the pool for n + val + test "
                   "(default: %(default)s)")
    p.add_argument("--source-limit", type=int, default=0,
                   help="read at most this many source records (default: 0 = all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and list) unreadable records instead of failing")
    p.add_argument("--verbose", action="store_true", help="print every stage report (losses per report interval)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default; 1 is much faster on a shared, busy box)")


def run(args: argparse.Namespace) -> int:
    """Run every n with one source model; write CSV / Markdown / JSON into ``args.out``."""
    if not args.sim and not args.target:
        raise SystemExit("--source needs --target")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base = ECGDataConfig(source_root=args.source or "", target_root=args.target or "", simulate=args.sim,
                         sim_dir=args.sim_dir, sim_source_records=args.sim_source_records,
                         sim_target_records=args.sim_target_records, sim_seed=args.seed,
                         source_limit=args.source_limit, seed=args.seed, val=args.val, test=args.test,
                         skip_bad=args.skip_bad, n=args.n[0])
    cfg = PRESETS[args.preset]
    cfg = replace(cfg, **{sec: replace(getattr(cfg, sec), seed=args.seed) for sec in cfg.__dataclass_fields__
                          if hasattr(getattr(cfg, sec), "seed")})  # stage sections; not domain_guidance
    utility = replace(UTILITY_PRESETS[args.preset], seed=args.seed)
    reporter, rows, source_model, t_start = MemoryReporter(verbose=args.verbose), [], None, time.time()
    for n in args.n:
        data_cfg = replace(base, n=n)
        task = load_ecg_task(data_cfg)
        print(f"n={n}: {task.data['source_x'].shape[0]} source, {len(task.split.train)} train / "
              f"{len(task.split.val)} val / {len(task.split.test)} test target records", flush=True)
        if source_model is None and any(m != "real_only" for m in args.methods):
            t0 = time.time()
            source_model = stages.pretrain_source(cfg.source, task.data, VPSchedule(), torch.device(args.device),
                                                    reporter)
            print(f"source model: {time.time() - t0:.0f} s", flush=True)
        rows += run_ecg_methods(data_cfg, cfg, args.device, reporter, methods=args.methods, utility=utility,
                                task=task, source_model=source_model, log=lambda m: print(m, flush=True))
    meta = {"data": asdict(base), "n": list(args.n), "preset": args.preset, "tgdp": to_dict(cfg),
            "utility": asdict(utility), "reg_etas": REG_ETAS, "embedding": EMBEDDING_VERSION,
            "ci": utility.ci, "seconds": round(time.time() - t_start, 1), "torch_threads": torch.get_num_threads()}
    write_results(rows, args.out, meta)
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump({k: meta[k] for k in ("data", "n", "preset", "tgdp", "utility", "reg_etas")}, f, indent=2)
    print(markdown_table(rows))
    print(f"wrote {args.out}/ecg_results.{{csv,md,json}} in {meta['seconds']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``tgdp-study ecg`` (and ``python -m study.programs.ecg``): parse ``argv``, run, exit status."""
    p = argparse.ArgumentParser(prog="tgdp-study ecg", description=DESCRIPTION, epilog=EXAMPLES["ecg"],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
