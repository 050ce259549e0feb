"""Write a shapes-world corpus: N real H.264 mp4 files (or PNG stills) + ``manifest.jsonl`` (DESIGN §4.2, §4.3).

Launch recipes::

    python -m tokenize_jobs.synth --out /tmp/corpus --videos 64 --seed 0
    python -m tokenize_jobs.synth --out s3://bucket/lumos/raw/corpus --videos 2000 --seed 0 --size 64 --fps 8
    python -m tokenize_jobs.synth --out /tmp/heldout --videos 32 --seed 1 --split heldout
    python -m tokenize_jobs.synth --out /tmp/stills --videos 100 --seed 0 --format png   # T2I corpus

Manifest rows (JSON Lines, one per file): ``path`` (relative to the manifest), ``caption`` (the grammar caption;
without motion words for PNG stills), ``split`` (``train``/``heldout``; the two never share a caption), ``gt``
(the scene's ground truth as a JSON string, see ``lumos.shapes.world.Scene.to_dict``), ``num_objects``,
``scene_seed``, ``scene_index``. Scene i depends only on (seed, i). The manifest is written last, so a corpus
without ``manifest.jsonl`` is an unfinished one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tqdm import tqdm

from lumos import storage
from lumos.media import encode_video
from lumos.shapes.world import SPLITS, render_clip, sample_scene, scene_rng
from tokenize_jobs.cli import first_line

log = logging.getLogger("tokenize_jobs.synth")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tokenize_jobs.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory URI (local path or s3://bucket/prefix)")
    p.add_argument("--videos", type=int, required=True, help="number of files to write")
    p.add_argument("--seed", type=int, required=True, help="corpus seed (scene i depends only on seed and i)")
    p.add_argument("--size", type=int, default=64, help="frame height = width in pixels (multiple of 8)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second")
    p.add_argument("--seconds", type=float, default=2.0, help="clip duration; frames = seconds * fps + 1")
    p.add_argument("--split", choices=[*SPLITS, "any"], default="train", help="caption split to sample from")
    p.add_argument("--max-objects", type=int, default=3, help="objects per scene: 1..N (N <= 3)")
    p.add_argument("--format", choices=["mp4", "png"], default="mp4", help="mp4 clips or png stills")
    return p.parse_args(argv)


def validate(args: argparse.Namespace) -> None:
    """One-line ValueErrors for bad arguments."""
    if args.videos < 1:
        raise ValueError(f"--videos must be >= 1, got {args.videos}")
    if args.size < 8 or args.size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, got {args.size}")
    if args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if not 0 < args.seconds <= 600:
        raise ValueError(f"--seconds must be in (0, 600], got {args.seconds}")
    if not 1 <= args.max_objects <= 3:
        raise ValueError(f"--max-objects must be 1..3, got {args.max_objects}")


def make_item(args: argparse.Namespace, index: int) -> tuple[bytes, dict]:
    """Render file ``index`` of the corpus: (file bytes, manifest row without ``path``)."""
    split = None if args.split == "any" else args.split
    scene = sample_scene(scene_rng(args.seed, index), max_objects=args.max_objects, seconds=args.seconds,
                         split=split)
    if args.format == "png":
        frames = render_clip(scene, size=args.size, fps=args.fps, num_frames=1)
        caption = scene.caption(with_motion=False)
    else:
        frames = render_clip(scene, size=args.size, fps=args.fps)
        caption = scene.caption()
    row = {"caption": caption, "split": scene.split, "gt": json.dumps(scene.to_dict(), sort_keys=True),
           "num_objects": len(scene.objects), "scene_seed": args.seed, "scene_index": index}
    return encode_video(frames, fps=args.fps, format=args.format), row


def write_corpus(args: argparse.Namespace) -> str:
    """Write every file, then the manifest; returns the manifest URI."""
    validate(args)
    rows = []
    for i in tqdm(range(args.videos), desc="synth", unit="file", mininterval=2.0):
        data, row = make_item(args, i)
        rel = f"{'videos' if args.format == 'mp4' else 'images'}/{i:06d}.{args.format}"
        storage.write_bytes(storage.join(args.out, rel), data)
        rows.append({"path": rel, **row})
    manifest = storage.join(args.out, "manifest.jsonl")
    storage.write_text(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        manifest = write_corpus(args)
    except (ValueError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    log.info("wrote %d %s files and %s", args.videos, args.format, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
