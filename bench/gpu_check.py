"""GPU check: the paper-size SSSD (36 x 256) trained and guided-sampled under Ray Train with use_gpu.

    .venv/bin/python bench/gpu_check.py --prepare            # here (CPU): simulated ECG data -> .gpucheck/
    python bench/gpu_check.py [--precision bf16] [--out DIR] # on a GPU machine (carry .gpucheck)
    .venv/bin/python bench/gpu_check.py --cpu --preset micro --steps 2 --samples 8   # dry run of the script

One ``TorchTrainer(num_workers=1, use_gpu=True)`` run (NCCL process group) runs the project's own stages
with the ``paper`` preset widths on simulated records (8 leads x 1000 samples, 9 labels, normalised as
the experiment does): stage A ``train_score`` (SSSD 36 x 256, batch 32), the domain classifier, the time
classifier and ``train_guidance`` with both regularisers on (the cycle term and the consistency term's
double backward), then 250 guided and 250 unguided samples with DPM-Solver-2 (25 steps). Budgets are cut
to a few dozen steps: the point is the CUDA path, its step rate and its peak memory, not a fitted model.
Results: ``<out>/gpu_check.json`` (and ``bench/results/gpu_check.json`` when --out is not given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, environment, write_result  # noqa: E402

DATA = ROOT / ".gpucheck" / "data.pt"


def prepare(path: Path) -> None:
    """The simulated ECG task (default sizes, n = 100) as a weights-only tensor file (fp16 to travel light)."""
    import torch

    from tgdp.ecg_config import ECGDataConfig
    from tgdp.ecg_task import load_ecg_task

    task = load_ecg_task(ECGDataConfig(simulate=True, n=100))
    data = {k: (v.half() if k.endswith("_x") else v) for k, v in task.data.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    print({k: tuple(v.shape) for k, v in data.items()}, "->", path)


def _timed(device, fn):
    """(result, seconds, peak GiB allocated; NaN on CPU) of fn() on ``device``."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0, (torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"))


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from tgdp import sampling, stages
    from tgdp.ecg_task import PRESETS
    from tgdp.reporter import MemoryReporter
    from tgdp.schedules import VPSchedule

    device = ray.train.torch.get_device()
    if config["use_gpu"] and device.type != "cuda":
        raise RuntimeError(f"Ray Train gave this worker {device}, not a GPU")
    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)  # the process group Ray Train set up must work on CUDA tensors
    steps = config["steps"]
    data = {k: (v.float() if k.endswith("_x") else v) for k, v in
            torch.load(config["data"], weights_only=True).items()}
    cfg = PRESETS[config["preset"]]
    cfg = replace(cfg, source=replace(cfg.source, precision=config["precision"]))
    schedule, shape = VPSchedule(), tuple(data["source_x"].shape[1:])
    rep = MemoryReporter()
    res: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "backend": dist.get_backend(),
                 "world_size": dist.get_world_size(), "all_reduce_probe": probe.item(),
                 "data": {k: list(v.shape) for k, v in data.items()}}

    def score(n: int, tag: str):
        return stages.train_score(replace(cfg.source, steps=n, report_every=n), data["source_x"], data["source_y"],
                                  schedule, device, rep, stage=tag)

    score(3, "warmup")  # cuFFT plans, allocator, kernels
    source, s, mem = _timed(device, lambda: score(steps, "source"))
    params = sum(p.numel() for p in source.parameters())
    res["source"] = {"config": f"sssd {cfg.source.width} x {cfg.source.depth}, batch {cfg.source.batch_size}, "
                               f"{cfg.source.precision}",
                     "params": params, "steps": steps, "seconds": s, "steps_per_s": steps / s, "peak_gib": mem}

    clf_cfg = replace(cfg.classifier, steps=steps, report_every=steps)
    classifier, s, mem = _timed(device, lambda: stages.train_classifier(clf_cfg, data, device, rep))
    res["classifier"] = {"steps": steps, "steps_per_s": steps / s, "peak_gib": mem}
    tc_cfg = replace(cfg.time_classifier, steps=steps, report_every=steps)
    time_clf, s, mem = _timed(device, lambda: stages.train_time_classifier(tc_cfg, data, schedule, device, rep))
    res["time_classifier"] = {"steps": steps, "steps_per_s": steps / s, "peak_gib": mem}

    log_ratio, target_log_ratio = (stages.classifier_log_ratio(classifier, data[f"{d}_x"].to(device),
                                                               data[f"{d}_y"]) for d in ("source", "target"))
    g_cfg = replace(cfg.guidance, epochs=config["guidance_epochs"], eta_cycle=1.0, eta_consistency=0.1)
    guidance, s, mem = _timed(device, lambda: stages.train_guidance(
        g_cfg, data, log_ratio, schedule, device, rep, score_model=source, time_classifier=time_clf,
        target_log_ratio=target_log_ratio))
    g_steps = g_cfg.epochs * (data["source_x"].shape[0] // g_cfg.batch_size)
    res["guidance"] = {"config": f"cnn {g_cfg.width} x {g_cfg.depth}, batch {g_cfg.batch_size}, eta_cycle 1, "
                                 f"eta_consistency 0.1", "epochs": g_cfg.epochs, "approx_steps": g_steps,
                       "seconds": s, "steps_per_s": g_steps / s, "peak_gib": mem}

    sample_cfg = replace(cfg.sample, num_samples=config["samples"], batch_size=config["samples"])
    labels = sampling.label_draw(data, sample_cfg.num_samples, sample_cfg.seed)
    for name, fn in (("guided", lambda: sampling.tgdp_samples(sample_cfg, source, guidance, schedule, device, shape,
                                                                 labels)),
                     ("unguided", lambda: sampling.model_samples(sample_cfg, source, schedule, device, shape, labels))):
        x, s, mem = _timed(device, fn)
        if tuple(x.shape) != (sample_cfg.num_samples, *shape) or not torch.isfinite(x).all():
            raise RuntimeError(f"{name} samples: shape {tuple(x.shape)}, finite {bool(torch.isfinite(x).all())}")
        res[f"sample_{name}"] = {"precision": cfg.source.precision,
                                 "solver": f"{sample_cfg.solver}, {sample_cfg.steps} steps",
                                 "samples": sample_cfg.num_samples, "seconds": s,
                                 "samples_per_s": sample_cfg.num_samples / s, "peak_gib": mem,
                                 "std": float(x.std())}
    Path(config["out"]).write_text(json.dumps(res, indent=1))
    ray.train.report({"done": 1})


def check(args: argparse.Namespace) -> dict:
    os.environ.update({"RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"})
    from study.ray_auth import private_token

    private_token()  # token authentication, as a study's local Ray
    import tempfile

    import ray
    import ray.train
    import ray.train.torch

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        worker_out = os.path.join(tmp, "worker.json")
        ray.init(num_cpus=8 if args.use_gpu else 2, num_gpus=int(args.use_gpu), include_dashboard=False)
        try:
            t0 = time.perf_counter()
            ray.train.torch.TorchTrainer(
                _worker,
                train_loop_config={"steps": args.steps, "guidance_epochs": args.guidance_epochs,
                                   "samples": args.samples, "data": str(args.data), "out": worker_out,
                                   "preset": args.preset, "use_gpu": args.use_gpu, "precision": args.precision},
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=args.use_gpu,
                                                       resources_per_worker={"CPU": 4 if args.use_gpu else 1}),
                run_config=ray.train.RunConfig(name="gpu-check", storage_path=tmp),
            ).fit()
            fit_wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
        worker = json.loads(Path(worker_out).read_text())
    return {"name": "gpu_check",
            "inputs": {"preset": args.preset, "steps": args.steps, "guidance_epochs": args.guidance_epochs,
                       "samples": args.samples, "workers": 1, "use_gpu": args.use_gpu,
                       "precision": args.precision},
            "environment": environment(), "fit_wall_s": fit_wall, "worker": worker,
            "goal": "none stated (the GPU path runs; step rate and peak memory recorded)", "pass": None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="write the simulated data file and exit (CPU)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=int, default=40, help="steps of the source model and of each classifier")
    ap.add_argument("--guidance-epochs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=250, help="samples per sampler run (one batch)")
    ap.add_argument("--preset", default="paper", help="tgdp.ecg_task.PRESETS entry (cpu/micro: dry runs)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the source model's precision")
    ap.add_argument("--cpu", dest="use_gpu", action="store_false", help="dry run without a GPU (use_gpu=False)")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json (default bench/results)")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.data)
        return 0
    payload = check(args)
    if args.out is None:
        path = write_result("gpu_check", payload)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "gpu_check.json"
        path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    w = payload["worker"]
    print(f"gpu_check on {w['device']} ({w['backend']}): source {w['source']['steps_per_s']:.2f} steps/s "
          f"(peak {w['source']['peak_gib']:.1f} GiB), guidance {w['guidance']['steps_per_s']:.2f} steps/s "
          f"(peak {w['guidance']['peak_gib']:.1f} GiB), guided sampling {w['sample_guided']['samples_per_s']:.1f} "
          f"samples/s (peak {w['sample_guided']['peak_gib']:.1f} GiB) -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
