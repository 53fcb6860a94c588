"""Figures of the study report: every experiment's samples can be drawn (a crash here fails a trial's tracking)."""

from __future__ import annotations

import pytest
import torch

from study.plots import samples_plot
from tgdp.config import GMMConfig, to_dict


@pytest.mark.parametrize("testbed,dim", [("paper", 2), ("partial", 2), ("d8", 8)])
def test_samples_plot_draws_every_gmm_testbed(tmp_path, testbed, dim):
    # guards the d != 2 path: the density contour is a 2-d grid, so d8 must fall back to a plain scatter
    path = samples_plot(torch.randn(300, dim), to_dict(GMMConfig(testbed=testbed)), tmp_path / "s.png", testbed)
    assert path is not None and path.stat().st_size > 1000


def test_samples_plot_of_user_rows_without_density(tmp_path):
    # arrays rows carry no analytic density: a scatter of coordinates 1-2, and non-finite rows are left out
    x = torch.randn(200, 5)
    x[0] = float("nan")
    path = samples_plot(x, {"source": "s.npy"}, tmp_path / "s.png", "arrays")
    assert path is not None and path.stat().st_size > 1000


def test_off_axes_counts_what_a_panel_cannot_show():
    from study.plots import off_axes

    gmm = to_dict(GMMConfig())
    near = 0.3 * torch.randn(400, 2)
    # guards the flag's input: samples near the modes are all shown; the smoke study's diverged vanilla
    # (every sample around 80) shows none; NaN rows count as not shown
    assert off_axes(near, gmm) == 0.0
    assert off_axes(torch.full((50, 2), 80.0), gmm) == 1.0
    half = near.clone()
    half[:200] = float("nan")
    assert off_axes(half, gmm) == pytest.approx(0.5)
    # autoscaled panels (arrays rows) show every finite sample however far: only non-finite ones count
    assert off_axes(torch.full((50, 3), 1e6), {"source": "s.npy"}) == 0.0


def test_a_diverged_panel_says_so(tmp_path):
    import matplotlib.pyplot as plt

    from study import plots

    fig, ax = plt.subplots()
    plots._scatter(ax, torch.full((50, 2), 80.0), to_dict(GMMConfig()), "vanilla n=10")
    # guards the text on the panel itself: an empty panel must not read as "no samples"
    assert [t.get_text() for t in ax.texts] == ["diverged: 100% of samples\nnon-finite or off the axes"]
    ax.clear()
    plots._scatter(ax, 0.3 * torch.randn(50, 2), to_dict(GMMConfig()), "tgdp n=10")
    assert len(ax.texts) == 0  # a good panel carries no flag
    plt.close(fig)


def test_learning_curves_from_the_tune_result_files(tmp_path):
    import json

    import optuna

    from study.curves import trial_curves
    from study.plots import learning_curves

    study = optuna.create_study()
    for number, tid in enumerate(("aaaa0001", "aaaa0002")):
        t = study.ask()
        t.set_user_attr("tune_trial_id", tid)
        study.tell(t, 0.1 * (number + 1))
    lines = {"aaaa0001": [{"epoch": 1, "energy_distance": 0.3, "pid": 1}, {"epoch": 2, "energy_distance": 0.2},
                          {"epoch": 3, "energy_distance": 0.1, "final": 1.0}],
             "aaaa0002": [{"epoch": 1, "energy_distance": 0.5}, "{truncated"]}  # a killed trial's last line
    for tid, rows in lines.items():
        d = tmp_path / "ray" / f"trial_{tid}"
        d.mkdir(parents=True)
        (d / "result.json").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    curves = trial_curves(tmp_path / "ray", study, "energy_distance",
                          finished=lambda t: t.user_attrs["tune_trial_id"] == "aaaa0001")
    # guards the curve's data: epochs as reported, the final evaluation apart, the stopped trial marked
    assert [(c.number, c.points, c.final, c.stopped_early) for c in curves] == [
        (0, [(1, 0.3), (2, 0.2)], (3, 0.1), False), (1, [(1, 0.5)], None, True)]
    path = learning_curves(curves, tmp_path / "curves.png", "energy_distance", "n10")
    assert path is not None and path.stat().st_size > 1000
    assert learning_curves([], tmp_path / "none.png", "energy_distance", "n10") is None
