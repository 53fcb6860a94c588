"""Paired statistics of per-seed results: is method A better than method B at one n, and how sure are we?

Input: one metric at one n as ``{method: {seed: value}}`` and the metric's direction ("minimize" or
"maximize"). A seed is one draw of the data, the nets and the sampler noise; methods run on the same seeds are
*paired* (same target draw, same source model), so A and B are compared seed by seed, never by their means.

Per method (``MethodStats``): mean and sd (ddof = 1) over the *finished* seeds, a bootstrap interval of the
mean over seeds, and the failure rate. Per pair (``PairStats``): wins / ties / losses over the common seeds
and the two-sided paired Wilcoxon signed-rank p-value; ``verdict`` turns it into "wins (p < 0.05)", "ties" or
"loses (p < 0.05)". ``render_markdown`` / ``render_csv`` print the tables. numpy and scipy only.

Edge cases, one rule each:
- **Failures.** A value that is None, NaN or +-inf is a failed run (``tgdp.metrics.sample_metrics`` gives NaN
  metrics and ``failed`` = 1 for a draw with over 1 % non-finite samples; ``rows_by_n`` reads that flag).
  Failures are excluded from mean, sd and interval and counted in ``failure_rate`` (failed / seeds present).
  In a pair, a failed run ranks behind every finished one: a loss in the win count and the largest rank in
  the Wilcoxon test. Seeds where both failed carry no comparison and are counted in ``both_failed``.
- **Missing seeds.** A seed absent from one method is not a failure: pairs use the common seeds only, and
  ``unpaired`` counts the others.
- **Ties.** Equal values (exact float equality: a tie is the same number, e.g. a method that ignores n) are
  counted in ``ties`` and dropped from the Wilcoxon test (``zero_method="wilcox"``): the test then asks
  whether the seeds where the methods differ lean one way, and the win / tie / loss counts say how many
  those are. ("zsplit" would let ties dilute the test, "pratt" keeps their ranks; with the few seeds here,
  dropping them and showing their count is the plainest reading.) All pairs tied: p = 1, verdict "ties".
- **Few pairs.** scipy's p is exact for up to 50 non-tied pairs (a permutation p with tied magnitudes up to 13).
  With k non-tied pairs the smallest attainable two-sided p is 2 / 2^k (every pair one way): 0.0625 at k = 5,
  0.031 at k = 6. Below 6, p < 0.05 cannot happen however large the effect; ``PairStats.note`` says so and
  the Markdown prints "unattainable" instead of the number.
- **Intervals.** Percentile bootstrap of the mean (``scipy.stats.bootstrap``, 9999 resamples, rng seeded 0,
  95 %). Percentile, not BCa: with 3-10 seeds the bootstrap distribution of the mean is discrete (many
  resamples equal the observed mean), which makes BCa's bias correction jump. Either interval under-covers
  at such sizes (resamples only recombine the observed values): read it as descriptive. Fewer than 2 finished
  seeds, or all equal: NaN with the reason in ``ci_note``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # significance level of the verdicts
CONFIDENCE = 0.95  # bootstrap interval level
N_RESAMPLES = 9999  # bootstrap resamples
BOOTSTRAP_SEED = 0  # fixed: the same results give the same interval
ZERO_METHOD = "wilcox"  # ties dropped from the Wilcoxon test (module docstring)
DIRECTIONS = ("minimize", "maximize")
WINS, TIES, LOSES = "wins (p < 0.05)", "ties", "loses (p < 0.05)"
NO_PAIRS = "no common seeds"

Values = Mapping[Hashable, "float | None"]  # seed -> metric value of one method (None / NaN: failed)


@dataclass(frozen=True)
class MethodStats:
    """One method's results over seeds (module docstring: failures are excluded from mean, sd and interval)."""

    method: str
    seeds: int  # seeds with a result, finished or failed
    failed: int  # seeds whose run failed (value None / NaN / inf)
    failure_rate: float  # failed / seeds; NaN without seeds
    mean: float  # over finished seeds; NaN without any
    sd: float  # sample sd (ddof = 1) over finished seeds; NaN below 2
    ci_low: float  # bootstrap interval of the mean (CONFIDENCE); NaN with ci_note
    ci_high: float
    ci_note: str  # why the interval is NaN ("" when it is not)


@dataclass(frozen=True)
class PairStats:
    """Method ``a`` against ``b`` over their common seeds, oriented by the direction: a "win" is a seed where
    ``a`` is better (lower for "minimize")."""

    a: str
    b: str
    wins: int  # common seeds where a is better (b failed and a did not counts here)
    ties: int  # common seeds with equal values
    losses: int  # common seeds where b is better
    both_failed: int  # common seeds where both runs failed: no comparison
    unpaired: int  # seeds present in only one of the two methods
    rank_sum_a: float  # Wilcoxon rank sum of the seeds a wins (ties dropped)
    rank_sum_b: float  # ... and of the seeds b wins
    p_value: float  # two-sided paired Wilcoxon signed-rank; 1.0 when every pair ties, NaN without pairs
    min_p: float  # smallest p attainable with wins + losses non-tied pairs: 2 / 2^k
    note: str  # "" or why p cannot be small / was not computed
    verdict: str  # WINS, TIES or LOSES (``verdict``), NO_PAIRS without common seeds

    @property
    def pairs(self) -> int:
        """Common seeds that were compared (both-failed seeds excluded)."""
        return self.wins + self.ties + self.losses

    def flipped(self) -> PairStats:
        """The same comparison read from ``b``'s side."""
        flip = {WINS: LOSES, LOSES: WINS}
        return replace(self, a=self.b, b=self.a, wins=self.losses, losses=self.wins, rank_sum_a=self.rank_sum_b,
                       rank_sum_b=self.rank_sum_a, verdict=flip.get(self.verdict, self.verdict))


@dataclass(frozen=True)
class Comparison:
    """Every method and every pair of methods for one metric at one n."""

    metric: str
    n: int
    direction: str
    methods: dict[str, MethodStats]  # in input order
    pairs: dict[tuple[str, str], PairStats]  # each unordered pair once, (earlier, later) in input order

    def pair(self, a: str, b: str) -> PairStats:
        """``a`` against ``b`` (either order). KeyError for an unknown method."""
        return self.pairs[(a, b)] if (a, b) in self.pairs else self.pairs[(b, a)].flipped()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: NaN becomes None (strict JSON has no NaN)."""
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

        return {"metric": self.metric, "n": self.n, "direction": self.direction,
                "methods": [clean(asdict(m)) for m in self.methods.values()],
                "pairs": [{**clean(asdict(p)), "pairs": p.pairs} for p in self.pairs.values()]}


def _failed(v: float | None) -> bool:
    return v is None or not math.isfinite(v)


def min_attainable_p(k: int) -> float:
    """Smallest two-sided exact Wilcoxon p with ``k`` non-tied pairs (all one way, distinct magnitudes): 2 / 2^k,
    capped at 1 (k = 0 and 1 give 1)."""
    return min(1.0, 2.0 / 2.0 ** k)


def bootstrap_interval(x: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, str]:
    """(low, high, note) of the percentile bootstrap interval of the mean of finished values ``x``; NaN, NaN and
    the reason when fewer than 2 values or all equal (no spread to resample)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan, f"{x.size} finished seed{'s' * (x.size != 1)}: no interval below 2"
    if np.all(x == x[0]):
        return math.nan, math.nan, "all values equal: no spread to resample"
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                          method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), ""


def method_stats(method: str, values: Values) -> MethodStats:
    """Mean, sd, bootstrap interval and failure rate of one method's {seed: value} (module docstring)."""
    done = [float(v) for v in values.values() if not _failed(v)]
    failed = len(values) - len(done)
    lo, hi, note = bootstrap_interval(done)
    return MethodStats(method=method, seeds=len(values), failed=failed,
                       failure_rate=failed / len(values) if values else math.nan,
                       mean=float(np.mean(done)) if done else math.nan,
                       sd=float(np.std(done, ddof=1)) if len(done) > 1 else math.nan,
                       ci_low=lo, ci_high=hi, ci_note=note)


def verdict(pair: PairStats, alpha: float = ALPHA) -> str:
    """"wins (p < 0.05)" / "loses (p < 0.05)" when the Wilcoxon p is below ``alpha`` and the rank sums lean to
    ``a`` / ``b``; "ties" otherwise (including too few pairs for p < alpha); NO_PAIRS without common seeds."""
    if pair.pairs == 0:
        return NO_PAIRS
    if pair.p_value < alpha and pair.rank_sum_a != pair.rank_sum_b:
        return WINS if pair.rank_sum_a > pair.rank_sum_b else LOSES
    return TIES


def compare_pair(a_values: Values, b_values: Values, direction: str, *, a: str = "A", b: str = "B",
                 alpha: float = ALPHA) -> PairStats:
    """``a`` against ``b`` over their common seeds: win / tie / loss counts and the paired Wilcoxon signed-rank
    test (two-sided, ``zero_method="wilcox"``), failures ranked behind every finished run (module docstring)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: got {direction!r}; allowed: {list(DIRECTIONS)}")
    common = [s for s in a_values if s in b_values]
    unpaired = len(a_values) + len(b_values) - 2 * len(common)
    sign = 1.0 if direction == "minimize" else -1.0
    diffs, failed_sides, both_failed = [], [], 0  # diffs > 0: a better
    for s in common:
        fa, fb = _failed(a_values[s]), _failed(b_values[s])
        if fa and fb:
            both_failed += 1
        elif fa or fb:
            failed_sides.append(-1.0 if fa else 1.0)
        else:
            diffs.append(sign * (float(b_values[s]) - float(a_values[s])))
    # A failure is worse than any finished run: a magnitude beyond every finished difference (only ranks matter).
    worst = 1.0 + 2.0 * max((abs(d) for d in diffs), default=0.0)
    d = np.array(diffs + [side * worst for side in failed_sides], dtype=np.float64)
    nonzero = d[d != 0]
    k = int(nonzero.size)
    ranks = stats.rankdata(np.abs(nonzero)) if k else np.zeros(0)
    rank_a, rank_b = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    if d.size == 0:
        p, note = math.nan, "no common seed with a finished run"
    elif k == 0:
        p, note = 1.0, "every common seed ties"
    else:
        p = float(stats.wilcoxon(d, zero_method=ZERO_METHOD, alternative="two-sided", method="auto").pvalue)
        note = (f"{k} non-tied pair{'s' * (k != 1)}: p cannot go below {min_attainable_p(k):.3g}, so p < {alpha:g} "
                "is unattainable" if min_attainable_p(k) >= alpha else "")
    out = PairStats(a=a, b=b, wins=int((d > 0).sum()), ties=int((d == 0).sum()), losses=int((d < 0).sum()),
                    both_failed=both_failed, unpaired=unpaired, rank_sum_a=rank_a, rank_sum_b=rank_b, p_value=p,
                    min_p=min_attainable_p(k), note=note, verdict="")
    return replace(out, verdict=verdict(out, alpha))


def compare(results: Mapping[str, Values], *, metric: str, n: int, direction: str,
            alpha: float = ALPHA) -> Comparison:
    """Every method's ``MethodStats`` and every pair's ``PairStats`` of ``{method: {seed: value}}`` (one metric at
    one n). Edge cases: module docstring."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: got {direction!r}; allowed: {list(DIRECTIONS)}")
    names = list(results)
    pairs = {(a, b): compare_pair(results[a], results[b], direction, a=a, b=b, alpha=alpha)
             for i, a in enumerate(names) for b in names[i + 1:]}
    return Comparison(metric=metric, n=n, direction=direction,
                      methods={m: method_stats(m, results[m]) for m in names}, pairs=pairs)


def rows_by_n(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[int, dict[str, dict[Hashable, float]]]:
    """``{n: {method: {seed: value}}}`` from flat rows {n, method, seed, <metric>, [failed]} (the ``tgdp-study
    gmm`` summary.json rows); a row with a true ``failed`` flag gives NaN whatever its metric holds. ValueError on
    a repeated (n, method, seed)."""
    out: dict[int, dict[str, dict[Hashable, float]]] = {}
    for r in rows:
        per_seed = out.setdefault(int(r["n"]), {}).setdefault(str(r["method"]), {})
        if r["seed"] in per_seed:
            raise ValueError(f"rows: n={r['n']} method={r['method']} seed={r['seed']} appears twice")
        v = r.get(metric)
        per_seed[r["seed"]] = math.nan if r.get("failed") or v is None else float(v)
    return out


# --- rendering -------------------------------------------------------------------------------------------------

def _num(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4g}"


def _mean_sd(m: MethodStats) -> str:
    return "all failed" if m.seeds and m.failed == m.seeds else f"{_num(m.mean)} ± {_num(m.sd)}"


def _ci(m: MethodStats) -> str:
    return f"[{_num(m.ci_low)}, {_num(m.ci_high)}]" if not m.ci_note else f"n/a ({m.ci_note})"


def _p(p: PairStats) -> str:
    """The p cell: the number, or why there is none / why it cannot be small."""
    k = p.wins + p.losses
    if p.pairs == 0:
        return "n/a"
    if k == 0:
        return "1 (all tied)"
    if p.min_p >= ALPHA:
        return f"unattainable < {ALPHA:g} ({k} non-tied pairs, min p {p.min_p:.3g})"
    return _num(p.p_value)


def _focus_pairs(c: Comparison, focus: str | None) -> list[PairStats]:
    if focus is None:
        return list(c.pairs.values())
    return [c.pair(focus, m) for m in c.methods if m != focus] if focus in c.methods else []


def render_markdown(comparisons: Sequence[Comparison], focus: str | None = None) -> str:
    """Two tables: method x n with seeds, failure rate, mean ± sd and the bootstrap interval; then every pair
    (or only ``focus`` against each other method) with wins / ties / losses, the Wilcoxon p and the verdict."""
    if not comparisons:
        return ""
    c0 = comparisons[0]
    lines = [f"{c0.metric} ({c0.direction}); mean ± sd over finished seeds, {CONFIDENCE:.0%} percentile bootstrap "
             "interval of the mean over seeds.", "",
             "| n | method | seeds | failed | mean ± sd | 95 % CI |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines += [f"| {c.n} | {m.method} | {m.seeds} | {m.failed} | {_mean_sd(m)} | {_ci(m)} |"
                  for m in c.methods.values()]
    lines += ["", "Paired over common seeds: A better / tie / B better, two-sided Wilcoxon signed-rank p "
              f"(ties dropped), verdict at p < {ALPHA:g}.", "",
              "| n | A | B | A better / tie / B better | Wilcoxon p | verdict (A vs B) |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines += [f"| {c.n} | {p.a} | {p.b} | {p.wins} / {p.ties} / {p.losses}"
                  + (f" ({p.both_failed} both failed)" if p.both_failed else "") + f" | {_p(p)} | {p.verdict} |"
                  for p in _focus_pairs(c, focus)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("metric", "n", "direction", "method", "seeds", "failed", "failure_rate", "mean", "sd", "ci_low",
               "ci_high", "ci_note", "opponent", "wins", "ties", "losses", "both_failed", "p_value", "min_p",
               "verdict", "note")


def render_csv(comparisons: Sequence[Comparison], focus: str | None = None) -> str:
    """One row per (n, method, opponent): the method's stats and its record against the opponent (every other
    method, or for ``focus`` only its pairs); NaN printed as empty cells."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    cell = lambda v: "" if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    for c in comparisons:
        for m in c.methods.values():
            if focus is not None and m.method != focus:
                continue
            base = {"metric": c.metric, "n": c.n, "direction": c.direction, **asdict(m)}
            for other in (o for o in c.methods if o != m.method):
                p = c.pair(m.method, other)
                w.writerow({k: cell(v) for k, v in {**base, "opponent": other, "wins": p.wins, "ties": p.ties,
                            "losses": p.losses, "both_failed": p.both_failed, "p_value": p.p_value,
                            "min_p": p.min_p, "verdict": p.verdict, "note": p.note}.items()})
    return buf.getvalue()


__all__ = ["ALPHA", "Comparison", "LOSES", "MethodStats", "NO_PAIRS", "PairStats", "TIES", "WINS",
           "bootstrap_interval", "compare", "compare_pair", "method_stats", "min_attainable_p", "render_csv",
           "render_markdown", "rows_by_n", "verdict"]
