"""Helpers for the tokenization-job tests: small real media files made with PyAV/Pillow, reference decoding, and a
real (freshly initialised, debug-size) video tokenizer checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pyav_frames(path) -> np.ndarray:
    """Every frame of a video decoded by PyAV: uint8 (N, H, W, 3) (the reference decoder)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def write_video(path, frames: np.ndarray, fps: int = 25, gop: int | None = None, rotation: int = 0) -> Path:
    """Encode uint8 (N, H, W, 3) frames as H.264 mp4 (even sizes), optionally with a display rotation."""
    import av

    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if rotation:
            s.set_display_rotation(rotation)
        if gop:
            s.gop_size = gop
            s.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return Path(path)


def one_frame_video(path) -> Path:
    """A valid 1-frame mp4 (too short for any multi-frame clip)."""
    frame = np.full((1, 48, 64, 3), 90, np.uint8)
    return write_video(path, frame)


def truncated_copy(src, dst, fraction: float = 0.4) -> Path:
    """The first ``fraction`` of a file's bytes (an interrupted download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def write_image(path, size=(120, 80), rgba: bool = False) -> Path:
    """A PNG/JPEG test image: a colour gradient; with ``rgba`` the left half is fully transparent."""
    from PIL import Image

    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    img = np.concatenate([x, x[:, ::-1], np.full_like(x, 60)], axis=2)
    if rgba:
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[:, : w // 2] = 0
        Image.fromarray(np.concatenate([img, alpha], axis=2), "RGBA").save(path)
    else:
        Image.fromarray(img, "RGB").save(path)
    return Path(path)


def make_tokenizer(path) -> str:
    """Save a freshly initialised debug conv tokenizer (the real lumos tokenizer class) and return its URI."""
    from lumos.tokenizers import build_video_tokenizer, save_video_tokenizer

    save_video_tokenizer(str(path), build_video_tokenizer("debug", seed=0))
    return str(path)


def write_manifest(path, rows: list[dict]) -> str:
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# Small settings shared by the job tests: 5-frame clips at 4 fps (1 s) in 64-px buckets of 16-px patches.
JOB_ARGS = ["--fps", "4", "--seconds", "1", "--target-size", "64", "--patch", "16", "--batch-size", "4",
            "--decode-concurrency", "1,2", "--tokenize-concurrency", "1", "--rows-per-file", "8"]


def reference_clips(path, source: str, caption: str, settings, tokenizer_uri: str) -> dict[int, dict]:
    """Direct decode + tokenize of one input, outside Ray and outside the child process: the job's readers in
    this process, the bucket resize, the video tokenizer, and the prompt's text ids. Returns ``{clip_index:
    {"video_tokens", "text_ids", "grid", "start_s", "size"}}``."""
    from lumos.buckets import choose_bucket, resize_center_crop
    from lumos.sequence import format_prompt
    from lumos.tokenizers import load_text_tokenizer, load_video_tokenizer
    from lumos.vocab import build_layout
    from tokenize_jobs.decode import plan_clips
    from tokenize_jobs.readers import open_reader

    tok = load_video_tokenizer(tokenizer_uri)
    layout = build_layout("compact", tok.codebook_size)
    text = load_text_tokenizer(None, layout)
    reader = open_reader(str(path), source, settings)
    info = reader.info()
    bucket = choose_bucket(info.width, info.height, settings.target_size, settings.patch)
    out = {}
    for plan in plan_clips(info, settings):
        clip = resize_center_crop(reader.read(plan.indices, "sequential"), bucket)
        codes = tok.encode(clip).numpy()
        n = len(plan.indices)
        fps = 1 if info.is_image else settings.fps
        prompt = format_prompt(layout, caption, width=bucket[0], height=bucket[1], frames=1 if n == 1 else n - 1,
                               fps=fps)
        out[plan.clip_index] = {"video_tokens": codes.reshape(-1).tolist(), "text_ids": text.encode(prompt),
                                "grid": codes.shape, "start_s": plan.start_s, "size": bucket}
    return out


def read_shards(out_dir) -> pa.Table:  # noqa: F821
    """All shard rows of a finished output directory (files listed in ``_manifest.json``), sorted by clip id."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lumos import storage
    from tokenize_jobs.shards import ShardManifest

    tables = []
    for name in ShardManifest.read(out_dir).shards:
        fs, p = storage.resolve(storage.join(out_dir, name))
        tables.append(pq.read_table(p, filesystem=fs))
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [("clip_id", "ascending")]))


def read_errors(out_dir) -> list[dict]:
    """All error rows of an output directory."""
    import pyarrow.parquet as pq

    from lumos import storage
    from tokenize_jobs.shards import ShardManifest

    rows = []
    for name in ShardManifest.read(out_dir).error_files:
        fs, p = storage.resolve(storage.join(out_dir, name))
        rows += pq.read_table(p, filesystem=fs).to_pylist()
    return rows
