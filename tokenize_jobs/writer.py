"""The Ray Data sink of the tokenization job: tokenized rows → Parquet shards + ``_errors/`` (DESIGN §4.4).

Each write task receives at least ``rows_per_file`` rows (Ray Data bundles blocks up to ``min_rows_per_write``),
splits them into clip rows and error rows, joins the carried-through manifest columns back onto the clip rows by
``input_index`` (they travel beside the pipeline, not through it, so their Arrow types survive exactly), and writes
one shard file and at most one error file, each appearing atomically (:func:`tokenize_jobs.shards.write_table`).
It returns counts and decode statistics, which the driver folds into ``_manifest.json``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import BlockAccessor

from lumos import storage
from tokenize_jobs.shards import ERROR_SCHEMA, ERRORS_DIR, SHARD_SCHEMA, write_table

TOKENIZED_SCHEMA = pa.schema(list(SHARD_SCHEMA) + [
    ("input_index", pa.int64()),
    ("stage", pa.string()),
    ("error", pa.string()),
    ("strategy", pa.string()),
    ("decode_s", pa.float64()),
    ("text_truncated", pa.bool_()),
])
"""What the tokenize stage emits: shard columns, the manifest row index, and per-row status/statistics. Error rows
have a non-null ``stage`` and null tokens."""


def split_rows(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(clip rows, error rows)`` of a tokenized table."""
    failed = pc.is_valid(table.column("stage"))
    return table.filter(pc.invert(failed)), table.filter(failed)


def shard_table(clips: pa.Table, extras: pa.Table | None) -> pa.Table:
    """Clip rows as written to a shard: :data:`SHARD_SCHEMA` columns plus the carried manifest columns."""
    out = clips.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)
    if extras is not None and extras.num_columns:
        rows = extras.take(clips.column("input_index"))
        for name in extras.column_names:
            out = out.append_column(extras.schema.field(name), rows.column(name))
    return out


def error_table(errors: pa.Table) -> pa.Table:
    """Error rows as written to ``_errors/``."""
    return errors.select(ERROR_SCHEMA.names).cast(ERROR_SCHEMA)


def row_stats(clips: pa.Table, errors: pa.Table) -> dict:
    """Counts and decode statistics of one write task."""
    strategies = Counter(clips.column("strategy").to_pylist())
    return {
        "clips": clips.num_rows,
        "errors": errors.num_rows,
        "decode_s": float(pc.sum(clips.column("decode_s")).as_py() or 0.0),
        "decode_frames": int(pc.sum(clips.column("num_frames")).as_py() or 0),
        "strategies": dict(strategies),
        "text_truncated": int(pc.sum(pc.cast(clips.column("text_truncated"), pa.int64())).as_py() or 0),
        "error_stages": dict(Counter(errors.column("stage").to_pylist())),
        "files": [],
        "bytes": 0,
    }


class ShardSink(Datasink):
    """Writes tokenized rows as shard + error Parquet files under ``out_uri``.

    Args:
        out_uri: output directory (local or s3://).
        run_id: names this run's files (``part-<run_id>-...``), so reruns never overwrite earlier parts.
        extras_ref: ObjectRef of the carried-through manifest columns (a ``pa.Table`` indexed by ``input_index``),
            or None when the manifest has no extra columns.
        rows_per_file: rows per shard file (the last file of a run may be smaller).
        row_group_bytes: target uncompressed bytes per Parquet row group.
    """

    def __init__(self, out_uri: str, run_id: str, extras_ref=None, rows_per_file: int = 1024,
                 row_group_bytes: int = 32 << 20):
        self.out_uri = out_uri
        self.run_id = run_id
        self.extras_ref = extras_ref
        self.rows_per_file = rows_per_file
        self.row_group_bytes = row_group_bytes
        self.results: list[dict] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def get_name(self) -> str:
        return "WriteShards"

    def _extras(self) -> pa.Table | None:
        if self.extras_ref is None:
            return None
        import ray

        return ray.get(self.extras_ref)

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return row_stats(TOKENIZED_SCHEMA.empty_table(), TOKENIZED_SCHEMA.empty_table())
        table = pa.concat_tables([t.cast(TOKENIZED_SCHEMA) for t in tables])
        clips, errors = split_rows(table)
        stats = row_stats(clips, errors)
        name = f"part-{self.run_id}-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}.parquet"
        if clips.num_rows:
            uri = storage.join(self.out_uri, name)
            stats["bytes"] += write_table(shard_table(clips, self._extras()), uri, self.row_group_bytes)
            stats["files"].append(name)
        if errors.num_rows:
            uri = storage.join(self.out_uri, ERRORS_DIR, "err-" + name)
            write_table(error_table(errors), uri, self.row_group_bytes)
        return stats

    def on_write_complete(self, write_result) -> None:
        self.results = [r for r in write_result.write_returns if r]


def merge_stats(results: list[dict]) -> dict:
    """Sum the per-task statistics of :class:`ShardSink`."""
    total = {"clips": 0, "errors": 0, "decode_s": 0.0, "decode_frames": 0, "text_truncated": 0, "bytes": 0,
             "files": 0, "strategies": Counter(), "error_stages": Counter()}
    for r in results:
        for k in ("clips", "errors", "decode_s", "decode_frames", "text_truncated", "bytes"):
            total[k] += r[k]
        total["files"] += len(r["files"])
        total["strategies"].update(r["strategies"])
        total["error_stages"].update(r["error_stages"])
    total["strategies"] = dict(total["strategies"])
    total["error_stages"] = dict(total["error_stages"])
    return total
