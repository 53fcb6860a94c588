"""Spec problems as ``Issue``s, for the checks that need no ``StudySpec``: pydantic's errors translated to YAML
key paths, and whether the trials fit a machine or cluster (``resource_issues``, ``check_resources``).
The spec's own semantic checks live with it in ``study.spec``.
"""

from __future__ import annotations

import math
import os
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from study import Issue, SpecError
from study.space import PARAM_KINDS, CategoricalParam, FloatParam, IntParam


_PARAM_MODELS = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


def _model_of(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        if (m := _model_of(arg)) is not None:
            return m
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields live at ``loc`` (loc of a field in that model, minus the field)."""
    cls: type[BaseModel] | None = root
    parts = list(loc)
    while parts and cls is not None:
        key = parts.pop(0)
        if isinstance(key, int):
            continue
        if key == "space" and cls is not None and cls not in _PARAM_MODELS.values():  # spec or methods.<m>
            tag = parts[1] if len(parts) > 1 else None
            parts = parts[2:]
            cls = _PARAM_MODELS.get(tag)
            continue
        field = cls.model_fields.get(key) or next(
            (f for f in cls.model_fields.values() if f.alias == key), None)
        cls = _model_of(field.annotation) if field else None
        if field is not None and key == "methods" and parts:  # a mapping of MethodSpace: skip the method name
            parts.pop(0)
    return cls


def issues_from_pydantic(err: ValidationError, root: type[BaseModel]) -> list[Issue]:
    """One ``Issue`` per error of validating a spec as ``root`` (``study.spec.StudySpec``): the YAML key
    path, the bad value and what is allowed (for an unknown key: the keys that are)."""
    issues = []
    for e in err.errors():
        raw = tuple(e["loc"])
        loc = [str(x) for x in raw]
        if len(loc) >= 3 and loc[0] == "space" and loc[2] in PARAM_KINDS:
            del loc[2]  # the discriminated union's tag is not a key of the YAML
        elif len(loc) >= 5 and loc[0] == "methods" and loc[2] == "space" and loc[4] in PARAM_KINDS:
            del loc[4]  # methods.<m>.space.<path>.<tag>: the same
        path = ".".join(loc)
        kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
        if kind == "extra_forbidden":
            model = _model_at(root, raw[:-1])
            keys = [f.alias or k for k, f in model.model_fields.items()] if model else []
            issues.append(Issue(path, "unknown key", loc[-1], ", ".join(keys) or "no extra keys"))
        elif kind == "missing":
            issues.append(Issue(path, "missing required key", allowed="this key must be given"))
        elif kind == "union_tag_not_found":
            issues.append(Issue(path + ".kind", "missing parameter kind", allowed=" | ".join(PARAM_KINDS)))
        elif kind == "union_tag_invalid":
            issues.append(Issue(path + ".kind", "unknown parameter kind", ctx.get("tag"), " | ".join(PARAM_KINDS)))
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            issues.append(Issue(path, "expected a mapping", value, "a mapping of keys"))
        else:
            msg = e["msg"]
            allowed = msg.removeprefix("Input should be ").removeprefix("Value error, ")
            issues.append(Issue(path, "invalid value", value, allowed))
    return issues


def resource_issues(r: Any, cpus: float, gpus: float, *, what: str = "the cluster") -> list[Issue]:
    """Why the trials of ``r`` cannot run on ``cpus`` CPUs and ``gpus`` GPUs, with what would fit."""
    eps, out = 1e-9, []
    if r.trial_cpus > cpus + eps:
        spare = cpus - r.cpus_per_trial
        if r.workers_per_trial > 0 and spare > eps:
            fit = (f"workers_per_trial <= {math.floor(spare / r.cpus_per_worker + eps)} at cpus_per_worker "
                   f"{r.cpus_per_worker:g}, or cpus_per_worker <= {spare / r.workers_per_trial:.3g} "
                   f"for {r.workers_per_trial} workers")
        else:
            fit = f"cpus_per_trial + workers_per_trial * cpus_per_worker <= {cpus:g} (e.g. cpus_per_trial 0.5, " \
                  f"workers_per_trial {max(0, math.floor((cpus - 0.5) / 0.5 + eps))}, cpus_per_worker 0.5)"
        key = "resources.workers_per_trial" if r.workers_per_trial else "resources.cpus_per_trial"
        out.append(Issue(key, f"one trial needs {r.trial_cpus:g} CPUs but {what} has {cpus:g}",
                         r.workers_per_trial if r.workers_per_trial else r.cpus_per_trial, fit))
    elif r.max_concurrent_trials * r.trial_cpus > cpus + eps:
        k = math.floor(cpus / r.trial_cpus + eps)
        out.append(Issue("resources.max_concurrent_trials", f"{r.max_concurrent_trials} trials x "
                         f"{r.trial_cpus:g} CPUs exceed the {cpus:g} CPUs of {what} (Tune does not count Train "
                         "workers and would deadlock)", r.max_concurrent_trials, f"<= {k}"))
    if r.trial_gpus > gpus + eps:
        out.append(Issue("resources.gpus_per_worker", f"one trial needs {r.trial_gpus:g} GPUs but {what} has "
                         f"{gpus:g}", r.gpus_per_worker,
                         f"<= {gpus / r.workers_per_trial:.3g}" if r.workers_per_trial else "0"))
    elif r.trial_gpus > 0 and r.max_concurrent_trials * r.trial_gpus > gpus + eps:
        out.append(Issue("resources.max_concurrent_trials", f"{r.max_concurrent_trials} trials x "
                         f"{r.trial_gpus:g} GPUs exceed the {gpus:g} GPUs of {what}", r.max_concurrent_trials,
                         f"<= {math.floor(gpus / r.trial_gpus + eps)}"))
    return out


def check_resources(spec: Any, cpus: float | None = None, gpus: float | None = None) -> None:
    """Raise ``SpecError`` unless the trials of ``spec`` (a ``StudySpec``) fit ``cpus``/``gpus`` (the cluster's totals).

    ``None`` means the local machine: ``resources.num_cpus`` or ``os.cpu_count()``, and
    ``resources.num_gpus`` or 0 (called by ``--dry-run`` and before a local run).
    """
    r = spec.resources
    local = cpus is None
    cpus = float(r.num_cpus if r.num_cpus is not None else os.cpu_count() or 1) if cpus is None else cpus
    gpus = float(r.num_gpus or 0.0) if gpus is None else gpus
    issues = resource_issues(r, cpus, gpus, what="this machine" if local else "the cluster")
    if issues:
        raise SpecError(spec.source, issues)


__all__ = ["check_resources", "issues_from_pydantic", "resource_issues"]
