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
