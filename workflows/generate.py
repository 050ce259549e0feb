"""One-off generation from a checkpoint: text-to-image, text-to-video, image-to-video (DESIGN §4.2; LUMOS_SPEC §8).

Launch recipes::

    # text-to-video, 3 latent frames (= 9 RGB frames) at 64x64, written as a GIF
    python -m workflows.generate --checkpoint runs/demo/final --prompt "a red circle moving right" \\
        --frames 3 --width 64 --height 64 --steps 16 --cfg 3 --out out.gif
    # text-to-image (one frame, duration 1, fps 1)
    python -m workflows.generate --checkpoint s3://bucket/run/final --mode t2i --prompt "..." --out img.png
    # image-to-video: the image becomes latent frame 0 (kept exactly), the rest is generated
    python -m workflows.generate --checkpoint ckpt --mode i2v --image first.png --prompt "..." --out vid.mp4
    # the codes only (int64 [F, h, w] codebook indices)
    python -m workflows.generate --checkpoint ckpt --prompt "..." --out codes.npy

The checkpoint is a DESIGN §4.5 directory (``config.json`` + ``model.safetensors``); its ``video_tokenizer``
entry (a URI, or a path relative to the checkpoint such as its ``tokenizer/`` copy) decodes the codes — all latent
frames jointly — into pixels. Several ``--prompt`` run as one batch; output ``i`` goes to ``<out stem>-<i>.<ext>``
and equals a single-prompt run with ``--seed <seed + i>`` (the seed rule of :mod:`workflows.generation`, which does the
sampling). Bad arguments exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lumos import storage
from tokenize_jobs.cli import OneLineParser
from workflows.generation import (
    GenerationBundle,
    UsageError,
    VideoSpec,
    item_seed,
    load_generator,
    read_images,
)

if TYPE_CHECKING:  # torch and the model load lazily: --help and argument errors answer at once
    import torch

    from lumos.sampler import SamplerConfig

log = logging.getLogger("workflows.generate")
OUT_FORMATS = ("gif", "mp4", "png", "npy")
MODES = ("t2i", "t2v", "i2v")
"""Same as :data:`lumos.sampler.MODES`."""


def write_output(gen: GenerationBundle, path: str, codes: torch.Tensor, fps: int) -> str:
    """Write codes int64 [F, h, w] as ``.npy``, or decode all latent frames jointly and write GIF/MP4/PNG.

    Returns:
        a short description of what was written.
    """
    import numpy as np

    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "npy":
        buf = io.BytesIO()
        np.save(buf, codes.cpu().numpy())
        storage.write_bytes(path, buf.getvalue())
        return f"codes {tuple(codes.shape)}"
    from lumos.media import write_video

    frames = gen.decode(codes)  # (N, H, W, 3) uint8
    write_video(path, frames, fps=fps, format=ext, png_strip=frames.shape[0] > 1)
    return f"{frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}"


def output_paths(out: str, n: int) -> list[str]:
    """``out`` for one prompt; ``<stem>-<i><suffix>`` for several."""
    if n == 1:
        return [out]
    p = Path(out)
    if storage.is_s3(out):
        stem = out[: -len(p.suffix)] if p.suffix else out
        return [f"{stem}-{i}{p.suffix}" for i in range(n)]
    return [str(p.with_name(f"{p.stem}-{i}{p.suffix}")) for i in range(n)]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m workflows.generate", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory URI (local or s3://)")
    p.add_argument("--prompt", required=True, action="append", help="text prompt (repeat for a batch)")
    p.add_argument("--mode", choices=MODES, default="t2v", help="t2i, t2v (default) or i2v")
    p.add_argument("--image", action="append", default=[], help="i2v: input image file (repeat: a clip)")
    p.add_argument("--frames", type=int, help="latent frames in total (default 1 + ceil((fps*duration-1)/4))")
    p.add_argument("--fps", type=int, help="video fps token and playback rate (default 12; t2i: 1)")
    p.add_argument("--duration", type=int, help="video duration token in seconds (default 2; t2i: 1)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: checkpoint 'resolution' or 64)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: checkpoint 'resolution' or 64)")
    p.add_argument("--steps", type=int, default=None,
                   help="unmasking steps per latent frame (default: the checkpoint's sampling.steps, else 50)")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance scale (default: the checkpoint's sampling.cfg_scale, else 15 video / 16 image "
                        "as upstream; small models prefer 2-5)")
    p.add_argument("--no-cfg", action="store_true", help="conditional branch only (no unconditional pass)")
    p.add_argument("--seed", type=int, default=0, help="random seed (prompt i uses seed + i)")
    p.add_argument("--temperature", type=float, default=None,
                   help="logit temperature (default: the checkpoint's sampling.temperature, else 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the top-k codes only")
    p.add_argument("--gumbel-tau", type=float, default=1.0, help="confidence noise temperature (default 1)")
    p.add_argument("--upstream-tau-decay", action="store_true",
                   help="upstream's exact tau: decayed before each step's confidence, never reset")
    p.add_argument("--history-ratio", type=float, default=0.7, help="history mask ratio (default 0.7)")
    p.add_argument("--history-mode", choices=("even", "random"), default="even")
    p.add_argument("--mask-given-frames", action=argparse.BooleanOptionalAction, default=None,
                   help="i2v: commit the given frames with the history mask too (default: the checkpoint's "
                        "sampling.mask_given_frames, else unmasked, as upstream)")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole sequence every step")
    p.add_argument("--tokenizer", default=None, help="video tokenizer URI (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output file: .gif, .mp4, .png or .npy (local or s3://)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's; 1 is much faster for small models on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_out(out: str) -> str | None:
    """``--out`` must name a file whose folders are folders (raise :class:`UsageError`); returns the local folder
    that writing will create, if any (logged, as the other jobs log where their output goes)."""
    if storage.is_s3(out):
        return None
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out.rstrip('/')}/out.gif")
    for parent in path.parents:
        if parent.is_file():
            raise UsageError(f"--out {out}: {parent} is a file, not a directory")
        if parent.is_dir():
            return None if parent == path.parent else str(path.parent)
    return str(path.parent)


def check_args(args: argparse.Namespace) -> None:
    """Argument checks that need no checkpoint (raise :class:`UsageError`)."""
    ext = Path(args.out).suffix.lower().lstrip(".")
    if ext not in OUT_FORMATS:
        raise UsageError(f"--out {args.out}: unknown extension {Path(args.out).suffix!r} (use .gif, .mp4, .png, .npy)")
    created = check_out(args.out)
    if created:
        log.info("--out %s: creating the folder %s", args.out, created)
    for name in ("frames", "steps", "fps", "duration", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be >= 1, got {v}")
    if args.mode == "i2v" and not args.image:
        raise UsageError("--mode i2v needs --image FILE")
    if args.mode != "i2v" and args.image:
        raise UsageError(f"--image is only used with --mode i2v (got --mode {args.mode})")
    for path in args.image:
        if not storage.exists(path):
            raise UsageError(f"--image {path}: no such file")
    if args.mode == "t2i" and ext == "mp4":
        raise UsageError("--mode t2i makes one image: use .png, .gif or .npy")
    if any(not p.strip() for p in args.prompt):
        raise UsageError("--prompt must not be empty")
    try:
        sampler_config(args)
    except ValueError as e:
        raise UsageError(str(e)) from None


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    """The sampler flags; unset steps / CFG / temperature stay ``None``: sampling takes them from the checkpoint's
    ``sampling`` entry, else upstream's (:meth:`workflows.generation.GenerationBundle.sampler_config`)."""
    from lumos.sampler import SamplerConfig

    return SamplerConfig(steps=args.steps, cfg_scale=args.cfg, use_cfg=not args.no_cfg, temperature=args.temperature,
                         top_k=args.top_k, gumbel_tau=args.gumbel_tau, upstream_tau_decay=args.upstream_tau_decay,
                         history_ratio=args.history_ratio, history_mode=args.history_mode,
                         mask_given_frames=args.mask_given_frames, use_kv_cache=not args.no_kv_cache)


def run(args: argparse.Namespace) -> list[str]:
    """Load, generate, write; returns the written paths."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator(args.checkpoint, args.device, args.tokenizer)
    width, height = gen.size(args.width, args.height)
    spec = VideoSpec(args.mode, width, height, frames=args.frames, fps=args.fps, duration=args.duration)
    images = read_images(args.image, width, height) if args.mode == "i2v" else None
    seeds = [item_seed(args.seed, i) for i in range(len(args.prompt))]
    t0 = time.perf_counter()
    try:
        res = gen.sample(args.prompt, spec, sampler_config(args), seeds, images, progress=not args.quiet)
    except ValueError as e:
        raise UsageError(str(e)) from None
    seconds = time.perf_counter() - t0
    paths = output_paths(args.out, len(args.prompt))
    for path, codes in zip(paths, res.codes):
        what = write_output(gen, path, codes, fps=res.plan.fps)
        log.info("wrote %s (%s, %d latent frames)", path, what, res.plan.num_frames)
    log.info("generated %d x %d latent frames of %dx%d in %.1f s (forward passes per branch: %s)",
             len(args.prompt), res.plan.num_frames, *res.plan.grid, seconds, res.stats["forward_passes"])
    return paths


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        paths = run(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
