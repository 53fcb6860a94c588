"""The ``arrays`` experiment's data layer (``tgdp.data.arrays``) and experiment object, without Ray.

Fixtures are written into ``tmp_path`` at test time (no binary files in the repository). The CLI-level bad
inputs (exit 2, nothing written) are rows of tests/study/test_bad_input.py; here each loader error is checked
for naming its key and file, and the split / scaling / label rules are checked on the arrays themselves.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tgdp.data.arrays import (
    ArraysConfig, ArraysDataError, Standardizer, check_arrays, fingerprint, load_arrays, resolve_paths, split_rows,
)

ROOT = Path(__file__).resolve().parents[2]
ARRAYS_SMOKE = ROOT / "search_spaces" / "arrays_smoke.yaml"


def write_arrays(folder: Path, *, m: int = 400, rows: int = 300, d: int = 3, labels: bool = False,
                 seed: int = 0) -> dict[str, str]:
    """Source (m, d) and target (rows, d) Gaussian rows as .npz (x, and y in {0, 1, 2} when ``labels``);
    returns the spec's data section with their absolute paths."""
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for name, k, shift in (("source", m, 0.0), ("target", rows, 1.0)):
        arrays = {"x": g.normal(size=(k, d)) * (1 + np.arange(d)) + shift}
        if labels:
            arrays["y"] = g.integers(0, 3, k)
        np.savez(folder / f"{name}.npz", **arrays)
    out = {"source": str(folder / "source.npz"), "target": str(folder / "target.npz")}
    return {**out, "label_key": "y"} if labels else out


def arrays_spec(data: dict, **changes) -> dict:
    """search_spaces/arrays_smoke.yaml as a dict with ``data`` replaced and top-level keys changed."""
    d = yaml.safe_load(ARRAYS_SMOKE.read_text())
    d["data"] = {**{k: v for k, v in d["data"].items() if k in ("val", "test")}, **data}
    d.update(changes)
    return d


def demo_snippet() -> str:
    """The Python lines in arrays_smoke.yaml's header that write data/arrays_demo/ (run as the doc says)."""
    lines = ARRAYS_SMOKE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   import numpy"))
    return "\n".join(line[4:] for line in lines[start:] if line.startswith("#   "))


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    return write_arrays(tmp_path / "arrays")


@pytest.fixture()
def labelled(tmp_path: Path) -> dict[str, str]:
    return write_arrays(tmp_path / "labelled", labels=True)


def cfg_of(data: dict, **kw) -> ArraysConfig:
    return ArraysConfig(**{"val": 50, "test": 60, "n": 40, **data, **kw})


# --- split ------------------------------------------------------------------------------------------------

def test_split_is_disjoint_seeded_and_nested_across_n(files):
    a = load_arrays(cfg_of(files, n=40, seed=3))
    rows = [set(a.split[s].tolist()) for s in ("train", "val", "test")]
    assert [len(r) for r in rows] == [40, 50, 60]  # the sizes asked for
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])  # disjoint
    again, other = load_arrays(cfg_of(files, n=40, seed=3)), load_arrays(cfg_of(files, n=40, seed=4))
    assert all(np.array_equal(a.split[s], again.split[s]) for s in a.split)  # a pure function of the seed
    assert not np.array_equal(a.split["val"], other.split["val"])  # another seed, another split
    big = load_arrays(cfg_of(files, n=100, seed=3))
    # n is the only thing that changes across n: the same held-out rows, a larger n's training rows extend a smaller's
    assert np.array_equal(big.split["val"], a.split["val"]) and np.array_equal(big.split["test"], a.split["test"])
    assert np.array_equal(big.split["train"][:40], a.split["train"])
    raw = np.load(files["target"])["x"]
    assert torch.allclose(a.test_x, a.scaler.apply(raw[a.split["test"]]))  # the test rows are those rows


def test_split_fractions_round_against_the_target_rows(files):
    info, _ = check_arrays(cfg_of(files, val=0.1, test=0.25))
    assert (info.val, info.test, info.target_rows) == (30, 75, 300)  # of 300 target rows
    assert split_rows(10, 3, 2, 1, seed=0)["train"].size == 3


# --- standardisation --------------------------------------------------------------------------------------

def test_standardisation_is_fitted_on_source_rows_only(files, tmp_path):
    task = load_arrays(cfg_of(files))
    xs = np.load(files["source"])["x"]
    assert torch.allclose(task.data["source_x"].mean(0), torch.zeros(3), atol=1e-5)  # source: zero mean
    assert torch.allclose(task.data["source_x"].std(0, unbiased=False), torch.ones(3), atol=1e-4)  # unit sd
    assert np.allclose(task.scaler.mean, xs.mean(0)) and np.allclose(task.scaler.std, xs.std(0))
    # no target row enters the statistics: different target rows leave the scaler unchanged
    moved = write_arrays(tmp_path / "moved", seed=0)
    t = np.load(moved["target"])["x"] * 10
    np.savez(moved["target"], x=t)
    assert np.array_equal(load_arrays(cfg_of(moved)).scaler.mean, task.scaler.mean)
    back = task.scaler.invert(task.data["source_x"])  # invert maps back to the file's units
    assert torch.allclose(back, torch.as_tensor(xs), atol=1e-4)


def test_standardize_off_and_constant_columns():
    x = np.stack([np.arange(5.0), np.full(5, 7.0)], 1)
    s = Standardizer.fit(x)
    assert s.std[1] == 1.0  # a constant column keeps scale 1 (no division by 0)
    off = Standardizer.fit(x, enabled=False)
    assert torch.equal(off.apply(x), torch.as_tensor(x, dtype=torch.float32))  # identity


# --- labels -----------------------------------------------------------------------------------------------

def test_labels_become_one_hot_and_conditional(labelled):
    task = load_arrays(cfg_of(labelled))
    raw = np.load(labelled["target"])["y"]
    assert task.info.num_labels == 3 and task.cfg.conditional
    assert task.data["source_y"].shape == (400, 3) and task.data["target_y"].shape == (40, 3)
    assert torch.equal(task.data["target_y"].argmax(1), torch.as_tensor(raw[task.split["train"]]))  # row-aligned
    assert torch.equal(task.val_y.argmax(1), torch.as_tensor(raw[task.split["val"]]))
    assert (task.data["source_y"].sum(1) == 1).all()  # one-hot


def test_label_values_map_to_dense_one_hot_columns(tmp_path, files):
    np.save(tmp_path / "ys.npy", np.where(np.arange(400) % 2, 100, 7))  # values 7 and 100: two classes
    np.save(tmp_path / "yt.npy", np.full(300, 100))
    task = load_arrays(cfg_of(files, source_labels=str(tmp_path / "ys.npy"), target_labels=str(tmp_path / "yt.npy")))
    assert task.info.classes == (7, 100) and task.data["source_y"].shape == (400, 2)  # not 101 columns
    assert (task.data["target_y"].argmax(1) == 1).all()  # 100 -> column 1, the second smallest value


def test_labels_from_separate_npy_files(tmp_path, labelled):
    for name in ("source", "target"):
        np.save(tmp_path / f"{name}_y.npy", np.load(labelled[name])["y"])
    sep = {"source": labelled["source"], "target": labelled["target"],
           "source_labels": str(tmp_path / "source_y.npy"), "target_labels": str(tmp_path / "target_y.npy")}
    a, b = load_arrays(cfg_of(sep)), load_arrays(cfg_of(labelled))
    assert torch.equal(a.data["target_y"], b.data["target_y"])  # the same labels either way
    assert load_arrays(cfg_of(files_unlabelled := {k: labelled[k] for k in ("source", "target")})).data.get(
        "source_y") is None and not cfg_of(files_unlabelled).conditional  # no labels: unconditional


# --- every bad input: a specific error naming the key and the file ------------------------------------------

def _save(path: Path, array: np.ndarray, **kw) -> str:
    np.save(path, array, **kw) if path.suffix == ".npy" else np.savez(path, **{"x": array, **kw})
    return str(path)


BAD = [  # (id, change(tmp, data) -> data, expected substrings of str(error))
    ("missing-file", lambda t, d: {**d, "source": str(t / "gone.npy")}, ["data.source:", "gone.npy: missing file"]),
    ("not-npy", lambda t, d: {**d, "target": str(_txt(t))}, ["data.target:", "rows.csv: not a .npy or .npz"]),
    ("pickled", lambda t, d: {**d, "source": _save(t / "obj.npy", np.array([{"a": 1}], dtype=object),
                                                   allow_pickle=True)}, ["obj.npy: holds a pickled object array"]),
    ("one-dimensional", lambda t, d: {**d, "source": _save(t / "flat.npy", np.zeros(10))},
     ["data.source:", "flat.npy: shape (10,) is not a 2-D (rows, d) array", "reshape(-1, 1)"]),
    ("strings", lambda t, d: {**d, "target": _save(t / "s.npy", np.array([["a", "b", "c"]]))},
     ["data.target:", "s.npy: non-numeric dtype <U1"]),
    ("nan", lambda t, d: {**d, "target": _save(t / "nan.npy", _with(np.ones((300, 3)), 7, np.nan))},
     ["data.target:", "nan.npy: 1 NaN/inf values in 1 rows (first at row 7)"]),
    ("inf", lambda t, d: {**d, "source": _save(t / "inf.npy", _with(np.ones((300, 3)), 2, np.inf))},
     ["data.source:", "inf.npy: 1 NaN/inf values"]),
    ("dimension-mismatch", lambda t, d: {**d, "target": _save(t / "d4.npy", np.ones((300, 4)))},
     ["data.target:", "d4.npy: 4 columns but the source has 3"]),
    ("npz-key", lambda t, d: {**d, "source_key": "rows"}, ["data.source:", "source.npz: no array 'rows'",
                                                          "one of ['x']"]),
    ("too-few-rows", lambda t, d: {**d, "val": 200, "test": 100}, ["data.target:", "300 rows, fewer than n + val + "
                                                                   "test = 40 + 200 + 100 = 340"]),
    ("labels-length", lambda t, d: {**d, "source_labels": _save(t / "y.npy", np.zeros(5, int)),
                                    "target_labels": _save(t / "yt.npy", np.zeros(300, int))},
     ["data.source_labels:", "y.npy: labels of shape (5,) for 400 source rows"]),
    ("labels-float", lambda t, d: {**d, "source_labels": _save(t / "y.npy", np.zeros(400)),
                                   "target_labels": _save(t / "yt.npy", np.zeros(300, int))},
     ["data.source_labels:", "y.npy: labels of dtype float64 (not integers)"]),
    ("labels-negative", lambda t, d: {**d, "source_labels": _save(t / "y.npy", np.zeros(400, int)),
                                      "target_labels": _save(t / "yt.npy", np.full(300, -1))},
     ["data.target_labels:", "yt.npy: negative label -1 (row 0)"]),
    ("labels-beyond-source", lambda t, d: {**d, "source_labels": _save(t / "y.npy", np.zeros(400, int)),
                                           "target_labels": _save(t / "yt.npy", np.arange(300) % 2)},
     ["data.target_labels:", "yt.npy: target labels [1] do not occur in the source labels", "[0]"]),
    ("labels-one-side", lambda t, d: {**d, "target_labels": _save(t / "yt.npy", np.zeros(300, int))},
     ["data.source_labels:", "no labels for the source rows but target_labels is given"]),
    ("label-key-on-npy", lambda t, d: {**d, "source": _save(t / "plain.npy", np.ones((400, 3))), "label_key": "y"},
     ["data.label_key:", "plain.npy: label_key 'y' given but the source file is not a .npz"]),
]


def _txt(t: Path) -> Path:
    (t / "rows.csv").write_text("1,2,3\n")
    return t / "rows.csv"


def _with(x: np.ndarray, row: int, value: float) -> np.ndarray:
    x[row, 0] = value
    return x


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_names_key_and_file(case, files, tmp_path):
    _, change, expect = case
    with pytest.raises(ArraysDataError) as err:
        load_arrays(cfg_of(change(tmp_path, dict(files))))
    for part in expect:  # the message names the spec key, the file, the problem (and what is allowed)
        assert part in str(err.value), f"{part!r} missing from {err.value}"
    assert "; allowed: " in str(err.value)
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)  # crosses Ray processes intact


def test_config_refuses_bad_sizes_and_missing_paths():
    with pytest.raises(ValueError, match="source: missing file path"):
        ArraysConfig(target="t.npy")
    with pytest.raises(ValueError, match=r"val: invalid value 0; allowed: an integer >= 1 or a fraction"):
        ArraysConfig(source="s.npy", target="t.npy", val=0)


# --- paths and fingerprint ----------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = resolve_paths({"source": "a/s.npy", "target": str(tmp_path / "t.npy"), "val": 5})
    assert out == {"source": str(tmp_path / "a" / "s.npy"), "target": str(tmp_path / "t.npy"), "val": 5}


def test_fingerprint_follows_the_contents(files):
    before = fingerprint(files)
    assert before == fingerprint(cfg_of(files))  # a dict or a config
    np.savez(files["target"], x=np.ones((300, 3)))
    assert fingerprint(files) != before
    with pytest.raises(ArraysDataError, match=r"data.fingerprint: .*source.npz: the files changed"):
        load_arrays(cfg_of(files, fingerprint=before))  # a study's recorded fingerprint is enforced


# --- the experiment object ------------------------------------------------------------------------------------

def test_experiment_evaluates_and_diagnoses_with_untrained_nets(labelled):
    # guards the wiring (shapes, labels, splits, metric names) without training: the e2e study trains
    from study.experiments import get_experiment
    from tgdp import stages
    from tgdp.config import ClassifierConfig, SampleConfig, ScoreConfig, TGDPConfig

    exp = get_experiment("arrays")
    task, data = exp.load(cfg_of(labelled))
    c = ScoreConfig(width=16, depth=1, conditional=True)
    cfg = TGDPConfig(source=c, classifier=ClassifierConfig(conditional=True),
                     sample=SampleConfig(steps=2, num_samples=64, batch_size=64))
    net = stages.build_score(c, (3,), 3, exp.schedule(task)).eval()
    res = exp.evaluate("vanilla", cfg, task, data, torch.device("cpu"), model=net)
    keys = {*exp.metrics, "nonfinite_fraction", "failed"}  # the metrics and the sample accounting
    assert set(res["validation"]) == keys and set(res["test"]) == keys
    assert all(math.isfinite(v) for v in (*res["validation"].values(), *res["test"].values()))
    assert res["validation_samples"].shape == (64, 3)
    assert not torch.equal(res["validation_samples"], res["test_samples"])  # test: fresh sampler noise
    clf = stages.build_classifier(cfg.classifier, (3,), 3)
    diag = exp.diagnostics(task, clf, None, cfg)
    assert set(diag) == {"logr_source", "logr_target_train", "logr_target_val"}
    assert exp.diagnostics(task, None, None, cfg) == {}


def test_sample_metrics_count_non_finite_rows():
    from study.experiments.arrays import sample_metrics

    ref = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    # guards scoring the finite rows up to 1 % non-finite (1 of 201 rows), with the fraction reported
    same = sample_metrics(torch.cat([ref, torch.full((1, 2), math.nan)]), ref)
    assert same["energy_distance"] == pytest.approx(0.0, abs=1e-9) and same["sliced_w2"] == pytest.approx(0.0)
    assert same["nonfinite_fraction"] == 1 / 201 and same["failed"] == 0.0
    # guards "never silently cleaned": 3 of 203 rows (1.5 %) fail the run, with NaN metrics
    bad = sample_metrics(torch.cat([ref, torch.full((3, 2), math.nan)]), ref)
    assert bad["failed"] == 1.0 and math.isnan(bad["energy_distance"]) and math.isnan(bad["sliced_w2"])
    assert sample_metrics(torch.full((4, 2), math.inf), ref)["failed"] == 1.0


def test_spec_stores_absolute_paths_and_fingerprint(tmp_path, monkeypatch):
    from study.spec import dump_spec, parse_spec

    monkeypatch.chdir(tmp_path)
    exec(demo_snippet(), {})  # the header's snippet, run where tgdp-study would run: it writes the demo files
    spec = parse_spec(yaml.safe_load(ARRAYS_SMOKE.read_text()), str(ARRAYS_SMOKE))
    assert spec.data["source"] == str(tmp_path / "data" / "arrays_demo" / "source.npy")
    assert spec.data["fingerprint"] == fingerprint(spec.data)
    again = parse_spec(yaml.safe_load(dump_spec(spec)))  # the study's copy re-validates to the same spec
    assert again == spec


def test_spec_checks_rows_for_the_largest_n_and_conditional_stages(files, labelled):
    from study import SpecError
    from study.spec import parse_spec

    with pytest.raises(SpecError, match=r"data.target: .*300 rows, fewer than n \+ val \+ test = 150 \+ 100 \+ 100"):
        parse_spec(arrays_spec(files, factors={"n": [10, 150]}))
    with pytest.raises(SpecError, match=r"fixed.source.conditional: labels are given"):
        parse_spec(arrays_spec(labelled))
    with pytest.raises(SpecError, match=r"fixed.guidance.conditional: no labels are given"):
        parse_spec(arrays_spec(files, fixed={"guidance": {"conditional": True}}))
    on = {s: {"conditional": True} for s in ("source", "classifier", "time_classifier", "guidance", "vanilla",
                                             "finetune")}
    assert parse_spec(arrays_spec(labelled, fixed=on)).data["label_key"] == "y"


def test_conditional_methods_fit_and_score_on_labelled_arrays(labelled):
    # guards the label plumbing of the conditional version (one-hot labels through every stage, label draws
    # for sampling) in-process; the e2e study (tests/system/test_arrays_study.py) runs the unconditional one
    from study.experiments import get_experiment
    from tgdp import stages
    from tgdp.config import ClassifierConfig, GuidanceConfig, SampleConfig, ScoreConfig, TGDPConfig, \
        TimeClassifierConfig
    from tgdp.methods import get_method
    from tgdp.reporter import MemoryReporter

    exp, on = get_experiment("arrays"), {"conditional": True, "report_every": 20}
    task, data = exp.load(cfg_of(labelled))
    cfg = TGDPConfig(source=ScoreConfig(width=16, depth=1, steps=40, **on),
                     classifier=ClassifierConfig(width=8, depth=1, steps=20, **on),
                     time_classifier=TimeClassifierConfig(width=8, depth=1, steps=20, **on),
                     guidance=GuidanceConfig(width=8, depth=1, epochs=1, batch_size=256, conditional=True),
                     vanilla=ScoreConfig(width=8, depth=1, steps=20, **on),
                     finetune=ScoreConfig(width=8, depth=1, steps=20, **on),
                     sample=SampleConfig(steps=2, num_samples=32, batch_size=32))
    cpu, sched = torch.device("cpu"), exp.schedule(task)
    source = stages.pretrain_source(cfg.source, data, sched, cpu, MemoryReporter())
    for name in exp.methods:
        mc = exp.method_config(name, cfg)
        fit = get_method(name).fit(mc, data, source, sched, cpu, MemoryReporter())
        res = exp.evaluate(name, mc, task, data, cpu, source=source, model=fit.model, h=fit.guidance)
        assert all(math.isfinite(v) for v in res["test"].values()), (name, res["test"])
        if fit.classifier is not None:  # tgdp, tgdp_reg: the joint-ratio classifier's diagnostics
            assert all(math.isfinite(v) for v in exp.diagnostics(task, fit.classifier, fit.guidance, mc).values())
