"""``study.estimate_gpu``: the --dry-run GPU-hours of a spec from the rates measured in bench/results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from study.estimate_gpu import RESULTS, gpu_estimate
from study.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "search_spaces" / "ecg_paper.yaml"


def _hours(text: str, part: str) -> float:
    """The hours of a part's line: '<part> <k> x <each> h = <all> h' (or 'total <all> GPU-hours')."""
    line = next(x for x in text.splitlines() if x.strip().startswith(part))
    return float(re.search(r"= ([\d.e+-]+) h" if part != "total" else r"total\s+([\d.e+-]+) GPU", line).group(1))


def _spec(tmp_path: Path, **fixed: dict) -> object:
    d = yaml.safe_load(PAPER.read_text())
    for section, values in fixed.items():
        d["fixed"][section].update(values)
    p = tmp_path / "ecg.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return load_spec(p)


def _rates(tmp_path: Path, sssd_steps_per_s: float) -> Path:
    """A copy of the measured fp32 rates with the SSSD training rate replaced."""
    d = json.loads((RESULTS / "gpu_check.json").read_text())
    d["worker"]["source"]["steps_per_s"] = sssd_steps_per_s
    out = tmp_path / "results"
    out.mkdir()
    (out / "gpu_check.json").write_text(json.dumps(d))
    return out


def test_paper_spec_source_hours_follow_the_measured_rate(tmp_path):
    spec = load_spec(PAPER)
    text = gpu_estimate(spec)
    rate = json.loads((RESULTS / "gpu_check.json").read_text())["worker"]["source"]["steps_per_s"]
    # guards the arithmetic of the measured configuration (256 x 36, batch 32: scale 1): steps / rate per seed
    assert abs(_hours(text, "source") - 3 * 100000 / rate / 3600) < 0.01 * _hours(text, "source")
    # guards that the parts add up to the total
    parts = sum(_hours(text, p) for p in ("source", "per unit", "per trial"))
    assert abs(_hours(text, "total") - parts) <= 0.01 * parts
    # guards that the rate is read from the file: half the rate doubles the source hours
    slower = gpu_estimate(spec, _rates(tmp_path, rate / 2))
    assert abs(_hours(slower, "source") / _hours(text, "source") - 2) < 0.01


def test_work_scaling_and_missing_rates(tmp_path):
    half = gpu_estimate(_spec(tmp_path, source={"depth": 18}))
    # guards the first-order work scaling: half the depth, half the source hours
    assert abs(_hours(half, "source") / _hours(gpu_estimate(load_spec(PAPER)), "source") - 0.5) < 0.01
    # guards the precision switch: bf16 reads its own file; a missing file is named, not a traceback
    text = gpu_estimate(_spec(tmp_path, source={"precision": "bf16"}), tmp_path)
    assert "gpu_check_bf16.json is missing" in text
    # guards the GMM specs (mlp nets): no rate, said so
    smoke = load_spec(ROOT / "search_spaces" / "gmm_smoke.yaml")
    assert "no GPU rate measured for source arch 'mlp'" in gpu_estimate(smoke)
