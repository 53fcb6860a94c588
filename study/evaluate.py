"""The protocol's final table: ``tgdp-study evaluate STUDY --seeds 100-109`` (docs/protocol.md).

A study tunes on its *development* seeds (``factors.seeds``) and selects on validation draws. This command
freezes each tuned method's best configuration per n (``study.report.best_over_seeds``: the best trial on the
validation objective over the development seeds' units), then runs every method the experiment offers on each
*evaluation* seed (data, stages and sampling all on that seed; no search): tuned methods with their frozen
configuration, the others with the spec's fixed one, and scores them on the TEST draw. Evaluation seeds that
overlap the development seeds are refused before anything is written.

Without the study (``tgdp-study evaluate SPEC.yaml --frozen FROZEN.json --out DIR``): the frozen configurations
come from a ``frozen.json`` an earlier evaluation wrote, checked against the spec (``read_frozen``), so a
committed final table is reproduced from its files without tuning again.

It runs with torch on the local CPUs (no Ray): each (seed, n, method) is a few small fits. ``jobs`` > 1 runs
seeds in parallel processes (spawned, each with cpus // jobs torch threads; seeds share nothing but the output
directory, and each result file is written atomically, so resume stays trivial). Layout of ``--out`` (default ``<study>/evaluation``)::

    frozen.json                      the frozen configurations (a rerun refuses different ones)
    results/s<seed>-n<n>-<method>.json   one result, written as it comes (a rerun skips finished ones)
    cache/                           source models and classifiers of the evaluation seeds (stage cache; the
                                     preprocessed ECG records are mapped from the study's own stage cache)
    table.md, table.json             per metric and n: study.statistics (mean, sd, bootstrap interval,
                                     failure rate, paired wins and Wilcoxon p of every pair)
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from study import Issue, UserError
from study.method_spaces import TGDP
from study.paths import StudyPaths, open_study_dir
from study.safe_io import write_text
from study.space import check_trial_params
from study.spec import StudySpec, load_spec, read_study_spec
from study.yaml_io import read_text_file

EXTRA_METRICS = ("mode_balance_error",)  # reported next to the objectives when the experiment has them
_SEEDS = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(tokens: list[str]) -> list[int]:
    """Seeds from tokens like ``100-109``, ``100,101`` or ``100 101`` (distinct, in order); UserError otherwise."""
    out: list[int] = []
    for part in (p for t in tokens for p in t.split(",") if p):
        m = _SEEDS.match(part.strip())
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"--seeds: bad seed or range {part!r}; allowed: integers >= 0 and ranges like 100-109")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out += [s for s in range(lo, hi + 1) if s not in out]
    if not out:
        raise UserError("--seeds: no seeds given; allowed: e.g. 100-109")
    return out


def freeze(paths: StudyPaths, spec: StudySpec) -> dict[str, dict[str, Any]]:
    """{method: {str(n): {params, trial, dev_seed, value}}} of every tuned method's best trial per n (selected on
    the validation objective of the development seeds); UserError when one has no finished trial yet."""
    from study.report import best_over_seeds

    frozen: dict[str, dict[str, Any]] = {}
    for method in spec.tuned_methods:
        for n in spec.factors.n:
            found = best_over_seeds(paths, spec, n, method)
            if found is None:
                raise UserError(f"{method} has no finished trial for n={n} in {paths.root}; finish the study "
                                f"first (`tgdp-study resume {paths.root}`)")
            b, seed = found
            frozen.setdefault(method, {})[str(n)] = {"params": dict(b.params), "trial": b.number, "dev_seed": seed,
                                                     spec.metrics[0]: b.values[0]}
    return frozen


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON: NaN / inf become None (a failed run keeps ``failed`` = 1)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))  # atomic, never through a symlink


def method_order(spec: StudySpec, exp: Any) -> list[str]:
    """Every method of the table: the tuned ones first (tgdp, then ``methods:``), then the others as offered."""
    return [*spec.tuned_methods, *(m for m in exp.methods if m not in spec.tuned_methods)]


def method_config(spec: StudySpec, exp: Any, method: str, n: int, seed: int, frozen: dict[str, Any]):
    """(data config, TGDPConfig) of ``method`` on evaluation seed ``seed``: the frozen params of a tuned method,
    the spec's fixed config (through the method's own transform) otherwise."""
    if method in spec.tuned_methods:
        return spec.resolved_config(n, seed, frozen[method][str(n)]["params"], method=method)
    data_cfg, cfg = spec.resolved_config(n, seed)
    return data_cfg, exp.method_config(method, cfg)


def run_method(exp: Any, method: str, data_cfg: Any, cfg: Any, cache: Any, task: Any, data: dict) -> dict[str, Any]:
    """Fit ``method`` on one evaluation seed (source model and classifier from ``cache`` or trained into it)
    and score it: {validation, test} metrics."""
    import torch

    from study.cache import classifier_key, source_key
    from tgdp import stages
    from tgdp.config import to_dict
    from tgdp.methods import cpu_state, get_method
    from tgdp.reporter import MemoryReporter

    device, schedule = torch.device("cpu"), exp.schedule(task)
    skey = source_key(data_cfg, cfg)
    if not cache.has("source", skey):
        model = stages.pretrain_source(cfg.source, data, schedule, device, MemoryReporter())
        cache.put("source", skey, {"state": cpu_state(model), "config": to_dict(cfg.source)})
    source = exp.source_net(cfg, task, data, cache.get("source", skey)["state"])
    m = get_method(method)
    classifier = None
    if not m.shared:  # tgdp, tgdp_reg: the domain classifier of their config, shared when the configs agree
        ckey = classifier_key(data_cfg, cfg)
        if not cache.has("classifier", ckey):
            clf = stages.train_classifier(cfg.classifier, data, device, MemoryReporter())
            cache.put("classifier", ckey, {"state": cpu_state(clf), "config": to_dict(cfg.classifier)})
        classifier = exp.classifier_net(cfg, task, data, cache.get("classifier", ckey)["state"])
    # a fresh reporter per method: a reporter holding another method's finished stage would hand it back
    fitted = m.fit(cfg, data, source, schedule, device, MemoryReporter(), classifier=classifier)
    res = exp.evaluate(method, cfg, task, data, device, source=source, model=fitted.model, h=fitted.guidance)
    return {"validation": res["validation"], "test": res["test"]}


def read_frozen(path: str | Path, spec: StudySpec) -> dict[str, dict[str, Any]]:
    """The frozen configurations of ``path`` (``freeze``'s layout, as ``evaluate`` writes it to frozen.json),
    checked against ``spec``: exactly its tuned methods and its n, each entry with ``params`` its method's space
    can sample (Optuna's names, off-switches included) and a ``dev_seed`` among its development seeds; else a
    UserError naming the file, every bad key and what is allowed."""
    file = str(path)
    try:
        data = json.loads(read_text_file(path, "frozen file", "JSON"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{file}: not JSON ({e}); allowed: the frozen.json an evaluation wrote") from None
    issues = frozen_issues(data, spec)
    if issues:
        raise UserError(f"{file}: {len(issues)} problem(s) with the frozen configurations of {spec.name}:\n  "
                        + "\n  ".join(i.format(file) for i in issues))
    return data


def frozen_issues(data: Any, spec: StudySpec) -> list[Issue]:
    """What is wrong with ``data`` as the frozen configurations of ``spec`` (``read_frozen``)."""
    tuned, ns, dev = list(spec.tuned_methods), [str(n) for n in spec.factors.n], list(spec.factors.seeds)
    if not isinstance(data, dict):
        return [Issue("", "not a JSON object", type(data).__name__, f"{{method: {{n: {{params, dev_seed}}}}}} for {tuned}")]
    out = [Issue(m, "not a tuned method of the spec", allowed=f"one of {tuned}") for m in data if m not in tuned]
    for m in tuned:
        per_n = data.get(m)
        if not isinstance(per_n, dict):
            out.append(Issue(m, "missing" if per_n is None else "not an object", allowed=f"an entry per n in {ns}"))
            continue
        out += [Issue(f"{m}.{k}", "not an n of the spec", allowed=f"one of {ns}") for k in per_n if k not in ns]
        for n in ns:
            entry, w = per_n.get(n), f"{m}.{n}"
            if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
                out.append(Issue(w, "missing, or without a `params` object", allowed="{params, dev_seed, ...}"))
                continue
            seed = entry.get("dev_seed")
            if type(seed) is not int or seed not in dev:
                out.append(Issue(f"{w}.dev_seed", "not a development seed of the spec", seed, f"one of {dev}"))
            out += check_trial_params(spec.space_of(m), entry["params"], f"{w}.params")
    return out


def evaluate_study(target: str | Path, seeds: list[int], out: str | Path | None = None, jobs: int = 1,
                   frozen_file: str | Path | None = None) -> str:
    """Run the protocol's evaluation (module docstring) with ``jobs`` seeds at a time; returns the Markdown table.
    ``target`` is a study directory, or with ``frozen_file`` a spec file (then ``out`` is required). Resumable."""
    if jobs < 1:
        raise UserError(f"--jobs: {jobs} given; allowed: an integer >= 1")
    if frozen_file is None:
        paths = open_study_dir(target)
        spec = read_study_spec(paths)
    else:
        if Path(target).is_dir():
            raise UserError(f"--frozen: given with the study directory {target}; allowed: a spec file (a study "
                            "freezes its own best trials: leave --frozen out)")
        if out is None:
            raise UserError("--out: required with --frozen (there is no study directory to write into)")
        spec = load_spec(target)
    dev = list(spec.factors.seeds)
    overlap = sorted(set(seeds) & set(dev))
    if overlap:  # before anything is written: a seed the study tuned on has no clean test draw
        raise UserError(f"evaluation seeds {overlap} are development seeds of study {spec.name} (factors.seeds "
                        f"{dev}): nothing may be evaluated on a seed it was tuned on; allowed: seeds outside {dev}")
    from study.cache import resolve_cache_dir

    if frozen_file is None:
        frozen, source = freeze(paths, spec), "this study's best trials now (the study ran further?)"
        out_dir = Path(out).expanduser().resolve() if out is not None else paths.root / "evaluation"
        # the study's stage cache: preprocessed ECG records there (built while tuning) are mapped, not re-read
        data_cache = paths.read_state().get("cache_dir") or str(resolve_cache_dir(paths.cache))
    else:
        frozen, source = read_frozen(frozen_file, spec), f"--frozen {frozen_file}"
        out_dir = Path(out).expanduser().resolve()
        data_cache = str(resolve_cache_dir(out_dir / "cache"))
    fpath = out_dir / "frozen.json"
    if fpath.is_file() and json.loads(fpath.read_text()) != json.loads(json.dumps(frozen, default=str)):
        raise UserError(f"{fpath}: the frozen configurations differ from {source}; results of two selections "
                        "cannot share a table: choose another --out")
    _write_json(fpath, frozen)
    return _evaluate(spec, frozen, seeds, out_dir, jobs, data_cache)


def _evaluate(spec: StudySpec, frozen: dict[str, Any], seeds: list[int], out_dir: Path, jobs: int,
              data_cache: str) -> str:
    import torch

    from study.experiments import experiment_for

    jobs = min(jobs, len(seeds))
    threads, t_all = torch.get_num_threads(), time.time()
    per_job = max(1, (os.cpu_count() or 1) // jobs)  # the local CPUs, split between the parallel seeds
    try:
        if jobs == 1:
            for seed in seeds:
                evaluate_seed(spec, seed, out_dir, frozen, per_job, data_cache)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent may hold torch threads, and a forked OpenMP pool can deadlock
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                for f in [pool.submit(evaluate_seed, spec, s, out_dir, frozen, per_job, data_cache) for s in seeds]:
                    f.result()  # the first failure stops the command; finished results stay for the rerun
    finally:
        torch.set_num_threads(threads)
    print(f"[evaluate] {len(seeds)} seeds done in {time.time() - t_all:.1f} s ({jobs} at a time)", flush=True)
    exp = experiment_for(spec)
    return write_table(spec, exp, out_dir, seeds, method_order(spec, exp))


def evaluate_seed(spec: StudySpec, seed: int, out_dir: Path, frozen: dict[str, Any], threads: int,
                  data_cache: str | None = None) -> None:
    """Every (n, method) of one evaluation seed with ``threads`` torch threads, skipping finished results;
    ``data_cache``: the stage cache directory the experiment keeps preprocessed data in."""
    import torch

    from study.cache import StageCache
    from study.experiments import experiment_for

    torch.set_num_threads(threads)
    exp = experiment_for(spec, data_cache)
    cache = StageCache(out_dir / "cache")
    methods = method_order(spec, exp)
    for n in spec.factors.n:
        todo = [m for m in methods if not _result_path(out_dir, seed, n, m).is_file()]
        if not todo:
            continue
        data_cfg, _ = spec.resolved_config(n, seed)
        task, data = exp.load(data_cfg)
        for method in todo:
            t0 = time.time()
            m_data, cfg = method_config(spec, exp, method, n, seed, frozen)
            res = run_method(exp, method, m_data, cfg, cache, task, data)
            row = {"seed": seed, "n": n, "method": method, "tuned": method in spec.tuned_methods,
                   "params": frozen.get(method, {}).get(str(n), {}).get("params", {}),
                   "validation": _clean(res["validation"]), "test": _clean(res["test"]),
                   "seconds": round(time.time() - t0, 2)}
            _write_json(_result_path(out_dir, seed, n, method), row)
            print(f"[evaluate] seed {seed} n={n} {method}: {spec.metrics[0]}="
                  f"{res['test'].get(spec.metrics[0], math.nan):.4g} ({row['seconds']:.1f} s)", flush=True)


def _result_path(out_dir: Path, seed: int, n: int, method: str) -> Path:
    return out_dir / "results" / f"s{seed}-n{n}-{method}.json"


def write_table(spec: StudySpec, exp: Any, out_dir: Path, seeds: list[int], methods: list[str]) -> str:
    """table.md / table.json from the result files of ``seeds``: per metric and n, study.statistics.compare."""
    from study.statistics import compare, render_markdown, rows_by_n

    rows = []
    for seed in seeds:
        for n in spec.factors.n:
            for m in methods:
                r = json.loads(_result_path(out_dir, seed, n, m).read_text())
                rows.append({"n": n, "method": m, "seed": seed, **r["test"]})
    metrics = [*spec.metrics, *(m for m in EXTRA_METRICS if m in exp.metrics and m not in spec.metrics)]
    directions = {**exp.metrics, **dict(zip(spec.metrics, spec.directions))}
    md = [f"# {spec.name}: final table on evaluation seeds {seeds} (test draw)", "",
          f"Development seeds (tuning, validation draws): {list(spec.factors.seeds)}. Tuned methods "
          f"({', '.join(spec.tuned_methods)}) run their best configuration per n, frozen in `frozen.json`; "
          f"the others run the spec's fixed configuration. {spec.budget.trials_per_n} trials per n per tuned "
          "method.", ""]
    out: dict[str, Any] = {"study": spec.name, "evaluation_seeds": seeds, "development_seeds": list(spec.factors.seeds),
                           "methods": methods, "tuned": list(spec.tuned_methods), "comparisons": []}
    for metric in metrics:
        per_n = rows_by_n(rows, metric)
        comps = [compare({m: per_n[n][m] for m in methods}, metric=metric, n=n, direction=directions[metric])
                 for n in spec.factors.n]
        md += [f"## {metric}", "", render_markdown(comps)]
        out["comparisons"] += [c.to_dict() for c in comps]
    text = "\n".join(md)
    write_text(out_dir / "table.md", text)
    _write_json(out_dir / "table.json", out)
    return text + f"\nresults: {out_dir}\n"


__all__ = ["evaluate_study", "freeze", "frozen_issues", "method_order", "parse_seeds", "read_frozen", "run_method",
           "write_table"]
