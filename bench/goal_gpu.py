"""What more compute buys the small model: the goal recipe's curriculum in one process on one CUDA GPU.

The committed ``small`` checkpoint is trained by ``workflows.pretrain --config
workflows/configs/pretrain_small_goal.yaml`` (Ray Train + DeepSpeed on 2 CPU cores, 29.7 M tokens). This probe runs
the same stages — same shards, model, AR-DF settings, code-frequency loss weights, per-stage LR schedule, each stage
starting from the previous stage's weights with a fresh optimizer, as the curriculum does — with the micro-batch
multiplied by ``--batch-scale`` (the recipe's steps: that many times the tokens), in bf16 autocast with the fused
AdamW, in a bare PyTorch loop (GPU machines here have no Ray or DeepSpeed). When the step times measured at the
start say the recipe would overrun ``--budget-s``, every stage's steps shrink by the same factor.

Writes ``<out>/final`` (model, tokenizer and train config like a pre-training run's ``final/``: ``workflows.eval``,
``generate`` and ``serve`` load it) and ``<out>/probe.json`` (per stage: steps, tokens, seconds, tokens/s, losses).

    python bench/goal_gpu.py --out runs/goal-gpu --batch-scale 4 --budget-s 400
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPE = str(ROOT / "workflows" / "configs" / "pretrain_small_goal.yaml")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=RECIPE, help="pre-training recipe with stages (default: the goal recipe)")
    p.add_argument("--out", default=str(ROOT / "runs" / "goal-gpu"), help="output directory (default runs/goal-gpu)")
    p.add_argument("--batch-scale", type=int, default=4, help="micro-batch multiplier (default 4)")
    p.add_argument("--budget-s", type=float, default=None, help="training time budget in seconds (all stages)")
    p.add_argument("--step-factor", type=float, default=None,
                   help="run this fraction of every stage's steps (instead of the one --budget-s gives)")
    p.add_argument("--device", default=None, help="cuda (the default; skipped without one) or cpu, for a dry run")
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage's steps (dry runs)")
    p.add_argument("--tokenizer", default=None, help="video tokenizer copied into final/ (default: the small one)")
    p.add_argument("--text-tokenizer", default=str(ROOT / "lumos" / "assets" / "text_words.json"),
                   help="the shards' text tokenizer, copied into final/ (default: the word-level one)")
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides, e.g. data.shards=DIR")
    return p.parse_args(argv)


def stage_rows(cfg) -> list[dict]:
    """The stage's rows as the Ray Data reader gives them: the image stage keeps stills, then a seeded shuffle."""
    import pyarrow.parquet as pq
    import torch

    from workflows.training.shard_data import SHARD_COLUMNS, shard_files

    rows = [r for f in shard_files(cfg.data.shards) for r in pq.read_table(f, columns=SHARD_COLUMNS).to_pylist()]
    if cfg.data.stage == "image" and not cfg.data.video_first_frame_as_image:
        rows = [r for r in rows if r["grid_t"] == 1]
    if cfg.data.global_shuffle:
        rows = [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))]
    return rows


class BatchStream:
    """Endless ``(batch, tokens)`` built by a background thread, so that batch building overlaps the GPU's work;
    :meth:`close` stops the thread."""

    def __init__(self, cfg, rows: list[dict], layout, temporal: int, depth: int = 16):
        self.cfg, self.rows, self.layout, self.temporal = cfg, rows, layout, temporal
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        import torch

        from lumos.ardf import make_batch
        from workflows.training.shard_data import batch_tokens, epoch_batches

        step, epoch, pin = 0, 0, torch.cuda.is_available()
        while not self.stop.is_set():
            for samples in epoch_batches(self.rows, self.cfg.data, seed=self.cfg.seed, epoch=epoch, rank=0,
                                         temporal_compression=self.temporal):
                g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
                batch = {k: v.pin_memory() if pin else v
                         for k, v in make_batch(samples, self.layout, self.cfg.ardf, g).items()}
                while not self.stop.is_set():
                    try:
                        self.queue.put((batch, batch_tokens(samples)), timeout=0.2)
                        break
                    except queue.Full:
                        pass
                if self.stop.is_set():
                    return
                step += 1
            epoch += 1

    def __next__(self):
        return self.queue.get()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_stage(cfg, model, loss_fn, rows, steps: int, device, log_every: int, label: str) -> dict:
    """``steps`` optimizer steps of one stage (fresh fused AdamW, the stage's LR schedule over ``steps``)."""
    import torch

    from workflows.training.engine import LRSchedule, param_groups

    optim = dataclasses.replace(cfg.optim, max_steps=steps, warmup_steps=min(cfg.optim.warmup_steps, steps // 10))
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.betas),
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(optim))
    stream = BatchStream(cfg, rows, model.cfg.layout, model.cfg.temporal_compression)
    bf16 = device.type == "cuda"
    tokens, losses, t0 = 0, [], time.perf_counter()
    for step in range(steps):
        batch, n = next(stream)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        tokens += n
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append((step + 1, loss.item()))
            dt = time.perf_counter() - t0
            print(f"{label} step {step + 1}/{steps} loss {losses[-1][1]:.4f} {tokens / dt:,.0f} tokens/s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    stream.close()
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "losses": losses, "lr": optim.lr, "micro_batch_size": cfg.data.micro_batch_size}


def step_seconds(cfg, model, loss_fn, rows, device, steps: int = 30) -> float:
    """Seconds per step of this stage's batches, measured on a throw-away copy of the model."""
    probe = copy.deepcopy(model)
    run_stage(cfg, probe, loss_fn, rows, 10, device, 10**9, "warm-up")  # kernels, allocator, pinned buffers
    return run_stage(cfg, probe, loss_fn, rows, steps, device, 10**9, "timing")["seconds"] / steps


def main(argv=None) -> int:
    import torch

    from lumos.model import LumosModel
    from lumos.tokenizers import default_tokenizer_uri
    from workflows.training.curriculum import stage_configs
    from workflows.training.shard_data import code_histogram
    from workflows.training.train_config import load_pretrain_config
    from workflows.training.train_loop import TrainState, loss_function, write_consolidated

    args = parse_args(argv)
    if args.device is None and not torch.cuda.is_available():
        print("goal_gpu: skipped, no CUDA device (--device cpu runs it on the CPU)")
        return 0
    device = torch.device(args.device or "cuda")
    base = load_pretrain_config(args.recipe, args.overrides)
    stages = stage_configs(base) if base.stages else [base]
    stages = [dataclasses.replace(s, model=dataclasses.replace(s.model, init_from=None), data=dataclasses.replace(
        s.data, micro_batch_size=s.data.micro_batch_size * args.batch_scale, text_tokenizer=args.text_tokenizer))
        for s in stages]  # stage k starts from stage k - 1's weights in memory, not from its final/
    torch.manual_seed(stages[0].seed)
    model_cfg = stages[0].model.build()
    model = LumosModel(model_cfg).to(device)
    t_start = time.perf_counter()
    rows, losses_fns = [], []
    for s in stages:
        rows.append(stage_rows(s))
        counts = code_histogram(s.data.shards, model_cfg.codebook_size) if s.ardf.loss_weighting != "none" else None
        losses_fns.append(loss_function(s, None if counts is None else counts.tolist()))
        print(f"stage {s.checkpoint.name}: {len(rows[-1])} rows, {s.optim.max_steps} steps of "
              f"{s.data.micro_batch_size}", flush=True)
    steps = [s.optim.max_steps if args.max_steps is None else min(args.max_steps, s.optim.max_steps) for s in stages]
    per_step = [step_seconds(s, model, f, r, device) for s, f, r in zip(stages, losses_fns, rows)]
    projected = sum(n * t for n, t in zip(steps, per_step))
    factor = args.step_factor or (min(1.0, args.budget_s / projected) if args.budget_s else 1.0)
    steps = [max(1, round(n * factor)) for n in steps]
    print(f"step seconds {[round(t, 4) for t in per_step]}: recipe {projected:.0f} s, factor {factor:.3f} -> "
          f"steps {steps}", flush=True)
    report = {"recipe": args.recipe, "batch_scale": args.batch_scale, "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "step_factor": factor, "setup_s": time.perf_counter() - t_start,
              "stages": {}}
    for s, f, r, n in zip(stages, losses_fns, rows, steps):
        report["stages"][s.checkpoint.name] = run_stage(s, model, f, r, n, device, args.log_every, s.checkpoint.name)
    tokens = sum(v["tokens"] for v in report["stages"].values())
    report.update(tokens=tokens, train_s=sum(v["seconds"] for v in report["stages"].values()),
                  params=sum(p.numel() for p in model.parameters()))
    final = os.path.join(args.out, "final")
    os.makedirs(final, exist_ok=True)
    model.float().cpu().eval()
    last = stages[-1]
    state = TrainState(step=steps[-1], tokens_seen=tokens)
    write_consolidated(final, model, model_cfg, last, state, args.tokenizer or default_tokenizer_uri("small"))
    for path in (os.path.join(args.out, "probe.json"), str(ROOT / "bench" / "results" / "goal_gpu.json")):
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    print(table(report), flush=True)
    return 0


def table(report: dict) -> str:
    """The Markdown table of a probe: one row per stage."""
    lines = [f"{report['device']}, micro-batch x{report['batch_scale']}, steps x{report['step_factor']:.3f} of the "
             f"recipe, {report['tokens'] / 1e6:.1f} M tokens in {report['train_s']:.0f} s", "",
             "| stage | steps | micro-batch | tokens | seconds | tokens/s | ms/step | last loss |", "|---|---|---|---|---|---|---|---|"]
    for name, st in report["stages"].items():
        lines.append(f"| {name} | {st['steps']:,} | {st['micro_batch_size']} | {st['tokens']:,} | {st['seconds']:.1f} | "
                     f"{st['tokens_per_s']:,.0f} | {1000 * st['seconds'] / st['steps']:.1f} | {st['losses'][-1][1]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
