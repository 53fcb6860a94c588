"""The paper-size SSSD (36 x 256, 8 leads x 1000) on one GPU: fp32 vs TF32 vs bf16 autocast, and a profile.

    python bench/sssd_precision.py [--steps 10] [--out DIR]     # needs CUDA

For each precision: AdamW training steps of the denoising loss at batch 32 (the paper's) and no-grad
evaluations at batch 250 (one sampler batch); steps/s, evaluations/s and peak memory. ``tf32`` is
fp32 with TF32 matmuls allowed (a process-wide switch, so not a config option); ``bf16`` is
``ScoreConfig(precision="bf16")``. Then a torch.profiler table of two fp32 training steps (top CUDA ops).
Results: ``<out>/sssd_precision.json`` and ``<out>/sssd_profile.txt`` (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment  # noqa: E402

BATCH, SAMPLE_BATCH, LEADS, LENGTH, LABELS = 32, 250, 8, 1000, 9


def _model(precision: str):
    from tgdp.ecg_task import PRESETS
    from tgdp.schedules import VPSchedule
    from tgdp.stages import build_score

    cfg = replace(PRESETS["paper"].source, precision="bf16" if precision == "bf16" else "fp32")
    return build_score(cfg, (LEADS, LENGTH), LABELS, VPSchedule()).cuda()


def _inputs(n: int, g):
    import torch

    x = torch.randn(n, LEADS, LENGTH, generator=g).cuda()
    t = (torch.rand(n, generator=g) * 0.99 + 0.01).cuda()
    y = (torch.rand(n, LABELS, generator=g) > 0.7).float().cuda()
    return x, t, y


def measure(variant: str, steps: int) -> dict:
    """``variant``: a precision (fp32-strict, fp32, tf32, bf16), with "+bench" for cudnn.benchmark."""
    import torch

    precision, bench = variant.removesuffix("+bench"), variant.endswith("+bench")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision != "fp32-strict"  # PyTorch's default: on
    torch.backends.cudnn.benchmark = bench
    g = torch.Generator().manual_seed(0)
    model = _model(precision).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    x, t, y = _inputs(BATCH, g)
    eps = torch.randn_like(x)

    def step():
        loss = (model(x, t, y) - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    train_s = (time.perf_counter() - t0) / steps
    train_peak = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    xs, ts, ys = _inputs(SAMPLE_BATCH, g)
    with torch.no_grad():
        model(xs, ts, ys)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(xs, ts, ys)
        torch.cuda.synchronize()
    eval_s = (time.perf_counter() - t0) / steps
    res = {"train_step_s": train_s, "train_steps_per_s": 1 / train_s, "train_peak_gib": train_peak,
           "final_loss": loss.item(), "eval_batch_s": eval_s,
           "eval_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "out_finite": bool(torch.isfinite(out).all())}
    del model, opt
    torch.cuda.empty_cache()
    return res


def profile(steps: int = 2) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = _model("fp32").train()
    x, t, y = _inputs(BATCH, torch.Generator().manual_seed(0))
    model(x, t, y).square().mean().backward()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            model(x, t, y).square().mean().backward()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32+bench", "fp32-strict", "tf32", "tf32+bench", "bf16",
                                                      "bf16+bench"], help="the first is the baseline of the ratios")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    args = ap.parse_args()
    import torch

    results = {v: measure(v, args.steps) for v in args.variants}
    base = results[args.variants[0]]
    for r in results.values():
        r["train_speedup"] = base["train_step_s"] / r["train_step_s"]
        r["eval_speedup"] = base["eval_batch_s"] / r["eval_batch_s"]
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"name": "sssd_precision", "device": torch.cuda.get_device_name(),
               "inputs": {"model": "PRESETS['paper'].source (SSSD 256 x 36, gaussian skip, 9 labels)",
                          "train_batch": BATCH, "eval_batch": SAMPLE_BATCH, "length": LENGTH, "steps": args.steps,
                          "baseline": args.variants[0]},
               "environment": environment(), "results": results}
    (args.out / "sssd_precision.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if args.profile:
        (args.out / "sssd_profile.txt").write_text(profile())
    for p, r in results.items():
        print(f"{p}: train {r['train_steps_per_s']:.2f} steps/s (x{r['train_speedup']:.2f}, peak "
              f"{r['train_peak_gib']:.1f} GiB); eval batch {SAMPLE_BATCH} {r['eval_batch_s'] * 1e3:.0f} ms "
              f"(x{r['eval_speedup']:.2f}, peak {r['eval_peak_gib']:.1f} GiB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
