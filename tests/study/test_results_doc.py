"""docs/results.md matches the result files in bench/results/ (regenerate with `python -m study.results_doc`)."""

from __future__ import annotations

import subprocess
import sys

from study import results_doc


def test_results_page_is_up_to_date():
    # guards drift: a new or re-measured result file (or a changed renderer) must be regenerated into docs/
    assert results_doc.OUT.exists(), "docs/results.md missing: run python -m study.results_doc"
    assert results_doc.OUT.read_text() == results_doc.render(), \
        "docs/results.md is stale: run python -m study.results_doc"


def test_every_result_file_is_named_on_the_page():
    # guards a renderer that silently drops a file: every JSON result is cited by its file name, or (the
    # protocol's one file per seed, n and method) by its results/ directory
    text = results_doc.render()
    cited = lambda p: p.name in text or (p.parent.name == "results" and results_doc.rel(p.parent) in text)  # noqa: E731
    missing = [p.name for p in results_doc.RESULTS.rglob("*.json") if not cited(p)]
    assert not missing, f"result files not rendered: {missing}"


def test_seed_table_aggregates_rows_like_the_gmm_summary():
    # guards the arithmetic: mean, sample sd and the win count over seeds, on two hand-made rows per method
    row = lambda m, s, e: {"n": 10, "method": m, "seed": s, "energy_distance": e,  # noqa: E731
                           "sliced_w2": 0.5, "mode_balance_error": 0.1}
    rows = [row("tgdp_reg", 0, 0.1), row("tgdp_reg", 1, 0.3), row("vanilla", 0, 0.2), row("vanilla", 1, 0.2)]
    lines = results_doc.gmm_summary(results_doc.RESULTS / "x_summary.json", rows)
    reg = next(line for line in lines if line.startswith("| 10 | tgdp_reg |"))
    van = next(line for line in lines if line.startswith("| 10 | vanilla |"))
    assert "| 0.200 | 0.141 | 0.100 / 0.300 |" in reg  # mean 0.2, sd sqrt(0.02) = 0.141 (n - 1 in the sd)
    assert van.endswith("| 1/2 |")  # tgdp_reg lower in seed 0 only


def test_generator_needs_neither_ray_nor_mlflow_nor_torch():
    # guards the page being regenerable on a bare checkout (and fast): only json / pathlib / statistics
    code = ("import sys, study.results_doc as r; r.render(); "
            "print(sorted(m for m in ('ray', 'mlflow', 'torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
