"""The ``space:`` section of a study spec: parameter schema, checks, and its Optuna compilation.

Parameters are keyed by a dotted ``TGDPConfig`` path (``section.field``), in the YAML's order::

    guidance.eta_cycle: {kind: float, low: 1.0e-3, high: 10.0, log: true, off: 0.0}
    guidance.width:     {kind: categorical, choices: [64, 128, 256]}
    guidance.depth:     {kind: int, low: 2, high: 4, when: {param: guidance.width, in: [128, 256]}}

``off: v`` makes a two-level choice: an Optuna categorical ``"<path>:switch"`` in ("off", "on");
"off" sets the path to exactly ``v`` and samples nothing else, "on" samples the value.
``when`` samples a parameter only when an earlier parameter took one of the given values
(``equals``/``in``, on its effective value) or is switched off / on (``off: true|false``).
An unsampled parameter keeps its ``fixed``/default value.

The space compiled for Optuna (define-by-run, samplers, grid): ``study.search``.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from study import Issue
from tgdp.config import TGDPConfig, from_dict

SWITCH_SUFFIX = ":switch"  # Optuna name of an off-switch: "<path>:switch" in SWITCH_CHOICES
SWITCH_CHOICES = ("off", "on")
SAMPLERS = ("tpe", "cmaes", "gp", "random", "grid", "nsga2")
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes", "gp")  # refuse multi-objective studies


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_by_name=True, validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml11_off_key(cls, data: Any) -> Any:
        # A spec read with plain yaml.safe_load (YAML 1.1) turns the key ``off:`` into False.
        if isinstance(data, dict) and False in data and "off" not in data:
            data = {("off" if k is False else k): v for k, v in data.items()}
        return data


class Condition(_Frozen):
    """Sample the owning parameter only when ``param`` (defined earlier) meets exactly one test."""

    param: str  # dotted path of an earlier parameter
    equals: Any = None  # its effective value equals this
    in_: tuple[Any, ...] | None = Field(default=None, alias="in", strict=False)  # ... is one of these
    off: bool | None = None  # it was switched off (true) / on (false); needs an ``off:`` on it

    def holds(self, value: Any, switched_off: bool) -> bool:
        if self.off is not None:
            return switched_off == self.off
        if self.in_ is not None:
            return value in self.in_
        return value == self.equals


class FloatParam(_Frozen):
    kind: Literal["float"]
    low: float  # lower bound (inclusive)
    high: float  # upper bound (inclusive)
    log: bool = False  # sample log-uniformly (needs low > 0; not with step)
    step: float | None = None  # discretisation step (values low + k*step)
    off: Any = None  # off-switch value (see module doc)
    when: Condition | None = None


class IntParam(_Frozen):
    kind: Literal["int"]
    low: int
    high: int
    log: bool = False  # log-uniform (needs low > 0 and step 1)
    step: int = 1
    off: Any = None
    when: Condition | None = None


class CategoricalParam(_Frozen):
    kind: Literal["categorical"]
    choices: tuple[Any, ...] = Field(strict=False)  # scalars (numbers, strings, booleans)
    off: Any = None
    when: Condition | None = None


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="kind")]
PARAM_KINDS = ("float", "int", "categorical")
Space = Mapping[str, Union[FloatParam, IntParam, CategoricalParam]]


# ---------------------------------------------------------------------------------------------
# Checks (pydantic has validated the structure; these are the semantics, with exact key paths)


def config_field_type(path: str) -> Any | None:
    """Python type of the ``TGDPConfig`` field at dotted ``path`` (``None`` if there is none)."""
    section, _, name = path.partition(".")
    hints = typing.get_type_hints(TGDPConfig)
    if section not in hints or not name or "." in name:
        return None
    fields = typing.get_type_hints(hints[section])
    return fields.get(name)


def searchable_paths() -> list[str]:
    """All dotted paths a ``space:`` may search (scalar fields of every TGDPConfig section)."""
    out = []
    for sec, cls in typing.get_type_hints(TGDPConfig).items():
        for f, tp in typing.get_type_hints(cls).items():
            if tp in (int, float, bool, str):
                out.append(f"{sec}.{f}")
    return out


def _value_issue(path: str, where: str, value: Any) -> Issue | None:
    """Issue if ``value`` cannot be assigned to config field ``path`` (checked by tgdp.config.from_dict)."""
    section, _, name = path.partition(".")
    try:
        from_dict(TGDPConfig, {section: {name: value}})
    except ValueError as e:
        # the config's own rule, not just the field's type (a log range with low 0 on a positive field must
        # say "> 0"), from "<path>: must be > 0; got 0", "<path>: expected an integer, got 1.0" or
        # "<path>: got 'x'; allowed: [...]"
        rule = str(e).partition(": ")[2]
        rule = rule.partition("; allowed: ")[2] or re.sub(r"^expected (.+), got .*$", r"\1", rule.split("; got ")[0])
        rule = rule.removeprefix("must be ")
        return Issue(where, f"value does not fit config field {path}", value, rule)
    return None


def _kind_issue(path: str, p: Any, tp: Any) -> Issue | None:
    if tp is int and p.kind == "float":
        return Issue(f"space.{path}.kind", f"{path} is an integer field", p.kind, "int or categorical")
    if tp in (bool, str) and p.kind != "categorical":
        return Issue(f"space.{path}.kind", f"{path} is a {tp.__name__} field", p.kind, "categorical")
    return None


def _range_issues(path: str, p: FloatParam | IntParam) -> list[Issue]:
    w = f"space.{path}"
    if not p.low < p.high:
        return [Issue(f"{w}.low", f"empty range (low >= high = {p.high!r})", p.low, f"low < high ({p.high!r})")]
    out = []
    if p.log and p.low <= 0:
        out.append(Issue(f"{w}.low", "log scale needs a positive lower bound", p.low, "low > 0 with log: true"))
    if p.step is not None:
        if not p.step > 0:
            out.append(Issue(f"{w}.step", "step must be positive", p.step, "step > 0"))
        elif p.step > p.high - p.low:
            out.append(Issue(f"{w}.step", "step larger than the range", p.step, f"0 < step <= {p.high - p.low!r}"))
        elif p.log and (p.kind == "float" or p.step != 1):
            out.append(Issue(f"{w}.step", "log scale cannot be combined with a step", p.step,
                             "omit step (float) or step: 1 (int) with log: true"))
    return out


def check_space(space: Space, *, sampler: str) -> list[Issue]:
    """Semantic problems of a structurally valid space (paths, types, ranges, conditions, grid)."""
    issues: list[Issue] = []
    allowed_paths = searchable_paths()
    seen: list[str] = []
    for path, p in space.items():
        w = f"space.{path}"
        tp = config_field_type(path)
        if tp not in (int, float, bool, str):
            why = "not a searchable config path" if tp is None else "not a scalar config field"
            sections = sorted({a.split(".")[0] for a in allowed_paths})
            close = difflib.get_close_matches(path, allowed_paths, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            issues.append(Issue(w, why, path, f"{hint}<section>.<field> with section in {sections}"))
            seen.append(path)
            continue
        if (ki := _kind_issue(path, p, tp)) is not None:
            issues.append(ki)
        if p.kind == "categorical":
            if not p.choices:
                issues.append(Issue(f"{w}.choices", "no choices", list(p.choices), "a non-empty list of values"))
            elif dup := [c for i, c in enumerate(p.choices) if any(c == d for d in p.choices[:i])]:
                # by value, as Optuna finds a choice (list.index): 1, 1.0 and true are one choice
                issues.append(Issue(f"{w}.choices", f"duplicate choices (equal values: {dup})", list(p.choices),
                                    "values distinct by value (1, 1.0 and true are equal)"))
            for i, c in enumerate(p.choices):
                if (vi := _value_issue(path, f"{w}.choices.{i}", c)) is not None:
                    issues.append(vi)
        else:
            issues.extend(_range_issues(path, p))
            if ki is None:
                for bound in ("low", "high"):
                    if (vi := _value_issue(path, f"{w}.{bound}", getattr(p, bound))) is not None:
                        issues.append(vi)
        if p.off is not None and (vi := _value_issue(path, f"{w}.off", p.off)) is not None:
            issues.append(vi)
        if p.when is not None:
            issues.extend(_condition_issues(path, p.when, space, seen))
        if sampler == "grid" and p.kind == "float" and p.step is None:
            issues.append(Issue(w, "the grid sampler needs a finite set of values; float without step", "float",
                                "categorical, int, or float with step (or another sampler)"))
        seen.append(path)
    return issues


def _condition_issues(path: str, cond: Condition, space: Space, earlier: list[str]) -> list[Issue]:
    w = f"space.{path}.when"
    tests = [k for k in ("equals", "in_", "off") if getattr(cond, k) is not None]
    if len(tests) != 1:
        return [Issue(w, "a condition needs exactly one test", [t.rstrip("_") for t in tests],
                      "one of equals, in, off")]
    before = f"a parameter defined before {path}: {earlier}" if earlier else \
        f"a parameter defined before {path} (none: it is the first)"
    if cond.param == path:
        return [Issue(f"{w}.param", "a parameter cannot depend on itself", cond.param, before)]
    if cond.param not in space:
        return [Issue(f"{w}.param", "condition on an unknown parameter", cond.param, before)]
    if cond.param not in earlier:
        return [Issue(f"{w}.param", "condition on a parameter defined later (order matters; no cycles)",
                      cond.param, before)]
    other = space[cond.param]
    if cond.off is not None:
        if other.off is None:
            return [Issue(f"{w}.off", f"{cond.param} has no off-switch", cond.off, "equals or in")]
        return []
    values = list(cond.in_) if cond.in_ is not None else [cond.equals]
    if other.kind != "categorical" and other.off is None:
        return [Issue(f"{w}.param", f"cannot condition on the exact value of continuous {other.kind} parameter",
                      cond.param, "a categorical parameter or one with an off-switch")]
    possible = list(other.choices) if other.kind == "categorical" else []
    if other.off is not None:
        possible.append(other.off)
    bad = [v for v in values if v not in possible]
    if bad:
        key = f"{w}.in" if cond.in_ is not None else f"{w}.equals"
        return [Issue(key, f"value(s) {cond.param} can never take", bad[0] if len(bad) == 1 else bad,
                      f"values of {cond.param}: {possible}")]
    return []


def _same(a: Any, b: Any) -> bool:
    """Equal, and not a bool standing in for a number (YAML true == 1 in Python)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _is_off(p: Any, value: Any) -> bool:
    return p.off is not None and _same(value, p.off)


def _takes(p: Any, value: Any) -> str | None:
    """Why ``p`` can never sample ``value`` (None when it can); the off value counts as one it takes."""
    if _is_off(p, value):
        return None
    if p.kind == "categorical":
        return None if any(_same(value, c) for c in p.choices) else f"one of {list(p.choices)}"
    numeric = int if p.kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric) or not p.low <= value <= p.high:
        return (f"{'an integer' if p.kind == 'int' else 'a number'} in [{p.low}, {p.high}]"
                + (f" or the off value {p.off!r}" if p.off is not None else ""))
    if p.step is not None and abs((value - p.low) / p.step - round((value - p.low) / p.step)) > 1e-9:
        return f"low + k * step ({p.low} + k * {p.step})"
    return None


def check_initial_trials(space: Space, points: typing.Sequence[Mapping[str, Any]]) -> list[Issue]:
    """Problems of ``initial_trials``: every key a searched path, every value one its parameter can take,
    and no value for a parameter whose ``when`` the point itself switches off (it would be ignored)."""
    issues: list[Issue] = []
    for i, point in enumerate(points):
        w = f"initial_trials.{i}"
        for path in point:
            if path not in space:
                issues.append(Issue(f"{w}.{path}", "not a parameter of `space`", path, f"one of {list(space)}"))
            elif (why := _takes(space[path], point[path])) is not None:
                issues.append(Issue(f"{w}.{path}", f"a value {path} cannot take", point[path], why))
        for path, p in space.items():
            c = p.when
            if path in point and c is not None and c.param in point and c.param in space:
                value = point[c.param]
                if not c.holds(value, _is_off(space[c.param], value)):
                    issues.append(Issue(f"{w}.{path}", f"never sampled with {c.param} = {value!r} (its `when`)",
                                        point[path], f"leave {path} out of this point"))
    return issues


def check_trial_params(space: Space, params: Mapping[str, Any], where: str) -> list[Issue]:
    """Problems of one trial's Optuna params read back from a file (``frozen.json``): every key a path of
    ``space`` or the off-switch of one, every value one its parameter can take, and every parameter without a
    ``when`` present (its value, or its switch "off"): a missing one would silently run the default."""
    issues: list[Issue] = []
    for key, value in params.items():
        path = key.removesuffix(SWITCH_SUFFIX)
        p = space.get(path)
        if p is None or (path != key and p.off is None):
            issues.append(Issue(f"{where}.{key}", "not a parameter of the method's space", key,
                                f"one of {list(space)} (and `<path>{SWITCH_SUFFIX}` of those with `off`)"))
        elif path != key:
            if value not in SWITCH_CHOICES:
                issues.append(Issue(f"{where}.{key}", "not a switch value", value, f"one of {list(SWITCH_CHOICES)}"))
        elif (why := _takes(p, value)) is not None:
            issues.append(Issue(f"{where}.{key}", f"a value {path} cannot take", value, why))
    for path, p in space.items():
        if p.when is None and path not in params and params.get(switch_name(path)) != "off":
            issues.append(Issue(f"{where}.{path}", "missing: the configuration would silently run its default",
                                allowed=f"the value the trial sampled{' or the switch off' if p.off is not None else ''}"))
    return issues


def initial_trial_params(space: Space, point: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna params (off-switches included) under which ``define_by_run`` reproduces ``point``;
    parameters the point leaves out are sampled as usual."""
    out: dict[str, Any] = {}
    for path, value in point.items():
        p, off = space[path], _is_off(space[path], value)
        if p.off is not None:
            out[switch_name(path)] = "off" if off else "on"
        if not off:
            out[path] = float(value) if p.kind == "float" else value
    return out


# ---------------------------------------------------------------------------------------------
# Trial params -> config overrides (the Optuna compilation of the space: study.search)


def switch_name(path: str) -> str:
    return path + SWITCH_SUFFIX


def params_to_overrides(space: Space, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Nested ``{section: {field: value}}`` overrides from a trial's flat params.

    ``params`` is Optuna's ``trial.params`` or a Tune config (the params plus the off values that
    ``study.search.define_by_run`` returns); keys that are not space paths or switches are ignored. A switch "off"
    sets its path to the off value; a path missing from ``params`` was not sampled.
    """
    out: dict[str, dict[str, Any]] = {}
    for path, p in space.items():
        sw = params.get(switch_name(path))
        if p.off is not None and sw == "off":
            value = p.off
        elif path in params:
            value = params[path]
        else:
            continue
        section, _, name = path.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def describe_space(space: Space) -> str:
    """Human-readable table of the space, one parameter per line (for ``--dry-run``)."""
    if not space:
        return "  (empty: every trial runs the fixed config)"
    width = max(len(p) for p in space)
    lines = []
    for path, p in space.items():
        if p.kind == "categorical":
            dom = f"categorical {list(p.choices)}"
        else:
            dom = f"{p.kind:<5} [{p.low!r}, {p.high!r}]"
            dom += " log" if p.log else ""
            dom += f" step {p.step!r}" if p.step is not None and not (p.kind == "int" and p.step == 1) else ""
        extra = []
        if p.off is not None:
            extra.append(f"off-switch: {p.off!r} or searched")
        if p.when is not None:
            c = p.when
            test = (f"is {'off' if c.off else 'on'}" if c.off is not None
                    else f"in {list(c.in_)}" if c.in_ is not None else f"== {c.equals!r}")
            extra.append(f"only when {c.param} {test}")
        lines.append(f"  {path:<{width}}  {dom}" + (f"   ({'; '.join(extra)})" if extra else ""))
    return "\n".join(lines)

