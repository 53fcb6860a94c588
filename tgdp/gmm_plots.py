"""Figures of the Gaussian-mixture experiment (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tgdp import stages  # noqa: E402
from tgdp.data.gmm import GMMTask  # noqa: E402

LIM = 2.0


def _grid(k: int = 120):
    lin = torch.linspace(-LIM, LIM, k)
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def samples_grid(samples: dict[int, dict[str, torch.Tensor]], tasks: dict[int, GMMTask], path: Path,
                 max_points: int = 2000) -> None:
    """Rows = n, columns = methods: samples over the target density contours."""
    ns = list(samples)
    methods = list(samples[ns[0]])
    gx, gy, pts = _grid()
    fig, axes = plt.subplots(len(ns), len(methods), figsize=(2.2 * len(methods), 2.2 * len(ns)), squeeze=False)
    for i, n in enumerate(ns):
        density = tasks[n].log_q(pts).exp().reshape(gx.shape)
        for j, m in enumerate(methods):
            ax = axes[i][j]
            ax.contour(gx, gy, density, levels=5, colors="k", linewidths=0.5)
            x = samples[n][m][:max_points]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
            ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), xticks=[], yticks=[])
            if i == 0:
                ax.set_title(m, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"n = {n}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratio_fields(fields: dict[int, tuple[GMMTask, dict]], path: Path, t: float = 0.05) -> None:
    """Per n: exact log r, classifier log r (t = 0); exact log h* and learned log h at time t (centred)."""
    gx, gy, pts = _grid(80)
    ns = list(fields)
    fig, axes = plt.subplots(len(ns), 4, figsize=(11, 2.6 * len(ns)), squeeze=False)
    tt = torch.full((pts.shape[0],), t)
    for i, n in enumerate(ns):
        task, models = fields[n]
        with torch.no_grad():
            learned_h = models["guidance"](pts, tt)
        panels = [
            ("exact log r", task.log_ratio(pts)),
            ("classifier log r", stages.classifier_log_ratio(models["classifier"], pts)),
            (f"exact log h* (t={t})", task.log_h_star(pts, tt)),
            (f"learned log h (t={t}), centred", learned_h - learned_h.mean() + task.log_h_star(pts, tt).mean()),
        ]
        for j, (title, val) in enumerate(panels):
            ax = axes[i][j]
            im = ax.pcolormesh(gx, gy, val.reshape(gx.shape).clamp(-10, 10), cmap="RdBu_r", vmin=-10, vmax=10)
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"{title}, n={n}", fontsize=8)
        fig.colorbar(im, ax=axes[i].tolist(), shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
