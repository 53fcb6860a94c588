"""study.results_compare: the final table's headline in docs/results.md, on a table.json built by the real
study.statistics.compare (as study.evaluate writes it)."""

from __future__ import annotations

import json
from pathlib import Path

from study import results_compare, results_doc
from study.statistics import compare

SEEDS = range(100, 110)


def _table(values: dict[str, list[float]], n: int = 10) -> dict:
    comp = compare({m: dict(zip(SEEDS, v)) for m, v in values.items()}, metric="energy_distance", n=n,
                   direction="minimize")
    return {"evaluation_seeds": list(SEEDS), "development_seeds": [0], "comparisons": [comp.to_dict()]}


def test_headline_picks_the_strongest_baseline_and_orients_the_pair():
    base = [0.10 + 0.01 * i for i in range(10)]
    t = _table({"tgdp": [v - 0.02 for v in base],            # better than finetune on every seed
                "tgdp_reg": [v + 0.05 for v in base],        # worse on every seed
                "vanilla": [v + 0.04 for v in base],
                "finetune": base,                            # the strongest tuned baseline (lowest mean)
                "domain_guidance": [v + 0.001 for v in base],
                "oracle_guidance": [v / 2 for v in base]})
    [row] = results_compare.headline(t, "energy_distance", results_doc.fmt)
    assert row[0] == 10 and row[3].startswith("finetune: 0.145")
    # from the TGDP variant's side: wins / ties / losses and the verdict at p < 0.05 (10 of 10 one way)
    assert row[5].startswith("10/0/0") and row[5].endswith("wins")
    assert row[6].startswith("0/0/10") and row[6].endswith("loses")
    assert row[7] == f"{(0.145 + 0.05) / (0.145 / 2):.2f}"  # tgdp_reg over the oracle


def test_render_marks_every_file_and_names_an_unfinished_testbed(tmp_path: Path):
    root = tmp_path / "gmm_compare"
    (root / "paper").mkdir(parents=True)
    (root / "paper" / "table.json").write_text(json.dumps(_table({"tgdp": [0.1] * 10, "vanilla": [0.2] * 10})))
    (root / "asym" / "results").mkdir(parents=True)
    (root / "asym" / "results" / "s100-n10-tgdp.json").write_text("{}")
    lines, done = results_compare.render(root, lambda p: p.relative_to(tmp_path).as_posix(), results_doc.fmt,
                                         results_doc.table)
    text = "\n".join(lines)
    assert "### paper" in text and "vanilla: 0.200" in text
    assert "### asym" in text and "Not finished: 1 result files" in text
    assert done == set(root.rglob("*.json"))  # nothing left for the page's catch-all section
    assert "paper/table.json" in text and "paper/results" in text  # a finished testbed names its files
    assert results_compare.render(tmp_path / "absent", str, results_doc.fmt, results_doc.table) == ([], set())


def test_goals_judge_each_part_on_its_own_n():
    base = [0.10 + 0.01 * i for i in range(10)]
    t10 = _table({"tgdp": [v - 0.02 for v in base], "tgdp_reg": [v + 0.05 for v in base], "finetune": base})
    t100 = _table({"tgdp": [v + 0.02 for v in base], "tgdp_reg": base[:5] + [v + 0.01 for v in base[5:]],
                   "vanilla": base[:5] + [v - 0.01 for v in base[5:]]}, n=100)
    t1000 = _table({"tgdp_reg": [1.2 * v for v in base], "vanilla": base, "oracle_guidance": base}, n=1000)
    t = {**t10, "comparisons": t10["comparisons"] + t100["comparisons"] + t1000["comparisons"]}
    text = results_compare.goals(t)
    assert "n = 10: tgdp ahead of finetune at p < 0.05: **met**" in text
    assert "n = 100: no TGDP variant ahead of vanilla at p < 0.05: **not met**" in text  # 0/5/5: never a win
    assert "tgdp_reg / oracle_guidance = 1.20 (goal <= 1.25): **met**" in text
    worse = _table({"tgdp_reg": [1.3 * v for v in base], "oracle_guidance": base}, n=1000)
    assert "= 1.30 (goal <= 1.25): **not met**" in results_compare.goals(worse)
    assert results_compare.goals(_table({"tgdp": base}, n=500)) == ""


def test_the_fixed_source_only_counts_as_a_baseline():
    # On a small shift the source model alone can beat every tuned baseline: TGDP is measured against it too.
    base = [0.10 + 0.01 * i for i in range(10)]
    t = _table({"tgdp": base, "vanilla": [v + 0.05 for v in base], "source_only": [v - 0.05 for v in base]})
    [row] = results_compare.headline(t, "energy_distance", results_doc.fmt)
    assert row[3].startswith("source_only:") and row[5].startswith("0/0/10")


def test_goals_judge_mode_weights_against_the_closest_tuned_baseline_never_source_only():
    base = [0.01 + 0.001 * i for i in range(10)]
    values = {"tgdp_reg": [v + 0.02 for v in base], "vanilla": base, "finetune": [v + 0.05 for v in base],
              "source_only": [0.0] * 10}  # off the modes: never the reference
    comp = compare({m: dict(zip(SEEDS, v)) for m, v in values.items()}, metric="mode_balance_error", n=100,
                   direction="minimize")
    text = results_compare.goals({"comparisons": [comp.to_dict()]})
    assert text == ("Goal (issue 14): mode weights, tgdp_reg against the tuned baseline closest to the true ones: "
                    "loses (vanilla) at n = 100.")


def test_glance_takes_the_better_tgdp_variant_and_the_oracles_own_verdict():
    base = [0.10 + 0.01 * i for i in range(10)]
    t10 = _table({"tgdp": [v + 0.02 for v in base], "tgdp_reg": [v - 0.02 for v in base], "vanilla": base})
    t1000 = _table({"tgdp": [v + 0.02 for v in base], "tgdp_reg": [v + 0.01 for v in base[:9]] + [base[9] - 0.001],
                    "finetune": base, "oracle_guidance": [v + 0.03 for v in base]}, n=1000)
    t = {**t10, "comparisons": t10["comparisons"] + t1000["comparisons"]}
    # n = 10: tgdp loses, tgdp_reg wins: the row shows the win; n = 1000: both lose, the one with a paired win
    # is shown; the oracle loses to finetune there: even perfect guidance would not beat it
    assert results_compare.glance(t) == ["wins: tgdp_reg 10/0/0 vs vanilla", "loses: tgdp_reg 1/0/9 vs finetune",
                                         "loses vs finetune"]


def test_goals_say_when_the_oracle_bound_itself_loses():
    base = [0.10 + 0.01 * i for i in range(10)]
    t = _table({"tgdp_reg": [1.1 * v for v in base], "oracle_guidance": base,
                "vanilla": [v - 0.05 for v in base]}, n=1000)
    assert ("= 1.10 (goal <= 1.25): **met** (but oracle_guidance itself loses to vanilla here, so being near it "
            "is no win)") in results_compare.goals(t)
