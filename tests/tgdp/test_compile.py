"""``ScoreConfig.compile``: the torch.compile'd training step of the SSSD equals the eager one on CPU."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from tgdp.config import ScoreConfig, TGDPConfig, config_hash
from tgdp.reporter import MemoryReporter
from tgdp.schedules import VPSchedule
from tgdp.stages import build_score, train_score


def _cpu_compiler_missing() -> str | None:
    """Why inductor cannot build CPU kernels here (no C++ compiler on PATH), else None."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU needs a C++ compiler (g++, c++ or clang++); none on PATH"
    return None


def test_compile_is_left_out_of_cache_keys():
    # guards the cache: a compiled run reuses the eager run's source model (same computation), and keys
    # written before the field existed stay valid (the hash of the default config did not move)
    cfg = TGDPConfig()
    on = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, compile=True))
    assert config_hash(on) == config_hash(cfg) and config_hash(on.source) == config_hash(cfg.source)
    # guards that only EXECUTION_ONLY fields are dropped: a computed field still changes the key
    assert config_hash(dataclasses.replace(cfg.source, width=cfg.source.width + 1)) != config_hash(cfg.source)


@pytest.mark.slow  # inductor compiles the SSSD forward and backward: minutes cold on 2 loaded cores
@pytest.mark.skipif(_cpu_compiler_missing() is not None, reason=_cpu_compiler_missing() or "")
def test_compiled_sssd_training_equals_eager():
    """A small conditional SSSD: the compiled net's eps and gradients equal the eager ones, and a few AdamW
    steps of ``train_score`` with ``compile=True`` follow the eager loss trajectory."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 8, 32, generator=g)
    y = (torch.rand(8, 3, generator=g) > 0.5).float()
    t = torch.rand(8, generator=g).clamp_min(1e-3)
    cfg = ScoreConfig(arch="sssd", width=8, depth=2, steps=4, report_every=1, batch_size=4, ema=0.5,
                      conditional=True)
    net = build_score(cfg, (8, 32), 3, VPSchedule())
    for p in net.parameters():  # no zero-initialised output conv: every gradient is non-zero and compared
        torch.nn.init.normal_(p, std=0.2, generator=g)
    compiled = torch.compile(net)
    out_e = net(x, t, y)
    grads_e = torch.autograd.grad(out_e.square().mean(), list(net.parameters()))
    out_c = compiled(x, t, y)
    grads_c = torch.autograd.grad(out_c.square().mean(), list(net.parameters()))
    # guards the compiled forward and backward (inductor fuses and reorders float32 ops: not bit-equal)
    assert torch.allclose(out_c, out_e, rtol=1e-4, atol=1e-5)
    for (name, _), ge, gc in zip(net.named_parameters(), grads_e, grads_c):
        assert torch.allclose(gc, ge, rtol=1e-3, atol=1e-6), name

    runs = {}
    for on in (False, True):
        reporter = MemoryReporter()
        model = train_score(dataclasses.replace(cfg, compile=on), x, y, VPSchedule(), torch.device("cpu"),
                            reporter, stage="source")
        runs[on] = (reporter.history("source", "dsm_loss"), model.state_dict())
    (loss_e, state_e), (loss_c, state_c) = runs[False], runs[True]
    # guards the option end to end: the same loss at every step (weights are not compared: with the zero
    # output conv the early gradients are ~0, and AdamW's g / sqrt(v) turns their float noise into lr-size steps)
    assert len(loss_c) == 4 and torch.allclose(torch.tensor(loss_c), torch.tensor(loss_e), rtol=1e-4, atol=1e-6)
    # guards checkpoints and caches: the returned model has the eager keys (no "_orig_mod." prefix)
    assert state_c.keys() == state_e.keys()
