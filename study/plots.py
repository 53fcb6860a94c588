"""Figures of a study and of the comparison programs (matplotlib, Agg backend; written to files, never shown).

The only module that imports matplotlib: the study report and trials (``samples_plot``, ``ratio_plot``,
``samples_grid``, ``optuna_plots``, ``learning_curves``) and ``tgdp-study gmm`` (``gmm_samples_grid``,
``gmm_ratio_fields``). A sample panel whose samples diverged or left its window says so on the panel
(``off_axes``), since an empty panel reads as "no samples"; the report names the method in its text.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from study.safe_io import UnsafePathError, write_bytes  # noqa: E402
from tgdp import stages  # noqa: E402
from tgdp.config import GMMConfig, from_dict  # noqa: E402
from tgdp.data.gmm import GMMTask  # noqa: E402

GMM_LIM = 2.0  # half-width of the comparison figures' window: the default means sit at (+-0.5, +-0.5)
OFF_AXES_FLAG = 0.05  # a panel with this fraction of its samples non-finite or off its window is flagged
IMPORTANCE_MIN_TRIALS = 10  # fewer complete trials: parameter importances (a random forest's) are noise


def _task(data: dict[str, Any]) -> GMMTask:
    return GMMTask(from_dict(GMMConfig, data))


def _density(ax, task: GMMTask, lim: float) -> None:
    xs = torch.linspace(-lim, lim, 120)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    q = task.log_q(pts).exp().reshape(120, 120)
    ax.contour(gx.numpy(), gy.numpy(), q.numpy(), levels=6, colors="k", linewidths=0.6)


def _traces(ax, records: torch.Tensor, title: str, lead: int = 1, count: int = 3) -> None:
    """ECG records (N, leads, L): lead II (index 1) of the first ``count`` finite records, stacked."""
    x = records[torch.isfinite(records).flatten(1).all(1)][:count, min(lead, records.shape[1] - 1)].float()
    for i, r in enumerate(x):
        spread = float(r.abs().max()) or 1.0
        ax.plot((r / spread).numpy() - 2.2 * i, lw=0.6)
    ax.set_yticks([])
    ax.set_title(f"{title} (lead II, scaled)", fontsize=9)


def _window(data: dict[str, Any]) -> tuple[GMMTask | None, float | None]:
    """The analytic task of a 2-d GMM panel and its half-width (every mode of the testbed in view, partial's
    third one too); (task or None, None) when the axes follow the samples (arrays rows, GMM d8)."""
    task = _task(data) if "mu_source" in data else None
    if task is None or task.dim != 2:
        return task, None
    return task, 1.5 * task.testbed.extent + 1.0


def off_axes(samples: torch.Tensor, data: dict[str, Any]) -> float:
    """The fraction of ``samples`` a panel cannot show: non-finite, or (2-d GMM) outside its fixed window.
    ECG records and autoscaled panels count non-finite samples only. 0.0 for no samples."""
    if len(samples) == 0:
        return 0.0
    finite = torch.isfinite(samples).flatten(1).all(1)
    if samples.dim() == 2:
        _, lim = _window(data)
        if lim is not None:
            finite &= samples[:, :2].abs().le(lim).all(1)
    return 1.0 - float(finite.float().mean())


def _flag(ax, samples: torch.Tensor, data: dict[str, Any]) -> None:
    """Write on the panel how many samples it cannot show (from ``OFF_AXES_FLAG`` on)."""
    off = off_axes(samples, data)
    if off >= OFF_AXES_FLAG:
        what = "diverged: " if off > 0.5 else ""
        ax.text(0.5, 0.5, f"{what}{100 * off:.0f}% of samples\nnon-finite or off the axes", transform=ax.transAxes,
                ha="center", va="center", color="red", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8})


def _scatter(ax, samples: torch.Tensor, data: dict[str, Any], title: str) -> None:
    _flag(ax, samples, data)
    if samples.dim() == 3:  # ECG records, not points
        _traces(ax, samples, title)
        return
    x = samples[torch.isfinite(samples).all(1)][:3000]
    task, lim = _window(data)
    if lim is None:  # no 2-d analytic density (arrays rows, GMM d8): coordinates 1-2 alone
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.4)
        ax.set_title(f"{title} (coordinates 1-2)", fontsize=9)
        return
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.4)
    _density(ax, task, lim)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    """``fig`` as PNG at ``path``, written atomically and never through a symlink (``study.safe_io``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes(Path(path), buf.getvalue())


def samples_plot(samples: torch.Tensor, data: dict[str, Any], path: Path, title: str) -> Path | None:
    """Samples (first two coordinates) over the target density contours (ECG records: traces). None when dim < 2."""
    if samples.shape[1] < 2:
        return None
    fig, ax = plt.subplots(figsize=(4, 4))
    _scatter(ax, samples, data, title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def ratio_plot(grid: dict[str, torch.Tensor], path: Path, title: str = "log r(x)") -> Path:
    """Learned vs exact log-ratio field side by side (same colour scale)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    x = grid["x"].numpy()
    vmin = float(min(grid["learned"].min(), grid["exact"].min()))
    vmax = float(max(grid["learned"].max(), grid["exact"].max()))
    for ax, key in zip(axes, ("learned", "exact")):
        im = ax.pcolormesh(x, x, grid[key].numpy(), vmin=max(vmin, -10), vmax=min(vmax, 10), shading="auto")
        ax.set_title(f"{title}: {key}", fontsize=9)
        ax.set_aspect("equal")
    fig.colorbar(im, ax=axes, shrink=0.8)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def samples_grid(panels: list[tuple[str, torch.Tensor, dict[str, Any]]], path: Path) -> Path | None:
    """One scatter panel per (title, samples, data config): the study's comparison figure."""
    panels = [p for p in panels if p[1].shape[1] >= 2]
    if not panels:
        return None
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, x, data) in zip(axes.flat, panels):
        _scatter(ax, x, data, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return path


def _gmm_grid(k: int = 120):
    """(gx, gy) k x k numpy meshes over the window, and the same points as a (k*k, 2) tensor."""
    lin = torch.linspace(-GMM_LIM, GMM_LIM, k)
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    return gx.numpy(), gy.numpy(), torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def gmm_samples_grid(samples: dict[int, dict[str, torch.Tensor]], tasks: dict[int, GMMTask], path: Path,
                     max_points: int = 2000) -> None:
    """``tgdp-study gmm``'s samples.png: rows = n, columns = methods; samples over the target density contours."""
    ns = list(samples)
    methods = list(samples[ns[0]])
    gx, gy, pts = _gmm_grid()
    fig, axes = plt.subplots(len(ns), len(methods), figsize=(2.2 * len(methods), 2.2 * len(ns)), squeeze=False)
    for i, n in enumerate(ns):
        density = tasks[n].log_q(pts).exp().reshape(gx.shape).numpy()
        for j, m in enumerate(methods):
            ax = axes[i][j]
            ax.contour(gx, gy, density, levels=5, colors="k", linewidths=0.5)
            x = samples[n][m][:max_points].numpy()
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
            ax.set(xlim=(-GMM_LIM, GMM_LIM), ylim=(-GMM_LIM, GMM_LIM), xticks=[], yticks=[])
            if i == 0:
                ax.set_title(m, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"n = {n}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def gmm_ratio_fields(fields: dict[int, tuple[GMMTask, dict]], path: Path, t: float = 0.05) -> None:
    """``tgdp-study gmm``'s ratio_field.png, per n: exact log r, classifier log r (t = 0); exact log h* and
    learned log h at time t (centred). ``fields[n]`` = (task, {"classifier": net, "guidance": net})."""
    gx, gy, pts = _gmm_grid(80)
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
            field = val.reshape(gx.shape).clamp(-10, 10).detach().numpy()
            im = ax.pcolormesh(gx, gy, field, cmap="RdBu_r", vmin=-10, vmax=10)
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"{title}, n={n}", fontsize=8)
        fig.colorbar(im, ax=axes[i].tolist(), shrink=0.8)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def learning_curves(curves: list[Any], path: Path, metric: str, title: str) -> Path | None:
    """The validation ``metric`` per guidance epoch of each trial (``study.curves.Curve``): a line per trial, its
    final evaluation a dot, the epoch where a trial was stopped early a red cross. None without curves."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        xs = [e for e, _ in c.points]
        line, = ax.plot(xs, [v for _, v in c.points], lw=1, marker=".", label=f"#{c.number}")
        if c.final is not None:
            ax.plot(*c.final, "o", color=line.get_color())
        if c.stopped_early and c.points:
            ax.plot(*c.points[-1], "x", color="red", ms=9, mew=2)
    if any(c.stopped_early for c in curves):
        ax.plot([], [], "x", color="red", label="stopped early")
    if any(c.final for c in curves):
        ax.plot([], [], "o", color="grey", label="final evaluation")
    ax.set(xlabel="guidance epoch", ylabel=f"val_{metric}", title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def optuna_plots(study: Any, out: Path, prefix: str, metric: str = "objective") -> tuple[list[Path], list[str]]:
    """A unit's Optuna figures: optimisation history (``val_<metric>`` on its axis), parallel coordinates,
    parameter importances (from ``IMPORTANCE_MIN_TRIALS`` complete trials on), the Pareto front
    (multi-objective). Returns the figures and a note per figure left out and why (Markdown list items)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name = f"val_{metric}"
    if not done:
        return [], []
    figs: list[tuple[str, Any]] = [("history", lambda: ovm.plot_optimization_history(
        study, target=target, target_name=name))]
    if multi:
        figs.append(("pareto", lambda: ovm.plot_pareto_front(study)))
    notes = []
    if done[0].params:
        figs.append(("parallel", lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=name)))
        if len(done) >= IMPORTANCE_MIN_TRIALS:
            figs.append(("importances", lambda: ovm.plot_param_importances(study, target=target, target_name=name)))
        else:
            notes.append(f"- {prefix}: no parameter-importance plot: {len(done)} complete trial(s), and importances "
                         f"from fewer than {IMPORTANCE_MIN_TRIALS} are noise")
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on its matplotlib figures
        for fig_name, make in figs:
            try:
                ax = make()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                p = out / f"{prefix}_{fig_name}.png"
                fig.set_size_inches(*((9, 4.5) if fig_name == "parallel" else (6, 4)))  # parallel: room for names
                fig.tight_layout()
                save_figure(fig, p, dpi=80)
                plt.close(fig)
                paths.append(p)
            except UnsafePathError:
                raise
            except Exception:  # noqa: BLE001 - e.g. importances need a varying parameter; a missing figure
                plt.close("all")  # must not break the report
    return paths, notes
