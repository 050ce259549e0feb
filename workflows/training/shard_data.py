"""Token shards → Ray Data stream → length-bucketed micro-batches of AR-DF samples.

Input is the tokenization job's output (DESIGN §4.4): a Parquet dataset with ``_manifest.json`` beside it. Rows
become samples ``{"text_ids", "codes" (F, h, w), "duration", "fps"}`` (LUMOS_SPEC §7.1: optional temporal crop,
duration/fps rewritten; images are 1-frame videos with duration 1 and fps 1), which
:func:`lumos.ardf.make_batch` turns into sequences (spec §4 layout via :mod:`lumos.sequence`) with tube masks.

Determinism (so a resumed run sees exactly the batches it would have seen): the driver reads the files in sorted
order and Ray Train splits the stream with ``preserve_order`` (the split is then a deterministic function of the
block order); each worker shuffles with a generator seeded by (seed, epoch, rank). The data position is the number
of micro-batches a worker has taken in the current epoch; resuming re-reads the epoch and skips that many.

Batching is length bucketing (xllmx's length-clustered sampler in spirit): a window of samples is sorted by
sequence length and cut into micro-batches of ``micro_batch_size``; the batches of a window are shuffled. Every
worker receives the same number of rows (equal split), so every worker makes the same number of batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from lumos import storage
from lumos.sequence import sequence_length
from tokenize_jobs.shards import ShardManifest, list_parts
from workflows.training.train_config import DataSection

SHARD_COLUMNS = ["clip_id", "text_ids", "video_tokens", "grid_t", "grid_h", "grid_w", "fps"]
"""The columns of the shard schema (``tokenize_jobs.shards.SHARD_SCHEMA``) that training reads."""


def check_shards(uri: str) -> ShardManifest:
    """Validate a token-shard directory and return its manifest.

    Raises:
        ValueError: no ``_manifest.json`` (missing, or a partial tokenization output), or no Parquet files.
    """
    if not uri:
        raise ValueError("data.shards is empty: pass data.shards=<token shard dir or s3:// URI>")
    if not storage.exists(uri):
        raise ValueError(f"data.shards={uri}: no such directory")
    manifest = ShardManifest.read(uri, name="data.shards=")
    if not shard_files(uri):
        raise ValueError(f"data.shards={uri}: no Parquet shard files")
    return manifest


def shard_files(uri: str) -> list[str]:
    """Sorted Parquet files of the dataset, leaving out ``_errors/`` and other ``_``/``.``-prefixed entries."""
    return list_parts(uri)[0]


def read_shards(data: DataSection, seed: int = 0):
    """The shards as a Ray Dataset (only the columns training needs); image stage keeps 1-frame rows unless
    videos contribute their first frame. Filtering and the seeded global shuffle (``data.global_shuffle``) happen
    before Ray Train's equal split, so every worker still gets the same number of rows, the same ones in every
    relaunch of the run."""
    import ray.data

    files = shard_files(data.shards)
    fs, _ = storage.resolve(data.shards)
    paths = [storage.resolve(f)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=SHARD_COLUMNS)
    ds.context.execution_options.preserve_order = True  # same block order in every relaunch of the run
    if data.stage == "image" and not data.video_first_frame_as_image:
        ds = ds.filter(expr="grid_t == 1")
    if data.global_shuffle:
        ds = ds.random_shuffle(seed=seed)
    return ds.materialize() if data.materialize else ds


def row_to_sample(row: dict[str, Any], data: DataSection, temporal_compression: int = 4) -> dict[str, Any]:
    """One shard row → one training sample.

    Args:
        row: ``text_ids``, ``video_tokens`` (F*h*w), ``grid_t/h/w``, ``fps``.
        data: crop/stage settings.
        temporal_compression: RGB frames per latent frame after the first (spec §3.1).

    Returns:
        ``{"text_ids": list[int], "codes": LongTensor (F, h, w), "duration": int, "fps": int}``.
    """
    f, h, w = int(row["grid_t"]), int(row["grid_h"]), int(row["grid_w"])
    tokens = np.asarray(row["video_tokens"], dtype=np.int64)
    if tokens.size != f * h * w:
        raise ValueError(f"clip {row.get('clip_id')}: {tokens.size} video tokens for grid {f}x{h}x{w}")
    codes = torch.from_numpy(tokens).reshape(f, h, w)  # (F, H, W)
    keep = 1 if data.stage == "image" else min(f, data.max_latent_frames or f)
    codes = codes[:keep]
    if keep == 1:
        duration, fps = 1, 1
    else:
        fps = max(1, round(float(row["fps"])))
        duration = max(1, round((1 + temporal_compression * (keep - 1)) / fps))
    return {"text_ids": [int(t) for t in row["text_ids"]], "codes": codes, "duration": duration, "fps": fps}


def sample_length(sample: dict[str, Any]) -> int:
    """Tokens of the sample's full sequence (spec §4; :func:`lumos.sequence.sequence_length`)."""
    f, h, w = sample["codes"].shape
    return sequence_length(len(sample["text_ids"]), f, h, w)


def shuffled(items: Iterable, size: int, generator: torch.Generator) -> Iterator:
    """A streaming shuffle with a buffer of ``size`` items."""
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            yield buf.pop(int(torch.randint(len(buf), (1,), generator=generator)))
    while buf:
        yield buf.pop(int(torch.randint(len(buf), (1,), generator=generator)))


def bucket_batches(samples: Iterable[dict], batch_size: int, window: int,
                   generator: torch.Generator | None) -> Iterator[list[dict]]:
    """Length bucketing: sort each window of samples by length, cut into batches, shuffle the batches.

    Leftovers carry into the next window; a final incomplete batch is dropped (so every worker, holding the same
    number of samples, makes the same number of batches).
    """
    pending: list[dict] = []

    def flush(final: bool) -> Iterator[list[dict]]:
        pending.sort(key=sample_length)
        n = len(pending) // batch_size * batch_size
        batches = [pending[i:i + batch_size] for i in range(0, n, batch_size)]
        del pending[:n]
        if final:
            pending.clear()
        order = torch.randperm(len(batches), generator=generator) if generator is not None else range(len(batches))
        for i in order:
            yield batches[int(i)]

    for s in samples:
        pending.append(s)
        if len(pending) >= window:
            yield from flush(final=False)
    yield from flush(final=True)


def iter_rows(shard, block_rows: int = 64) -> Iterator[dict[str, Any]]:
    """Rows of a Ray ``DataIterator`` (or any iterable of row dicts) one by one."""
    if not hasattr(shard, "iter_batches"):
        yield from shard
        return
    for batch in shard.iter_batches(batch_size=block_rows, batch_format="numpy", prefetch_batches=2):
        n = len(batch["grid_t"])
        for i in range(n):
            yield {k: v[i] for k, v in batch.items()}


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The shuffling generator of one worker's epoch."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 9_176 + rank)


def epoch_batches(shard, data: DataSection, *, seed: int, epoch: int, rank: int,
                  temporal_compression: int = 4) -> Iterator[list[dict[str, Any]]]:
    """All micro-batches (lists of samples) a worker trains on in one epoch, in a reproducible order.

    Args:
        shard: ``ray.train.get_dataset_shard("train")`` or an iterable of row dicts.
        data: batching settings.
        seed, epoch, rank: seed the shuffles.
        temporal_compression: of the video tokenizer, to rewrite the clip duration after a crop.
    """
    samples = (row_to_sample(r, data, temporal_compression) for r in iter_rows(shard))
    yield from sample_batches(samples, data, seed=seed, epoch=epoch, rank=rank)


def sample_batches(samples: Iterable[dict[str, Any]], data: DataSection, *, seed: int, epoch: int,
                   rank: int) -> Iterator[list[dict[str, Any]]]:
    """:func:`epoch_batches` over samples already made by :func:`row_to_sample` (the same batches in the same
    order): the streaming shuffle, then length bucketing."""
    g = epoch_generator(seed, epoch, rank) if data.shuffle else None
    if g is not None:
        samples = shuffled(samples, data.bucket_window, g)
    yield from bucket_batches(samples, data.micro_batch_size, data.bucket_window, g)


def batch_tokens(samples: list[dict[str, Any]]) -> int:
    """Real (unpadded) tokens in a micro-batch."""
    return sum(sample_length(s) for s in samples)


def code_histogram(uri: str, codebook_size: int, max_rows: int = 50_000) -> np.ndarray:
    """Occurrences of each visual code in the shards' ``video_tokens`` (the first ``max_rows`` rows, files in
    sorted order: a sample of large datasets), for ``ardf.loss_weighting=code_frequency``.

    Returns:
        int64 [codebook_size].
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts = np.zeros(codebook_size, dtype=np.int64)
    rows = 0
    for f in shard_files(uri):
        fs, path = storage.resolve(f)
        with fs.open_input_file(path) as fh:
            col = pq.read_table(fh, columns=["video_tokens"]).column("video_tokens")
        col = col.slice(0, max_rows - rows)
        rows += len(col)
        codes = pc.list_flatten(col).to_numpy(zero_copy_only=False)
        if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
            raise ValueError(f"data.shards={uri}: video token {int(codes.max())} outside the model's codebook "
                             f"of {codebook_size}")
        counts += np.bincount(codes, minlength=codebook_size)
        if rows >= max_rows:
            break
    return counts


__all__ = ["SHARD_COLUMNS", "batch_tokens", "bucket_batches", "check_shards", "code_histogram", "epoch_batches",
           "iter_rows", "read_shards", "row_to_sample", "sample_batches", "sample_length", "shard_files",
           "shuffled"]
