"""What more compute buys the small model: the goal recipe's curriculum in one process on one CUDA GPU.

The committed ``small`` checkpoint is trained by ``workflows.pretrain --config
workflows/configs/pretrain_small_goal.yaml`` (Ray Train + DeepSpeed on 2 CPU cores, 29.7 M tokens). This probe runs
the same stages — same shards, model, AR-DF settings, code-frequency loss weights, per-stage LR schedule, each stage
starting from the previous stage's weights with a fresh optimizer, as the curriculum does — with the micro-batch
multiplied by ``--batch-scale`` (the recipe's steps: that many times the tokens), in bf16 autocast with the fused
AdamW, in a bare PyTorch loop (GPU machines here have no Ray or DeepSpeed); the batches are built by DataLoader
worker processes (``--loader-workers``), the same batches in the same order as the loop would build them. With
``--budget-s``, the step times measured at the start scale every stage's steps by one factor to fill the budget
(below 1: fewer steps than the recipe; above 1: more); ``--deadline-s`` is a hard stop.

Writes ``<out>/final`` (model, tokenizer and train config like a pre-training run's ``final/``: ``workflows.eval``,
``generate`` and ``serve`` load it) and ``<out>/probe.json`` (per stage: steps, tokens, seconds, tokens/s, losses).

    python bench/goal_gpu.py --out runs/goal-gpu --batch-scale 4 --budget-s 400
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import os
import sys
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
    p.add_argument("--budget-s", type=float, default=None,
                   help="training time budget in seconds (all stages): every stage's steps scale by one factor, "
                        "below or above 1, to fill it")
    p.add_argument("--step-factor", type=float, default=None,
                   help="run this fraction of every stage's steps (instead of the one --budget-s gives)")
    p.add_argument("--device", default=None, help="cuda (the default; skipped without one) or cpu, for a dry run")
    p.add_argument("--loader-workers", type=int, default=min(6, max(0, (os.cpu_count() or 1) - 2)),
                   help="processes that build the batches (default: 6, or the cores less 2 if fewer; 0: in the loop)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="hard stop for training (seconds after the step timing), whatever the steps left")
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage's steps after scaling (dry runs)")
    p.add_argument("--tokenizer", default=None, help="video tokenizer copied into final/ (default: the small one)")
    p.add_argument("--text-tokenizer", default=str(ROOT / "lumos" / "assets" / "text_words.json"),
                   help="the shards' text tokenizer, copied into final/ (default: the word-level one)")
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides, e.g. data.shards=DIR")
    return p.parse_args(argv)


@functools.cache
def shard_rows(shards: str) -> tuple[dict, ...]:
    """Every row of a shard directory, read once per process (the video stages share their corpus)."""
    import pyarrow.parquet as pq

    from workflows.training.shard_data import SHARD_COLUMNS, shard_files

    return tuple(r for f in shard_files(shards) for r in pq.read_table(f, columns=SHARD_COLUMNS).to_pylist())


@functools.cache
def shard_histogram(shards: str, codebook_size: int) -> tuple[int, ...]:
    from workflows.training.shard_data import code_histogram

    return tuple(code_histogram(shards, codebook_size).tolist())


def stage_samples(cfg, temporal: int) -> list[dict]:
    """The stage's training samples in the order the Ray Data reader gives its rows (the image stage keeps stills,
    then a seeded global shuffle), each already made by ``row_to_sample``."""
    import torch

    from workflows.training.shard_data import row_to_sample

    rows = shard_rows(cfg.data.shards)
    if cfg.data.stage == "image" and not cfg.data.video_first_frame_as_image:
        rows = [r for r in rows if r["grid_t"] == 1]
    if cfg.data.global_shuffle:
        rows = [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))]
    return [row_to_sample(r, cfg.data, temporal) for r in rows]


class StepBatches:
    """Endless ``(batch, tokens)`` in step order, built by ``workers`` DataLoader processes (worker w of k builds
    steps w, w + k, …), so that batch building runs beside the training loop instead of sharing its interpreter.
    The batches are those ``workflows.pretrain`` builds on rank 0 of one worker (same order, same mask generators),
    whatever the number of loader workers; :meth:`close` stops the workers."""

    def __init__(self, cfg, samples: list[dict], layout, workers: int, pin: bool):
        import torch

        class Steps(torch.utils.data.IterableDataset):
            def __iter__(inner):
                info = torch.utils.data.get_worker_info()
                w, k = (info.id, info.num_workers) if info else (0, 1)
                yield from step_batches(cfg, samples, layout, w, k)

        self.frozen = bool(workers)
        if self.frozen:  # forked workers share the samples copy-on-write: keep the collector from touching their pages
            gc.freeze()
        self.loader = torch.utils.data.DataLoader(
            Steps(), batch_size=None, num_workers=workers, pin_memory=pin, worker_init_fn=_one_thread,
            prefetch_factor=8 if workers else None, multiprocessing_context="fork" if workers else None)
        self.it = iter(self.loader)

    def __next__(self):
        if self.it is None:
            raise StopIteration
        return next(self.it)

    def close(self) -> None:
        """Stop the workers: dropping the loader's iterator shuts them down (its own finaliser)."""
        self.it = None
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


def _one_thread(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def step_batches(cfg, samples: list[dict], layout, worker: int, workers: int):
    """Steps ``worker, worker + workers, …`` of rank 0's endless micro-batch stream in ``workflows.pretrain`` (its
    order, its per-batch mask generator)."""
    import torch

    from lumos.ardf import make_batch
    from workflows.training.shard_data import batch_tokens
    from workflows.training.train_loop import TrainState, Worker, batch_generator, micro_batches

    rank0 = Worker(rank=0, world=1, device=torch.device("cpu"))
    stream = micro_batches(samples, cfg, TrainState(), rank0, 0, samples_made=True)
    for step, (epoch, index, batch) in enumerate(stream):
        if step % workers == worker:
            yield make_batch(batch, layout, cfg.ardf, batch_generator(cfg.seed, 0, epoch, index)), batch_tokens(batch)


def run_stage(cfg, model, loss_fn, samples, steps: int, device, log_every: int, label: str, workers: int,
              deadline: float = float("inf"), timed_from: int = 0, bf16: bool | None = None) -> dict:
    """``steps`` optimizer steps of one stage (fresh fused AdamW, the stage's LR schedule over ``steps``); stops
    early, saying so in ``cut_at``, when ``time.perf_counter()`` passes ``deadline``. ``step_s`` and
    ``timed_tokens_per_s``: from step ``timed_from`` on (the earlier ones warm up kernels, allocator and loader
    workers)."""
    import torch

    from workflows.training.engine import LRSchedule, param_groups

    optim = dataclasses.replace(cfg.optim, max_steps=steps, warmup_steps=min(cfg.optim.warmup_steps, steps // 10))
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.betas),
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(optim))
    stream = StepBatches(cfg, samples, model.cfg.layout, workers, pin=device.type == "cuda")
    bf16 = device.type == "cuda" if bf16 is None else bf16
    tokens, losses, cut_at, t0 = 0, [], None, time.perf_counter()
    t_timed, tokens_timed = t0, 0
    for step in range(steps):
        if step == timed_from:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_timed, tokens_timed = time.perf_counter(), tokens
        if time.perf_counter() > deadline:
            cut_at = step
            print(f"{label}: the deadline passed, stopped at step {step} of {steps}", flush=True)
            break
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
    t_end = time.perf_counter()
    seconds = t_end - t0
    stream.close()
    done = steps if cut_at is None else cut_at
    return {"steps": done, "planned_steps": steps, "cut_at": cut_at, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "step_s": (t_end - t_timed) / max(1, done - timed_from),
            "timed_tokens_per_s": (tokens - tokens_timed) / (t_end - t_timed),
            "losses": losses, "lr": optim.lr, "micro_batch_size": cfg.data.micro_batch_size}


def step_seconds(cfg, model, loss_fn, samples, device, workers: int, steps: int = 30, warm: int = 10) -> float:
    """Seconds per step of this stage's batches (``steps`` timed after ``warm``), on a throw-away copy of the
    model."""
    from workflows.training.engine import compile_blocks

    probe = copy.deepcopy(model)  # a deep copy drops nn.Module.compile: compile the copy too
    if cfg.engine.compile:
        compile_blocks(probe, device.type == "cuda")
    run = run_stage(cfg, probe, loss_fn, samples, warm + steps, device, 10**9, "timing", workers, timed_from=warm)
    return run["step_s"]


def main(argv=None) -> int:
    import torch

    from lumos.model import LumosModel
    from lumos.tokenizers import default_tokenizer_uri
    from workflows.training.curriculum import stage_configs
    from workflows.training.engine import compile_blocks
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
    if stages[0].engine.compile:  # the recipe's engine.compile, as workflows.pretrain applies it
        compile_blocks(model, device.type == "cuda")
    t_start = time.perf_counter()
    samples, losses_fns = [], []
    for s in stages:
        samples.append(stage_samples(s, model_cfg.temporal_compression))
        counts = shard_histogram(s.data.shards, model_cfg.codebook_size) if s.ardf.loss_weighting != "none" else None
        losses_fns.append(loss_function(s, None if counts is None else list(counts)))
        print(f"stage {s.checkpoint.name}: {len(samples[-1])} samples, {s.optim.max_steps} steps of "
              f"{s.data.micro_batch_size}", flush=True)
    steps = [s.optim.max_steps for s in stages]
    timed = 30 if args.max_steps is None else min(30, args.max_steps)  # a dry run times a few steps
    per_step = [step_seconds(s, model, f, r, device, args.loader_workers, timed, min(10, timed))
                for s, f, r in zip(stages, losses_fns, samples)]
    projected = sum(n * t for n, t in zip(steps, per_step))
    factor = args.step_factor or (args.budget_s / projected if args.budget_s else 1.0)
    steps = [min(max(1, round(n * factor)), args.max_steps or 10**9) for n in steps]
    print(f"step seconds {[round(t, 4) for t in per_step]}: recipe {projected:.0f} s, factor {factor:.3f} -> "
          f"steps {steps}", flush=True)
    report = {"recipe": args.recipe, "batch_scale": args.batch_scale, "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "step_factor": factor, "loader_workers": args.loader_workers,
              "setup_s": time.perf_counter() - t_start, "stages": {}}
    deadline = time.perf_counter() + args.deadline_s if args.deadline_s else float("inf")
    for s, f, r, n in zip(stages, losses_fns, samples, steps):
        report["stages"][s.checkpoint.name] = run_stage(s, model, f, r, n, device, args.log_every, s.checkpoint.name,
                                                        args.loader_workers, deadline)
    tokens = sum(v["tokens"] for v in report["stages"].values())
    report.update(tokens=tokens, train_s=sum(v["seconds"] for v in report["stages"].values()),
                  params=sum(p.numel() for p in model.parameters()))
    final = os.path.join(args.out, "final")
    os.makedirs(final, exist_ok=True)
    model.float().cpu().eval()
    last = stages[-1]
    state = TrainState(step=report["stages"][last.checkpoint.name]["steps"], tokens_seen=tokens)
    write_consolidated(final, model, model_cfg, last, state, args.tokenizer or default_tokenizer_uri("small"))
    paths = [os.path.join(args.out, "probe.json")]
    if device.type == "cuda":  # a dry run on a CPU does not replace the GPU's numbers
        paths.append(str(ROOT / "bench" / "results" / "goal_gpu.json"))
    for path in paths:
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
