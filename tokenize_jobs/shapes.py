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
import os
import sys
import time
import uuid
from dataclasses import MISSING, dataclass, fields

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


@dataclass(kw_only=True)
class ShapesJobConfig:
    """Everything one shapes job run is given (one field per flag, same name); checked where it is built::

        run_job(ShapesJobConfig(out="runs/shards/stills", stills=8000, text_tokenizer="lumos/assets/text_words.json"))

    A bad value raises ``ValueError`` with one line naming the flag.
    """

    out: str
    """Output shard directory URI (local path or ``s3://``); made absolute."""
    stills: int = 0
    """Still images (T2I items)."""
    clips: int = 0
    """Video clips (T2V/I2V items)."""
    seed: int = 0
    """Corpus seed: item i is scene (seed, i)."""
    size: int = 64
    """Frame side in pixels, a multiple of 8."""
    fps: float = 8.0
    """Clip frames per second."""
    seconds: float = 2.0
    """Clip duration; frames = seconds·fps + 1."""
    max_objects: int = 3
    """Objects per scene 1..N, N <= 3."""
    tokenizer: str | None = None
    """Video tokenizer URI (``None``: the committed small one); made absolute."""
    text_tokenizer: str | None = None
    """HF tokenizers JSON (e.g. lumos/assets/text_words.json); ``None``: byte-level text; made absolute."""
    batch_size: int = 64
    """Items rendered and tokenized per call."""
    actors: int | None = None
    """Render+tokenize actors, 1 CPU each (``None``: one per CPU of the cluster)."""
    rows_per_file: int = 4096
    """Rows per Parquet shard file."""

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out is required (or --write-text-tokenizer PATH)")
        for name in ("out", "tokenizer", "text_tokenizer"):  # Ray workers do not share the driver's cwd
            value = getattr(self, name)
            setattr(self, name, storage.absolute(None if value is None else os.fspath(value)))
        self.fps, self.seconds = float(self.fps), float(self.seconds)
        if self.stills < 0 or self.clips < 0 or self.stills + self.clips < 1:
            raise ValueError(f"--stills and --clips must be >= 0 with at least one item, got {self.stills}, "
                             f"{self.clips}")
        if self.size < 8 or self.size % 8:
            raise ValueError(f"--size must be a positive multiple of 8, got {self.size}")
        if self.fps <= 0 or not 0 < self.seconds <= 60:
            raise ValueError(f"--fps must be > 0 and --seconds in (0, 60], got {self.fps:g}, {self.seconds:g}")
        if not 1 <= self.max_objects <= 3:
            raise ValueError(f"--max-objects must be 1..3, got {self.max_objects}")
        if self.batch_size < 1 or self.rows_per_file < 1 or (self.actors is not None and self.actors < 1):
            raise ValueError("--batch-size, --rows-per-file and --actors must be >= 1")

    @property
    def world(self) -> dict:
        """What the scenes are drawn from (hashed into every clip id)."""
        return {"world": "shapes", "stills": self.stills, "clips": self.clips, "seed": self.seed, "size": self.size,
                "fps": self.fps, "seconds": self.seconds, "max_objects": self.max_objects, "split": "train"}


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per :class:`ShapesJobConfig` field (same name), defaults taken from it."""
    d = {f.name: f.default for f in fields(ShapesJobConfig) if f.default is not MISSING}
    p = argparse.ArgumentParser(prog="python -m tokenize_jobs.shapes", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:8]))
    p.add_argument("--out", help="output shard directory (local path or s3://bucket/prefix)")
    p.add_argument("--stills", type=int, help=f"still images (T2I items), default {d['stills']}")
    p.add_argument("--clips", type=int, help=f"video clips (T2V/I2V items), default {d['clips']}")
    p.add_argument("--seed", type=int, help=f"corpus seed: item i is scene (seed, i); default {d['seed']}")
    p.add_argument("--size", type=int, help=f"frame side in pixels, a multiple of 8 (default {d['size']})")
    p.add_argument("--fps", type=float, help=f"clip frames per second (default {d['fps']:g})")
    p.add_argument("--seconds", type=float, help=f"clip duration; frames = seconds·fps + 1 (default {d['seconds']:g})")
    p.add_argument("--max-objects", type=int, help=f"objects per scene 1..N, N <= 3 (default {d['max_objects']})")
    p.add_argument("--tokenizer", help="video tokenizer URI (default: the committed small one)")
    p.add_argument("--text-tokenizer",
                   help="HF tokenizers JSON (e.g. lumos/assets/text_words.json); default: byte-level text")
    p.add_argument("--batch-size", type=int, help=f"items rendered and tokenized per call (default {d['batch_size']})")
    p.add_argument("--actors", type=int, help="render+tokenize actors, 1 CPU each (default: one per CPU of the cluster)")
    p.add_argument("--rows-per-file", type=int, help=f"rows per Parquet shard file (default {d['rows_per_file']})")
    p.add_argument("--write-text-tokenizer", metavar="PATH", default=None,
                   help="instead of shards: learn a word vocabulary from 20,000 train-split captions of --seed "
                        "(stills and clips) and write the tokenizer JSON to PATH")
    p.set_defaults(**d)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[ShapesJobConfig | None, argparse.Namespace]:
    """``(job config or None with --write-text-tokenizer, the parsed flags)``; a bad value raises a one-line
    ``ValueError`` naming the flag."""
    args = build_parser().parse_args(argv)
    if args.write_text_tokenizer:
        return None, args
    flags = {f.name: getattr(args, f.name) for f in fields(ShapesJobConfig)}
    return ShapesJobConfig(**flags), args


def learn_text_tokenizer(path: str, seed: int, n: int = 20_000) -> str:
    """Write a word-level caption tokenizer learned from ``n`` train-split captions (half stills, half clips)."""
    from lumos.tokenizers.text import train_word_tokenizer
    from lumos.vocab import build_layout

    captions = [sample_scene(scene_rng(seed, i), split="train").caption(with_motion=i % 2 == 1) for i in range(n)]
    text = train_word_tokenizer(captions, build_layout("compact", 1))
    storage.write_text(storage.absolute(path), text)
    return path


def run_job(cfg: ShapesJobConfig) -> dict:
    """Render + tokenize every item not yet in ``--out``; returns the ``_manifest.json`` document."""
    from lumos.tokenizers import default_tokenizer_uri
    from tokenize_jobs.reconcile import reconcile_outputs
    from tokenize_jobs.video import actor_pool, init_ray, tokenizer_info
    from tokenize_jobs.writer import ShardSink, merge_stats

    t0 = time.time()
    text_tok = cfg.text_tokenizer
    tok = tokenizer_info(cfg.tokenizer or default_tokenizer_uri("small"), "compact", cfg.size, text_tok)
    world = cfg.world
    settings = {"world": world, "layout": "compact", "text_tokenizer": text_tok,
                "tokenizer": {"uri": tok["uri"], "sha256": tok["identity"].get("sha256")},
                "id_key": settings_key(json.dumps(world, sort_keys=True), tok["identity"], "compact", text_tok)}
    if ShardManifest.finished(cfg.out):
        done = ShardManifest.read(cfg.out)
        if done.settings.get("id_key") == settings["id_key"]:
            log.info("%s is already finished with these settings", cfg.out)
            return dict(done.doc, skipped=True)
    prepare_output(cfg.out, settings)
    done = scan_outputs(cfg.out)
    total = cfg.stills + cfg.clips
    kinds = ["still" if i < cfg.stills else "clip" for i in range(total)]
    todo = [i for i in range(total) if not done.clips.get(item_source(cfg.seed, i, kinds[i]))]
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    ray = init_ray()
    cpus = cfg.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    sink = ShardSink(cfg.out, run_id, None, cfg.rows_per_file)
    if todo:
        blocks = [pa.table({"index": pa.array(todo[i:i + cfg.batch_size], pa.int64())})
                  for i in range(0, len(todo), cfg.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            RenderTokenizeScenes, batch_size=None, batch_format="pyarrow", num_cpus=1,
            fn_constructor_kwargs={"world": world, "id_key": settings["id_key"], "tokenizer": tok["uri"],
                                   "layout": "compact", "text_tokenizer": text_tok, "threads": 1},
            compute=actor_pool(ray, (cpus, cpus, cpus)))
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    stats = merge_stats(sink.results)
    final, reconciled = reconcile_outputs(cfg.out)
    wall = time.time() - t0
    doc = {"format": FORMAT, "settings": settings, "tokenizer": tok, "layout": "compact", "manifest": None,
           "counts": {"inputs": total, "clips_written": final.num_clips, "errors": final.num_errors,
                      "still_items": cfg.stills, "clip_items": cfg.clips,
                      "unaccounted_inputs": total - len(final.accounted_sources())},
           **final.part_names(cfg.out),
           "last_run": dict(stats, run_id=run_id, items_processed=len(todo), items_skipped=total - len(todo),
                            reconciled=reconciled.as_dict(),
                            wall_s=round(wall, 3), items_per_s=round(len(todo) / wall, 3) if wall > 0 else 0.0)}
    write_manifest(cfg.out, doc)
    log.info("wrote %s", storage.join(cfg.out, MANIFEST))
    return doc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg, args = parse_args(argv)
        if cfg is None:
            print(f"text tokenizer -> {learn_text_tokenizer(args.write_text_tokenizer, args.seed)}")
            return 0
        doc = run_job(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    c, r = doc["counts"], doc["last_run"]
    run = ("already finished, nothing rendered" if doc.get("skipped") else
           f"{r.get('items_processed', 0)} rendered this run in {r.get('wall_s', 0):.1f} s")
    print(f"shapes: {c['inputs']} items ({c['still_items']} stills, {c['clip_items']} clips), {c['clips_written']} rows, "
          f"{c['errors']} errors; {run} -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
