"""The ``methods:`` section of a study spec: other methods tuned on the same budget as tgdp.

tgdp's search space stays the top-level ``space:`` (with ``initial_trials:``), so every spec written before
this section existed means what it meant. ``methods:`` adds methods of ``tgdp.methods`` to tune, each with its
own space (and optional initial trials), run with the same ``budget.trials_per_n`` per unit::

    methods:
      vanilla:         {space: {vanilla.lr: {kind: float, low: 1.0e-4, high: 3.0e-3, log: true}}}
      domain_guidance: {space: {domain_guidance.weight: {kind: float, low: 1.0, high: 3.0}}}

A method's space may search the ``TGDPConfig`` sections the method trains with (``Method.sections``) and
``sample.*`` (the sampler is the same code for every method, and tgdp's space may search it too); a path in
another section would change nothing the method computes. A tuned method is no longer a fixed shared stage:
its trials fit it with their config (reusing the cached source model); methods not listed stay shared and
fixed. Ranking is within each method on the validation draw (``study.report``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from study import Issue
from study.space import Param, check_initial_trials, check_space

TGDP = "tgdp"  # the method of the top-level ``space:``
SAMPLE_SECTION = "sample"  # searchable by every tuned method


class MethodSpace(BaseModel):
    """One tuned method: its search space and the points its Optuna studies run first."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    space: dict[str, Param] = Field(default_factory=dict)  # dotted path -> distribution, as the top-level space
    initial_trials: tuple[dict[str, Any], ...] | None = Field(None, strict=False)  # queued in each new study


def tunable_methods(offered: Sequence[str]) -> list[str]:
    """Methods of an experiment's ``offered`` list a ``methods:`` section may name: those that train with a
    config section (not tgdp, whose space is the top-level ``space:``; not the oracles or source_only)."""
    from tgdp.methods import get_method

    return [m for m in offered if m != TGDP and get_method(m).sections]


def allowed_sections(method: str) -> tuple[str, ...]:
    """The config sections the space of ``method`` may search: its own and ``sample``."""
    from tgdp.methods import get_method

    return tuple(get_method(method).sections) + (SAMPLE_SECTION,)


def trains_guidance(method: str) -> bool:
    """True for a method with guidance epochs (tgdp, tgdp_reg): ASHA can stop its trials between epochs. The
    others report once, at the end of the trial; their Tune runs use FIFO (ASHA could never stop them)."""
    return method == TGDP or "guidance" in allowed_sections(method)


def _moved(issues: list[Issue], prefix: str) -> list[Issue]:
    """Issues of ``check_space`` / ``check_initial_trials`` re-rooted under ``prefix`` (``methods.<m>.``)."""
    return [Issue(prefix + i.path, i.problem, i.value, i.allowed) for i in issues]


def method_space_issues(methods: Mapping[str, MethodSpace], *, offered: Sequence[str], sampler: str,
                        trials_per_n: int) -> list[Issue]:
    """Problems of a ``methods:`` section: unknown or untunable method names, empty spaces, paths outside the
    method's sections, and the usual space / initial-trial checks (key paths under ``methods.<name>``)."""
    out: list[Issue] = []
    tunable = tunable_methods(offered)
    for name, ms in methods.items():
        w = f"methods.{name}"
        if name == TGDP:
            out.append(Issue(w, "tgdp's search space is the top-level `space:` (and `initial_trials:`)", name,
                             ", ".join(tunable)))
            continue
        if name not in tunable:
            out.append(Issue(w, "unknown or untunable method", name, ", ".join(tunable)))
            continue
        if not ms.space:
            out.append(Issue(f"{w}.space", "a tuned method needs a search space", {},
                             f"one or more parameters in sections {list(allowed_sections(name))}"))
            continue
        sections = allowed_sections(name)
        for path in ms.space:
            if path.partition(".")[0] not in sections:
                out.append(Issue(f"{w}.space.{path}", f"not a config path {name} trains or samples with", path,
                                 f"<section>.<field> with section in {list(sections)}"))
        out.extend(_moved(check_space(ms.space, sampler=sampler), f"{w}."))
        if ms.initial_trials and sampler == "grid":
            out.append(Issue(f"{w}.initial_trials", "the grid sampler runs every grid point",
                             len(ms.initial_trials), "leave initial_trials out, or another sampler"))
        elif ms.initial_trials:
            out.extend(_moved(check_initial_trials(ms.space, ms.initial_trials), f"{w}."))
            if len(ms.initial_trials) > trials_per_n:
                out.append(Issue(f"{w}.initial_trials", "more initial trials than the budget runs",
                                 len(ms.initial_trials), f"at most budget.trials_per_n ({trials_per_n})"))
    return out


__all__ = ["MethodSpace", "SAMPLE_SECTION", "TGDP", "allowed_sections", "method_space_issues", "trains_guidance", "tunable_methods"]
