"""Every number of a study spec checked before anything runs (issue 16).

YAML reads ``.inf``, ``.nan`` and ``1e400`` (inf) as floats, and pydantic's ``PositiveFloat`` accepts inf; a seed
of 10^23 or ``num_cpus: .inf`` passes the schema and fails much later (``torch.manual_seed`` overflows, Ray
refuses, a grid step of 1e-9 allocates until MemoryError), some only after the shared stages ran. So, on the
validated ``StudySpec`` and before any other check computes with these numbers (``study.spec.parse_spec``):

* every float anywhere in the spec is finite, every integer fits int64;
* every seed (``factors.seeds``, ``sampler_seed``, any ``<section>.seed`` in ``fixed``, ``space``,
  ``initial_trials``) is in [0, 2**32): numpy's ``RandomState`` and Optuna's samplers take no more, and the
  stages derive larger torch seeds from it (``1000 * seed + offset`` stays far below torch's 2**64);
* sizes, local resources, budgets and ASHA settings lie within ``BOUNDS`` (far beyond any real study; the upper
  bounds catch typos such as an extra three zeros, before Ray or the data layer tries them);
* the grid sampler's grid has at most ``MAX_GRID_POINTS`` points (counted, never enumerated).

Every problem is an ``Issue`` naming the key and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from study import Issue
from study.method_spaces import TGDP

SEED_LIMIT = 2**32  # seeds are in [0, SEED_LIMIT): numpy.random.RandomState and Optuna's samplers
INT_LIMIT = 2**63  # any integer: |value| < INT_LIMIT (int64, as torch and numpy store it)
MAX_GRID_POINTS = 1_000_000  # grid sampler: Optuna lists every point of the product
# key path -> (lowest, highest) allowed; checked where the key is given (pydantic has checked the lower side
# of most already: these add the upper side and restate the lower one in the same message)
BOUNDS: dict[str, tuple[float, float]] = {
    "factors.n": (1, 10_000_000),  # target sample sizes
    "data.m": (1, 100_000_000),  # GMM source samples
    "budget.trials_per_n": (1, 100_000),
    "budget.time_budget_s": (1e-3, 366 * 24 * 3600),  # a year; Tune turns it into a timedelta
    "early_stopping.grace_period": (1, 100_000),
    "early_stopping.max_epochs": (1, 100_000),
    "early_stopping.reduction_factor": (1, 100),  # > 1 (pydantic); ASHA keeps 1/factor per rung
    # a local ray.init's CPUs/GPUs (per-trial needs are checked against what the machine or cluster has:
    # study.spec_issues.check_resources; a cluster may be larger than any bound here)
    "resources.num_cpus": (1e-3, 4096),
    "resources.num_gpus": (0, 1024),
}


def _leaves(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every scalar in plain data, list items numbered."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from _leaves(v, path + (str(k),))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            yield from _leaves(v, path + (str(i),))
    else:
        yield path, data


def _is_seed(path: tuple[str, ...]) -> bool:
    """A seed's key: factors.seeds.<i>, sampler_seed, or a config field ``seed`` (``fixed.source.seed``,
    ``space.source.seed.low``, ``initial_trials.0.source.seed``)."""
    return path[:2] == ("factors", "seeds") or path == ("sampler_seed",) or \
        any(p == "seed" or p.endswith(".seed") for p in path)


def _leaf_issues(path: tuple[str, ...], value: Any) -> list[Issue]:
    where = ".".join(path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if isinstance(value, float) and not math.isfinite(value):
        return [Issue(where, "not a finite number", value, "a finite number (.inf, .nan and 1e400 are not)")]
    if _is_seed(path) and not 0 <= value < SEED_LIMIT:
        return [Issue(where, "seed out of range", value,
                      f"an integer 0 <= seed < 2**32 ({SEED_LIMIT}), what numpy and torch accept")]
    if isinstance(value, int) and not -INT_LIMIT < value < INT_LIMIT:
        return [Issue(where, "integer too large", value, "|value| < 2**63 (int64)")]
    key = ".".join(path[:-1]) if path[-1].isdigit() else where  # factors.n.0 -> factors.n
    if key in BOUNDS and not BOUNDS[key][0] <= value <= BOUNDS[key][1]:
        low, high = BOUNDS[key]
        return [Issue(where, f"{key.rsplit('.', 1)[-1]} out of the sane range", value, f"{low:g} <= value <= {high:g}")]
    return []


def _grid_points(p: Any) -> float:
    """How many grid points parameter ``p`` spans, counted without listing its values (``study.search``
    lists them: ``grid_values``, and a ``:switch`` axis of 2 values for an off-switch)."""
    if p.kind == "categorical":
        n = float(len(p.choices))
    elif p.step is None:
        return 1.0  # a float without step: refused by check_space for the grid sampler
    else:
        n = math.floor((p.high - p.low) / p.step + 1e-9) + 1.0
    return 2.0 * n if p.off is not None else n


def _grid_issues(spec: Any) -> list[Issue]:
    out = []
    for method in spec.tuned_methods:
        prefix = "space" if method == TGDP else f"methods.{method}.space"
        counts = {path: _grid_points(p) for path, p in spec.space_of(method).items()}
        total = math.prod(counts.values())
        if total > MAX_GRID_POINTS:
            biggest = max(counts, key=counts.__getitem__)
            out.append(Issue(f"{prefix}.{biggest}", f"the grid sampler would list {total:.3g} points ({biggest} "
                             f"alone has {counts[biggest]:.3g} values)", allowed=f"at most {MAX_GRID_POINTS} grid "
                             "points: a larger step, fewer choices, or another sampler"))
    return out


def number_issues(spec: Any) -> list[Issue]:
    """Problems with the numbers of a schema-valid ``StudySpec`` (see the module docstring)."""
    data = spec.model_dump(by_alias=True, exclude_none=True)  # python mode: inf stays inf (json mode: null)
    out = [issue for path, value in _leaves(data) for issue in _leaf_issues(path, value)]
    if not out and spec.sampler == "grid":  # finite ranges first: a grid of inf width has no size
        out.extend(_grid_issues(spec))
    return out


__all__ = ["BOUNDS", "MAX_GRID_POINTS", "SEED_LIMIT", "number_issues"]
