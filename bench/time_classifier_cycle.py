"""The early-stopped time classifier c'(x_t, t): its defaults, and whether the cycle term (eta_1) helps with it.
Development data only (GMM `paper`, GMMConfig defaults; validation draws; the test draw is never looked at).

    nohup .venv/bin/python bench/time_classifier_cycle.py [--seeds 0 1 2] [--n 10 100] [--workers 2] &
    nohup .venv/bin/python bench/time_classifier_cycle.py --select-defaults [--workers 2] &

Default mode (``eta``): the GMM comparison's regularised TGDP (``tgdp_reg``: ``tgdp.methods.get_method``
configured with ``GMMExperiment.regularised``) with eta_cycle in {0, 1}, everything else at the tgdp_reg values
(eta_consistency 0.1, target_batch_size 64) and ``study.experiments.gmm_defaults.default_config(seed)``; seeds
0-2, n = 10 and 100, energy distance etc. on the *validation* reference draw (``evaluate_method``, validation
split only). Per (seed, n) unit: one source model (cached per seed under --cache), one domain classifier
shared by both arms (``classifier=`` of the method's fit, as the study's cache does), then eta_1 = 0 and
eta_1 = 1, each with its own reporter; the eta_1 = 1 arm trains its time classifier first, so its accuracy
(``log_ratio_errors``) and where it stopped are recorded, and the method's fit then reuses it from that reporter.

``--select-defaults``: how TimeClassifierConfig's defaults were chosen. Candidates (CANDIDATES) on data seeds 0-1
at n = 10 / 100 / 1000, scored by the log-ratio RMSE against the exact log h* = log q_t - log p_t over target
points noised at t = 0.05 / 0.2 / 0.5 (pooled), plus the calibration slope of the learned on the exact log
ratio at each t; at n = 10 two more classifier seeds per data seed (seed + 10, seed + 20: other splits and
inits) for the two finalists. Rule: the smallest geometric mean of the pooled RMSE over the 6 (seed, n) units.

Both modes are resumable: bench/results/time_classifier_cycle.json is rewritten after every finished unit (each
mode keeps the other's section), and a rerun skips the units it already holds. Units run in ``--workers``
processes of one torch thread. Writes bench/results/time_classifier_cycle.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, write_result  # noqa: E402

NAME = "time_classifier_cycle"
ETAS = (0.0, 1.0)
METRICS = ("energy_distance", "sliced_w2", "mode_balance_error", "mean_log_q")
TIMES = (0.05, 0.2, 0.5)
METHOD = "tgdp_reg (GMMExperiment.regularised, eta_cycle overridden)"
# TimeClassifierConfig overrides per candidate (3000 steps, 128 x 3, lr 1e-3 cosine: the library's budget).
# "legacy" is the stage before it had early stopping: all points, one evaluation at the end (so the last state).
CANDIDATES = {
    "legacy": {"holdout_fraction": 0.0, "ema": 0.0, "report_every": 3000, "patience": 1},
    "split": {"holdout_fraction": 0.2, "ema": 0.0, "report_every": 100, "patience": 10},
    "split+ema": {"holdout_fraction": 0.2, "ema": 0.99, "report_every": 100, "patience": 10},
    "ema": {"holdout_fraction": 0.0, "ema": 0.99, "report_every": 100, "patience": 10},
}
FINALISTS = ("split+ema", "ema")  # the extra classifier seeds at n = 10: does the split cost hold for other splits?


def log_ratio_errors(task, model, num: int = 4000, seed: int = 123) -> dict[str, float]:
    """RMSE of c''s log ratio against the exact log q_t/p_t at target points noised at each of TIMES, pooled over
    them, and the calibration slope (least squares of learned on exact, both centred) at each t."""
    import torch

    from tgdp.losses import log_ratio_from_logits

    g = torch.Generator().manual_seed(seed)
    x0 = task.target.sample(num, g)[0]
    out, sq = {}, []
    for t in TIMES:
        tt = torch.full((num,), t)
        a, s = task.schedule.alpha(tt)[:, None], task.schedule.sigma(tt)[:, None]
        x_t = a * x0 + s * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            learned, exact = log_ratio_from_logits(model(x_t, tt)), task.log_h_star(x_t, tt)
        sq.append((learned - exact).pow(2))
        out[f"rmse_t={t}"] = float(sq[-1].mean().sqrt())
        e, lc = exact - exact.mean(), learned - learned.mean()
        out[f"slope_t={t}"] = float((e * lc).sum() / e.pow(2).sum())
    out["rmse_pooled"] = float(torch.cat(sq).mean().sqrt())
    return out


def one_unit(seed: int, n: int, cache: str) -> list[dict]:
    """Validation metrics of eta_1 = 0 and 1 at one (seed, n), with the time classifier's diagnostics."""
    import torch

    torch.set_num_threads(1)
    from study.experiments.gmm import GMMExperiment, evaluate_method
    from study.experiments.gmm_defaults import default_config
    from tgdp import stages
    from tgdp.config import GMMConfig
    from tgdp.data.gmm import GMMTask
    from tgdp.methods import get_method
    from tgdp.reporter import MemoryReporter

    cpu, base, method = torch.device("cpu"), default_config(seed), get_method("tgdp_reg")
    task = GMMTask(GMMConfig(n=n, seed=seed))
    data = task.draw("train")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    path = Path(cache) / f"source_seed{seed}.pt"  # the source draw does not depend on n: one model per seed
    source = stages.build_score(base.source, (task.dim,), 0, task.schedule)
    if path.exists():
        source.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        source = stages.pretrain_source(base.source, data, task.schedule, cpu, MemoryReporter())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(source.state_dict(), path)
    source = source.eval().requires_grad_(False)
    seconds["source"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    classifier = stages.train_classifier(base.classifier, data, cpu, MemoryReporter())
    seconds["classifier"] = round(time.perf_counter() - t0, 1)
    rows = []
    for eta in ETAS:
        cfg = method.configure(base, {**GMMExperiment.regularised, "eta_cycle": eta})
        rep, extra = MemoryReporter(), {}
        if eta > 0:
            t0 = time.perf_counter()
            tc = stages.train_time_classifier(cfg.time_classifier, data, task.schedule, cpu, rep)
            seconds["time_classifier"] = round(time.perf_counter() - t0, 1)
            state = rep.restore("time_classifier")
            extra = {"tc_rmse": {k[5:]: v for k, v in log_ratio_errors(task, tc).items() if k.startswith("rmse_t")},
                     "tc_stopped_at_step": state["step"], "tc_best_holdout_loss": state["best"]}
        t0 = time.perf_counter()
        fitted = method.fit(cfg, data, source, task.schedule, cpu, rep, classifier=classifier)
        seconds[f"guidance_eta{eta:g}"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        res = evaluate_method("tgdp_reg", cfg, task, data, cpu, splits=("validation",), source=source,
                              h=fitted.guidance)
        seconds[f"sampling_eta{eta:g}"] = round(time.perf_counter() - t0, 1)
        regs = {k: getattr(cfg.guidance, k) for k in ("eta_cycle", "eta_consistency", "target_batch_size")}
        rows.append({"seed": seed, "n": n, "eta_cycle": eta, **{k: res["validation"][k] for k in METRICS}, **extra,
                     "config": {"guidance": regs}})
    rows[-1]["seconds"] = seconds
    return rows


def one_candidate(seed: int, n: int, cseed: int, candidate: str) -> dict:
    """log_ratio_errors of one candidate config at one (data seed, n, classifier seed)."""
    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from tgdp import stages
    from tgdp.config import GMMConfig, TimeClassifierConfig
    from tgdp.data.gmm import GMMTask
    from tgdp.reporter import MemoryReporter

    task = GMMTask(GMMConfig(n=n, seed=seed))
    cfg = replace(TimeClassifierConfig(seed=cseed), **CANDIDATES[candidate])
    rep, t0 = MemoryReporter(), time.perf_counter()
    tc = stages.train_time_classifier(cfg, task.draw("train"), task.schedule, torch.device("cpu"), rep)
    return {"candidate": candidate, "seed": seed, "n": n, "classifier_seed": cseed, **log_ratio_errors(task, tc),
            "stopped_at_step": rep.restore("time_classifier")["step"], "seconds": round(time.perf_counter() - t0, 1)}


def summarise(rows: list[dict], seeds: list[int], ns: list[int]) -> dict:
    """Per n: per-seed energy distance of both arms, means, mean paired difference and eta_1 = 1 wins."""
    out = {}
    for n in ns:
        pairs = {}
        for s in seeds:
            ed = {r["eta_cycle"]: r["energy_distance"] for r in rows if r["seed"] == s and r["n"] == n}
            if all(e in ed for e in ETAS):
                pairs[s] = ed
        if not pairs:
            continue
        diffs = [p[1.0] - p[0.0] for p in pairs.values()]
        log_ratios = [math.log(p[1.0] / p[0.0]) for p in pairs.values()]
        out[f"n={n}"] = {
            "seeds": sorted(pairs),
            "energy_distance_eta0": [pairs[s][0.0] for s in sorted(pairs)],
            "energy_distance_eta1": [pairs[s][1.0] for s in sorted(pairs)],
            "mean_eta0": statistics.fmean(p[0.0] for p in pairs.values()),
            "mean_eta1": statistics.fmean(p[1.0] for p in pairs.values()),
            "mean_paired_diff_eta1_minus_eta0": statistics.fmean(diffs),
            "eta1_wins": sum(d < 0 for d in diffs),
            "units": len(diffs),
            "geomean_ratio_eta1_over_eta0": math.exp(statistics.fmean(log_ratios)),
        }
    return out


def select(rows: list[dict]) -> dict:
    """Per candidate: geometric mean of the pooled RMSE over the (seed, n) units with classifier seed = data seed
    (the rule), its per-unit values, and the n = 10 robustness check over all classifier seeds."""
    out = {}
    for cand in CANDIDATES:
        own = [r for r in rows if r["candidate"] == cand and r["classifier_seed"] == r["seed"]]
        n10 = [r for r in rows if r["candidate"] == cand and r["n"] == 10]
        if not own:
            continue
        slopes = [r[f"slope_t={t}"] for r in n10 + [r for r in own if r["n"] != 10] for t in TIMES[:2]]
        out[cand] = {"geomean_rmse_pooled": math.exp(statistics.fmean(math.log(r["rmse_pooled"]) for r in own)),
                     "units": len(own),
                     "rmse_pooled": {f"seed{r['seed']} n={r['n']}": r["rmse_pooled"] for r in own},
                     "n10_all_classifier_seeds_geomean": math.exp(statistics.fmean(math.log(r["rmse_pooled"])
                                                                                 for r in n10)),
                     "n10_classifier_seeds": len(n10),
                     "slope_range_t<=0.2": [min(slopes), max(slopes)]}  # over all of its fits
    complete = [c for c in out if out[c]["units"] == 6]
    return {"candidates": CANDIDATES, "per_candidate": out,
            "chosen": min(complete, key=lambda c: out[c]["geomean_rmse_pooled"]) if complete else None}


def markdown(payload: dict) -> str:
    lines = [f"Command: `{payload.get('command', '')}`", "",
             "# The early-stopped time classifier: defaults, and whether eta_1 (the cycle weight) helps", "",
             "GMM `paper`, development seeds only, **validation** draws.", ""]
    for key, s in payload.get("summary", {}).items():
        lines += [f"## eta_1 = 0 vs 1 in tgdp_reg, {key}: validation energy distance (lower is better)", "",
                  "tgdp_reg with eta_consistency 0.1, target_batch_size 64, `default_config(seed)`; only eta_cycle "
                  "differs.", "", "| seed | eta_1 = 0 | eta_1 = 1 | 1 better? |", "|---|---|---|---|"]
        for seed, a, b in zip(s["seeds"], s["energy_distance_eta0"], s["energy_distance_eta1"]):
            lines.append(f"| {seed} | {a:.4g} | {b:.4g} | {'yes' if b < a else 'no'} |")
        lines += [f"| mean | {s['mean_eta0']:.4g} | {s['mean_eta1']:.4g} | {s['eta1_wins']} of {s['units']} |", "",
                  f"Mean paired difference (eta_1 = 1 minus 0): {s['mean_paired_diff_eta1_minus_eta0']:+.4g}; "
                  f"geometric-mean ratio 1 / 0: {s['geomean_ratio_eta1_over_eta0']:.3f}.", ""]
    tc = [r for r in payload.get("rows", []) if r["eta_cycle"] > 0 and "tc_rmse" in r]
    if tc:
        times = list(tc[0]["tc_rmse"])
        lines += ["## The time classifier of the eta_1 = 1 arm (library defaults)", "",
                  "| seed | n | stopped at step | " + " | ".join(f"log-ratio RMSE {t}" for t in times) + " |",
                  "|---|---|---|" + "---|" * len(times)]
        for r in sorted(tc, key=lambda r: (r["n"], r["seed"])):
            lines.append(f"| {r['seed']} | {r['n']} | {r['tc_stopped_at_step']} | "
                         + " | ".join(f"{v:.3f}" for v in r["tc_rmse"].values()) + " |")
        lines.append("")
    sel = payload.get("defaults_selection")
    if sel:
        lines += ["## How TimeClassifierConfig's defaults were chosen (`--select-defaults`)", "",
                  "Log-ratio RMSE against the exact log q_t/p_t over target points noised at t = 0.05 / 0.2 / 0.5, "
                  "pooled; data seeds 0-1 at n = 10 / 100 / 1000. Rule: smallest geometric mean over the 6 units.",
                  "", "| candidate | overrides | geomean RMSE | n = 10 over all classifier seeds | slope range, "
                  "t <= 0.2 |", "|---|---|---|---|---|"]
        for cand, s in sel["per_candidate"].items():
            over = ", ".join(f"{k} {v}" for k, v in sel["candidates"][cand].items())
            lines.append(f"| {cand} | {over} | {s['geomean_rmse_pooled']:.3f} | "
                         f"{s['n10_all_classifier_seeds_geomean']:.3f} ({s['n10_classifier_seeds']} fits) | "
                         f"{s['slope_range_t<=0.2'][0]:.2f}-{s['slope_range_t<=0.2'][1]:.2f} |")
        lines += ["", f"Chosen: **{sel['chosen']}**.", ""]
    return "\n".join(lines)


def run_units(todo: list, fn, args_of, workers: int, on_done) -> None:
    """fn(*args_of(unit)) for every unit in ``workers`` spawned processes; on_done(unit, result) as each ends."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args_of(u)): u for u in todo}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/tgdp_bench_time_classifier_cycle", help="source models, per seed")
    ap.add_argument("--select-defaults", action="store_true", help="the TimeClassifierConfig defaults selection")
    args = ap.parse_args()
    path = RESULTS / f"{NAME}.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    t0 = time.perf_counter()

    def write() -> None:
        payload["environment"] = environment()
        write_result(NAME, payload)
        (RESULTS / f"{NAME}.md").write_text(markdown(payload) + "\n")

    if args.select_defaults:
        sel_rows = payload.get("defaults_selection", {}).get("rows", [])
        done = {(r["candidate"], r["seed"], r["n"], r["classifier_seed"]) for r in sel_rows}
        todo = [(c, s, n, s) for n in (10, 100, 1000) for s in (0, 1) for c in CANDIDATES]
        todo += [(c, s, 10, s + k) for k in (10, 20) for s in (0, 1) for c in FINALISTS]
        todo = [u for u in todo if u not in done]

        def done_select(unit, row) -> None:
            if row is not None:
                sel_rows.append(row)
                print(f"{unit}: pooled RMSE {row['rmse_pooled']:.3f}", flush=True)
            wall = payload.get("defaults_selection", {}).get("wall_s_last_run")
            payload["defaults_selection"] = {
                **select(sel_rows), "command": "python bench/time_classifier_cycle.py --select-defaults",
                "rows": sorted(sel_rows, key=lambda r: (r["candidate"], r["n"], r["seed"], r["classifier_seed"])),
                "wall_s_last_run": wall if row is None else round(time.perf_counter() - t0, 1)}
            write()

        print(f"defaults selection: {len(done)} fit(s) done; running {len(todo)}", flush=True)
        run_units(todo, one_candidate, lambda u: (u[1], u[2], u[3], u[0]), args.workers, done_select)
        if sel_rows:
            done_select(None, None)  # the summary of every fit held, also when nothing was left to run
        print(json.dumps(select(sel_rows)["per_candidate"], indent=1), flush=True)
        return 0

    inputs = {"testbed": "gmm paper (GMMConfig defaults)", "seeds": args.seeds, "n": args.n, "eta_cycle": list(ETAS),
              "split": "validation", "method": METHOD, "config": "study.experiments.gmm_defaults.default_config(seed)"}
    rows = payload.get("rows", []) if payload.get("inputs", {}).get("method") == METHOD else []
    done = {(r["seed"], r["n"]) for r in rows if r["eta_cycle"] == ETAS[-1]}
    todo = [(s, n) for n in args.n for s in args.seeds if (s, n) not in done]  # n-major: sources cached early

    def done_unit(unit, new) -> None:
        nonlocal rows
        if new is not None:
            rows = [r for r in rows if (r["seed"], r["n"]) != unit] + new
            print(f"seed {unit[0]} n {unit[1]}: "
                  + ", ".join(f"eta {r['eta_cycle']:g} ED {r['energy_distance']:.4g}" for r in new), flush=True)
        payload.update({"command": "python bench/time_classifier_cycle.py " + " ".join(sys.argv[1:]),
                        "inputs": inputs, "summary": summarise(rows, args.seeds, args.n),
                        "rows": sorted(rows, key=lambda r: (r["n"], r["seed"], r["eta_cycle"]))})
        if new is not None:
            payload["wall_s_last_run"] = round(time.perf_counter() - t0, 1)
        write()

    print(f"{len(done)} unit(s) already done; running {todo}", flush=True)
    run_units(todo, one_unit, lambda u: (u[0], u[1], args.cache), args.workers, done_unit)
    if rows:
        done_unit(None, None)  # the summary of every unit held, also when nothing was left to run
    for key, s in summarise(rows, args.seeds, args.n).items():
        print(f"{key}: mean ED eta0 {s['mean_eta0']:.4g} eta1 {s['mean_eta1']:.4g}; "
              f"eta1 wins {s['eta1_wins']}/{s['units']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
