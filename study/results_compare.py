"""The protocol's final table in docs/results.md: ``bench/results/gmm_compare/<testbed>/`` (``bench/gmm_compare.py``).

Per testbed and n, the headline reads the evaluation's ``table.json`` (``study.evaluate``; every method on the
evaluation seeds, test draw): tgdp and tgdp_reg against the *strongest* baseline (vanilla, finetune,
domain_guidance tuned, source_only fixed: the one with the best mean on the evaluation seeds, a choice made after
the fact and so against TGDP, never for it), with paired wins / ties / losses and the Wilcoxon p, and against
oracle_guidance; then issue 14's goal, judged (``goals``). The full per-method and per-pair tables stay in each
testbed's ``table.md``. A testbed still running shows its progress.

No torch, Ray or MLflow (study.results_doc's rule); a flipped pair is ``study.statistics.PairStats.flipped``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

from study.statistics import PairStats

TUNED_BASELINES = ("vanilla", "finetune", "domain_guidance")
# the methods that are not TGDP: the tuned ones, and source_only (nothing to tune; on a small shift it can beat
# every tuned one, whose searches may not reach "barely adapt")
BASELINES = (*TUNED_BASELINES, "source_only")
TGDP = ("tgdp", "tgdp_reg")
ORACLE = "oracle_guidance"
SUITE = ("paper", "asym", "near", "d8", "partial")


def _stats(comp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["method"]: m for m in comp["methods"]}


def _pair(comp: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """``a`` against ``b`` from the comparison's pair list (``Comparison.to_dict``), oriented from ``a``'s side."""
    for p in comp["pairs"]:
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):
            return asdict(PairStats(**{f.name: p[f.name] for f in fields(PairStats)}).flipped())
    return None


def _word(pair: dict[str, Any]) -> str:
    """A pair's verdict without its note: "wins", "ties" or "loses"."""
    return pair["verdict"].split(" (")[0]


def strongest_baseline(comp: dict[str, Any], among: tuple[str, ...] = BASELINES) -> str | None:
    """The baseline (of ``among``) with the best mean over finished seeds (None when none has one)."""
    stats = _stats(comp)
    have = [b for b in among if b in stats and stats[b]["mean"] is not None]
    if not have:
        return None
    sign = 1.0 if comp["direction"] == "minimize" else -1.0
    return min(have, key=lambda b: sign * stats[b]["mean"])


def headline(table: dict[str, Any], metric: str, fmt: Callable[[Any], str]) -> list[list[str]]:
    """Rows (n, tgdp, tgdp_reg, strongest baseline, oracle, and the paired tests) of one testbed's table.json."""
    rows = []
    for comp in (c for c in table["comparisons"] if c["metric"] == metric):
        stats, base = _stats(comp), strongest_baseline(comp)

        def ms(m: str) -> str:
            s = stats.get(m)
            if s is None or s["mean"] is None:
                return "-"
            fail = f", {s['failed']} failed" if s["failed"] else ""
            return f"{fmt(s['mean'])} ± {fmt(s['sd'])}{fail}"

        def vs(a: str, b: str | None) -> str:
            p = _pair(comp, a, b) if b else None
            if p is None:
                return "-"
            pv = "unattainable" if p["note"] and p["min_p"] > 0.05 else fmt(p["p_value"])
            return f"{p['wins']}/{p['ties']}/{p['losses']}, p {pv}: {_word(p)}"

        ratio = "-"
        if ORACLE in stats and stats[ORACLE]["mean"] and stats.get("tgdp_reg", {}).get("mean") is not None:
            ratio = f"{stats['tgdp_reg']['mean'] / stats[ORACLE]['mean']:.2f}"
        rows.append([comp["n"], ms("tgdp"), ms("tgdp_reg"), f"{base}: {ms(base)}" if base else "-", ms(ORACLE),
                     vs("tgdp", base), vs("tgdp_reg", base), ratio])
    return rows


def goals(table: dict[str, Any], metric: str = "energy_distance") -> str:
    """Issue 14's goal, judged on one testbed: a TGDP variant ahead of the strongest baseline at n = 10 and
    100 (p < 0.05), tgdp_reg within 1.25x of oracle_guidance at n = 1000, and its mode weights (paired against
    the tuned baseline with the smallest mode-weight error)."""
    parts = []
    for comp in (c for c in table["comparisons"] if c["metric"] == metric):
        stats, base = _stats(comp), strongest_baseline(comp)
        if comp["n"] in (10, 100) and base:
            won = [m for m in TGDP if (p := _pair(comp, m, base)) and _word(p) == "wins"]
            parts.append(f"n = {comp['n']}: {' and '.join(won) + ' ahead' if won else 'no TGDP variant ahead'} "
                         f"of {base} at p < 0.05: **{'met' if won else 'not met'}**")
        if comp["n"] == 1000 and stats.get(ORACLE, {}).get("mean") and stats.get("tgdp_reg", {}).get("mean"):
            r = stats["tgdp_reg"]["mean"] / stats[ORACLE]["mean"]
            bound = _pair(comp, ORACLE, base) if base else None
            weak = (f" (but oracle_guidance itself loses to {base} here, so being near it is no win)"
                    if bound and _word(bound) == "loses" else "")
            parts.append(f"n = 1000: tgdp_reg / oracle_guidance = {r:.2f} (goal <= 1.25): "
                         f"**{'met' if r <= 1.25 else 'not met'}**{weak}")
    # mode weights against the tuned baseline closest to the true ones, per n; not source_only: its samples sit
    # off the target modes, so their shares per mode say nothing
    verdicts = [f"{_word(p)} ({base}) at n = {c['n']}"
                for c in table["comparisons"] if c["metric"] == "mode_balance_error"
                and (base := strongest_baseline(c, TUNED_BASELINES)) and (p := _pair(c, "tgdp_reg", base))]
    if verdicts:
        parts.append("mode weights, tgdp_reg against the tuned baseline closest to the true ones: "
                     + ", ".join(verdicts))
    return "Goal (issue 14): " + "; ".join(parts) + "." if parts else ""


def glance(table: dict[str, Any], metric: str = "energy_distance") -> list[str]:
    """One testbed's cells of the suite summary: per n, the better TGDP variant's verdict against the strongest
    baseline (wins before ties before losses, then more paired wins); then oracle_guidance's own verdict against
    it at the largest n, the ceiling of any guidance on that testbed."""
    order = {"wins": 0, "ties": 1, "loses": 2}
    cells, comps = [], [c for c in table["comparisons"] if c["metric"] == metric]
    for comp in comps:
        base = strongest_baseline(comp)
        found = [(order.get(_word(p), 1), m, p) for m in TGDP
                 if base and (p := _pair(comp, m, base)) is not None]
        if not found:
            cells.append("-")
            continue
        _, m, p = min(found, key=lambda x: (x[0], -x[2]["wins"]))
        cells.append(f"{_word(p)}: {m} {p['wins']}/{p['ties']}/{p['losses']} vs {base}")
    last = max(comps, key=lambda c: c["n"], default=None)
    base = strongest_baseline(last) if last else None
    p = _pair(last, ORACLE, base) if base else None
    return [*cells, f"{_word(p)} vs {base}" if p else "-"]


HEADER = ["n", "tgdp", "tgdp_reg", "strongest baseline", "oracle_guidance", "tgdp vs baseline (W/T/L)",
          "tgdp_reg vs baseline (W/T/L)", "tgdp_reg / oracle"]


def render(root: Path, rel: Callable[[Path], str], fmt: Callable[[Any], str],
           table: Callable[[list[str], list[list[Any]]], list[str]]) -> tuple[list[str], set[Path]]:
    """(Markdown lines, the files rendered) of ``root`` (bench/results/gmm_compare); nothing when it is absent."""
    done = set(root.rglob("*.json")) if root.is_dir() else set()
    if not done:  # an empty directory (a run just started) renders as absent: the page must not depend on it
        return [], set()
    out = ["## Gaussian mixture: the final table (docs/protocol.md)", "",
           "Every method tuned on the same budget on development seed 0 (validation draws), its best configuration "
           "per n frozen, then run on the evaluation seeds (test draw; `bench/gmm_compare.py`). Energy distance, "
           "mean ± sd over the evaluation seeds. W/T/L: paired wins / ties / losses of the TGDP variant over the "
           "seeds, two-sided Wilcoxon signed-rank p; \"wins\" / \"loses\" at p < 0.05, else \"ties\". The strongest "
           "baseline (vanilla, finetune, domain_guidance, tuned; source_only, fixed) is picked on the evaluation seeds "
           "themselves, which can only favour the baseline.", ""]
    testbeds = [t for t in SUITE if (root / t).is_dir()] + sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name not in SUITE)
    finished = {tb: json.loads((root / tb / "table.json").read_text()) for tb in testbeds
                if (root / tb / "table.json").is_file()}
    if finished:
        ns = [c["n"] for c in next(iter(finished.values()))["comparisons"] if c["metric"] == "energy_distance"]
        out += ["### The suite at a glance", "",
                "Per testbed and n, the better of tgdp and tgdp_reg against the strongest baseline (W/T/L over the "
                "evaluation seeds; wins / loses at p < 0.05); the last column is exact guidance (oracle_guidance) "
                "against the same baseline at the largest n: where it loses, even perfect guidance would not beat the "
                "baseline.", ""]
        out += table(["testbed", *(f"n = {n}" for n in ns), f"oracle_guidance at n = {ns[-1]}"],
                     [[tb, *glance(t)] for tb, t in finished.items()]) + [""]
    for tb in testbeds:
        d = root / tb
        tpath = d / "table.json"
        out += [f"### {tb}", ""]
        if tb not in finished:
            n_done = len(list((d / "results").glob("*.json"))) if (d / "results").is_dir() else 0
            out += [f"Not finished: {n_done} result files so far in `{rel(d / 'results')}`"
                    + (f"; frozen configurations: `{rel(d / 'frozen.json')}`." if (d / "frozen.json").is_file()
                       else "."), ""]
            continue
        t = finished[tb]
        out += [f"Evaluation seeds {t['evaluation_seeds'][0]}-{t['evaluation_seeds'][-1]} "
                f"({len(t['evaluation_seeds'])}); development seeds {t['development_seeds']}.", ""]
        out += table(HEADER, headline(t, "energy_distance", fmt))
        out += ["", g] if (g := goals(t)) else []
        if any(c["metric"] == "mode_balance_error" for c in t["comparisons"]):
            out += ["", "Mode-weight error (total variation between the samples' share per target mode and the true "
                    "weights; 0 = reproduced), mean ± sd:", ""]
            rows = []
            for c in (c for c in t["comparisons"] if c["metric"] == "mode_balance_error"):
                s = _stats(c)
                rows.append([c["n"], *(f"{fmt(s[m]['mean'])} ± {fmt(s[m]['sd'])}" if m in s and s[m]["mean"]
                                       is not None else "-" for m in (*TGDP, *BASELINES, ORACLE))])
            out += table(["n", *TGDP, *BASELINES, ORACLE], rows)
        out += ["", f"Every method and pair: `{rel(d / 'table.md')}` (`{rel(tpath)}`); one file per seed, n and "
                f"method: `{rel(d / 'results')}`; frozen configurations: `{rel(d / 'frozen.json')}`.", ""]
    timing = root / "timing.json"
    if timing.is_file():
        rows = [[r["testbed"], r["phase"], f"{r['seconds'] / 60:.1f}", r["load_start"], r["load_end"],
                 r["returncode"]] for r in json.loads(timing.read_text())]
        out += ["### Run time of the protocol", "",
                "Wall time per phase on the 2-core box (load average at its start and end: the box was shared, so "
                "an idle box is faster).", ""]
        out += table(["testbed", "phase", "minutes", "load at start", "load at end", "exit"], rows) + [""]
        out += [f"Source: `{rel(timing)}`.", ""]
    return out, done
