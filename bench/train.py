"""Benchmark: pre-training throughput of Ray Train + DeepSpeed against a bare single-process loop.

Same model (the ``small`` preset, ~5.5 M parameters), same shards (shapes-world clips, 64×64 px, 17 frames → 5
latent frames of 8×8, small video tokenizer), same global batch (``--batch`` sequences per optimizer step), same
AR-DF batches (:func:`lumos.ardf.make_batch`), same AdamW:

* ``bare`` — one process, ``torch.set_num_threads(2)``, plain PyTorch loop;
* ``ray zero-N`` — ``workflows.pretrain`` (2 Ray Train workers × 1 thread, DeepSpeed ZeRO stage N, gloo), tokens/s
  from the run's own metrics (steps after ``--warmup``), so Ray/worker start-up is reported separately;
  ``--layouts 2x1,1x2`` adds other worker × thread layouts (``ray zero-N W×T``).

MFU for both against the fp32 matmul peak (2 threads) the training runs divide by: the best this machine has shown
(:func:`workflows.training.run_metrics.cpu_peak_flops`), this run's 2-second measurement included; the table's header
gives both. ``--amp-bf16`` also runs every path in bf16 autocast with fp32 weights (``engine.precision=amp_bf16``;
the bare loop under ``torch.autocast("cpu", bf16)``), whose MFU divides by the bf16 matmul peak, measured alike.
Rounds alternate (bare, ray, bare, ray, ...) so that load from other processes hits both alike; the 1-minute load
average is recorded per point.

    .venv/bin/python bench/train.py                   # ~10-20 min on 2 busy cores
    .venv/bin/python bench/train.py --rounds 1 --steps 4 --variants 2
    .venv/bin/python bench/train.py --rounds 1 --variants 0 --layouts 2x1,1x2 --out bench/results/train_layouts.json
    .venv/bin/python bench/train.py --rounds 1 --variants 0 --layouts 1x2 --compile --amp-bf16 --warmup 8 --steps 12

Prints a Markdown table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT / "tests" / "workflows"))  # pretrain_helpers: shapes shards writer
sys.path.insert(1, str(ROOT / "bench"))  # goal_gpu: the bare training loop
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
CONFIG = str(ROOT / "workflows" / "configs" / "pretrain_small.yaml")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16, help="global batch (sequences per optimizer step)")
    p.add_argument("--steps", type=int, default=6, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="alternating bare/ray rounds")
    p.add_argument("--variants", default="2,0", help="comma-separated ZeRO stages of the Ray runs")
    p.add_argument("--layouts", default="2x1", help="comma-separated Ray layouts, workers x threads (default 2x1)")
    p.add_argument("--compile", action="store_true",
                   help="also run every path with engine.compile=true (torch.compile of the decoder layers)")
    p.add_argument("--amp-bf16", action="store_true",
                   help="also run every path with engine.precision=amp_bf16 (bf16 autocast, fp32 weights)")
    p.add_argument("--clips", type=int, default=48, help="clips in the shard dataset")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    return p.parse_args()


def load_avg() -> float:
    return os.getloadavg()[0]


def make_shards(root: str, clips: int) -> str:
    from pretrain_helpers import write_shards

    return write_shards(root, videos=clips, images=0, size=64, frames=17, fps=8, files=2, preset="small")


def config(shards: str, storage: str, name: str, batch: int, steps: int, stage: int, layout: str = "2x1",
           compiled: bool = False, precision: str = "fp32"):
    """The run's config; ``layout``: Ray Train workers x torch threads each (the global batch split over them);
    ``compiled``: ``engine.compile``; ``precision``: ``engine.precision``."""
    from workflows.training.train_config import load_pretrain_config

    workers, threads = (int(x) for x in layout.split("x"))
    return load_pretrain_config(CONFIG, [
        f"data.shards={shards}", f"checkpoint.storage={storage}", f"checkpoint.name={name}",
        f"ray.num_workers={workers}", f"ray.threads_per_worker={threads}",
        f"data.micro_batch_size={batch // workers}", f"optim.max_steps={steps}", f"engine.zero_stage={stage}",
        "metrics.every_steps=1", f"checkpoint.every_steps={steps}", "optim.warmup_steps=0", "metrics.plots=false",
        "metrics.tensorboard=false", f"engine.compile={str(compiled).lower()}",
        f"engine.precision={precision}"])


def bare_run(cfg, steps: int, warmup: int) -> dict:
    """The same training in one process with 2 threads (``goal_gpu``'s bare loop on the CPU, batches built in the
    loop): tokens/s over the steps after ``warmup``."""
    import torch
    from goal_gpu import run_stage, stage_samples

    from lumos.loss import ardf_loss
    from lumos.model import LumosModel
    from workflows.training.engine import compile_blocks

    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    model = LumosModel(cfg.model.build())
    if cfg.engine.compile:
        compile_blocks(model, on_gpu=False)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, micro_batch_size=2 * cfg.data.micro_batch_size))
    run = run_stage(cfg, model, ardf_loss, stage_samples(cfg, model.cfg.temporal_compression), warmup + steps,
                    torch.device("cpu"), 10**9, "bare", workers=0, timed_from=warmup,
                    bf16=cfg.engine.precision == "amp_bf16")
    return {"tokens_per_s": run["timed_tokens_per_s"], "step_s": run["step_s"],
            "tokens_per_step": run["timed_tokens_per_s"] * run["step_s"], "loss_last": run["losses"][-1][1]}


def ray_run(cfg, steps: int, warmup: int) -> dict:
    """``workflows.pretrain`` end to end; throughput from its metrics records after ``warmup`` steps."""
    from workflows.pretrain import run_pretraining
    from workflows.training.run_metrics import read_metrics

    t0 = time.perf_counter()
    res = run_pretraining(cfg)
    wall = time.perf_counter() - t0
    recs = [r for r in read_metrics(res.run_uri) if r["step"] > warmup]
    busy = sum(r["window_s"] for r in recs)
    return {"tokens_per_s": sum(r["tokens"] for r in recs) / busy, "step_s": busy / len(recs),
            "tokens_per_step": statistics.mean(r["tokens"] for r in recs),
            "data_s_per_step": statistics.mean(r["data_s"] for r in recs), "mfu_reported": recs[-1]["mfu"],
            "loss_last": recs[-1]["loss"], "wall_s": wall, "overhead_s": wall - busy}


def flops_per_token(cfg, tokens_per_seq: float) -> float:
    from lumos.flops import flops_per_token as fpt

    return fpt(cfg.model.build(), tokens_per_seq)


def main() -> None:
    args = parse_args()
    import ray

    from tokenize_jobs.ray_runtime import DEEPSPEED_ENV, start_ray
    from workflows.training.run_metrics import cpu_peak_flops, measure_matmul_peak, peak_dtype

    stages = [int(s) for s in args.variants.split(",") if s]
    layouts = [v for v in args.layouts.split(",") if v]
    bad = [v for v in layouts if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", v)]
    if bad:
        raise SystemExit(f"--layouts: {bad[0]!r} is not WORKERSxTHREADS (e.g. 2x1)")
    root = tempfile.mkdtemp(prefix="lumos-bench-train-")
    shards = make_shards(root, args.clips)
    precisions = ("fp32", "amp_bf16") if args.amp_bf16 else ("fp32",)
    peaks_now = {p: measure_matmul_peak(threads=2, seconds=2.0, dtype=peak_dtype(p)) for p in precisions}
    peaks = {p: cpu_peak_flops(threads=2, measured=peaks_now[p], dtype=peak_dtype(p)) for p in precisions}
    start_ray(num_cpus=4, include_dashboard=False, object_store_memory=600 * 2**20,
              env_vars={k: os.environ[k] for k in DEEPSPEED_ENV})
    points = []
    total = args.warmup + args.steps
    modes = [(c, p) for p in precisions for c in ((False, True) if args.compile else (False,))]
    ray_paths = [(stage, layout) for stage in stages for layout in layouts]
    for r in range(args.rounds):
        start = len(points)
        for compiled, prec in modes:
            tag = (" compiled" if compiled else "") + (" amp_bf16" if prec == "amp_bf16" else "")
            cfg = config(shards, f"{root}/runs", f"bare-{r}{tag.replace(' ', '-')}", args.batch, total, 2,
                         compiled=compiled, precision=prec)
            points.append({"path": "bare" + tag, "round": r, "load_avg_1m": load_avg(), "precision": prec,
                           **bare_run(cfg, args.steps, args.warmup)})
            for stage, layout in ray_paths:
                cfg = config(shards, f"{root}/runs", f"ray-z{stage}-{layout}-{r}{tag.replace(' ', '-')}",
                             args.batch, total, stage, layout, compiled, prec)
                label = f"ray zero-{stage}" + (f" {layout.replace('x', '×')}" if layouts != ["2x1"] else "") + tag
                points.append({"path": label, "round": r, "load_avg_1m": load_avg(), "precision": prec,
                               **ray_run(cfg, args.steps, args.warmup)})
        print(json.dumps(points[start:], indent=None), flush=True)
    ray.shutdown()
    cfg = config(shards, root, "x", args.batch, total, 2)
    report(points, peaks, peaks_now, cfg, args)


def report(points: list[dict], peaks: dict[str, float], peaks_now: dict[str, float], cfg, args) -> None:
    paths = sorted({p["path"] for p in points}, key=lambda s: (not s.startswith("bare"), s))
    bare = statistics.median(p["tokens_per_s"] for p in points if p["path"] == "bare")
    rows = []
    for path in paths:
        pts = [p for p in points if p["path"] == path]
        tps = statistics.median(p["tokens_per_s"] for p in pts)
        seq = statistics.mean(p["tokens_per_step"] for p in pts) / args.batch
        mfu = tps * flops_per_token(cfg, seq) / peaks[pts[0].get("precision", "fp32")]
        rows.append({"path": path, "tokens_per_s": tps, "vs_bare": tps / bare, "step_s": statistics.median(
            p["step_s"] for p in pts), "mfu": mfu, "data_s_per_step": statistics.mean(
            p.get("data_s_per_step", float("nan")) for p in pts), "overhead_s": statistics.mean(
            p.get("overhead_s", 0.0) for p in pts), "load_avg_1m": statistics.mean(p["load_avg_1m"] for p in pts)})
    print(f"\nsmall preset, global batch {args.batch} sequences (~{seq:.0f} tokens each), {args.steps} measured steps "
          f"× {args.rounds} rounds; MFU against the best matmul peak (2 threads) this machine has shown, "
          + ", ".join(f"{p} {peaks[p] / 1e9:.0f} GFLOP/s (this run measured {peaks_now[p] / 1e9:.0f})"
                      for p in peaks) + "\n")
    print("| path | tokens/s | vs bare | s/step | MFU | data s/step | start-up + checkpoint s | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['tokens_per_s']:,.0f} | {r['vs_bare']:.2f}× | {r['step_s']:.2f} | "
              f"{100 * r['mfu']:.1f}% | {r['data_s_per_step']:.3f} | {r['overhead_s']:.0f} | "
              f"{r['load_avg_1m']:.1f} |")
    out = {"config": vars(args), "matmul_peak_flops": peaks["fp32"], "matmul_peak_flops_this_run": peaks_now["fp32"],
           "matmul_peak_flops_by_precision": peaks, "matmul_peak_flops_this_run_by_precision": peaks_now,
           "summary": rows,
           "points": points}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
