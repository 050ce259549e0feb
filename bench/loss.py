"""Benchmark: peak memory of the AR-DF loss vs upstream's full-vocabulary-logits loss (LUMOS_SPEC §9.3).

A thin model (1 layer, dim 128) over the chameleon vocabulary (129,536 ids, 64,000 visual codes), one sample of
L = 8,192 tokens (text, then 8 frames of 32×28 latents), tube mask ratio ≥ 0.7:

* ``ardf_loss`` — hidden states gathered at masked visual positions first, multiplied by the 64,000 visual rows
  of lm_head only, chunked CE (what pre-training uses);
* ``full_vocab`` — upstream: fp32 logits over all 129,536 ids for the whole sequence, then gather + slice + CE.

Each method runs forward + backward in its own subprocess (whole-process peak RSS).

    .venv/bin/python bench/loss.py
    .venv/bin/python bench/loss.py --length 4096

Prints a Markdown table and writes bench/results/loss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMES, H, W = 8, 32, 28


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _batch(cfg, length: int):
    import torch

    from lumos.ardf import make_batch
    from lumos.config import ARDFConfig

    frame_tokens = FRAMES * (3 + H * (W + 1) + 1)
    n_text = length - frame_tokens - 7  # BOS, SEP, VIDEO_BEGIN, duration, fps ... VIDEO_END, SEP
    if n_text < 0:
        raise ValueError(f"--length {length} is shorter than the {frame_tokens} frame tokens")
    g = torch.Generator().manual_seed(0)
    sample = dict(text_ids=[300] * n_text, codes=torch.randint(0, 64000, (FRAMES, H, W), generator=g),
                  duration=2, fps=12)
    return make_batch([sample], cfg.layout, ARDFConfig(text_drop_prob=0.0), g)


def full_vocab_loss(model, batch):
    """Upstream's way: full fp32 logits [B, L, V] first, then select masked visual rows and columns."""
    import torch.nn.functional as F

    from lumos.model import INPUT_NAMES

    logits = model(**{k: batch[k] for k in INPUT_NAMES})  # (B, L, V) float32
    sel = batch["labels"] != -100
    lo = model.layout.visual_offset
    return F.cross_entropy(logits[sel][:, lo:], batch["labels"][sel] - lo)


def run_point(method: str, length: int, threads: int) -> dict:
    import torch

    from lumos.config import ModelConfig
    from lumos.loss import ardf_loss
    from lumos.model import LumosModel

    torch.set_num_threads(threads)
    cfg = ModelConfig(dim=128, n_layers=1, n_heads=4, ffn_dim=256, vocab="chameleon", codebook_size=64000)
    model = LumosModel(cfg)
    batch = _batch(cfg, length)
    fn = full_vocab_loss if method == "full_vocab" else (lambda m, b: ardf_loss(m, b)[0])
    base = _rss_mb()
    t0 = time.perf_counter()
    loss = fn(model, batch)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "L": int(batch["ids"].shape[1]), "masked_tokens": int((batch["labels"] != -100).sum()),
            "loss": round(float(loss), 4), "seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1),
            "growth_mb": round(peak - base, 1), "threads": threads, "load_avg_1m": round(os.getloadavg()[0], 1)}


def spawn(method: str, length: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--length", str(length), "--threads", str(threads)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=8192, help="sequence length (default 8192)")
    p.add_argument("--methods", nargs="+", default=["ardf_loss", "full_vocab"], choices=["ardf_loss", "full_vocab"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-free-gb", type=float, default=14.0,
                   help="skip the full_vocab baseline when less memory is available (default 14 GB at L=8k)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loss.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_point(args.child, args.length, args.threads)))
        return
    rows = []
    for method in args.methods:
        need = args.min_free_gb * (args.length / 8192) * 1024
        if method == "full_vocab" and _available_mb() < need:
            print(f"skipping full_vocab: {_available_mb():,.0f} MB available < {need:,.0f} MB")
            continue
        rows.append(spawn(method, args.length, args.threads))
    print("| method | L | masked tokens | loss | time | peak RSS | growth |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['L']:,} | {r['masked_tokens']:,} | {r['loss']:.3f} | {r['seconds']:.2f} s | "
              f"{r['peak_rss_mb']:,.0f} MB | {r['growth_mb']:,.0f} MB |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "loss", "vocab": 129536, "codebook": 64000, "rows": rows},
                                         indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
