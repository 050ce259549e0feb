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
from dataclasses import dataclass

from tqdm import tqdm

from lumos import storage
from lumos.media import encode_video
from lumos.shapes.world import SPLITS, render_clip, sample_scene, scene_rng
from tokenize_jobs.cli import first_line

log = logging.getLogger("tokenize_jobs.synth")


@dataclass(kw_only=True)
class SynthConfig:
    """One corpus (one field per flag, same name); a bad value raises ``ValueError`` with one line naming the flag::

        write_corpus(SynthConfig(out="/tmp/heldout", videos=32, seed=2, split="heldout"))
    """

    out: str
    """Output directory URI (local path or s3://bucket/prefix)."""
    videos: int
    """Number of files to write."""
    seed: int
    """Corpus seed (scene i depends only on seed and i)."""
    size: int = 64
    """Frame height = width in pixels (multiple of 8)."""
    fps: float = 8.0
    seconds: float = 2.0
    """Clip duration; frames = seconds * fps + 1."""
    split: str = "train"
    """Caption split to sample from: train, heldout or any."""
    max_objects: int = 3
    """Objects per scene: 1..N (N <= 3)."""
    format: str = "mp4"
    """mp4 clips or png stills."""

    def __post_init__(self) -> None:
        if self.videos < 1:
            raise ValueError(f"--videos must be >= 1, got {self.videos}")
        if self.size < 8 or self.size % 8:
            raise ValueError(f"--size must be a positive multiple of 8, got {self.size}")
        if self.fps <= 0:
            raise ValueError(f"--fps must be positive, got {self.fps}")
        if not 0 < self.seconds <= 600:
            raise ValueError(f"--seconds must be in (0, 600], got {self.seconds}")
        if not 1 <= self.max_objects <= 3:
            raise ValueError(f"--max-objects must be 1..3, got {self.max_objects}")
        if self.split not in (*SPLITS, "any"):
            raise ValueError(f"--split must be one of {', '.join((*SPLITS, 'any'))}, got {self.split!r}")
        if self.format not in ("mp4", "png"):
            raise ValueError(f"--format must be mp4 or png, got {self.format!r}")


def build_parser() -> argparse.ArgumentParser:
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
    return p


def parse_args(argv: list[str] | None) -> SynthConfig:
    """The command line as a :class:`SynthConfig` (raises ``ValueError`` on a bad value)."""
    return SynthConfig(**vars(build_parser().parse_args(argv)))


def make_item(args: SynthConfig, index: int) -> tuple[bytes, dict]:
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


def write_corpus(args: SynthConfig) -> str:
    """Write every file, then the manifest; returns the manifest URI."""
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
    try:
        args = parse_args(argv)
        manifest = write_corpus(args)
    except (ValueError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    log.info("wrote %d %s files and %s", args.videos, args.format, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
