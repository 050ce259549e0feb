"""Manifests: the input of the tokenization job (DESIGN §4.3).

A manifest is JSON Lines (``.jsonl``/``.ndjson``/``.json``), CSV (``.csv``) or Parquet (``.parquet``), local or on
S3, with a ``path`` column (URI of a video or image; a relative path is relative to the manifest's directory) and a
``caption`` column (string; null becomes ""). Every other column is carried through to the token shards.

Problems with the manifest as a whole (unreadable, unknown format, missing columns, a column that would clash with
an output column) raise :class:`ManifestError` with one line. Problems with single rows (empty path, unsupported
scheme, the same source listed twice) do not stop the job: they become error rows with stage ``"manifest"``, so
every manifest row is accounted for.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from lumos import storage
from tokenize_jobs.cli import one_line
from tokenize_jobs.shards import ERROR_SCHEMA, SHARD_SCHEMA

FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet",
           ".pq": "parquet"}
# Columns the job writes itself (DESIGN §4.4 + bookkeeping); a manifest column may not reuse these names.
OUTPUT_COLUMNS = frozenset(SHARD_SCHEMA.names) | frozenset(ERROR_SCHEMA.names)


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (the message is one line naming the manifest)."""


@dataclass
class Manifest:
    """A validated manifest.

    Attributes:
        inputs: one row per usable input: ``source`` (absolute URI), ``caption`` (string), ``input_index`` (row
            number in the manifest) and the carried-through columns, in manifest order.
        errors: rows rejected by validation, in the error schema (``source``, ``stage``="manifest", ``error``;
            ``clip_id``/``source_clips`` null).
        extra_columns: names of the carried-through columns.
        num_rows: rows in the manifest (= ``len(inputs) + len(errors)``).
    """

    inputs: pa.Table
    errors: pa.Table
    extra_columns: list[str]
    num_rows: int


def manifest_format(uri: str) -> str:
    """``"json"``, ``"csv"`` or ``"parquet"`` from the manifest's file extension."""
    ext = os.path.splitext(uri.rstrip("/"))[1].lower()
    if ext not in FORMATS:
        raise ManifestError(f"--manifest {uri}: unknown format {ext or '(none)'!r}; use .jsonl, .csv or .parquet")
    return FORMATS[ext]


def read_table(uri: str) -> pa.Table:
    """The manifest file as an Arrow table (``path`` and ``caption`` read as strings where present)."""
    fmt = manifest_format(uri)
    fs, path = storage.resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            if fmt == "parquet":
                return pq.read_table(f)
            if fmt == "csv":
                types = {"path": pa.string(), "caption": pa.string()}
                return pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(column_types=types))
            return pajson.read_json(f, parse_options=pajson.ParseOptions(newlines_in_values=False))
    except FileNotFoundError as e:
        raise ManifestError(f"--manifest {uri}: no such file") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"--manifest {uri}: cannot read {fmt}: {one_line(e)}") from e


def _check_columns(table: pa.Table, uri: str) -> list[str]:
    names = table.column_names
    for col in ("path", "caption"):
        if col not in names:
            raise ManifestError(f"--manifest {uri}: no {col!r} column (columns: {', '.join(names) or 'none'})")
    if not pa.types.is_string(table.schema.field("path").type) and table.num_rows:
        raise ManifestError(f"--manifest {uri}: column 'path' must hold strings, got {table.schema.field('path').type}")
    extras = [c for c in names if c not in ("path", "caption")]
    for col in extras:
        if col in OUTPUT_COLUMNS or col.startswith("_") or col == "input_index":
            raise ManifestError(f"--manifest {uri}: column {col!r} clashes with an output column; rename it")
    return extras


def manifest_dir(uri: str) -> str:
    """The directory URI relative manifest paths are resolved against."""
    if storage.is_s3(uri):
        return "s3://" + posixpath.dirname(uri[len("s3://"):].rstrip("/"))
    return os.path.dirname(storage.resolve(uri)[1])


def resolve_source(path: str | None, base: str) -> str:
    """Absolute URI of a manifest ``path`` entry.

    Args:
        path: the entry (``s3://...``, ``file://...``, absolute or relative local path).
        base: directory URI of the manifest (relative paths are joined onto it).

    Raises:
        ValueError: empty path or an unsupported URI scheme.
    """
    if path is None or not str(path).strip():
        raise ValueError("empty path")
    path = str(path).strip()
    if path.startswith("file://"):
        path = path[len("file://"):]
    if storage.is_s3(path):
        return path
    if "://" in path:
        raise ValueError(f"unsupported URI scheme in {path!r} (use a local path or s3://)")
    if storage.is_s3(base):
        return "s3://" + posixpath.normpath(posixpath.join(base[len("s3://"):], path))
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _as_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string()) if not pa.types.is_null(col.type) else pa.chunked_array(
            [pa.nulls(len(col), pa.string())])
    return pc.fill_null(col, "")


def read_manifest(uri: str) -> Manifest:
    """Read and validate a manifest.

    Args:
        uri: local path or ``s3://`` URI of a ``.jsonl``/``.csv``/``.parquet`` manifest.

    Returns:
        The usable inputs (sources resolved to absolute URIs, duplicates removed) and the rejected rows.

    Raises:
        ManifestError: the manifest cannot be read or lacks ``path``/``caption``.
    """
    table = read_table(uri)
    extras = _check_columns(table, uri)
    base = manifest_dir(uri)
    captions = _as_string(table.column("caption")).to_pylist()
    keep, sources, errors, seen = [], [], [], {}
    for i, raw in enumerate(table.column("path").to_pylist()):
        try:
            source = resolve_source(raw, base)
        except ValueError as e:
            errors.append({"source": str(raw or ""), "stage": "manifest", "error": f"row {i}: {e}"})
            continue
        if source in seen:
            errors.append({"source": source, "stage": "manifest",
                           "error": f"row {i}: duplicate of row {seen[source]} (same source)"})
            continue
        seen[source] = i
        keep.append(i)
        sources.append(source)
    idx = pa.array(keep, type=pa.int64())
    cols = {"source": pa.array(sources, type=pa.string()),
            "caption": pa.array([captions[i] for i in keep], type=pa.string()),
            "input_index": idx}
    for col in extras:
        cols[col] = table.column(col).take(idx)
    inputs = pa.table(cols)
    return Manifest(inputs, pa.Table.from_pylist(errors, schema=ERROR_SCHEMA), extras, table.num_rows)
