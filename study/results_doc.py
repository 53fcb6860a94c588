"""Generate docs/results.md from the benchmark result files, so that no number in it drifts.

Every ``bench/results/**/*.json`` becomes a compact table with its source file named under it; the GMM seed
summaries (``gmm_seeds/*_summary.json``, one row per seed x n x method) are aggregated into mean / sd / per-seed
tables. ``python -m study.results_doc`` rewrites the page; ``tests/study/test_results_doc.py`` fails when it is stale.
json, pathlib, statistics and study.statistics (numpy, scipy): this runs without torch, Ray or MLflow.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from study import results_compare

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "results.md"

# What each GMM seed summary is, in reading order (newest defaults first). A summary not listed here is
# still rendered, after these, without a caption.
GMM_SUMMARIES = {
    "n10_100_summary": "Current GMM defaults (guidance 3x256, cut off above t = 0.5, classifier 10000 steps / "
                       "patience 40, pooled target), n = 10 and 100, seeds 0-5.",
    "n1000_summary": "Current defaults, n = 1000, seeds 0-2.",
    "cutoff_only_summary": "Earlier default: as now but the classifier at 2000 steps / patience 5, seeds 0-2.",
    "cutoff_only_seeds345_summary": "Same as `cutoff_only_summary`, seeds 3-5.",
    "no_cutoff_summary": "Earlier default: pooled target, no large-t cut-off, classifier 2000 / 5, seeds 0-2.",
    "no_cutoff_n10_seeds345_summary": "Same as `no_cutoff_summary`, n = 10, seeds 3-5.",
    "posterior_target_summary": "Earlier default: posterior target over source references only (not pooled), "
                                "no cut-off, classifier 2000 / 5, seeds 0-2.",
    "posterior_target_n10_seeds345_summary": "Same as `posterior_target_summary`, n = 10, seeds 3-5.",
}
NO_WIN_COUNT = ("tgdp_reg", "oracle_guidance", "oracle_target", "true_target")  # reference rows: no win count


def fmt(x: Any) -> str:
    """Three significant digits for floats (whole numbers from 100 up), integers as they are, '-' for missing."""
    if x is None or x == "":
        return "-"
    if isinstance(x, bool):
        return "pass" if x else "fail"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "nan"
        if x == 0 or abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:#.3g}"  # keeps trailing zeros: 0.130, not 0.13
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v) for v in x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def source(path: Path, data: Any = None) -> str:
    """The line under every table: the file, and when recorded the date, torch, CPUs and load of the run."""
    env = data.get("environment", {}) if isinstance(data, dict) else {}
    bits = [str(env["date"])[:10]] if env.get("date") else []
    bits += [f"torch {env['torch']}"] if env.get("torch") else []
    bits += [f"{env['cpu_count']} CPUs"] if env.get("cpu_count") else []
    bits += [f"load {fmt(env['loadavg_1_5_15'][0])}"] if env.get("loadavg_1_5_15") else []
    return f"Source: `{rel(path)}`" + (f" ({', '.join(bits)})." if bits else ".")


def _command(path: Path) -> str:
    """The command line recorded in the first line of the summary's Markdown twin (`Command: ...`)."""
    md = path.with_suffix(".md")
    first = md.read_text().splitlines()[0] if md.exists() else ""
    return first[len("Command:"):].strip().strip("`") if first.startswith("Command:") else ""


# --- GMM: fixed-config comparisons over seeds -------------------------------------------------------------

def gmm_summary(path: Path, rows: list[dict]) -> list[str]:
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["n"], r["method"], r["seed"]): r for r in rows}
    ns = list(dict.fromkeys(r["n"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for n in ns:
        for m in methods:
            vals = [by[(n, m, s)] for s in seeds if (n, m, s) in by]
            if not vals:
                continue
            ed = [v["energy_distance"] for v in vals]
            reg = [by.get((n, "tgdp_reg", v["seed"]), {}).get("energy_distance") for v in vals]
            wins = (f"{sum(r is not None and r < e for r, e in zip(reg, ed))}/{len(ed)}"
                    if m not in NO_WIN_COUNT and any(r is not None for r in reg) else "")
            out.append([n, m, statistics.mean(ed), statistics.stdev(ed) if len(ed) > 1 else 0.0,
                        " / ".join(fmt(e) for e in ed), statistics.mean(v["sliced_w2"] for v in vals),
                        statistics.mean(v["mode_balance_error"] for v in vals), wins])
    caption = GMM_SUMMARIES.get(path.stem, "")
    cmd = _command(path)
    head = [f"### {path.stem}", ""] + ([caption, ""] if caption else []) + ([f"Command: `{cmd}`", ""] if cmd else [])
    header = ["n", "method", "energy distance, mean", "sd", f"per seed ({', '.join(map(str, seeds))})",
              "sliced W2, mean", "mode-balance error, mean", "tgdp_reg better in"]
    return head + table(header, out) + ["", source(path), ""]


def gmm_diagnostics(prefix: str, files: list[Path]) -> list[str]:
    """Per-seed diagnostics of one comparison: learned log r and grad log h against the exact fields."""
    per_seed = {int(f.stem.rsplit("seed", 1)[1]): json.loads(f.read_text()) for f in files}
    seeds = sorted(per_seed)
    ns = sorted({int(n) for d in per_seed.values() for n in d})
    rows = []
    for n in ns:
        got = [per_seed[s][str(n)] for s in seeds if str(n) in per_seed[s]]
        col = lambda key: " / ".join(fmt(g.get(key)) for g in got)  # noqa: E731
        rows.append([n, col("classifier_log_ratio_rmse"), col("tgdp_guidance_grad_rmse"),
                     col("tgdp_reg_guidance_grad_rmse"), col("wall_s")])
    header = ["n", "classifier log r RMSE", "tgdp grad log h RMSE", "tgdp_reg grad log h RMSE", "wall s"]
    names = ", ".join(f"`{f.name}`" for f in files)
    return ([f"### {prefix} diagnostics (seeds {', '.join(map(str, seeds))}, values per seed)", ""] + table(header, rows)
            + ["", f"Source: {names} in `{rel(files[0].parent)}/`.", ""])


def gmm_ratio_limit(path: Path, d: dict) -> list[str]:
    rows = []
    for n in d["inputs"]["n"]:
        rs = [r for r in d["rows"] if r["n"] == n]
        mean = lambda key, sub: statistics.mean(r[key][sub] for r in rs)  # noqa: E731
        rows.append([n, statistics.mean(r["split_energy"] for r in rs),
                     *[f"{fmt(mean(k, 'energy_distance'))} ({fmt(mean(k, 'within_mode'))})"
                       for k in ("empirical", "learned_ratio", "exact_ratio")],
                     " / ".join(fmt(r["tilt_gamma"]) for r in rs)])
    header = ["n", "target split alone", "n-point empirical (within modes)", "learned ratio (within)",
              "exact ratio (within)", "fitted tilt gamma per seed"]
    return (["Energy distance of the law the pooled target reweights to, drawn directly (no guidance net); "
             f"mean over seeds {', '.join(map(str, d['inputs']['seeds']))}.", ""] + table(header, rows)
            + ["", source(path, d) + " Per-seed rows: `bench/results/gmm_ratio_limit.md`.", ""])


def gmm_ratio_vs_guidance(path: Path, d: dict) -> list[str]:
    methods = ("tgdp_reg", "tgdp_reg, exact ratio", "oracle_guidance", "vanilla")
    rows = [[key.replace("/n", ", n = "), *[fmt(m[k]["energy_distance"]) for k in methods],
             " / ".join(fmt(m[k]["guidance_grad_rmse"]) for k in methods[:2])]
            for key, m in sorted(d["mean_over_seeds"].items())]
    return (["Where tgdp_reg loses at n = 1000: the same fit with the exact log r in place of the classifier, "
             "against exact guidance and the tuned vanilla (frozen configurations of the final table; development "
             f"seeds {', '.join(map(str, d['inputs']['seeds']))}, validation draw). Energy distance, mean over seeds.",
             ""] + table(["testbed, n", *methods, "grad log h RMSE (learned / exact ratio)"], rows)
            + ["", source(path, d) + " Per-seed values: `raw` in the file.", ""])


# --- ECG -------------------------------------------------------------------------------------------------

def ecg_compare(path: Path, d: dict) -> list[str]:
    rows = [[r["n"], r["method"], f"{fmt(r['macro_auroc'])} [{fmt(r.get('macro_auroc_lo'))}, "
             f"{fmt(r.get('macro_auroc_hi'))}]", r.get("f_beta2"), r.get("g_beta2"), r.get("feat_energy"),
             r.get("seconds_total")] for r in d["rows"]]
    header = ["n", "method", "macro AUROC [95 % bootstrap]", "F_beta2", "G_beta2", "feat_energy", "s"]
    etas = d.get("reg_etas")
    note = f" tgdp_reg (eta_cycle, eta_consistency) = ({fmt(etas)})." if etas else ""
    return ([f"Preset `{d.get('preset')}`, simulated data, test split; {fmt(d.get('seconds'))} s in all.{note}", ""]
            + table(header, rows) + ["", source(path, d), ""])


def flat(d: Any, prefix: str = "", depth: int = 3) -> list[list[Any]]:
    """(dotted key, scalar) rows of a nested mapping; lists of scalars are joined, deeper structure skipped."""
    out: list[list[Any]] = []
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 1:
            out += flat(v, key + ".", depth - 1)
        elif isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v) and len(v) <= 8:
            out.append([key, v])
        elif not isinstance(v, (dict, list)):
            out.append([key, v])
    return out


def key_values(path: Path, d: Any, keys: tuple[str, ...] | None = None) -> list[str]:
    part = {k: d[k] for k in keys if k in d} if keys and isinstance(d, dict) else d
    return table(["quantity", "value"], flat(part)) + ["", source(path, d), ""]


# --- study system and GPU --------------------------------------------------------------------------------

def benchmark(path: Path, d: dict) -> list[str]:
    """A performance benchmark (bench/run_all.py family): its measured quantities, goal and verdict."""
    keys = ("ratios", "steps_per_s", "per_step_s", "time_to_first_trial_result_s", "breakdown_s")
    lines = table(["quantity", "value"], flat({k: d[k] for k in keys if k in d}, depth=3))
    return lines + ["", f"Goal: {d.get('goal', '-')}; result: {fmt(d.get('pass'))}. " + source(path, d), ""]


def default_study(path: Path, d: dict) -> list[str]:
    """The default study: total wall time against the goal, and per unit where the time went."""
    b = d["breakdown_s"]
    rows = []
    for unit, u in b["units"].items():
        shared = next((v for k, v in u.items() if k.startswith("shared_stages_s")), None)
        rows.append([unit, shared, u.get("tune_run_s"), u.get("trials"), u.get("trials_finished")])
    startup = next((v for k, v in b.items() if k.startswith("startup")), None)
    lines = [f"`tgdp-study run {d['inputs']['spec']}`, {d['inputs'].get('cache', '')} cache: total "
             f"**{fmt(d['total_wall_s'])} s** (start-up {fmt(startup)} s, report {fmt(b.get('report'))} s).", ""]
    lines += table(["unit", "shared stages s (source, classifier, baselines)", "Tune run s", "trials",
                    "trials run to the end"], rows)
    return lines + ["", f"Goal: {d.get('goal', '-')}; result: {fmt(d.get('pass'))}. " + source(path, d), ""]


def reuse_actors(path: Path, d: dict) -> list[str]:
    rows = [[k, d[k]["wall_s"], d[k]["units_s"], d[k]["trial_walls_s"], d[k]["gaps_between_trials_s"],
             d["final_energy_distance"][k]] for k in ("default", "reuse_actors")]
    header = ["run", "wall s", "units s", "trial walls s", "gaps between trials s", "final energy distances"]
    return [fmt(d.get("what", "")), ""] + table(header, rows) + ["", source(path, d), ""]


def gpu_check(paths: list[Path]) -> list[str]:
    data = [json.loads(p.read_text()) for p in paths]
    stages = ["source", "classifier", "time_classifier", "guidance", "sample_guided", "sample_unguided"]
    rows = []
    for st in stages:
        cells = []
        for d in data:
            w = d["worker"].get(st, {})
            rate = w.get("steps_per_s", w.get("samples_per_s"))
            cells += [f"{fmt(rate)} {'steps' if 'steps_per_s' in w else 'samples'}/s", w.get("peak_gib")]
        rows.append([st, *cells])
    header = ["stage (paper preset)"]
    for p, d in zip(paths, data):
        header += [f"{p.stem}: rate", f"{p.stem}: peak GiB"]
    cfg = "; ".join(f"{st}: {data[0]['worker'][st]['config']}" for st in stages if "config" in data[0]["worker"][st])
    dev = data[0]["worker"]
    return ([f"One `TorchTrainer(num_workers=1, use_gpu=True)` on {dev['device']} ({dev['backend']}); {cfg}.", ""]
            + table(header, rows) + [""] + [source(p, d) for p, d in zip(paths, data)] + [""])


def sssd_precision(path: Path, d: dict) -> list[str]:
    rows = [[k, v.get("train_steps_per_s"), v.get("train_peak_gib"), v.get("eval_batch_s"), v.get("train_speedup")]
            for k, v in d["results"].items()]
    header = ["precision", "train steps/s", "train peak GiB", "eval batch s", "train speed-up vs fp32"]
    return [f"Bare SSSD on {d.get('device')}: {d['inputs'].get('model')}.", ""] + table(header, rows) + [
        "", source(path, d), ""]


# --- the page ----------------------------------------------------------------------------------------------

Renderer = Callable[[Path, Any], list[str]]
SECTIONS: list[tuple[str, str, dict[str, Renderer]]] = [
    ("Gaussian mixture: what the learned ratio alone allows", "",
     {"gmm_ratio_limit": gmm_ratio_limit, "gmm_ratio_vs_guidance": gmm_ratio_vs_guidance}),
    ("ECG, simulated PTB-XL -> CPSC2018 (cpu preset)", "",
     {"ecg_sim_compare": ecg_compare,
      "ecg_sim_investigate": lambda p, d: ["Diagnostics of the comparison above.", ""] + key_values(p, d)}),
    ("Study system benchmarks (`make bench`)", "Wall times on a shared 2-core box; ratios within one run.",
     {"default_study": default_study, "study_overhead": benchmark, "stage_cache": benchmark,
      "sampling_cost": benchmark, "train_step_rate": benchmark, "reuse_actors_check": reuse_actors}),
    ("GPU (one NVIDIA H200)", "", {"sssd_precision": sssd_precision}),
]


def render() -> str:
    files = sorted(RESULTS.rglob("*.json"))
    done: set[Path] = set()
    out = ["# Results", "",
           "Generated by `python -m study.results_doc` from `bench/results/**/*.json` (do not edit by hand;",
           "`tests/study/test_results_doc.py` fails when this page is stale). Numbers have three significant digits.",
           "How each was measured: `bench/README.md`; why the method is built this way: `docs/method.md`.", "",
           "## Gaussian mixture: fixed configs over seeds (`tgdp-study gmm`)", "",
           "Energy distance against a 10000-point test draw of the target (lower is better); `true_target` is a",
           "second true draw (the noise floor). \"tgdp_reg better in\": seeds where tgdp_reg has the lower energy "
           "distance.", ""]
    summaries = [f for f in files if f.parent.name == "gmm_seeds" and f.stem.endswith("_summary")]
    order = {stem: i for i, stem in enumerate(GMM_SUMMARIES)}
    for f in sorted(summaries, key=lambda f: (order.get(f.stem, len(order)), f.name)):
        out += gmm_summary(f, json.loads(f.read_text()))
        done.add(f)
    diags: dict[str, list[Path]] = {}
    for f in files:
        if f.parent.name == "gmm_seeds" and "_diagnostics_seed" in f.stem:
            diags.setdefault(f.stem.split("_diagnostics_seed")[0], []).append(f)
    if diags:
        out += ["## Gaussian mixture: learned fields against the exact ones", "",
                "RMSE of the classifier's log r and of the guidance's grad log h against the exact fields, and the "
                "wall time of one n (all methods), per seed.", ""]
        for prefix in sorted(diags, key=lambda p: (order.get(p + "_summary", len(order)), p)):
            group = sorted(diags[prefix], key=lambda f: int(f.stem.rsplit("seed", 1)[1]))
            out += gmm_diagnostics(prefix, group)
            done.update(group)
    lines, rendered = results_compare.render(RESULTS / "gmm_compare", rel, fmt, table)
    out += lines
    done.update(rendered)
    for title, intro, renderers in SECTIONS:
        out += [f"## {title}", ""] + ([intro, ""] if intro else [])
        for stem, fn in renderers.items():
            for f in (f for f in files if f.stem == stem and f.parent == RESULTS):
                out += [f"### {stem}", ""] + fn(f, json.loads(f.read_text()))
                done.add(f)
        if title.startswith("GPU"):
            gpu = [f for f in files if f.stem.startswith("gpu_check") and f.parent == RESULTS]
            if gpu:
                out += ["### gpu_check", ""] + gpu_check(gpu)
                done.update(gpu)
    rest = [f for f in files if f not in done]
    if rest:
        out += ["## Other result files", ""]
        for f in rest:
            out += [f"### {rel(f)}", ""] + key_values(f, json.loads(f.read_text()))
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
