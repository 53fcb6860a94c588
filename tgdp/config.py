"""Frozen configs, one per stage, and their dict round-trip.

Every field carries its unit or meaning. Configs are serialised (``to_dict``) into every run
directory, checkpoint and MLflow run; ``from_dict`` refuses unknown keys so a typo never passes
silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# Field metadata of an execution option (how a stage runs, not what it computes): ``config_hash`` leaves
# such fields out, so turning one on keeps every cache key and run name of the same computation.
EXECUTION_ONLY = {"execution_only": True}


def _check(cfg: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
           fractions: tuple[str, ...] = (), choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """Range checks shared by the stage configs; the message names the field, the value and what is allowed."""
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name}: must be > 0; got {getattr(cfg, name)!r}")
    for name in non_negative:
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name}: must be >= 0; got {getattr(cfg, name)!r}")
    for name in fractions:
        if not 0 <= getattr(cfg, name) < 1:
            raise ValueError(f"{name}: must be in [0, 1); got {getattr(cfg, name)!r}")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name}: got {getattr(cfg, name)!r}; allowed: {list(allowed)}")


@dataclass(frozen=True)
class GMMConfig:
    """The Gaussian-mixture testbed (DESIGN §2): a named instance of the suite (tgdp/data/testbeds.py) and the
    draw sizes. dim/variance/mu_source/mu_target parametrise ``paper`` only; with another testbed they must
    stay at their defaults (ValueError naming the key)."""

    testbed: str = "paper"  # suite instance: paper, asym, d8, partial, near (tgdp.data.testbeds.TESTBEDS)
    dim: int = 2  # data dimension d (testbed paper)
    variance: float = 0.1  # per-coordinate variance sigma^2 of every component (testbed paper)
    mu_source: tuple[float, ...] = (0.5, 0.5)  # source components at +mu_source and -mu_source (testbed paper)
    mu_target: tuple[float, ...] = (0.5, -0.5)  # target components at +mu_target and -mu_target (testbed paper)
    m: int = 10000  # number of source samples
    n: int = 100  # number of target samples
    seed: int = 0  # seed of the training draws (validation/test draws use seed + 1 / seed + 2)

    def __post_init__(self) -> None:
        from tgdp.data.testbeds import PAPER, PAPER_FIELDS, TESTBEDS  # torch-free, so spec checks stay light

        _check(self, positive=("dim", "variance", "m", "n"), non_negative=("seed",),
               choices={"testbed": tuple(TESTBEDS)})
        if self.testbed != PAPER:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for key in PAPER_FIELDS:
                if getattr(self, key) != defaults[key]:
                    raise ValueError(f"{key}: parametrises testbed {PAPER!r} only; got {getattr(self, key)!r} with "
                                     f"testbed {self.testbed!r}; allowed: its default {defaults[key]!r} (the "
                                     f"instance fixes its own numbers) or testbed {PAPER!r}")


@dataclass(frozen=True)
class ScoreConfig:
    """An eps-prediction diffusion model and its denoising-score-matching training (source, vanilla, finetune)."""

    arch: str = "mlp"  # key of tgdp.models.SCORE_NETS
    width: int = 256  # hidden units per layer
    depth: int = 4  # hidden layers
    steps: int = 3000  # optimiser steps
    batch_size: int = 256  # samples per step (clipped to the data size)
    lr: float = 1e-3  # Adam learning rate (cosine-decayed to 10% over the steps)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    ema: float = 0.999  # EMA decay of the weights used for sampling (0 disables)
    report_every: int = 500  # steps between reports/checkpoints
    conditional: bool = False  # label-conditional model s(x_t, y, t)
    gaussian_skip: bool = False  # eps = sigma_t x_t + net(...): for data normalised to unit variance (ECG)
    precision: str = "fp32"  # "fp32" or "bf16" (the net under bf16 autocast, training and sampling; FFTs fp32)
    # sampling stays eager; equal weights within float tolerance: an execution option, not in cache keys
    compile: bool = field(default=False, metadata=EXECUTION_ONLY)  # torch.compile the training step's net
    seed: int = 0  # init and minibatch seed

    def __post_init__(self) -> None:
        _check(self, positive=("width", "steps", "batch_size", "lr", "report_every"),
               non_negative=("depth", "weight_decay", "seed"), fractions=("ema",),
               choices={"precision": ("fp32", "bf16")})


@dataclass(frozen=True)
class ClassifierConfig:
    """Domain classifier c(x) (source = 1, target = 0) with the class-balanced logistic loss."""

    arch: str = "mlp"  # key of tgdp.models.CLASSIFIER_NETS
    width: int = 32  # hidden units per layer (small: at n = 100 a 64-wide net over-fits the ratio)
    depth: int = 2  # hidden layers
    steps: int = 2000  # optimiser steps
    batch_size: int = 256  # samples per domain per step (clipped to the domain size)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-2  # AdamW weight decay (against over-confident ratios from the n points)
    holdout_fraction: float = 0.2  # target (and source) fraction held out for early stopping
    report_every: int = 100  # steps between held-out evaluations
    patience: int = 5  # evaluations without held-out improvement before stopping
    tilt: bool = True  # scale log r by gamma <= 1 maximising the held-out target likelihood of p r^gamma
    conditional: bool = False  # joint-ratio classifier c(x, y)
    seed: int = 0  # init, held-out split and minibatch seed

    def __post_init__(self) -> None:
        _check(self, positive=("width", "steps", "batch_size", "lr", "report_every", "patience"),
               non_negative=("depth", "weight_decay", "seed"), fractions=("holdout_fraction",))


@dataclass(frozen=True)
class TimeClassifierConfig:
    """Time-dependent classifier c'(x_t, t) on noised samples; estimates q_t / p_t (for the cycle loss).

    Early stopping as the domain classifier's, on a held-out split noised once (every evaluation sees the same
    set). Defaults chosen on GMM ``paper`` development seeds 0-1 only, by the log-ratio error against the exact
    log q_t/p_t (bench/results/time_classifier_cycle.md, ``--select-defaults``): the EMA lowered it (geometric
    mean 0.344 -> 0.310); a held-out split raised it at n = 10 (0.78 -> 1.04 over 6 splits: n = 10 loses 2 of
    its 10 points) and at n = 1000, and lowered it slightly at n = 100. So no split by default: early stopping
    then watches the fixed noised training draw (measured: it ends the fits at n >= 100 after 2100-2900 steps).
    """

    arch: str = "mlp"  # key of tgdp.models.TIME_CLASSIFIER_NETS
    width: int = 128  # hidden units per layer
    depth: int = 3  # hidden layers
    steps: int = 3000  # optimiser steps (at most: early stopping may end the stage sooner)
    batch_size: int = 256  # samples per domain per step
    lr: float = 1e-3  # Adam learning rate (cosine-decayed to 10%)
    weight_decay: float = 1e-3  # AdamW weight decay
    holdout_fraction: float = 0.0  # target (and source) fraction held out for early stopping (0: none)
    holdout_draws: int = 4096  # noised (x_t, t) per domain in each fixed evaluation draw (at least one per point)
    ema: float = 0.99  # EMA decay of the weights that are evaluated, kept and returned (0 disables)
    report_every: int = 100  # steps between held-out evaluations (and reports/checkpoints)
    patience: int = 10  # held-out evaluations without improvement (by > 1e-4) before stopping
    conditional: bool = False  # label-aware c'(x_t, y, t)
    seed: int = 0  # init, held-out split and its noise, minibatch seed

    def __post_init__(self) -> None:
        _check(self, positive=("width", "steps", "batch_size", "lr", "holdout_draws", "report_every", "patience"),
               non_negative=("depth", "weight_decay", "seed"), fractions=("holdout_fraction", "ema"))


@dataclass(frozen=True)
class GuidanceConfig:
    """Guidance net h(x_t, t) = exp(f(x_t, t)) regressed onto r(x_0) or E[r(x_0) | x_t], plus cycle and consistency."""

    arch: str = "mlp"  # key of tgdp.models.GUIDANCE_NETS
    width: int = 512  # hidden units per layer (paper: 512)
    depth: int = 4  # hidden layers (paper: 4)
    epochs: int = 20  # passes over the m source samples (paper: 20)
    batch_size: int = 128  # source samples per step (many small steps beat few large ones here)
    lr: float = 2e-3  # Adam learning rate (cosine-decayed to 10%)
    weight_decay: float = 0.0  # AdamW weight decay
    ema: float = 0.995  # EMA decay of the weights used for sampling (0 disables)
    loss: str = "kl"  # regression of h onto r: "kl" (Bregman, default) or "mse" (paper); same minimiser h*
    target: str = "pooled"  # "sample": r(x_0) (paper); "posterior": E[r(x_0)|x_t] on source; "pooled": + target
    references: int = 4096  # source points in the posterior mean (all when m is smaller; batch always in)
    eta_cycle: float = 0.0  # eta_1, weight of L_cycle (0 = off)
    eta_consistency: float = 0.0  # eta_2, weight of L_consistence (0 = off)
    target_batch_size: int = 256  # target samples per step for the regularisers
    time_power: float = 2.0  # training times t = t_min + (1 - t_min) u^power: > 1 favours small t
    log_ratio_clip: float = 8.0  # |log r(x_0)| is clipped to this before exp (targets stay bounded)
    report_every: int = 1  # epochs between reports/checkpoints
    conditional: bool = False  # label-aware h(x_t, y, t)
    seed: int = 0  # init, epoch-shuffle and noise seed

    def __post_init__(self) -> None:
        _check(self, positive=("width", "epochs", "batch_size", "lr", "target_batch_size", "time_power", "references",
                               "log_ratio_clip", "report_every"),
               non_negative=("depth", "weight_decay", "eta_cycle", "eta_consistency", "seed"),
               fractions=("ema",), choices={"loss": ("kl", "mse"), "target": ("sample", "posterior", "pooled")})


@dataclass(frozen=True)
class SampleConfig:
    """The shared sampler: same solver and budget for every method."""

    solver: str = "dpm2"  # "dpm2" (DPM-Solver-2, deterministic) or "ddpm" (ancestral)
    steps: int = 25  # solver steps (dpm2: 2 evaluations per step)
    num_samples: int = 10000  # samples to draw
    guidance_scale: float = 1.0  # gamma, multiplies the guidance term
    guidance_t_max: float = 1.0  # guidance only for t <= this (h* -> 1 as t -> 1; a learned h extrapolates there)
    batch_size: int = 10000  # samples per forward pass
    seed: int = 0  # initial-noise seed

    def __post_init__(self) -> None:
        _check(self, positive=("steps", "num_samples", "batch_size", "guidance_t_max"),
               non_negative=("guidance_scale", "seed"), choices={"solver": ("dpm2", "ddpm")})
        if self.guidance_t_max > 1:
            raise ValueError(f"guidance_t_max: must be in (0, 1] (diffusion time); got {self.guidance_t_max!r}")


@dataclass(frozen=True)
class DomainGuidanceConfig:
    """Domain Guidance (Zhong et al., ICLR 2025): the fine-tuned eps guided away from the source model's."""

    # Default 1: on the GMM dev seeds 0-1 every w in 1.1..3 scored worse on the validation draw
    # (bench/results/domain_guidance_w.json), so by default it samples as finetune; a spec sets another w.
    weight: float = 1.0  # w, the guidance weight (>= 1; 1 = plain fine-tuning)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 1):
            raise ValueError(f"weight: must be a finite number >= 1 (1 = plain fine-tuning); got {self.weight!r}")


@dataclass(frozen=True)
class TGDPConfig:
    """Everything one TGDP run needs, stage by stage."""

    source: ScoreConfig = field(default_factory=ScoreConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    time_classifier: TimeClassifierConfig = field(default_factory=TimeClassifierConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    vanilla: ScoreConfig = field(default_factory=lambda: ScoreConfig(steps=3000))
    finetune: ScoreConfig = field(default_factory=lambda: ScoreConfig(steps=1500, lr=1e-4))
    sample: SampleConfig = field(default_factory=SampleConfig)
    domain_guidance: DomainGuidanceConfig = field(default_factory=DomainGuidanceConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) suitable for JSON/YAML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from a (partial) dict; unknown keys raise ``ValueError`` naming the key path."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except ValueError as e:  # range checks of __post_init__ name the bare field: add the path
        raise ValueError(f"{where}.{e}" if where else str(e)) from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(float, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def config_hash(*parts: Any) -> str:
    """Stable short content hash of configs / plain values (cache keys, run names); the fields marked
    ``EXECUTION_ONLY`` are left out (a key written before such a field existed stays valid)."""
    blob = json.dumps([_computed(p, to_dict(p)) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _computed(cfg: Any, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (``to_dict(cfg)``) without the ``EXECUTION_ONLY`` fields of ``cfg`` and of its nested configs."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("execution_only"):
            d.pop(f.name)
        elif dataclasses.is_dataclass(value):
            _computed(value, d[f.name])
    return d
