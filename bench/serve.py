"""Benchmark: the Ray Serve sampler over HTTP on loopback — requests/s and p50/p95 latency of text-to-image
requests with ``@serve.batch`` batching off (``max_batch_size: 1``) and on, at 1, 4 and 16 concurrent clients.

Setting: a random-init ``debug`` model (``--preset small`` for the ~5M one) with a random-init video tokenizer of
the matching codebook, saved as a checkpoint in a temp dir; two apps side by side (batching off / on), each with
one sampler replica (1 CPU) and one ingress; every request is ``{"mode": "t2i", "steps": 16, "cfg_scale": 3,
"seed": i}`` at 32×32 px (4×4 latent cells), PNG out. Each client thread sends its requests back to back; a run's
throughput is requests / wall time of the run (first send to last answer). Off and on runs alternate, ``--rounds``
times per client count, and the best run of each is reported (the CPU is shared: load spikes hit both modes; every
run is in the JSON). The sampler's work per request is the same in both modes (per-row seeds: a batched row equals
the request alone); batching shares every transformer forward among the rows.

    .venv/bin/python bench/serve.py                              # debug model, 1/4/16 clients, off vs on, 3 rounds
    .venv/bin/python bench/serve.py --preset small --size 64 --requests 3

Prints a Markdown table and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_checkpoint(root: Path, preset: str, size: int) -> str:
    """A random-init model of ``preset`` + a random-init conv video tokenizer with the same codebook."""
    import torch

    from lumos.checkpoint import save_checkpoint
    from lumos.config import model_preset
    from lumos.model import LumosModel
    from lumos.tokenizers import build_video_tokenizer, save_video_tokenizer

    ckpt = root / f"ckpt_{preset}"
    tok = build_video_tokenizer(preset, seed=0)
    torch.manual_seed(0)
    model = LumosModel(model_preset(preset, init_std=0.3))
    if tok.codebook_size != model.cfg.codebook_size:
        raise SystemExit(f"--preset {preset}: tokenizer has {tok.codebook_size} codes, model {model.cfg.codebook_size}")
    save_video_tokenizer(str(ckpt / "tokenizer"), tok)
    save_checkpoint(str(ckpt), model, model.cfg, extra={"video_tokenizer": "tokenizer", "text_tokenizer": None,
                                                        "resolution": [size, size]})
    return str(ckpt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(checkpoint: str, batch: int, wait_s: float, name: str) -> None:
    from ray import serve

    from workflows.serve import build_app

    args = {"checkpoint": checkpoint, "defaults": {"cfg_scale": 3.0},
            "limits": {"max_queued": 256, "max_steps": 1000},
            "batching": {"max_batch_size": batch, "batch_wait_timeout_s": wait_s}}
    serve.run(build_app(args), name=name, route_prefix=f"/{name}")


def run_clients(url: str, clients: int, per_client: int, steps: int) -> dict:
    """``clients`` threads × ``per_client`` back-to-back requests; latencies and throughput of the run."""
    import httpx

    def client(c: int) -> list[tuple[float, int, int]]:
        out = []
        with httpx.Client(timeout=600) as http:
            for i in range(per_client):
                body = {"prompt": f"a red circle number {c}", "mode": "t2i", "steps": steps,
                        "seed": c * 1000 + i}
                t0 = time.perf_counter()
                r = http.post(url, json=body)
                out.append((time.perf_counter() - t0, r.status_code, int(r.headers.get("x-lumos-batch-rows", 0))))
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - t0
    lat = sorted(x[0] for x in results)
    bad = [x[1] for x in results if x[1] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed with status {sorted(set(bad))}")
    return {"clients": clients, "requests": len(results), "wall_s": wall, "rps": len(results) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "mean_rows": statistics.mean(x[2] for x in results)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="debug", choices=("debug", "small"), help="model + tokenizer size")
    p.add_argument("--size", type=int, default=32, help="image width = height in pixels (multiple of 8)")
    p.add_argument("--steps", type=int, default=16, help="unmasking steps per request")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients per run")
    p.add_argument("--requests", type=int, default=4, help="requests per client per run")
    p.add_argument("--rounds", type=int, default=3, help="alternating off/on runs per client count (best kept)")
    p.add_argument("--max-batch", type=int, default=16, help="max_batch_size with batching on")
    p.add_argument("--wait", type=float, default=0.02, help="batch_wait_timeout_s with batching on")
    p.add_argument("--out", default=str(ROOT / "bench/results/serve.json"))
    args = p.parse_args()
    if args.size < 8 or args.size % 8 or min(args.steps, args.requests, args.rounds, *args.clients) < 1:
        p.error("--size must be a positive multiple of 8; --steps, --requests, --rounds, --clients must be >= 1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from tokenize_jobs.ray_runtime import start_ray

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp), args.preset, args.size)
        start_ray(num_cpus=4, include_dashboard=False, object_store_memory=300 * 1024 * 1024,
                  logging_level="warning", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        runs = []
        try:
            modes = (("off", 1, 0.0), ("on", args.max_batch, args.wait))
            for mode, batch, wait in modes:  # both apps stay up; runs alternate so load spikes hit both
                deploy(checkpoint, batch, wait, mode)
                run_clients(f"http://127.0.0.1:{port}/{mode}/v1/generate", 1, 2, args.steps)  # warm-up
            for clients in args.clients:
                for rnd in range(args.rounds):
                    for mode, _, _ in modes:
                        url = f"http://127.0.0.1:{port}/{mode}/v1/generate"
                        run = {"batching": mode, "round": rnd, **run_clients(url, clients, args.requests, args.steps)}
                        runs.append(run)
                        print(f"batching {mode:3s} clients {clients:2d} round {rnd}: {run['rps']:.2f} req/s, "
                              f"p50 {run['p50_ms']:.0f} ms, p95 {run['p95_ms']:.0f} ms, rows {run['mean_rows']:.1f}",
                              flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
    rows = [max((r for r in runs if r["batching"] == m and r["clients"] == c), key=lambda r: r["rps"])
            for c in args.clients for m in ("off", "on")]
    report(rows, runs, args)
    return 0


def report(rows: list[dict], runs: list[dict], args) -> None:
    print(f"\nt2i {args.size}x{args.size}, {args.steps} steps, {args.preset} model, 1 sampler replica, loopback HTTP; "
          f"best of {args.rounds} alternating runs\n")
    print("| batching | clients | requests | req/s | p50 ms | p95 ms | rows of the sampler call, mean over requests |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['rps']:.2f} | {r['p50_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {r['mean_rows']:.1f} |")
    speedup = {}
    for c in args.clients:
        off = next(r for r in rows if r["batching"] == "off" and r["clients"] == c)
        on = next(r for r in rows if r["batching"] == "on" and r["clients"] == c)
        speedup[str(c)] = on["rps"] / off["rps"]
    print("\nthroughput with batching / without: " + ", ".join(f"{c} clients {s:.2f}x" for c, s in speedup.items()))
    out = {"benchmark": "serve", "preset": args.preset, "size": args.size, "steps": args.steps,
           "max_batch_size": args.max_batch, "batch_wait_timeout_s": args.wait, "rounds": args.rounds, "rows": rows,
           "runs": runs,
           "batching_speedup": speedup, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "load_average": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
