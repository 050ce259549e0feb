"""The README's top GIF: a checkpoint's t2i / t2v / i2v samples for the demo's held-out prompts over the world's
render of each prompt, one pair of rows per prompt seed.

Launch recipe::

    python -m workflows.showcase --checkpoint small --out docs/img/small.gif      # seeds 0 and 1, about a minute
"""

from __future__ import annotations

import argparse
import sys

from tokenize_jobs.cli import OneLineParser


def showcase(checkpoint: str, seeds: list[int], steps: int | None = None):
    """uint8 [N, 2·len(seeds)·(S+4)·2, 3·(S+4)·2, 3]: per seed, the generations (row 1) over the renders (row 2)."""
    import dataclasses

    from workflows.demo import PLANS, overview, sample_modes
    from workflows.generation import load_generator

    plan = PLANS["full"] if steps is None else dataclasses.replace(PLANS["full"], sample_steps=steps)
    gen, rows = load_generator(checkpoint, "cpu"), []
    for seed in seeds:
        (generated,), truth, _, _ = sample_modes([gen], plan, seed)
        rows += [generated, truth]
    return overview(rows)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m workflows.showcase", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="small", help="checkpoint directory or committed name")
    p.add_argument("--out", required=True, help="GIF (or mp4) to write")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="prompt seeds, one pair of rows each")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per frame (default: the demo's 16)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from lumos.media import write_video
    from workflows.demo import FPS
    from workflows.generation import UsageError

    try:
        write_video(args.out, showcase(args.checkpoint, args.seeds, args.steps), fps=FPS)
    except UsageError as e:
        p.error(str(e))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
