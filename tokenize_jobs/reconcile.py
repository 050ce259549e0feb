"""Each clip and each failure once: remove the rows that retried write tasks wrote twice (DESIGN §4.4).

A write task of :class:`tokenize_jobs.writer.ShardSink` that Ray retries — its node died after the file appeared,
or lineage reconstruction ran it again — writes its rows a second time under another random name; a decode that
failed on the lost node (an error row) may succeed on the retry (a clip row). :func:`reconcile_outputs` runs at the
end of every run, before ``_manifest.json`` is written, and keeps, over all finished part files in name order:

* shard rows: the first row of each ``clip_id``;
* error rows: none for a clip that has a shard row, none for a whole input whose clips are all written, and the
  first row per failure (a whole input, or one clip of it; manifest errors per message).

A file that loses rows is rewritten under a new name before the old one is deleted, so an interruption in between
leaves duplicates (removed by the next run), never a lost row.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from lumos import storage
from tokenize_jobs.shards import list_parts, write_table

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


def _columns(uri: str, columns: list[str]) -> dict[str, list]:
    fs, path = storage.resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=columns).to_pydict()


def shard_keep_masks(shard_files: list[str]) -> tuple[dict[str, list[bool]], dict[str, set[str]], dict[str, int]]:
    """Per shard file, which rows to keep (first ``clip_id`` wins); and source → clip ids, source → clips it yields."""
    seen: set[str] = set()
    clips: dict[str, set[str]] = defaultdict(set)
    expected: dict[str, int] = {}
    masks = {}
    for f in shard_files:
        t = _columns(f, ["source", "clip_id", "source_clips"])
        keep = []
        for src, cid, n in zip(t["source"], t["clip_id"], t["source_clips"]):
            keep.append(cid not in seen)
            seen.add(cid)
            clips[src].add(cid)
            expected[src] = int(n)
        masks[f] = keep
    return masks, clips, expected


def error_key(source: str, stage: str, error: str, clip: str | None) -> tuple:
    """One failure: a whole input (any stage), one clip of it, or one manifest row's message."""
    if stage == "manifest":
        return ("manifest", source, error)
    return ("clip", source, clip) if clip else ("input", source)


def error_keep_masks(error_files: list[str], clips: dict[str, set[str]], expected: dict[str, int]) -> dict:
    """Per error file, which rows to keep (see the module docstring)."""
    seen: set[tuple] = set()
    masks = {}
    for f in error_files:
        t = _columns(f, ["source", "stage", "error", "clip_id"])
        keep = []
        for src, stage, err, cid in zip(t["source"], t["stage"], t["error"], t["clip_id"]):
            key = error_key(src, stage, err, cid)
            written = (cid in clips.get(src, ())) if cid else (
                stage != "manifest" and src in expected and len(clips[src]) >= expected[src])
            keep.append(not written and key not in seen)
            seen.add(key)
        masks[f] = keep
    return masks


def rewrite_part(uri: str, keep: list[bool]) -> bool:
    """Keep only the ``keep`` rows of one part file; returns whether the file was deleted (nothing kept)."""
    fs, path = storage.resolve(uri)
    if any(keep):
        table = pq.read_table(path, filesystem=fs)
        new = uri[: -len(".parquet")] + f"-r{uuid.uuid4().hex[:6]}.parquet"
        write_table(table.filter(pa.array(keep)), new)
    fs.delete_file(path)
    return not any(keep)


def reconcile_outputs(out_uri: str) -> Reconciled:
    """Remove duplicate clip rows and stale or duplicate error rows from ``out_uri`` (see the module docstring)."""
    shard_files, error_files = list_parts(out_uri)
    shard_masks, clips, expected = shard_keep_masks(shard_files)
    masks = {**shard_masks, **error_keep_masks(error_files, clips, expected)}
    done = Reconciled()
    for uri, keep in masks.items():
        dropped = keep.count(False)
        if not dropped:
            continue
        if uri in shard_masks:
            done.clip_rows += dropped
        else:
            done.error_rows += dropped
        deleted = rewrite_part(uri, keep)
        done.files_deleted += deleted
        done.files_rewritten += not deleted
    if done.clip_rows or done.error_rows:
        log.warning("removed %d duplicate clip rows and %d stale or duplicate error rows (written twice by retried "
                    "tasks): %d files rewritten, %d deleted", done.clip_rows, done.error_rows,
                    done.files_rewritten, done.files_deleted)
    return done
