"""Test helper: a small token-shard dataset (DESIGN §4.4) from real shapes-world clips and a real video tokenizer.

Clips are rendered by :mod:`lumos.shapes`, encoded by the committed debug tokenizer
(``default_tokenizer_uri("debug")``; a freshly initialised debug conv tokenizer with a fixed seed when none is
committed yet), captions by the byte tokenizer of the compact layout. Videos and 1-frame images are mixed, as in the
joint stage. Written with pyarrow in the shard and error schemas of ``tokenize_jobs.shards`` (the job's), plus
``_manifest.json`` with the job's keys (written last, by the same function as the job's).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lumos.config import model_preset
from lumos.sequence import format_prompt
from lumos.shapes.world import caption, render_clip, sample_scene, scene_rng
from lumos.tokenizers import ByteTokenizer, build_video_tokenizer, default_tokenizer_uri, load_video_tokenizer
from lumos.tokenizers.video import save_video_tokenizer
from tokenize_jobs.shards import ERROR_SCHEMA, FORMAT, SHARD_SCHEMA, ShardManifest


def tokenizer_dir(root: str, name: str = "debug") -> str:
    """The committed ``name`` tokenizer (debug/small), or a seeded fresh one saved under ``root``."""
    try:
        return default_tokenizer_uri(name)
    except ValueError:
        path = os.path.join(root, f"tokenizer_{name}")
        if not os.path.exists(os.path.join(path, "config.json")):
            save_video_tokenizer(path, build_video_tokenizer(name, seed=0))
        return path


def shared_shards(tmp_path_factory) -> str:
    """One shard dataset per pytest session, shared by the pre-training test modules."""
    root = tmp_path_factory.getbasetemp() / "pretrain_shards"
    if not ShardManifest.finished(str(root / "shards")):
        root.mkdir(exist_ok=True)
        write_shards(str(root))
    return str(root / "shards")


def debug_overrides(shards: str, storage: str, name: str, **extra) -> list[str]:
    """Dotted overrides for a short debug run (2 CPU workers) on ``shards`` into ``storage/name``."""
    base = {"data.shards": shards, "checkpoint.storage": storage, "checkpoint.name": name,
            "metrics.every_steps": 1, "optim.warmup_steps": 0}
    return [f"{k}={v}" for k, v in {**base, **extra}.items()]


def write_shards(root: str, videos: int = 16, images: int = 8, size: int = 32, frames: int = 9, fps: int = 8,
                 files: int = 2, seed: int = 0, preset: str = "debug") -> str:
    """Write ``root/shards`` and return its path.

    Args:
        videos, images: clips of ``frames`` RGB frames (→ 1 + (frames-1)/4 latent frames) and 1-frame images.
        size: pixels per side (latent grid size/8).
        files: Parquet files to spread the rows over.
        preset: model/tokenizer size pair (``debug``: 240 codes, ``small``: 1,000 codes).
    """
    tok_dir = tokenizer_dir(root, preset)
    tok = load_video_tokenizer(tok_dir)
    layout = model_preset(preset).layout
    text = ByteTokenizer(layout)
    scenes = [sample_scene(scene_rng(seed, i), max_objects=2) for i in range(videos + images)]
    clips = [render_clip(s, size=size, fps=fps, num_frames=frames if i < videos else 1)  # (N, H, W, 3) uint8
             for i, s in enumerate(scenes)]
    codes_all = []
    for group in (clips[:videos], clips[videos:]):  # one batched encode per clip length
        if group:
            codes_all.extend(tok.encode(np.stack(group)).numpy().astype(np.int32))  # (B, F, h, w)
    rows = []
    for i, (scene, codes) in enumerate(zip(scenes, codes_all)):
        n = frames if i < videos else 1
        cap = caption(scene)
        prompt = format_prompt(layout, cap, width=size, height=size, frames=n, fps=fps if n > 1 else 1)
        rows.append({
            "clip_id": f"shape-{seed}-{i:04d}", "source": f"synthetic://shapes/{seed}/{i}", "caption": cap,
            "text_ids": text.encode(prompt), "video_tokens": codes.reshape(-1).tolist(),
            "grid_t": codes.shape[0], "grid_h": codes.shape[1], "grid_w": codes.shape[2],
            "fps": float(fps if n > 1 else 1), "num_frames": n, "height": size, "width": size, "start_s": 0.0,
            "clip_index": 0, "source_clips": 1,
        })
    out = os.path.join(root, "shards")
    os.makedirs(os.path.join(out, "_errors"), exist_ok=True)
    for k in range(files):
        part = rows[k::files]
        table = pa.Table.from_pylist(part, schema=SHARD_SCHEMA)
        pq.write_table(table, os.path.join(out, f"part-{k:05d}.parquet"))
    pq.write_table(ERROR_SCHEMA.empty_table(), os.path.join(out, "_errors", "part-00000.parquet"))
    ShardManifest({"format": FORMAT, "tokenizer": {"uri": tok_dir, **tok.identity},
                   "counts": {"inputs": len(rows), "clips_written": len(rows), "errors": 0, "unaccounted_inputs": 0},
                   "error_files": ["_errors/part-00000.parquet"]}).write(out)
    return out
