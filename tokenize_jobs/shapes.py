"""Render shapes-world scenes and tokenize them straight into token shards (no media files in between).

Launch recipes::

    python -m tokenize_jobs.shapes --out /tmp/shapes-shards --stills 2000 --clips 500 --seed 0
    python -m tokenize_jobs.shapes --out s3://bucket/shards/shapes --stills 40000 --clips 16000 --seed 0 \\
        --text-tokenizer lumos/assets/text_words.json
    python -m tokenize_jobs.shapes --write-text-tokenizer /tmp/words.json --seed 0   # learn a caption vocabulary

The world can render unlimited unique scenes, so a pre-training corpus large enough not to be memorised costs
only render + tokenizer time (tens of thousands of stills and clips in minutes on a laptop), where
``tokenize_jobs.synth`` + ``tokenize_jobs.video`` would encode, write, read and decode every frame as mp4. Item
``i`` is drawn from ``scene_rng(seed, i)`` until its caption (a still's: without motion words) falls in the
``train`` split, so no item is ever a held-out eval prompt; items ``0 .. stills-1`` are stills (captions without motion words, one RGB frame), the rest clips of
``seconds·fps + 1`` frames. Output: the tokenization job's shard layout (DESIGN §4.4: Parquet rows, ``_errors/``,
``_settings.json``, ``_manifest.json`` written last), so ``workflows.pretrain`` reads it unchanged. Rendering and
tokenizing run in one Ray Data actor pool (one actor per CPU); a rerun into the same ``--out`` skips the items
already written and a finished output is left as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid

import numpy as np
import pyarrow as pa

from lumos import storage
from lumos.shapes.world import caption_split, render_clip, sample_scene, scene_rng
from tokenize_jobs.cli import first_line
from tokenize_jobs.shards import (
    FORMAT,
    MANIFEST,
    ShardManifest,
    clip_id,
    prepare_output,
    scan_outputs,
    settings_key,
    write_manifest,
)

log = logging.getLogger("tokenize_jobs.shapes")
SOURCE_PREFIX = "shapes://"


def item_source(seed: int, index: int, kind: str) -> str:
    """The ``source`` of item ``index``: ``shapes://<seed>/<still|clip>/<index>``."""
    return f"{SOURCE_PREFIX}{seed}/{kind}/{index}"


def render_item(index: int, stills: int, seed: int, size: int, fps: float, seconds: float,
                max_objects: int = 3) -> tuple[str, str, np.ndarray]:
    """``(kind, caption, uint8 frames [N, size, size, 3])`` of item ``index`` (train-split captions only)."""
    rng = scene_rng(seed, index)
    if index >= stills:
        scene = sample_scene(rng, max_objects=max_objects, seconds=seconds, split="train")
        return "clip", scene.caption(), render_clip(scene, size=size, fps=fps)
    while True:  # a still's own caption (no motion words) must be a train caption: the T2I eval holds out others
        scene = sample_scene(rng, max_objects=max_objects, seconds=seconds)
        if caption_split(scene.caption(with_motion=False)) == "train":
            return "still", scene.caption(with_motion=False), render_clip(scene, size=size, num_frames=1)


class RenderTokenizeScenes:
    """Ray Data UDF (``batch_format="pyarrow"``): item indices → tokenized shard rows.

    Renders each item (:func:`render_item`) and hands the frames to
    :class:`tokenize_jobs.udfs.TokenizeClips` (video tokens, ``format_prompt`` text ids), so rows are the ones the
    tokenization job would write for the same frames.
    """

    def __init__(self, world: dict, id_key: str, **tokenizer):
        from tokenize_jobs.udfs import DECODED_SCHEMA, TokenizeClips

        self.world = world
        self.id_key = id_key
        self.schema = DECODED_SCHEMA
        self.tokenize = TokenizeClips(**tokenizer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        w = self.world
        rows = []
        for index in batch.column("index").to_pylist():
            kind, caption, frames = render_item(index, w["stills"], w["seed"], w["size"], w["fps"], w["seconds"],
                                                w["max_objects"])
            source = item_source(w["seed"], index, kind)
            n, h, wd, _ = frames.shape
            rows.append({"source": source, "caption": caption, "input_index": index,
                         "clip_id": clip_id(source, 0, self.id_key), "clip_index": 0, "source_clips": 1,
                         "start_s": 0.0, "fps": float(w["fps"]) if n > 1 else 1.0, "num_frames": n, "height": h,
                         "width": wd, "frames": frames.tobytes(), "strategy": "render", "decode_s": 0.0,
                         "stage": None, "error": None})
        return self.tokenize(pa.Table.from_pylist(rows, schema=self.schema))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tokenize_jobs.shapes", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:8]))
    p.add_argument("--out", help="output shard directory (local path or s3://bucket/prefix)")
    p.add_argument("--stills", type=int, default=0, help="still images (T2I items), default 0")
    p.add_argument("--clips", type=int, default=0, help="video clips (T2V/I2V items), default 0")
    p.add_argument("--seed", type=int, default=0, help="corpus seed: item i is scene (seed, i)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 8 (default 64)")
    p.add_argument("--fps", type=float, default=8.0, help="clip frames per second (default 8)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip duration; frames = seconds·fps + 1 (default 2)")
    p.add_argument("--max-objects", type=int, default=3, help="objects per scene 1..N, N <= 3 (default 3)")
    p.add_argument("--tokenizer", default=None, help="video tokenizer URI (default: the committed small one)")
    p.add_argument("--text-tokenizer", default=None,
                   help="HF tokenizers JSON (e.g. lumos/assets/text_words.json); default: byte-level text")
    p.add_argument("--batch-size", type=int, default=64, help="items rendered and tokenized per call (default 64)")
    p.add_argument("--actors", type=int, default=None,
                   help="render+tokenize actors, 1 CPU each (default: one per CPU of the cluster)")
    p.add_argument("--rows-per-file", type=int, default=4096, help="rows per Parquet shard file (default 4096)")
    p.add_argument("--write-text-tokenizer", metavar="PATH", default=None,
                   help="instead of shards: learn a word vocabulary from 20,000 train-split captions of --seed "
                        "(stills and clips) and write the tokenizer JSON to PATH")
    return p


def validate(args: argparse.Namespace) -> None:
    """One-line ValueErrors for bad arguments."""
    if args.write_text_tokenizer:
        return
    if not args.out:
        raise ValueError("--out is required (or --write-text-tokenizer PATH)")
    if args.stills < 0 or args.clips < 0 or args.stills + args.clips < 1:
        raise ValueError(f"--stills and --clips must be >= 0 with at least one item, got {args.stills}, {args.clips}")
    if args.size < 8 or args.size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, got {args.size}")
    if args.fps <= 0 or not 0 < args.seconds <= 60:
        raise ValueError(f"--fps must be > 0 and --seconds in (0, 60], got {args.fps}, {args.seconds}")
    if not 1 <= args.max_objects <= 3:
        raise ValueError(f"--max-objects must be 1..3, got {args.max_objects}")
    if args.batch_size < 1 or args.rows_per_file < 1 or (args.actors is not None and args.actors < 1):
        raise ValueError("--batch-size, --rows-per-file and --actors must be >= 1")


def learn_text_tokenizer(path: str, seed: int, n: int = 20_000) -> str:
    """Write a word-level caption tokenizer learned from ``n`` train-split captions (half stills, half clips)."""
    from lumos.tokenizers.text import train_word_tokenizer
    from lumos.vocab import build_layout

    captions = [sample_scene(scene_rng(seed, i), split="train").caption(with_motion=i % 2 == 1) for i in range(n)]
    text = train_word_tokenizer(captions, build_layout("compact", 1))
    storage.write_text(storage.absolute(path), text)
    return path


def world_settings(args: argparse.Namespace) -> dict:
    return {"world": "shapes", "stills": args.stills, "clips": args.clips, "seed": args.seed, "size": args.size,
            "fps": args.fps, "seconds": args.seconds, "max_objects": args.max_objects, "split": "train"}


def run_job(args: argparse.Namespace) -> dict:
    """Render + tokenize every item not yet in ``--out``; returns the ``_manifest.json`` document."""
    from lumos.tokenizers import default_tokenizer_uri
    from tokenize_jobs.video import actor_pool, init_ray, tokenizer_info
    from tokenize_jobs.writer import ShardSink, merge_stats

    t0 = time.time()
    args.out = storage.absolute(args.out)
    text_tok = storage.absolute(args.text_tokenizer) if args.text_tokenizer else None
    tok = tokenizer_info(storage.absolute(args.tokenizer) if args.tokenizer else default_tokenizer_uri("small"),
                         "compact", args.size, text_tok)
    world = world_settings(args)
    settings = {"world": world, "layout": "compact", "text_tokenizer": text_tok,
                "tokenizer": {"uri": tok["uri"], "sha256": tok["identity"].get("sha256")},
                "id_key": settings_key(json.dumps(world, sort_keys=True), tok["identity"], "compact", text_tok)}
    if ShardManifest.finished(args.out):
        done = ShardManifest.read(args.out)
        if done.settings.get("id_key") == settings["id_key"]:
            log.info("%s is already finished with these settings", args.out)
            return done.doc
    prepare_output(args.out, settings)
    done = scan_outputs(args.out)
    total = args.stills + args.clips
    kinds = ["still" if i < args.stills else "clip" for i in range(total)]
    todo = [i for i in range(total) if not done.clips.get(item_source(args.seed, i, kinds[i]))]
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    ray = init_ray()
    cpus = args.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    sink = ShardSink(args.out, run_id, None, args.rows_per_file)
    if todo:
        blocks = [pa.table({"index": pa.array(todo[i:i + args.batch_size], pa.int64())})
                  for i in range(0, len(todo), args.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            RenderTokenizeScenes, batch_size=None, batch_format="pyarrow", num_cpus=1,
            fn_constructor_kwargs={"world": world, "id_key": settings["id_key"], "tokenizer": tok["uri"],
                                   "layout": "compact", "text_tokenizer": text_tok, "threads": 1},
            compute=actor_pool(ray, (cpus, cpus, cpus)))
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    stats = merge_stats(sink.results)
    final = scan_outputs(args.out)
    root = args.out.rstrip("/")
    wall = time.time() - t0
    doc = {"format": FORMAT, "settings": settings, "tokenizer": tok, "layout": "compact", "manifest": None,
           "counts": {"inputs": total, "clips_written": final.num_clips, "errors": final.num_errors,
                      "still_items": args.stills, "clip_items": args.clips,
                      "unaccounted_inputs": total - len(final.accounted_sources())},
           "shards": [f[len(root):].lstrip("/") for f in final.shard_files],
           "error_files": [f[len(root):].lstrip("/") for f in final.error_files],
           "last_run": dict(stats, run_id=run_id, items_processed=len(todo), items_skipped=total - len(todo),
                            wall_s=round(wall, 3), items_per_s=round(len(todo) / wall, 3) if wall > 0 else 0.0)}
    write_manifest(args.out, doc)
    log.info("wrote %s", storage.join(args.out, MANIFEST))
    return doc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        if args.write_text_tokenizer:
            print(f"text tokenizer -> {learn_text_tokenizer(args.write_text_tokenizer, args.seed)}")
            return 0
        doc = run_job(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    c, r = doc["counts"], doc["last_run"]
    print(f"shapes: {c['inputs']} items ({c['still_items']} stills, {c['clip_items']} clips), {c['clips_written']} rows, "
          f"{c['errors']} errors; {r.get('items_processed', 0)} rendered this run in {r.get('wall_s', 0):.1f} s "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
