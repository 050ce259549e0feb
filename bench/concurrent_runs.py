"""Benchmark: tokens/s in all when independent training runs share the CPUs (``workflows.ablate --parallel``).

Same model (the ablation recipe's, ``pretrain_ablate.yaml``: the small preset cut to 128 wide × 4 layers, about 1.2 M
parameters), same shards (shapes-job stills and 17-frame clips, 64 px, word-level text), same global batch, fp32;
every run is ``python -m workflows.pretrain`` in its own process, joined to one local Ray:

* ``1 run, 1×2`` — one run, one Ray Train worker with 2 torch threads (a study without ``--parallel``);
* ``1 run, 2×1`` — one run, two workers with 1 thread each (data parallel over gloo, half the batch each);
* ``2 runs, 1×1 each`` — two runs at once, one worker with 1 thread each (``--parallel 2``).

Tokens/s of a run: its metric windows after ``--warmup`` steps (start-up left out); "in all" sums the runs that
trained at the same time. ``--stage image`` measures stills only (the image stage), ``joint`` stills + clips.

    .venv/bin/python bench/concurrent_runs.py                    # ~4 min on an idle 2-core machine
    .venv/bin/python bench/concurrent_runs.py --stage image --steps 300

Prints a Markdown table and writes bench/results/concurrent_runs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
RECIPE = str(ROOT / "workflows" / "configs" / "pretrain_ablate.yaml")
MODES = (("1 run, 1×2", 1, 1, 2), ("1 run, 2×1", 1, 2, 1), ("2 runs, 1×1 each", 2, 1, 1))
"""(label, runs at once, Ray Train workers per run, torch threads per worker)."""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=("image", "joint"), default="joint", help="image: stills; joint: + clips")
    p.add_argument("--steps", type=int, default=200, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured steps at the start of each run")
    p.add_argument("--batch", type=int, default=16, help="global batch (sequences per optimizer step)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "concurrent_runs.json"))
    args = p.parse_args()
    if args.steps < 25 or args.warmup < 25 or args.warmup % 25 or args.steps % 25:
        p.error("--steps and --warmup must be multiples of 25 (the metric window), at least 25")
    return args


def make_shards(root: str) -> str:
    from tokenize_jobs.shapes import ShapesJobConfig, run_job

    out = f"{root}/shards"
    run_job(ShapesJobConfig(out=out, stills=1500, clips=600, seed=0, text_tokenizer=str(
        ROOT / "lumos" / "assets" / "text_words.json")))
    return out


def launch(name: str, shards: str, root: str, workers: int, threads: int, args, env: dict) -> subprocess.Popen:
    overrides = ["stages=[]", f"data.shards={shards}", f"data.stage={args.stage}",
                 f"data.micro_batch_size={args.batch // workers}", f"optim.max_steps={args.warmup + args.steps}",
                 "optim.warmup_steps=20", f"ray.num_workers={workers}", f"ray.threads_per_worker={threads}",
                 f"checkpoint.storage={root}/runs", f"checkpoint.name={name}", "checkpoint.every_steps=100000",
                 "metrics.every_steps=25", "metrics.plots=false", "metrics.progress=false", "engine.precision=fp32"]
    with open(f"{root}/{name}.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "workflows.pretrain", "--config", RECIPE, *overrides],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_tokens_per_s(root: str, name: str, warmup: int) -> float:
    from workflows.training.run_metrics import read_metrics

    recs = [r for r in read_metrics(f"{root}/runs/{name}") if r["step"] > warmup]
    return sum(r["tokens"] for r in recs) / sum(r["window_s"] for r in recs)


def main() -> None:
    args = parse_args()
    from tokenize_jobs.ray_runtime import deepspeed_env, start_ray

    root = tempfile.mkdtemp(prefix="lumos-bench-concurrent-")
    ray = start_ray(include_dashboard=False, object_store_memory=600 * 2**20, env_vars=deepspeed_env())
    shards = make_shards(root)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    points = []
    for label, runs, workers, threads in MODES:
        names = [f"{label.split(',')[0].replace(' ', '')}-{workers}x{threads}-{i}" for i in range(runs)]
        procs = [launch(n, shards, root, workers, threads, args, env) for n in names]
        for n, p in zip(names, procs):
            if p.wait():
                raise SystemExit(f"{label}: run {n} failed; see {root}/{n}.log")
        per_run = [run_tokens_per_s(root, n, args.warmup) for n in names]
        points.append({"mode": label, "runs": runs, "workers": workers, "threads": threads,
                       "tokens_per_s_per_run": per_run, "tokens_per_s_total": sum(per_run),
                       "load_avg_1m": os.getloadavg()[0]})
        print(json.dumps(points[-1]), flush=True)
    ray.shutdown()
    base = points[0]["tokens_per_s_total"]
    lines = [f"\n{args.stage} stage, global batch {args.batch}, {args.steps} measured steps after {args.warmup}\n",
             "| mode | tokens/s per run | tokens/s in all | vs one 1×2 run |", "|---|---|---|---|"]
    for p in points:
        per = " / ".join(f"{t:,.0f}" for t in p["tokens_per_s_per_run"])
        lines.append(f"| {p['mode']} | {per} | {p['tokens_per_s_total']:,.0f} | "
                     f"{p['tokens_per_s_total'] / base:.2f}× |")
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"stage": args.stage, "batch": args.batch, "steps": args.steps,
                                          "warmup": args.warmup, "median_load": statistics.median(
                                              p["load_avg_1m"] for p in points), "points": points}, indent=1))


if __name__ == "__main__":
    main()
