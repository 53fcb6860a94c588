"""The study spec: YAML -> validated, frozen ``StudySpec``.

Validation is two-phase. Pydantic (strict, ``extra="forbid"``) checks the structure and types;
plain checks then cover the semantics (config paths, ranges, conditions, metrics, sampler
compatibility, resources). Every problem becomes an ``Issue`` (key path, bad value, what is
allowed) and all of them are raised together as one ``SpecError`` naming the file.
See ``search_spaces/gmm.yaml`` for a commented example of every key.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic.types import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from study import Issue, SpecError, UserError
from study.experiments import EXPERIMENTS, get_experiment  # data, evaluation and metrics of each experiment
from study.method_spaces import TGDP, MethodSpace, method_space_issues, trains_guidance
from study.paths import STUDY_NAME_RULE, StudyPaths, is_safe_name
from study.safe_io import write_text
from study.space import (
    SAMPLERS, SINGLE_OBJECTIVE_SAMPLERS, CategoricalParam, Condition, IntParam, Param, check_initial_trials,
    check_space, params_to_overrides,
)
from study.spec_issues import check_resources, issues_from_pydantic, resource_issues
from study.spec_numbers import number_issues
from tgdp.config import TGDPConfig, from_dict

# ---------------------------------------------------------------------------------------------
# Schema


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Factors(_Frozen):
    n: tuple[PositiveInt, ...] = Field(strict=False)  # target sample sizes, one Optuna study each (non-empty)
    seeds: tuple[NonNegativeInt, ...] = Field(default=(0,), strict=False)  # data/stage seeds (non-empty)


class Objective(_Frozen):
    metric: str  # a metric of the experiment (study.experiments: Experiment.metrics)
    direction: Literal["minimize", "maximize"]


class Budget(_Frozen):
    trials_per_n: PositiveInt  # Optuna trials per target size n
    time_budget_s: PositiveFloat | None = None  # wall-clock limit per n (None = no limit)


class EarlyStopping(_Frozen):
    """ASHA on the reported guidance epoch (``training_iteration`` resets on restore)."""

    enabled: bool = True
    grace_period: PositiveInt = 1  # epochs every trial runs before it may be stopped
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0  # ASHA halving rate
    max_epochs: PositiveInt | None = None  # None = guidance.epochs (its maximum if searched)


class Resources(_Frozen):
    """Per-trial placement. Tune counts only the trial driver, so the whole trial must fit."""

    workers_per_trial: NonNegativeInt = 0  # Ray Train workers per trial (0 = in-process TorchTrainer)
    cpus_per_worker: PositiveFloat = 1.0  # CPUs per Train worker
    gpus_per_worker: NonNegativeFloat = 0.0  # GPUs per Train worker (needs workers_per_trial >= 1)
    cpus_per_trial: PositiveFloat = 1.0  # CPUs of the Tune trial driver itself
    max_concurrent_trials: PositiveInt = 1  # trials running at once
    max_failures: NonNegativeInt = 2  # retries of a trial whose worker or node died, from its last checkpoint
    num_cpus: PositiveFloat | None = None  # CPUs for a local ray.init (None = all); ignored with --address
    num_gpus: NonNegativeFloat | None = None  # GPUs for a local ray.init (None = all); ignored with --address
    # None: off for in-process trials (seconds of start-up), Ray's default with Train workers (DESIGN §4)
    dashboard: bool | None = None  # Ray's dashboard with a local ray.init; ignored with --address

    @property
    def trial_cpus(self) -> float:
        return self.cpus_per_trial + self.workers_per_trial * self.cpus_per_worker

    @property
    def trial_gpus(self) -> float:
        return self.workers_per_trial * self.gpus_per_worker


class StudySpec(_Frozen):
    """A validated study spec. Build it with ``load_spec``/``parse_spec``; never mutate it."""

    name: str  # study name (directory name); see study.paths.STUDY_NAME_RULE
    experiment: str  # key of EXPERIMENTS
    description: str = ""  # free text, copied into MLflow
    data: dict[str, Any] = Field(default_factory=dict)  # experiment data config (gmm: GMMConfig minus n, seed)
    factors: Factors
    fixed: dict[str, Any] = Field(default_factory=dict)  # TGDPConfig overrides {section: {field: value}}
    # evaluation and initial_trials default to None, not {} / (): spec_dict drops None, so a spec without the
    # key dumps (and hashes) as it did before the key existed, and the spec.sha256 of existing studies holds.
    # evaluation: None (absent) = the experiment's defaults; {} would be an error for one without settings.
    evaluation: dict[str, Any] | None = None  # experiment evaluation overrides (ecg: UtilityConfig fields)
    space: dict[str, Param] = Field(default_factory=dict)  # searched parameters by dotted path, in order
    # queued in each new Optuna study (never again on resume)
    initial_trials: tuple[dict[str, Any], ...] | None = Field(None, strict=False)  # points run first; see below
    methods: dict[str, MethodSpace] | None = None  # other methods tuned on the same budget (None: tgdp only)
    objective: tuple[Objective, ...] = Field(strict=False)  # one or more (a single mapping is accepted)
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    sampler_seed: int | None = 0
    budget: Budget
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    resources: Resources = Field(default_factory=Resources)

    _source: str = PrivateAttr(default="<spec>")

    @field_validator("objective", mode="before")
    @classmethod
    def _one_objective(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    def __eq__(self, other: object) -> bool:  # semantic equality: ignores where the spec was read from
        return isinstance(other, StudySpec) and spec_dict(self) == spec_dict(other)

    __hash__ = None  # type: ignore[assignment]  # dict fields: not hashable

    @property
    def source(self) -> str:
        """The file the spec was loaded from (for error messages)."""
        return self._source

    @property
    def multi_objective(self) -> bool:
        return len(self.objective) > 1

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objective]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objective]

    @property
    def tuned_methods(self) -> tuple[str, ...]:
        """The methods with an Optuna study per unit: tgdp (the top-level space), then ``methods:`` in order."""
        return (TGDP, *(self.methods or {}))

    def space_of(self, method: str) -> dict[str, Param]:
        """The search space of tuned ``method`` (KeyError for one that is not tuned)."""
        return dict(self.space) if method == TGDP else dict(self.methods[method].space)  # type: ignore[index]

    def initial_trials_of(self, method: str) -> tuple[dict[str, Any], ...]:
        """The initial trials of tuned ``method`` (empty when none)."""
        points = self.initial_trials if method == TGDP else self.methods[method].initial_trials  # type: ignore[index]
        return tuple(points or ())

    def base_config(self) -> TGDPConfig:
        """TGDPConfig with ``fixed`` applied (no seed, no searched parameters)."""
        return from_dict(TGDPConfig, self.fixed)

    @property
    def max_epochs(self) -> int:
        """ASHA's max_t: early_stopping.max_epochs, else guidance.epochs (the largest searchable value)."""
        if self.early_stopping.max_epochs is not None:
            return self.early_stopping.max_epochs
        base, candidates = self.base_config().guidance.epochs, []
        for method in self.tuned_methods:  # tgdp, and tgdp_reg when tuned: the methods with guidance epochs
            if method != TGDP and not trains_guidance(method):
                continue
            p = self.space_of(method).get("guidance.epochs")
            if p is None or p.when is not None:
                candidates.append(base)
            if isinstance(p, IntParam):
                candidates.append(p.high)
            elif isinstance(p, CategoricalParam):
                candidates += [c for c in p.choices if isinstance(c, int)]
            if p is not None and isinstance(p.off, int):
                candidates.append(p.off)
        return max(candidates)

    def resolved_config(self, n: int, seed: int, params: Mapping[str, Any] | None = None,
                        method: str = TGDP) -> tuple[Any, TGDPConfig]:
        """(data config, TGDPConfig) of one trial: defaults <- fixed <- seed <- sampled ``params``.

        For another tuned ``method``: defaults <- fixed <- seed <- the method's own transform
        (``Experiment.method_config``: tgdp_reg's regularised overrides) <- ``params`` of its space.

        Every stage seed (of each section with a ``seed``) is ``seed`` unless ``fixed`` sets it; ``params``
        is a trial's flat params (Optuna ``trial.params`` or the Tune config); see
        ``study.space.params_to_overrides`` (and ``study.runtime.resolve``, the same without the spec).
        """
        if method != TGDP:
            from study.runtime import with_values

            data, base = self.resolved_config(n, seed)
            base = get_experiment(self.experiment).method_config(method, base)
            overrides = params_to_overrides(self.space_of(method), params or {})
            return data, with_values(base, {f"{sec}.{k}": v for sec, vals in overrides.items() for k, v in vals.items()})
        merged: dict[str, dict[str, Any]] = {sec: dict(v) for sec, v in self.fixed.items()}
        defaults = TGDPConfig()
        for sec in TGDPConfig.__dataclass_fields__:
            if hasattr(getattr(defaults, sec), "seed"):  # stage sections; not e.g. a method's weight section
                merged.setdefault(sec, {}).setdefault("seed", seed)
        for sec, values in params_to_overrides(self.space, params or {}).items():
            merged.setdefault(sec, {}).update(values)
        data = get_experiment(self.experiment).data_config(dict(self.data), n, seed)
        return data, from_dict(TGDPConfig, merged)


# ---------------------------------------------------------------------------------------------
# YAML


from study.yaml_io import dump_yaml, read_text_file, read_yaml  # noqa: E402  (re-exported: the spec reader)


# ---------------------------------------------------------------------------------------------
# Semantic checks


class _Shown(str):
    """A value already written as text (``repr`` would quote it twice)."""

    def __repr__(self) -> str:
        return str(self)


def _config_issue(msg: str) -> Issue:
    """tgdp.config.from_dict messages: '<key path>: expected <what>, got <value>' or '<path>: <problem>'."""
    path, _, problem = msg.partition(": ")
    if m := re.fullmatch(r"expected (.+), got (.+)", problem):
        return Issue(path, "invalid value", _Shown(m.group(2)), m.group(1))
    problem, _, allowed = problem.partition("; allowed: ")
    return Issue(path, problem, allowed=allowed)


def _semantic_issues(spec: StudySpec) -> list[Issue]:
    out: list[Issue] = []
    if not is_safe_name(spec.name):
        out.append(Issue("name", "unsafe study name", spec.name, STUDY_NAME_RULE))
    if spec.experiment not in EXPERIMENTS:
        out.append(Issue("experiment", "unknown experiment", spec.experiment, ", ".join(EXPERIMENTS)))
    else:
        exp = get_experiment(spec.experiment)
        try:
            exp.check_data(dict(spec.data))
        except ValueError as e:
            out.append(_config_issue(str(e)))
        if spec.evaluation is not None:
            if exp.evaluation_class is None:
                out.append(Issue("evaluation", f"experiment {spec.experiment} has no evaluation settings",
                                 allowed="leave `evaluation` out"))
            else:
                try:
                    exp.evaluation_config(dict(spec.evaluation))
                except ValueError as e:
                    out.append(_config_issue(str(e)))
        known = list(exp.metrics)
        for i, o in enumerate(spec.objective):
            if o.metric not in known:
                out.append(Issue(f"objective.{i}.metric", f"unknown metric for {spec.experiment}", o.metric,
                                 ", ".join(known)))
    if len(set(spec.metrics)) != len(spec.metrics):
        out.append(Issue("objective", "the same metric twice", spec.metrics, "distinct metrics"))
    try:
        from_dict(TGDPConfig, dict(spec.fixed), where="fixed")
    except ValueError as e:
        out.append(_config_issue(str(e)))
    if not spec.objective:
        out.append(Issue("objective", "no objective", [], "one or more {metric, direction} mappings"))
    for key in ("n", "seeds"):
        vals = getattr(spec.factors, key)
        if not vals:
            out.append(Issue(f"factors.{key}", "empty list", [], "a non-empty list of distinct integers"))
        elif len(set(vals)) != len(vals):
            out.append(Issue(f"factors.{key}", "duplicate values", list(vals), "distinct values"))
    out.extend(check_space(spec.space, sampler=spec.sampler))
    if spec.initial_trials and spec.sampler == "grid":
        out.append(Issue("initial_trials", "the grid sampler runs every grid point (and Optuna refuses partial points "
                         "with it)", len(spec.initial_trials), "leave initial_trials out, or another sampler"))
    elif spec.initial_trials:
        out.extend(check_initial_trials(spec.space, spec.initial_trials))
        if len(spec.initial_trials) > spec.budget.trials_per_n:
            out.append(Issue("initial_trials", "more initial trials than the budget runs",
                             len(spec.initial_trials), f"at most budget.trials_per_n ({spec.budget.trials_per_n})"))
    if spec.methods and spec.experiment in EXPERIMENTS:
        out.extend(method_space_issues(spec.methods, offered=get_experiment(spec.experiment).methods,
                                       sampler=spec.sampler, trials_per_n=spec.budget.trials_per_n))
    if spec.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        out.append(Issue("sampler", "the cmaes sampler needs the 'cmaes' package, which is not installed",
                         spec.sampler,
                         "`pip install cmaes`, or one of " + ", ".join(s for s in SAMPLERS if s != "cmaes")))
    if spec.multi_objective and spec.sampler in SINGLE_OBJECTIVE_SAMPLERS:
        ok = [s for s in SAMPLERS if s not in SINGLE_OBJECTIVE_SAMPLERS]
        out.append(Issue("sampler", f"{spec.sampler} is single-objective but {len(spec.objective)} objectives "
                         "are given", spec.sampler, f"one of {ok} for multi-objective"))
    if not out and spec.early_stopping.enabled and spec.early_stopping.grace_period > spec.max_epochs:
        out.append(Issue("early_stopping.grace_period", "grace period longer than the training",
                         spec.early_stopping.grace_period, f"<= max_epochs ({spec.max_epochs})"))
    if not out and spec.experiment in EXPERIMENTS:  # cross-section checks (arrays: rows for max n, labels)
        try:
            get_experiment(spec.experiment).check_spec(spec)
        except ValueError as e:
            out.append(_config_issue(str(e)))
    r = spec.resources
    if r.workers_per_trial == 0 and r.gpus_per_worker > 0:
        out.append(Issue("resources.gpus_per_worker", "GPUs need Train workers (workers_per_trial is 0)",
                         r.gpus_per_worker, "0, or workers_per_trial >= 1"))
    if r.num_cpus is not None:
        out.extend(resource_issues(r, r.num_cpus, r.num_gpus if r.num_gpus is not None else 0.0,
                                   what="resources.num_cpus/num_gpus"))
    return out


# ---------------------------------------------------------------------------------------------
# Public entry points


def parse_spec(data: Any, file: str = "<spec>") -> StudySpec:
    """Validate an already-parsed YAML document (a mapping) into a ``StudySpec``."""
    if not isinstance(data, dict):
        raise SpecError(file, Issue("", "the spec must be a YAML mapping", type(data).__name__,
                                    "a mapping with keys " + ", ".join(StudySpec.model_fields)))
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(file, issues_from_pydantic(e, StudySpec)) from None
    if spec.experiment in EXPERIMENTS:  # e.g. arrays: file paths made absolute (Experiment.resolve_data)
        spec = spec.model_copy(update={"data": get_experiment(spec.experiment).resolve_data(dict(spec.data))})
    spec._source = str(file)
    issues = number_issues(spec) or _semantic_issues(spec)  # numbers first: the other checks compute with them
    if issues:
        raise SpecError(file, issues)
    return spec


def load_spec(path: str | Path, sets: tuple[str, ...] = ()) -> StudySpec:
    """Read and validate a spec file (``yaml.safe_load`` semantics, bounded: ``study.yaml_io``), ``--set
    KEY=VALUE`` items applied before validation (``study.overrides``); raises ``SpecError``."""
    from study.overrides import apply_spec_overrides, overrides_label

    p = Path(path)
    label = overrides_label(str(p), sets)
    return parse_spec(apply_spec_overrides(read_yaml(read_text_file(p), str(p)), sets, label), label)


def spec_dict(spec: StudySpec) -> dict[str, Any]:
    """The spec as plain YAML/JSON data, defaults filled in."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_spec(spec: StudySpec) -> str:
    """YAML text that ``parse_spec``/``load_spec`` turns back into an equal spec."""
    return dump_yaml(spec_dict(spec))


def spec_hash(spec: StudySpec) -> str:
    """sha256 of the semantic spec. ``resources`` is left out: a study may resume on another cluster."""
    data = {k: v for k, v in spec_dict(spec).items() if k != "resources"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_spec(spec: StudySpec, paths: StudyPaths) -> None:
    """Write ``spec.yaml`` and ``spec.sha256`` into a new study directory (refuses to overwrite)."""
    if paths.exists():
        raise UserError(f"study already exists: {paths.root} (resume it with `tgdp-study resume {paths.root}`)")
    paths.root.mkdir(parents=True, exist_ok=True)
    for target, text in ((paths.spec_sha, spec_hash(spec) + "\n"), (paths.spec, dump_spec(spec))):
        write_text(target, text, root=paths.root)  # spec.yaml last: its presence marks a complete study directory


def read_study_spec(paths: StudyPaths) -> StudySpec:
    """The spec of an existing study; refuses one whose spec.yaml changed since creation."""
    spec = load_spec(paths.spec)
    if not paths.spec_sha.is_file():  # else deleting it would switch the changed-spec check off
        raise UserError(f"{paths.spec_sha}: missing; a study records its spec's hash at creation, restore the file "
                        "from a backup (or a copy of the study)")
    want = paths.spec_sha.read_text(errors="replace").strip()
    if want != spec_hash(spec):
        raise UserError(f"{paths.spec}: changed since the study was created (sha256 {spec_hash(spec)[:12]} != "
                        f"recorded {want[:12]}); a study's spec is frozen: start a new study instead")
    return spec


__all__ = [
    "Budget", "Condition", "EarlyStopping", "Factors", "MethodSpace",
    "Objective", "Resources", "SpecError", "StudySpec", "check_resources", "dump_spec", "load_spec",
    "parse_spec", "read_study_spec", "read_yaml", "resource_issues", "spec_dict", "spec_hash", "write_spec",
]
