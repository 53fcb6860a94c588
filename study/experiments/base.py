"""``Experiment``: everything the study system needs to know about one testbed, on one object.

The runner, the trials and the report drive the same stage order for every experiment (shared stages
-> per-trial classifier, guidance, sampling, evaluation); an experiment supplies what differs:

    spec layer      ``data_class``, ``check_data``, ``data_config``, ``evaluation_config``, ``metrics``
                    (name -> natural direction), ``table_metrics``
    tasks and nets  ``load``, ``schedule``, ``source_net`` / ``classifier_net`` (rebuild cached weights)
    methods         ``methods`` (names from ``tgdp.methods.METHODS``), ``baselines`` (the shared ones),
                    ``regularised`` (what ``tgdp_reg`` sets), ``method_config``, ``baseline_key``
    evaluation      ``evaluate`` (validation + test metrics of one method), ``guidance_evaluator`` (the
                    in-training hook ASHA sees), ``asha_metric``, ``diagnostics``, ``ratio_grid`` (plots)

Adding an experiment = one module with a subclass + one line in ``study.experiments.EXPERIMENTS``.
The spec layer builds experiments without a spec (``Experiment()``) to validate ``data`` and
``evaluation``; the runner and the trials build them with the validated spec (``experiment_for``).

Importing this package must stay cheap (the CLI reads specs through it): torch and the tgdp stages
are imported inside the methods that use them.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from tgdp.config import TGDPConfig, from_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tgdp.schedules import VPSchedule

DIRECTIONS = ("minimize", "maximize")


def task_schedule(task: Any) -> VPSchedule:
    """The noise schedule of ``task``: its own when it carries one (``GMMTask.schedule``), else the default VP."""
    from tgdp.schedules import VPSchedule

    return getattr(task, "schedule", None) or VPSchedule()


class Experiment(abc.ABC):
    """One experiment (testbed). Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]  # the spec's ``experiment:`` value
    data_class: ClassVar[type]  # dataclass of the ``data:`` section; its ``n`` and ``seed`` come from ``factors``
    evaluation_class: ClassVar[type | None] = None  # dataclass of the ``evaluation:`` section (None: no section)
    metrics: ClassVar[dict[str, str]]  # objective-able metric -> its natural direction (minimize / maximize)
    table_metrics: ClassVar[tuple[str, ...]]  # report table columns (may add diagnostics and intervals)
    methods: ClassVar[tuple[str, ...]]  # names in tgdp.methods.METHODS this experiment offers
    regularised: ClassVar[dict[str, Any]] = {}  # GuidanceConfig overrides of tgdp_reg (stated per experiment)

    def __init__(self, spec: Any = None, cache_dir: str | None = None) -> None:
        self.spec = spec  # the validated StudySpec (None when only the spec-layer methods are used)
        # the stage cache directory, where ``load`` may keep preprocessed data: given, else the trial runtime's
        self.cache_dir = cache_dir or getattr(spec, "cache_dir", None)

    # --- spec layer -------------------------------------------------------------------------------------

    def check_data(self, data: dict[str, Any]) -> None:
        """Raise ValueError('data.<key>: <problem>; allowed: <what>') on a bad ``data:`` section.

        ``n`` and ``seed`` are refused (they come from ``factors``); every other key must be a field of
        ``data_class`` with a valid value. Subclasses add cross-field checks."""
        for key in ("n", "seed"):
            if key in data:
                raise ValueError(f"data.{key}: set by factors.{'n' if key == 'n' else 'seeds'}, not in data; "
                                 f"allowed: {self.data_class.__name__} fields except n and seed")
        try:
            from_dict(self.data_class, data, where="data")
        except ValueError as e:  # __post_init__ messages name the bare key
            raise ValueError(str(e) if str(e).startswith("data") else f"data.{e}") from None

    def data_config(self, data: dict[str, Any], n: int, seed: int) -> Any:
        """The data config of one unit: the ``data:`` section with the unit's ``n`` and ``seed``."""
        return from_dict(self.data_class, {**data, "n": n, "seed": seed})

    def evaluation_config(self, section: dict[str, Any]) -> Any:
        """The ``evaluation:`` section as ``evaluation_class`` (ValueError 'evaluation.<key>: ...');
        a ValueError when the experiment has no such section."""
        if self.evaluation_class is None:
            raise ValueError(f"evaluation: experiment {self.name} has no evaluation settings; "
                             "allowed: leave `evaluation` out")
        return from_dict(self.evaluation_class, section, where="evaluation")

    def resolve_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """The ``data:`` section as the study stores it, computed once when the spec is validated (default:
        unchanged; ``arrays`` makes its file paths absolute and records the files' fingerprint)."""
        return data

    def check_spec(self, spec: Any) -> None:
        """Checks across sections of a spec whose sections are each valid (default: none); raise
        ValueError('<key path>: <problem>; allowed: <what>')."""

    def check_methods(self) -> None:
        """Every offered method is registered, and tgdp_reg has overrides (a programming error otherwise)."""
        from tgdp.methods import get_method

        for m in self.methods:
            get_method(m)
        if "tgdp_reg" in self.methods and not self.regularised:
            raise ValueError(f"experiment {self.name} offers tgdp_reg but states no `regularised` overrides")

    # --- methods ----------------------------------------------------------------------------------------

    @property
    def baselines(self) -> tuple[str, ...]:
        """The shared methods (computed once per unit and cached), in ``methods`` order; a method the study
        tunes (the spec's or runtime's ``tuned_methods``, ``study.method_spaces``) is fitted by its trials instead."""
        from tgdp.methods import get_method

        tuned = set(getattr(self.spec, "tuned_methods", ()))
        return tuple(m for m in self.methods if get_method(m).shared and m not in tuned)

    def method_config(self, method: str, cfg: TGDPConfig) -> TGDPConfig:
        """The config ``method`` runs with (``tgdp_reg``: ``cfg`` with this experiment's ``regularised``)."""
        from tgdp.methods import get_method

        return get_method(method).configure(cfg, self.regularised)

    def baseline_key(self, method: str, data_cfg: Any, cfg: TGDPConfig) -> str:
        """Stage-cache key of a shared method (``study.cache.baseline_key``, + the evaluation config)."""
        from study.cache import baseline_key

        return baseline_key(method, data_cfg, cfg, evaluation=self.cache_evaluation(data_cfg))

    def cache_evaluation(self, data_cfg: Any) -> Any:
        """The evaluation config a cached result depends on (None: the metrics are fixed functions)."""
        return None

    # --- tasks and nets ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def load(self, data_cfg: Any) -> tuple[Any, dict]:
        """(task, data): the task object and the stage dict (source_x/_y, target_x/_y tensors)."""

    def schedule(self, task: Any) -> VPSchedule:
        """The noise schedule every stage of this task trains and samples with."""
        return task_schedule(task)

    @staticmethod
    def shape(data: dict) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""
        return tuple(data["source_x"].shape[1:])

    @staticmethod
    def num_labels(data: dict) -> int:
        """Label width of the conditional version (one-hot / multi-hot columns of ``source_y``; 0 if none)."""
        y = data.get("source_y")
        return 0 if y is None else int(y.shape[1])

    def source_net(self, cfg: TGDPConfig, task: Any, data: dict, state: dict) -> nn.Module:
        """The source score net of ``cfg.source`` with cached weights ``state``, frozen, in eval mode."""
        from tgdp import stages

        c = cfg.source
        model = stages.build_score(c, self.shape(data), self.num_labels(data) if c.conditional else 0,
                                   self.schedule(task))
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    def classifier_net(self, cfg: TGDPConfig, task: Any, data: dict, state: dict) -> nn.Module:
        """The domain classifier of ``cfg.classifier`` with cached weights ``state``, in eval mode."""
        from tgdp import stages

        c = cfg.classifier
        model = stages.build_classifier(c, self.shape(data), self.num_labels(data) if c.conditional else 0)
        model.load_state_dict(state)
        return model.eval()

    # --- evaluation -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def evaluate(self, method: str, cfg: TGDPConfig, task: Any, data: dict, device: torch.device, *,
                 source: nn.Module | None = None, model: nn.Module | None = None,
                 h: nn.Module | None = None) -> dict[str, Any]:
        """{"validation": metrics, "test": metrics, "validation_samples": tensor} of one method.

        ``model``: the method's fitted score model (vanilla, finetune, source_only); ``h``: the guidance
        net (tgdp); ``source``: the source model. Validation selects, test reports. Collective under
        torch.distributed: every rank must call it."""

    @abc.abstractmethod
    def guidance_evaluator(self, cfg: TGDPConfig, task: Any, data: dict, source: nn.Module, device: torch.device,
                           num: int, extra: Callable[[], dict[str, float]]
                           ) -> Callable[[nn.Module, int], dict[str, float]]:
        """``evaluate(h, epoch)`` for the guidance stage: what each epoch reports (and ASHA stops on).

        Must report every spec objective (NaN where it cannot) and ``extra()``; ``num`` caps the samples."""

    def asha_metric(self) -> tuple[str, str]:
        """(metric, "min" | "max") that ASHA stops on: the first objective, unless the subclass says otherwise."""
        return self.spec.metrics[0], "min" if self.spec.directions[0] == "minimize" else "max"

    def diagnostics(self, task: Any, classifier: nn.Module | None, h: nn.Module | None,
                    cfg: TGDPConfig) -> dict[str, float]:
        """Extra trial metrics of the fitted classifier / guidance net (default: none)."""
        return {}

    def ratio_grid(self, task: Any, classifier: nn.Module, cfg: TGDPConfig) -> dict[str, torch.Tensor] | None:
        """Learned and exact log-ratio on a grid for the field plot (default: None, no such plot)."""
        return None


__all__ = ["DIRECTIONS", "Experiment", "task_schedule"]
