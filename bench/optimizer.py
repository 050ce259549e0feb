"""Benchmark: what the optimizer step costs beside the forward + backward, AdamW against Muon, by model width.

For each model (the demo's 128-wide model, the ``small`` preset, a 512-wide one) and batch shape (stills: one
latent frame of 8×8 per row; clips: five), one process with ``torch.set_num_threads(--threads)``:

* ``fwd+bwd`` — :func:`lumos.loss.ardf_loss` forward and backward on one AR-DF batch of ``--batch`` rows
  (:func:`lumos.ardf.make_batch`, random codes, a 12-word caption), fp32 or bf16 autocast (``--amp-bf16``);
* one ``optimizer.step()`` on those gradients of the optimizer ``workflows.pretrain`` builds
  (``engine.build_optimizer``): ``adamw``; ``muon-bf16`` / ``muon-fp32`` (``optim.name=muon`` with
  ``optim.muon_ns_dtype``: Muon on every 2-D weight of the decoder blocks, its Newton–Schulz iteration batched per
  matrix shape, AdamW on the rest); ``muon-torch``, the same with ``torch.optim.Muon`` itself (one bf16 iteration per
  matrix), the reference.

The table gives the median seconds of each, the optimizer's share of a whole step and the tokens/s a training step
would reach with each optimizer (forward + backward + step; no data loading, no DeepSpeed). Rounds alternate the
optimizers so that load from other processes hits both alike; the 1-minute load average is recorded per point.

    .venv/bin/python bench/optimizer.py                       # ~2 min on an idle 2-core machine
    .venv/bin/python bench/optimizer.py --models small --amp-bf16 --repeats 3

Prints a Markdown table and writes bench/results/optimizer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = str(ROOT / "workflows" / "configs" / "pretrain_small.yaml")
MODELS = {
    "demo": dict(dim=128, n_layers=4, ffn_dim=352),
    "small": {},
    "wide": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, ffn_dim=1376),
}
"""Model name → overrides of the ``small`` preset."""
FRAMES = {"stills": 1, "clips": 5}
OPTIMIZERS = ("adamw", "muon-torch", "muon-bf16", "muon-fp32")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--shapes", default=",".join(FRAMES), help="comma-separated subset of stills, clips")
    p.add_argument("--batch", type=int, default=16, help="rows per batch (the recipes' micro-batch, default 16)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions of each part per round (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="rounds, optimizers in alternating order (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--amp-bf16", action="store_true", help="forward + backward in bf16 autocast (fp32 weights)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "optimizer.json"))
    args = p.parse_args(argv)
    for flag, value, known in (("--models", args.models, MODELS), ("--shapes", args.shapes, FRAMES)):
        bad = [v for v in value.split(",") if v not in known]
        if bad:
            p.error(f"{flag}: unknown {bad[0]!r} (choose from {', '.join(known)})")
    return args


def batch_for(layout, codebook: int, frames: int, rows: int, seed: int):
    import torch

    from lumos.ardf import make_batch
    from lumos.config import ARDFConfig

    g = torch.Generator().manual_seed(seed)
    samples = [dict(text_ids=torch.randint(0, 200, (12,), generator=g).tolist(),
                    codes=torch.randint(0, codebook, (frames, 8, 8), generator=g), duration=2, fps=8)
               for _ in range(rows)]
    return make_batch(samples, layout, ARDFConfig(min_mask_ratio=0.5), g)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def optimizer(model, name: str):
    """The optimizer of one row, as ``engine.build_optimizer`` makes it (``muon-torch``: with torch's Muon)."""
    from workflows.training.engine import build_optimizer, muon_adamw
    from workflows.training.optimizers import NS_DTYPES
    from workflows.training.train_config import load_pretrain_config

    kind, _, ns = name.partition("-")
    cfg = load_pretrain_config(CONFIG, [f"optim.name={kind}", "engine.zero_stage=0"])
    if kind == "adamw":
        return build_optimizer(model, cfg, on_gpu=False)
    return muon_adamw(model, cfg, on_gpu=False, ns_dtype=NS_DTYPES.get(ns))


def measure(model_name: str, shape: str, args: argparse.Namespace, order: tuple[str, ...]) -> list[dict]:
    """One round of one (model, shape) point: forward + backward, then each optimizer's step in ``order``."""
    import torch

    from lumos.config import model_preset
    from lumos.flops import flops_per_token
    from lumos.loss import ardf_loss
    from lumos.model import LumosModel

    torch.manual_seed(0)
    model = LumosModel(model_preset("small", **MODELS[model_name]))
    batch = batch_for(model.layout, model.cfg.codebook_size, FRAMES[shape], args.batch, seed=1)
    tokens = int(batch["lengths"].sum())

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp_bf16):
            loss, _ = ardf_loss(model, batch)
        loss.backward()

    t_fb = timed(fwd_bwd, args.repeats)
    fwd_bwd()  # leave gradients in place for the optimizer steps
    seq = tokens / args.batch
    flops = flops_per_token(model, int(seq)) * tokens
    points = []
    for name in order:
        opt = optimizer(model, name)
        t_opt = timed(opt.step, args.repeats)
        step = t_fb + t_opt
        points.append({"model": model_name, "shape": shape, "optimizer": name, "dim": model.cfg.dim,
                       "n_layers": model.cfg.n_layers, "params": sum(p.numel() for p in model.parameters()),
                       "tokens": tokens, "fwd_bwd_s": t_fb, "opt_s": t_opt, "opt_share": t_opt / step,
                       "tokens_per_s": tokens / step, "model_gflop_per_s": flops / step / 1e9,
                       "load_avg_1m": os.getloadavg()[0]})
    return points


def report(points: list[dict], args: argparse.Namespace) -> list[dict]:
    rows = []
    keys = sorted({(p["model"], p["shape"], p["optimizer"]) for p in points},
                  key=lambda k: (list(MODELS).index(k[0]), list(FRAMES).index(k[1]), OPTIMIZERS.index(k[2])))
    for key in keys:
        pts = [p for p in points if (p["model"], p["shape"], p["optimizer"]) == key]
        med = {k: statistics.median(p[k] for p in pts) for k in
               ("fwd_bwd_s", "opt_s", "opt_share", "tokens_per_s", "model_gflop_per_s", "load_avg_1m")}
        rows.append({**{k: pts[0][k] for k in ("model", "shape", "optimizer", "dim", "n_layers", "params", "tokens")},
                     **med})
    adamw = {(r["model"], r["shape"]): r["tokens_per_s"] for r in rows if r["optimizer"] == "adamw"}
    print(f"\nbatch {args.batch} rows, {args.threads} threads, forward + backward in "
          f"{'bf16 autocast' if args.amp_bf16 else 'fp32'}; medians over {args.rounds} rounds × {args.repeats}\n")
    print("| model | params | batch | tokens | optimizer | fwd+bwd s | optimizer step s | optimizer share | tokens/s "
          "| vs AdamW | model GFLOP/s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rel = r["tokens_per_s"] / adamw[(r["model"], r["shape"])] if (r["model"], r["shape"]) in adamw else float(
            "nan")
        r["vs_adamw"] = rel
        print(f"| {r['model']} ({r['dim']}×{r['n_layers']}) | {r['params'] / 1e6:.1f} M | {r['shape']} | "
              f"{r['tokens']:,} | {r['optimizer']} | {r['fwd_bwd_s']:.3f} | {r['opt_s']:.3f} | "
              f"{100 * r['opt_share']:.0f} % | {r['tokens_per_s']:,.0f} | {rel:.2f}× | {r['model_gflop_per_s']:.0f} | "
              f"{r['load_avg_1m']:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    points = []
    for r in range(args.rounds):
        order = OPTIMIZERS if r % 2 == 0 else OPTIMIZERS[::-1]
        for model_name in args.models.split(","):
            for shape in args.shapes.split(","):
                pts = measure(model_name, shape, args, order)
                for p in pts:
                    p["round"] = r
                points.extend(pts)
                print(json.dumps(pts), flush=True)
    rows = report(points, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": vars(args), "summary": rows, "points": points}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
