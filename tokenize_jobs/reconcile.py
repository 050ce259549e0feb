"""Each clip and each failure once: remove the rows that retried write tasks wrote twice (DESIGN §4.4).

A write task of :class:`tokenize_jobs.writer.ShardSink` that Ray retries — its node died after the file appeared,
or lineage reconstruction ran it again — writes its rows a second time under another random name; a decode that
failed on the lost node (an error row) may succeed on the retry (a clip row). :func:`reconcile_outputs` runs at the
end of every run, before ``_manifest.json`` is written, and keeps, over all finished part files in name order:

* shard rows: the first row of each ``clip_id``;
* error rows: none for a clip that has a shard row, none for a whole input whose clips are all written, and the
  first row per failure (a whole input, or one clip of it; manifest errors per message).

A file that loses rows is rewritten under a new name before the old one is deleted, so an interruption in between
leaves duplicates (removed by the next run), never a lost row. The same single read of the bookkeeping columns
gives the :class:`~tokenize_jobs.shards.DoneState` of what is kept, which the manifest's counts are made from.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from lumos import storage
from tokenize_jobs.shards import ERROR_KEYS, SHARD_KEYS, DoneState, list_parts, read_columns, write_table

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What :func:`reconcile_outputs` removed."""

    clip_rows: int = 0
    error_rows: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0

    def as_dict(self) -> dict:
        return {"duplicate_clip_rows": self.clip_rows, "stale_error_rows": self.error_rows,
                "files_rewritten": self.files_rewritten, "files_deleted": self.files_deleted}


def error_key(source: str, stage: str, error: str, clip: str | None) -> tuple:
    """One failure: a whole input (any stage), one clip of it, or one manifest row's message."""
    if stage == "manifest":
        return ("manifest", source, error)
    return ("clip", source, clip) if clip else ("input", source)


def stale(state: DoneState, source: str, stage: str, clip: str | None) -> bool:
    """An error row whose clip (or whole input) the shards hold after all."""
    if clip:
        return clip in state.clips.get(source, ())
    n = state.expected.get(source)
    return stage != "manifest" and n is not None and len(state.clips.get(source, ())) >= n


def rewrite_part(uri: str, keep: list[bool]) -> str | None:
    """Keep only the ``keep`` rows of one part file; returns the new file's URI, or None when nothing is kept."""
    fs, path = storage.resolve(uri)
    new = None
    if any(keep):
        table = pq.read_table(path, filesystem=fs)
        new = uri[: -len(".parquet")] + f"-r{uuid.uuid4().hex[:6]}.parquet"
        write_table(table.filter(pa.array(keep)), new)
    fs.delete_file(path)
    return new


def _apply(files: list[str], masks: list[list[bool]], done: Reconciled) -> tuple[list[str], int]:
    """Rewrite the files that lose rows; returns (the files now, rows removed)."""
    out, removed = [], 0
    for uri, keep in zip(files, masks):
        dropped = keep.count(False)
        if not dropped:
            out.append(uri)
            continue
        removed += dropped
        new = rewrite_part(uri, keep)
        done.files_deleted += new is None
        done.files_rewritten += new is not None
        out += [new] if new else []
    return sorted(out), removed


def reconcile_outputs(out_uri: str) -> tuple[DoneState, Reconciled]:
    """Remove duplicate clip rows and stale or duplicate error rows from ``out_uri`` (see the module docstring);
    returns what the directory holds afterwards and what was removed."""
    state, done = DoneState(), Reconciled()
    shard_files, error_files = list_parts(out_uri)
    shard_masks = []
    for f in shard_files:
        t = read_columns(f, SHARD_KEYS)
        keep = []
        for src, cid, n in zip(*(t[c] for c in SHARD_KEYS)):
            keep.append(cid not in state.clips.get(src, ()))
            if keep[-1]:
                state.add_clip(src, cid, n)
        shard_masks.append(keep)
    seen: set[tuple] = set()
    error_masks = []
    for f in error_files:
        t = read_columns(f, ERROR_KEYS)
        keep = []
        for src, stage, err, cid, n in zip(*(t[c] for c in ERROR_KEYS)):
            key = error_key(src, stage, err, cid)
            keep.append(key not in seen and not stale(state, src, stage, cid))
            seen.add(key)
            if keep[-1]:
                state.add_error(src, stage, err, cid, n)
        error_masks.append(keep)
    state.shard_files, done.clip_rows = _apply(shard_files, shard_masks, done)
    state.error_files, done.error_rows = _apply(error_files, error_masks, done)
    if done.clip_rows or done.error_rows:
        log.warning("removed %d duplicate clip rows and %d stale or duplicate error rows (written twice by retried "
                    "tasks): %d files rewritten, %d deleted", done.clip_rows, done.error_rows,
                    done.files_rewritten, done.files_deleted)
    return state, done
