"""Benchmark: one text-to-video generation on CPU with CFG — AR-DF with KV cache, AR-DF without KV cache, and
next-token (raster) decoding with KV cache — for the debug and small models (LUMOS_SPEC §8.2 latency table).

Setting: 32×32 latent grid (1,060 tokens per latent frame), 5 latent frames, 16 steps per frame, CFG scale 15
(cond + uncond rows as one batch), random-init weights (the cost does not depend on them).

Next to every measured time the script prints an estimate built from rates measured in the same run:

* frame passes (AR-DF steps, commits, prefills; the whole sequence without a cache) are arithmetic-bound:
  ``linear FLOPs / matmul rate + attention FLOPs / attention rate`` — the matmul rate of a 2048² fp32 product and
  the rate of one unmasked SDPA call of the frame's shape (both measured here);
* single-token passes (next-token) are memory-bound: ``(weight bytes + KV-cache bytes read) / copy bandwidth``
  (a 256 MiB tensor copy) — the roofline; the estimate adds the measured fixed cost of one pass at a short
  context (Python + dispatch of every op, which dominates small models): ``passes × overhead + KV bytes / BW``.

Times are CPU seconds of this process (``time.process_time``) with ONE intra-op thread by default, and the rates
are measured the same way: on a 2-core machine shared with other jobs, wall time mostly measures the neighbours,
while the single-thread CPU time is what the run costs on a dedicated core. Wall time is reported too.

    .venv/bin/python bench/sampler.py                         # debug + small, the three modes
    .venv/bin/python bench/sampler.py --models debug --grid 16 --frames 3 --steps 8     # a quick look

Prints a Markdown table and writes bench/results/sampler.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lumos.config import model_preset
from lumos.model import LumosModel
from lumos.ntp import generate_ntp
from lumos.sampler import SamplerConfig, encode_prompt, generate, plan_video
from lumos.sequence import frame_length
from lumos.tokenizers import ByteTokenizer

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "a small red circle moving right and a large blue square in the top left"
MODES = ("ardf_kv", "ardf_nokv", "ntp_kv")


# --------------------------------------------------------------------------------------------------------------
# machine rates


def _time(fn, repeat: int) -> float:
    """Best CPU time of this process over ``repeat`` calls (see the module docstring: the CPU is shared)."""
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def matmul_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _time(lambda: a @ b, 5) / 1e9


def copy_gbs(mib: int = 256) -> float:
    """Read + write bandwidth of a large copy into a preallocated tensor (no page faults in the timing)."""
    x, y = torch.ones(mib * 2**20 // 4), torch.zeros(mib * 2**20 // 4)
    return 2 * x.numel() * 4 / _time(lambda: y.copy_(x), 3) / 1e9


def attention_gflops(cfg, rows: int, lq: int, lk: int) -> float:
    """Rate of one unmasked SDPA call [rows, nh, lq, hd] x [rows, nkv, lk, hd] (as the frame pieces run)."""
    q = torch.randn(rows, cfg.n_heads, lq, cfg.head_dim)
    k, v = torch.randn(rows, cfg.n_kv_heads, lk, cfg.head_dim), torch.randn(rows, cfg.n_kv_heads, lk, cfg.head_dim)
    gqa = cfg.n_heads != cfg.n_kv_heads
    t = _time(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), 3)
    return 4 * rows * cfg.n_heads * lq * lk * cfg.head_dim / t / 1e9


# --------------------------------------------------------------------------------------------------------------
# analytic costs (per branch; both branches run as one batch of 2 rows)


def linear_flops_per_token(cfg) -> float:
    """Weight-matrix FLOPs of one token through the decoder layers (the head is counted separately)."""
    D, hd = cfg.dim, cfg.head_dim
    attn = 2 * D * cfg.n_heads * hd + 2 * D * cfg.n_kv_heads * hd
    return 2.0 * cfg.n_layers * (attn + 3 * D * cfg.ffn_dim)


def attn_flops_per_pair(cfg) -> float:
    """QK^T and AV FLOPs of one (query, key) pair over all layers."""
    return 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim


def ardf_cost(cfg, prefix: int, lf: int, frames: int, steps: int, codes: int, cached: bool) -> dict:
    """FLOPs of one branch of AR-DF: linear, attention, head (visual rows, masked positions only)."""
    lin = attn = head = 0.0
    masked_avg = sum(max(1, math.floor(codes * math.cos(math.pi / 2 * s / steps))) for s in range(steps)) / steps
    for f in range(frames):
        end = prefix + (f + 1) * lf
        if cached:
            lin += (steps + 1) * lf * linear_flops_per_token(cfg)
            attn += (steps + 1) * lf * end * attn_flops_per_pair(cfg)
        else:  # every step: the whole sequence; frame g's queries see keys up to the end of frame g
            lin += steps * end * linear_flops_per_token(cfg)
            pairs = prefix * (prefix + 1) / 2 + sum(lf * (prefix + (g + 1) * lf) for g in range(f + 1))
            attn += steps * pairs * attn_flops_per_pair(cfg)
        head += steps * masked_avg * 2 * cfg.dim * cfg.codebook_size
    if cached:
        lin += prefix * linear_flops_per_token(cfg)
    return {"linear": lin, "attention": attn, "head": head}


def ntp_bytes(cfg, prefix: int, lf: int, frames: int, codes: int, rows: int, weights: bool = True) -> float:
    """Bytes read by the single-token passes: all weights once per pass (``weights``) + every row's KV cache."""
    w = 4.0 * (linear_flops_per_token(cfg) / 2 + cfg.dim * cfg.codebook_size) if weights else 0.0
    kv_per_token = 4.0 * 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim
    total, ctx = 0.0, prefix
    for _f in range(frames):
        for _ in range(codes):
            total += w + rows * kv_per_token * ctx
            ctx += lf / codes
    return total


def ntp_pass_overhead(model, prompts) -> float:
    """CPU seconds per next-token pass at a short context (8×8 grid, one frame): the fixed cost of a pass
    (Python and kernel dispatch of every op, weight reads, sampling) that the byte count does not see."""
    plan = plan_video("t2v", (8, 8), frames=1)
    best = math.inf
    for _ in range(3):
        c0 = time.process_time()
        res = generate_ntp(model, prompts, plan, SamplerConfig(), generator=torch.Generator().manual_seed(0))
        best = min(best, (time.process_time() - c0) / res.stats["forward_passes"]["cond"])
    return best


# --------------------------------------------------------------------------------------------------------------
# runs


def run_mode(model, mode: str, prompts, plan, steps: int) -> dict:
    cfg = SamplerConfig(steps=steps, use_kv_cache=mode != "ardf_nokv")
    gen = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "ntp_kv":
        res = generate_ntp(model, prompts, plan, cfg, generator=gen)
    else:
        res = generate(model, prompts, plan, cfg, generator=gen)
    return {"wall_s": time.perf_counter() - t0, "seconds": time.process_time() - c0, "passes": res.stats["passes"],
            "forward_passes": res.stats["forward_passes"], "tokens_fed": res.stats["tokens_fed"]}


def bench_model(name: str, args, rates: dict) -> list[dict]:
    torch.manual_seed(0)
    model = LumosModel(model_preset(name)).eval()
    cfg = model.cfg
    h = w = args.grid
    plan = plan_video("t2v", (h, w), frames=args.frames, fps=12, duration=2)
    prompts = [encode_prompt(ByteTokenizer(cfg.layout), cfg.layout, CAPTION, plan)]
    prefix, lf, codes = len(prompts[0]) + 5, frame_length(h, w), h * w
    # warm-up: allocator, kernels
    generate(model, prompts, plan_video("t2v", (4, 4), frames=2), SamplerConfig(steps=2))
    generate_ntp(model, prompts, plan_video("t2v", (2, 2), frames=1), SamplerConfig())
    attn_rate = attention_gflops(cfg, 1, lf, prefix + (args.frames + 1) // 2 * lf)
    rates = {**rates, "matmul_gflops": matmul_gflops(), "copy_gbs": copy_gbs(),  # again, right before the runs
             "ntp_pass_overhead_s": ntp_pass_overhead(model, prompts)}
    rows = []
    for mode in args.modes:
        r = run_mode(model, mode, prompts, plan, args.steps)
        if mode == "ntp_kv":  # roofline: bytes / bandwidth; estimate: + the measured fixed cost of every pass
            nbytes = ntp_bytes(cfg, prefix, lf, args.frames, codes, rows=2)
            kv_bytes = ntp_bytes(cfg, prefix, lf, args.frames, codes, rows=2, weights=False)
            roofline = nbytes / (rates["copy_gbs"] * 1e9)
            est = r["forward_passes"]["cond"] * rates["ntp_pass_overhead_s"] + kv_bytes / (rates["copy_gbs"] * 1e9)
            detail = {"bytes": nbytes, "kv_bytes": kv_bytes, "roofline_s": roofline}
        else:
            c = ardf_cost(cfg, prefix, lf, args.frames, args.steps, codes, cached=mode == "ardf_kv")
            est = 2 * ((c["linear"] + c["head"]) / (rates["matmul_gflops"] * 1e9) + c["attention"] / (attn_rate * 1e9))
            detail = {**{k: 2 * v for k, v in c.items()}, "roofline_s": est}  # both branches
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()), "mode": mode, **r,
                     "estimate_s": est, "cost": detail, "attention_gflops": attn_rate, "rates": rates,
                     "load_avg_1m": os.getloadavg()[0]})
        print(f"  {name:6s} {mode:10s} CPU {r['seconds']:8.1f} s  wall {r['wall_s']:8.1f} s  (estimate {est:7.1f} s, "
              f"load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    by = {(r["model"], r["mode"]): r for r in rows}
    out = ["| model | mode | passes / branch | CPU s | wall s | roofline (s) | estimate (s) | time / AR-DF+KV | "
           "estimate allows |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = by.get((r["model"], "ardf_kv"))
        ratio = f"{r['seconds'] / base['seconds']:.2f}×" if base else "–"
        allows = f"{r['estimate_s'] / base['estimate_s']:.2f}×" if base else "–"
        out.append(f"| {r['model']} | {r['mode']} | {r['forward_passes']['cond']} | {r['seconds']:.1f} | "
                   f"{r['wall_s']:.1f} | {r['cost']['roofline_s']:.1f} | {r['estimate_s']:.1f} | {ratio} | {allows} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["debug", "small"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--grid", type=int, default=32, help="latent grid side (h = w)")
    p.add_argument("--frames", type=int, default=5, help="latent frames")
    p.add_argument("--steps", type=int, default=16, help="AR-DF steps per frame")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: CPU time = time on a dedicated core, see above)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sampler.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rates = {"matmul_gflops": matmul_gflops(), "copy_gbs": copy_gbs(), "threads": torch.get_num_threads()}
    print(f"machine: matmul {rates['matmul_gflops']:.0f} GFLOP/s, copy {rates['copy_gbs']:.1f} GB/s, "
          f"{rates['threads']} threads", flush=True)
    rows = []
    with torch.inference_mode():
        for name in args.models:
            rows += bench_model(name, args, rates)
    print(table(rows))
    result = {"setting": {"grid": args.grid, "frames": args.frames, "steps": args.steps, "cfg_scale": 15.0,
                          "caption": CAPTION, "machine": platform.processor() or platform.machine()},
              "rates": rates, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
