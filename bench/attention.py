"""Benchmark: one attention layer, training forward + backward, frame-chunked path vs dense-mask SDPA.

Layout per point: 256 text tokens then F frames of 1,024 tokens (L = 256 + 1024 F); 8 heads, head dim 64
(dim 512), QK-norm, MM-RoPE. Each (method, L) point runs in its own subprocess so that the whole-process peak RSS
(``ru_maxrss``) belongs to that point alone; the table also shows the growth over the RSS right before the run.

    .venv/bin/python bench/attention.py                     # L = 2k, 4k, 8k, 16k
    .venv/bin/python bench/attention.py --frames 2 4 --threads 1

Prints a Markdown table and writes bench/results/attention.json.
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
TEXT, FRAME = 256, 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _inputs(frames: int):
    import torch

    from lumos.sequence import collate_sequences, frame_sequence, prompt_sequence
    from lumos.vocab import compact_layout

    layout = compact_layout(1000)
    seq = prompt_sequence(layout, list(range(300, 300 + TEXT - 5)), duration=1, fps=1)  # BOS+251+SEP+3 = 256
    for f in range(frames):  # BOI + 2 grid + 30 rows × (33 + newline) + EOI = 1,024 tokens
        seq = seq.cat(frame_sequence(layout, torch.zeros(30, 33, dtype=torch.long), f))
    return collate_sequences([seq])


class DensePlan:
    """The reference: one SDPA call with the dense boolean causal ∪ same-frame mask (L × L)."""

    def __init__(self, frame_ids):
        self.frame_ids = frame_ids

    def attend(self, q, k, v):
        import torch.nn.functional as F

        from lumos.masking import attention_mask

        mask = attention_mask(self.frame_ids)[:, None]  # (B, 1, L, L)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def run_point(method: str, frames: int, threads: int) -> dict:
    """Child process: build one layer, warm up on a small input, then time one fwd+bwd at the real size."""
    import torch

    from lumos.config import ModelConfig
    from lumos.model.attention import Attention, AttentionPlan
    from lumos.rope import RotaryEmbedding

    torch.set_num_threads(threads)
    cfg = ModelConfig(dim=512, n_heads=8, n_layers=1, ffn_dim=1024, codebook_size=1000)
    layer = Attention(cfg)
    rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, "mm")

    def step(batch):
        x = torch.randn(1, batch["ids"].shape[1], cfg.dim, requires_grad=True)
        cos, sin = rope(batch["pos1d"], batch["coords"], batch["visual"], batch["p0"])
        plan = DensePlan(batch["frame_ids"]) if method == "dense" else AttentionPlan.build(batch["frame_ids"],
                                                                                             dense_max_keys=0)
        layer(x, cos, sin, plan).square().mean().backward()

    step(_inputs(1))  # warm-up (kernels, allocator)
    batch = _inputs(frames)
    base = _rss_mb()
    t0 = time.perf_counter()
    step(batch)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "L": int(batch["ids"].shape[1]), "frames": frames, "threads": threads,
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1), "growth_mb": round(peak - base, 1)}


def spawn(method: str, frames: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(frames), "--threads", str(threads)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} frames={frames} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    by_l: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_l.setdefault(r["L"], {})[r["method"]] = r
    out = ["| L | frame-chunked: time | peak RSS | growth | dense mask: time | peak RSS | growth |",
           "|---|---|---|---|---|---|---|"]
    for L, m in sorted(by_l.items()):
        c, d = m.get("chunked"), m.get("dense")
        cells = [f"{L:,}"]
        for r in (c, d):
            cells += ([f"{r['seconds']:.2f} s", f"{r['peak_rss_mb']:,.0f} MB", f"{r['growth_mb']:,.0f} MB"]
                      if r else ["–", "–", "–"])
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16],
                   help="frames of 1,024 tokens after 256 text tokens (default: 2 4 8 16 → L ≈ 2k..16k)")
    p.add_argument("--methods", nargs="+", default=["chunked", "dense"], choices=["chunked", "dense"])
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention.json"))
    p.add_argument("--child", nargs=2, metavar=("METHOD", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_point(args.child[0], int(args.child[1]), args.threads)))
        return
    if any(f < 1 for f in args.frames) or args.threads < 1:
        p.error("--frames and --threads must be >= 1")
    from tqdm import tqdm

    rows = [spawn(m, f, args.threads) for f, m in tqdm([(f, m) for f in args.frames for m in args.methods],
                                                        desc="attention bench")]
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "attention", "heads": 8, "head_dim": 64, "text": TEXT,
                                          "frame_tokens": FRAME, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
