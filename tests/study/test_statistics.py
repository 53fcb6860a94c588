"""study/statistics.py on hand-made results with known answers, and on the committed GMM seed results."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from study import statistics as st

SEEDS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results" / "gmm_seeds"


def seeds(values) -> dict[int, float]:
    return dict(enumerate(values))


def test_all_wins_on_8_seeds_give_the_exact_wilcoxon_p():
    a, b = seeds([1.0 + 0.01 * i for i in range(8)]), seeds([2.0 + 0.1 * i for i in range(8)])
    p = st.compare_pair(a, b, "minimize", a="a", b="b")
    # guards the exact two-sided p: every one of 8 pairs one way -> 2 / 2^8
    assert p.p_value == pytest.approx(2 / 2 ** 8) and p.min_p == pytest.approx(2 / 2 ** 8)
    assert (p.wins, p.ties, p.losses) == (8, 0, 0) and p.verdict == st.WINS and p.note == ""
    # guards the orientation: the same data read from b's side, or with "maximize", is a loss
    assert p.flipped().verdict == st.LOSES and p.flipped().losses == 8
    assert st.compare_pair(a, b, "maximize").verdict == st.LOSES


def test_wilcoxon_p_of_a_mixed_record_by_hand():
    # differences (a better) 1..5 and -6: the losing pair has the largest rank, T = 6. Subsets of {1..6} with
    # rank sum <= 6: 14 of 64 -> two-sided p = 28 / 64. guards ranking by magnitude, not by count
    a = seeds([0.0] * 6)
    b = seeds([1.0, 2.0, 3.0, 4.0, 5.0, -6.0])
    p = st.compare_pair(a, b, "minimize")
    assert p.p_value == pytest.approx(28 / 64) and (p.wins, p.losses) == (5, 1) and p.verdict == st.TIES
    assert (p.rank_sum_a, p.rank_sum_b) == (15.0, 6.0)


def test_identical_methods_tie_with_p_one():
    a = seeds([0.3, 0.1, 0.2, 0.5])
    p = st.compare_pair(a, dict(a), "minimize")
    # guards the all-zero-differences edge (scipy gives NaN there): p = 1, every seed a tie
    assert p.p_value == 1.0 and p.ties == 4 and p.wins == p.losses == 0 and p.verdict == st.TIES


def test_tied_seeds_are_dropped_from_the_test_and_counted():
    a = seeds([0.0] * 8)
    b = seeds([1.0, 2.0, 3.0, -4.0, 5.0, 6.0, 0.0, 0.0])
    p = st.compare_pair(a, b, "minimize")
    # guards zero_method="wilcox": the 2 ties leave the test, which ranks the other 6 (1..6, T = 4: the subsets of
    # {1..6} with sum <= 4 are 7 of 64 -> p = 14 / 64; "zsplit" / "pratt" would give 0.156); they stay in the counts
    assert (p.wins, p.ties, p.losses) == (5, 2, 1) and p.p_value == pytest.approx(14 / 64)
    assert p.min_p == pytest.approx(2 / 2 ** 6)  # the attainable minimum counts the non-tied pairs only


def test_fewer_than_6_pairs_cannot_reach_p_005():
    a, b = seeds([0.0] * 5), seeds([1.0, 2.0, 3.0, 4.0, 5.0])
    p = st.compare_pair(a, b, "minimize", a="a", b="b")
    # guards the small-n honesty: 5 of 5 one way is the best possible, p = 2/32 = 0.0625, and not a win
    assert p.p_value == pytest.approx(0.0625) and p.min_p == pytest.approx(0.0625) and p.verdict == st.TIES
    assert "unattainable" in p.note
    md = st.render_markdown([st.compare({"a": a, "b": b}, metric="m", n=10, direction="minimize")])
    # guards the table: no bare 0.0625 that reads as "almost significant"
    assert "unattainable < 0.05 (5 non-tied pairs, min p 0.0625)" in md
    assert [st.min_attainable_p(k) for k in (0, 1, 5, 6)] == [1.0, 1.0, 0.0625, 0.03125]


def test_mean_sd_match_numpy_and_the_interval_contains_the_mean():
    x = np.random.default_rng(1).normal(0.05, 0.02, size=10)
    m = st.method_stats("m", seeds(x))
    # guards the moments: numpy's mean and the sample sd (ddof = 1)
    assert m.mean == pytest.approx(np.mean(x)) and m.sd == pytest.approx(np.std(x, ddof=1))
    assert m.ci_low < m.mean < m.ci_high and m.ci_note == "" and m.failure_rate == 0.0
    # guards the fixed bootstrap seed: the same results give the same interval
    assert st.method_stats("m", seeds(x)) == m


def test_bootstrap_interval_shrinks_with_more_seeds():
    rng = np.random.default_rng(2)
    widths = []
    for k in (4, 16, 64):
        lo, hi, _ = st.bootstrap_interval(rng.normal(0.0, 1.0, size=k))
        widths.append(hi - lo)
    # guards that the interval is over seeds: ~1/sqrt(k), so 16x the seeds is well under half the width
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.5 * widths[0]


def test_interval_edge_cases_are_nan_with_a_reason():
    one = st.method_stats("m", {0: 0.1})
    # guards n_seeds < 2: no crash, no sd, no interval, and the reason
    assert math.isnan(one.sd) and math.isnan(one.ci_low) and "below 2" in one.ci_note and one.mean == 0.1
    const = st.method_stats("m", seeds([0.2, 0.2, 0.2]))
    # guards constant data (scipy would warn of a degenerate distribution): NaN and the reason
    assert const.sd == pytest.approx(0.0, abs=1e-12) and math.isnan(const.ci_high)
    assert "all values equal" in const.ci_note


def test_failures_are_counted_excluded_and_lose_their_pairs():
    a = {0: 1.0, 1: math.nan, 2: 1.0, 3: None, 4: 5.0}
    b = {0: 2.0, 1: 2.0, 2: 2.0, 3: math.nan, 4: math.inf}
    m = st.method_stats("a", a)
    # guards the failure rate and that failures never enter the mean (NaN-free mean over 3 finished seeds)
    assert (m.seeds, m.failed) == (5, 2) and m.failure_rate == pytest.approx(0.4)
    assert m.mean == pytest.approx(7 / 3)
    p = st.compare_pair(a, b, "minimize")
    # guards pairing: seed 1 (a failed) is a loss of a, seed 4 (b failed: inf) a win of a, seed 3 both failed
    assert (p.wins, p.ties, p.losses, p.both_failed) == (3, 0, 1, 1)
    # guards the rank of a failure: beyond every finished difference (ranks 1, 2 for the two 1.0 differences)
    assert (p.rank_sum_a, p.rank_sum_b) == (1.5 + 1.5 + 3.5, 3.5)
    gone = st.method_stats("x", {0: math.nan, 1: math.nan})
    assert gone.failure_rate == 1.0 and math.isnan(gone.mean)
    md = st.render_markdown([st.compare({"x": {0: math.nan, 1: math.nan}, "b": b}, metric="m", n=1,
                                        direction="minimize")])
    assert "| 1 | x | 2 | 2 | all failed |" in md  # guards the table: failed, not a number


def test_missing_seeds_pair_over_the_common_seeds_only():
    a = seeds([1.0] * 8)
    b = {s: 2.0 for s in range(3, 11)}  # seeds 3..10: 5 in common with a
    p = st.compare_pair(a, b, "minimize")
    # guards "pairs over the common seeds": 5 pairs, 3 + 3 unpaired seeds, not counted as failures
    assert p.pairs == 5 and p.unpaired == 6 and p.p_value == pytest.approx(0.0625)
    assert st.compare_pair(a, {100: 1.0}, "minimize").verdict == st.NO_PAIRS


def test_rows_by_n_reads_the_failed_flag_and_refuses_duplicates():
    rows = [{"n": 10, "method": "a", "seed": 0, "ed": 0.1},
            {"n": 10, "method": "a", "seed": 1, "ed": 0.2, "failed": 1.0},
            {"n": 100, "method": "a", "seed": 0, "ed": 0.3, "failed": 0.0}]
    out = st.rows_by_n(rows, "ed")
    # guards that a failed row never contributes its (NaN or stale) number
    assert out[10]["a"][0] == 0.1 and math.isnan(out[10]["a"][1]) and out[100]["a"] == {0: 0.3}
    with pytest.raises(ValueError, match="appears twice"):
        st.rows_by_n(rows + rows[:1], "ed")
    with pytest.raises(ValueError, match="direction"):
        st.compare({"a": {0: 1.0}}, metric="ed", n=10, direction="lower")


def test_csv_and_json_round_trip():
    c = st.compare({"a": seeds([1.0, 2.0, 3.0]), "b": seeds([2.0, 3.0, 4.0]), "c": {0: math.nan}},
                   metric="ed", n=10, direction="minimize")
    rows = list(csv.DictReader(io.StringIO(st.render_csv([c]))))
    # guards the long format: one row per (method, opponent), each pair read from its method's side
    assert len(rows) == 3 * 2
    ab = next(r for r in rows if r["method"] == "a" and r["opponent"] == "b")
    assert (ab["wins"], ab["losses"], ab["p_value"]) == ("3", "0", "0.25")
    assert next(r for r in rows if r["method"] == "c")["mean"] == ""  # NaN -> empty cell
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))  # guards strict JSON: no NaN literal
    assert d["methods"][2]["mean"] is None and len(d["pairs"]) == 3


def test_committed_gmm_seeds_n10():
    # The committed n = 10 seeds (0-5; development seeds, see bench/gmm_seed_statistics.py): tgdp_reg beats vanilla
    # on 5 of 6 seeds, and the one loss is the smallest difference (rank 1): T = 1 -> exact p = 2 * 2 / 64.
    rows = json.loads((SEEDS_DIR / "n10_100_summary.json").read_text())
    c = st.compare(st.rows_by_n(rows, "energy_distance")[10], metric="energy_distance", n=10, direction="minimize")
    p = c.pair("tgdp_reg", "vanilla")
    assert (p.wins, p.ties, p.losses) == (5, 0, 1) and p.p_value == pytest.approx(0.0625) and p.verdict == st.TIES
    # guards the moments against the committed summary.md (0.0554 +- 0.0247 over seeds 0-5)
    reg = c.methods["tgdp_reg"]
    assert (round(reg.mean, 4), round(reg.sd, 4), reg.seeds) == (0.0554, 0.0247, 6)
