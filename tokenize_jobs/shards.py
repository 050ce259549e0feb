"""Token-shard layout, clip ids, and what an output directory already holds (DESIGN §4.4; docs/internals.md).

An output directory (local or s3://) looks like::

    part-<run>-<task>-<rand>.parquet   one row per clip (SHARD_SCHEMA + carried manifest columns)
    _errors/part-<run>-....parquet     one row per failed input or clip (ERROR_SCHEMA)
    _settings.json                     the settings the shards were made with (checked when a run resumes)
    _manifest.json                     written LAST, atomically: settings, tokenizer identity, counts, file list
    _tmp/                              local only: files being written (renamed into place when complete;
                                       removed when a run finishes)

Readers take the ``*.parquet`` files outside ``_``/``.``-prefixed entries, and only once ``_manifest.json``
exists (:class:`ShardManifest`: ``read`` and ``finished``). A run starts by deleting ``_manifest.json``, so an
interrupted run never looks finished. This module owns the contract: the schemas, the layout, the manifest.

Resume: :func:`scan_outputs` reads the ``source``/``clip_id`` columns of every finished part file. An input is done
when it has a whole-input error row, or when its written clips plus its per-clip error rows cover all
``source_clips`` clips it yields; otherwise the clips already written are passed to the next run as a skip list,
so a rerun neither duplicates nor loses a clip.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lumos import storage

MANIFEST = "_manifest.json"
SETTINGS = "_settings.json"
ERRORS_DIR = "_errors"
TMP_DIR = "_tmp"
FORMAT = "lumos-token-shards/1"

SHARD_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("source", pa.string()),
    ("caption", pa.string()),
    ("text_ids", pa.list_(pa.int32())),
    ("video_tokens", pa.list_(pa.int32())),
    ("grid_t", pa.int16()),
    ("grid_h", pa.int16()),
    ("grid_w", pa.int16()),
    ("fps", pa.float32()),
    ("num_frames", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("start_s", pa.float64()),
    ("clip_index", pa.int32()),
    ("source_clips", pa.int32()),
])
"""Columns of a shard row. ``clip_index``/``source_clips`` (this clip's position among the clips of its source)
are bookkeeping for resume; carried-through manifest columns follow these."""

ERROR_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("stage", pa.string()),
    ("error", pa.string()),
    ("clip_id", pa.string()),
    ("source_clips", pa.int32()),
])
"""An error row: ``clip_id``/``source_clips`` are null when the whole input failed (read, open, sample stages)."""


def clip_id(source: str, clip_index: int, id_key: str) -> str:
    """Stable id of a clip: a hash of the source URI, the clip index and the settings key (same input + settings
    → same id)."""
    h = hashlib.sha256(f"{source}\n{clip_index}\n{id_key}".encode())
    return h.hexdigest()[:24]


def settings_key(clip_key: str, tokenizer_identity: dict, layout_name: str, text_tokenizer: str | None) -> str:
    """Everything that changes a shard row's content, as one string (hashed into every clip id)."""
    blob = json.dumps({"clip": json.loads(clip_key), "tokenizer": tokenizer_identity, "layout": layout_name,
                       "text_tokenizer": text_tokenizer}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def list_parts(out_uri: str) -> tuple[list[str], list[str]]:
    """Finished part files: ``(shard files, error files)`` as URIs, sorted (temp and hidden files excluded)."""
    shards, errors = [], []
    for f in storage.list_files(out_uri):
        rel = storage.relative(out_uri, f)
        parts = rel.split("/")
        if not rel.endswith(".parquet") or any(p.startswith(".") for p in parts):
            continue
        if parts[0] == ERRORS_DIR and len(parts) == 2:
            errors.append(f)
        elif not any(p.startswith("_") for p in parts):
            shards.append(f)
    return shards, errors


SHARD_KEYS = ["source", "clip_id", "source_clips"]
"""The bookkeeping columns of a shard file (:meth:`DoneState.add_clip`'s arguments)."""
ERROR_KEYS = ["source", "stage", "error", "clip_id", "source_clips"]
"""The columns of an error file (:meth:`DoneState.add_error`'s arguments)."""


def read_columns(uri: str, columns: list[str]) -> dict[str, list]:
    """Some columns of one Parquet file, as lists."""
    fs, path = storage.resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=columns).to_pydict()


@dataclass
class DoneState:
    """What earlier runs wrote into an output directory."""

    shard_files: list[str] = field(default_factory=list)
    error_files: list[str] = field(default_factory=list)
    clips: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """source → clip ids written to shards."""
    clip_errors: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """source → clip ids with a per-clip error row."""
    expected: dict[str, int] = field(default_factory=dict)
    """source → number of clips the source yields (from ``source_clips``)."""
    failed: set[str] = field(default_factory=set)
    """Sources with a whole-input error row (any stage except manifest)."""
    error_keys: set[tuple[str, str, str]] = field(default_factory=set)
    """(source, stage, error) of every error row (to avoid writing manifest errors twice)."""
    num_clips: int = 0
    num_errors: int = 0

    def add_clip(self, source: str, clip: str, source_clips: int) -> None:
        """Record one shard row."""
        self.clips[source].add(clip)
        self.expected[source] = int(source_clips)
        self.num_clips += 1

    def add_error(self, source: str, stage: str, error: str, clip: str | None, source_clips: int | None) -> None:
        """Record one error row."""
        self.error_keys.add((source, stage, error))
        if clip:
            self.clip_errors[source].add(clip)
            if source_clips is not None:
                self.expected[source] = int(source_clips)
        elif stage != "manifest":
            self.failed.add(source)
        self.num_errors += 1

    def part_names(self, out_uri: str) -> dict[str, list[str]]:
        """``_manifest.json``'s ``shards`` and ``error_files``: the part files relative to ``out_uri``."""
        return {"shards": [storage.relative(out_uri, f) for f in self.shard_files],
                "error_files": [storage.relative(out_uri, f) for f in self.error_files]}

    def is_done(self, source: str) -> bool:
        if source in self.failed:
            return True
        n = self.expected.get(source)
        return n is not None and len(self.clips[source] | self.clip_errors[source]) >= n

    def skip_ids(self, source: str) -> list[str]:
        """Clip ids of ``source`` that must not be produced again."""
        return sorted(self.clips.get(source, set()) | self.clip_errors.get(source, set()))

    def accounted_sources(self) -> set[str]:
        """Sources that produced at least one clip or an error row."""
        return {s for s, ids in self.clips.items() if ids} | {s for s, _, _ in self.error_keys}


def scan_outputs(out_uri: str) -> DoneState:
    """Read the bookkeeping columns of every finished part file under ``out_uri``."""
    state = DoneState()
    state.shard_files, state.error_files = list_parts(out_uri)
    for f in state.shard_files:
        t = read_columns(f, SHARD_KEYS)
        for row in zip(*(t[c] for c in SHARD_KEYS)):
            state.add_clip(*row)
    for f in state.error_files:
        t = read_columns(f, ERROR_KEYS)
        for row in zip(*(t[c] for c in ERROR_KEYS)):
            state.add_error(*row)
    return state


def prepare_output(out_uri: str, settings: dict) -> None:
    """Start a run in ``out_uri``: refuse shards made with other settings, remove the completion marker and any
    leftover temp files, record the settings.

    Raises:
        ValueError: ``out_uri`` holds shards whose recorded settings differ.
    """
    settings_uri = storage.join(out_uri, SETTINGS)
    if storage.exists(settings_uri):
        old = json.loads(storage.read_text(settings_uri))
        if old.get("id_key") != settings.get("id_key"):
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k) and k != "id_key")
            raise ValueError(f"--out {out_uri} holds shards made with other settings (differs in: "
                             f"{', '.join(diff) or 'tokenizer'}); use a new --out or the same settings")
    elif list_parts(out_uri)[0]:
        raise ValueError(f"--out {out_uri} holds Parquet files but no {SETTINGS}; use an empty --out")
    manifest_uri = storage.join(out_uri, MANIFEST)
    if storage.exists(manifest_uri):
        fs, path = storage.resolve(manifest_uri)
        fs.delete_file(path)
    if not storage.is_s3(out_uri):
        storage.delete_dir(storage.join(out_uri, TMP_DIR))
    storage.makedirs(out_uri)
    storage.write_text(settings_uri, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def write_table(table: pa.Table, uri: str, row_group_bytes: int = 32 << 20) -> int:
    """Write one Parquet file so that it appears complete or not at all; returns its size in bytes.

    Local files are written under ``_tmp/`` and renamed into place; S3 objects appear atomically when the upload
    completes. Row groups hold about ``row_group_bytes`` of data (at least one row).
    """
    fs, path = storage.resolve(uri)
    rows_per_group = max(1, int(table.num_rows * row_group_bytes / max(1, table.nbytes)))
    if isinstance(fs, pafs.LocalFileSystem):
        root = posixpath.dirname(path)
        while posixpath.basename(root) == ERRORS_DIR:
            root = posixpath.dirname(root)
        tmp = posixpath.join(root, TMP_DIR, posixpath.basename(path) + ".tmp")
        fs.create_dir(posixpath.dirname(tmp), recursive=True)
        fs.create_dir(posixpath.dirname(path), recursive=True)
        pq.write_table(table, tmp, filesystem=fs, row_group_size=rows_per_group, compression="zstd")
        fs.move(tmp, path)
    else:
        pq.write_table(table, path, filesystem=fs, row_group_size=rows_per_group, compression="zstd")
    return fs.get_file_info(path).size


def write_manifest(out_uri: str, doc: dict) -> None:
    """Write ``_manifest.json`` (atomic: temp + rename locally, one PUT on S3). Call it last: it also removes the
    local ``_tmp/`` directory, empty once every file is in place."""
    if not storage.is_s3(out_uri):
        storage.delete_dir(storage.join(out_uri, TMP_DIR))
    storage.write_text(storage.join(out_uri, MANIFEST), json.dumps(doc, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class ShardManifest:
    """The ``_manifest.json`` of a finished output directory: the document as written, with the fields that readers
    use (the tokenization job and ``tokenize_jobs.shapes`` write them; see ``docs/internals.md``)."""

    doc: dict

    @staticmethod
    def finished(out_uri: str) -> bool:
        """Whether ``out_uri`` holds a finished output (``_manifest.json`` is written last)."""
        return storage.exists(storage.join(out_uri, MANIFEST))

    @classmethod
    def read(cls, out_uri: str, name: str = "") -> ShardManifest:
        """The manifest of a finished output directory.

        Args:
            name: how the message names the directory (``"data.shards="``: ``data.shards=<uri>: no ...``).

        Raises:
            ValueError: the directory has no ``_manifest.json`` (unfinished, or not token shards).
        """
        if not cls.finished(out_uri):
            raise ValueError(f"{name}{out_uri}: no {MANIFEST} (tokenization unfinished or not a shard directory)")
        return cls(json.loads(storage.read_text(storage.join(out_uri, MANIFEST))))

    def write(self, out_uri: str) -> None:
        """:func:`write_manifest` (call it last)."""
        write_manifest(out_uri, self.doc)

    @property
    def settings(self) -> dict:
        return self.doc.get("settings") or {}

    @property
    def counts(self) -> dict:
        """``inputs``, ``clips_written``, ``errors``, ``unaccounted_inputs`` (+ job-specific counts)."""
        return self.doc.get("counts") or {}

    @property
    def clips_written(self) -> int | None:
        n = self.counts.get("clips_written")
        return None if n is None else int(n)

    @property
    def shards(self) -> list[str] | None:
        """The shard files, relative to the directory (``None`` when the manifest does not list them)."""
        listed = self.doc.get("shards")
        return listed if isinstance(listed, list) else None

    @property
    def error_files(self) -> list[str]:
        """The ``_errors/`` files, relative to the directory."""
        return list(self.doc.get("error_files") or [])

    @property
    def tokenizer(self) -> dict:
        """The video tokenizer: ``uri``, ``identity``, ``codebook_size``, ``layout``, compressions."""
        tok = self.doc.get("tokenizer")
        return tok if isinstance(tok, dict) else {}

    @property
    def tokenizer_uri(self) -> str | None:
        return self.tokenizer.get("uri")

    @property
    def text_tokenizer(self) -> str | None:
        return self.settings.get("text_tokenizer")

    @property
    def layout_name(self) -> str | None:
        """The vocabulary layout the text ids were made for (``compact``/``chameleon``), where recorded."""
        name = self.doc.get("layout")
        layout = self.tokenizer.get("layout")
        return name if isinstance(name, str) else layout.get("name") if isinstance(layout, dict) else None

    @property
    def codebook_size(self) -> int | None:
        """Codes of the video tokenizer that made the shards, where recorded."""
        layout = self.tokenizer.get("layout")
        codes = self.tokenizer.get("codebook_size", layout.get("codebook_size") if isinstance(layout, dict) else None)
        return None if codes is None else int(codes)
