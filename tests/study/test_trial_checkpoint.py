"""study/ray_reporter.py: a damaged latest trial checkpoint falls back to the previous intact one (logged)."""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("ray")
from ray.train import Checkpoint  # noqa: E402

from study.ray_reporter import CKPT_FILE, load_checkpoint_state  # noqa: E402


def _run(tmp_path, epochs=(1, 2, 3)):
    dirs = []
    for e in epochs:
        d = tmp_path / "run" / f"checkpoint_2026-11-27_08-00-0{e}.000000"
        d.mkdir(parents=True)
        torch.save({"rows": [{"stage": "guidance", "epoch": e}], "states": {"guidance": {"step": e}}}, d / CKPT_FILE)
        dirs.append(d)
    return dirs


def _truncate(d):
    p = d / CKPT_FILE
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_byte(d):
    p = d / CKPT_FILE
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    p.write_bytes(bytes(raw))


def test_intact_latest_checkpoint_is_used_as_is(tmp_path, caplog):
    dirs = _run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="study.trial"):
        state = load_checkpoint_state(Checkpoint.from_directory(str(dirs[-1])))
    assert state["states"]["guidance"]["step"] == 3 and not caplog.records


@pytest.mark.parametrize("damage", [_truncate, _flip_byte, lambda d: (d / CKPT_FILE).unlink()],
                         ids=["truncated", "flipped-byte", "missing"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
    dirs = _run(tmp_path)
    damage(dirs[-1])
    with caplog.at_level(logging.WARNING, logger="study.trial"):
        state = load_checkpoint_state(Checkpoint.from_directory(str(dirs[-1])))
    assert state["states"]["guidance"]["step"] == 2  # the newest intact one, not the oldest
    text = caplog.text
    assert f"corrupt checkpoint {dirs[-1]}" in text and f"restored from the previous checkpoint {dirs[1]}" in text


def test_no_intact_checkpoint_starts_over(tmp_path, caplog):
    dirs = _run(tmp_path, epochs=(1, 2))
    for d in dirs:
        _truncate(d)
    with caplog.at_level(logging.WARNING, logger="study.trial"):
        assert load_checkpoint_state(Checkpoint.from_directory(str(dirs[-1]))) is None
    assert "no intact checkpoint left" in caplog.text
