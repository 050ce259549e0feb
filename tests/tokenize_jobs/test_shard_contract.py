"""tokenize_jobs.shards owns the shard contract: schemas, the finished check and ``_manifest.json`` round-trip."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tokenize_jobs.manifest import OUTPUT_COLUMNS, read_manifest
from tokenize_jobs.shards import ERROR_SCHEMA, FORMAT, MANIFEST, SHARD_SCHEMA, ShardManifest


def test_manifest_round_trips_and_unfinished_is_one_line(tmp_path):
    out = str(tmp_path / "shards")
    with pytest.raises(ValueError, match=rf"^data.shards={out}: no {MANIFEST} \(tokenization unfinished"):
        ShardManifest.read(out, name="data.shards=")
    assert not ShardManifest.finished(out)
    doc = {"format": FORMAT, "settings": {"id_key": "k", "text_tokenizer": "t.json"}, "layout": "compact",
           "tokenizer": {"uri": "/tok", "codebook_size": 1000, "layout": {"name": "compact", "codebook_size": 1000}},
           "counts": {"inputs": 3, "clips_written": 4, "errors": 1, "unaccounted_inputs": 0},
           "shards": ["part-a.parquet"], "error_files": ["_errors/err-a.parquet"]}
    ShardManifest(doc).write(out)
    m = ShardManifest.read(out)
    assert ShardManifest.finished(out) and m.doc == doc
    assert (m.clips_written, m.shards, m.error_files, m.tokenizer_uri, m.text_tokenizer, m.layout_name,
            m.codebook_size) == (4, ["part-a.parquet"], ["_errors/err-a.parquet"], "/tok", "t.json", "compact", 1000)
    bare = ShardManifest({})
    assert (bare.clips_written, bare.shards, bare.tokenizer_uri, bare.layout_name, bare.codebook_size) == (None,) * 5


def test_one_error_schema_for_manifest_and_decode_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "", "caption": "x"}\n{"path": "a.mp4", "caption": "y"}\n')
    m = read_manifest(str(path))
    assert m.errors.schema == ERROR_SCHEMA and m.errors.num_rows == 1
    assert m.errors.column("clip_id").null_count == 1  # a whole-input error
    assert OUTPUT_COLUMNS == set(SHARD_SCHEMA.names) | set(ERROR_SCHEMA.names)
    assert SHARD_SCHEMA.field("start_s").type == pa.float64()


@pytest.mark.parametrize("spell", ["relative", "absolute", "file://"])
def test_part_files_are_found_however_the_output_is_written(tmp_path, monkeypatch, spell):
    import pyarrow.parquet as pq

    from lumos import storage
    from tokenize_jobs.shards import list_parts

    out = tmp_path / "shards"
    (out / "_errors").mkdir(parents=True)
    for name in ("part-0.parquet", "_errors/err-0.parquet", ".tmp-part-1.parquet"):
        pq.write_table(pa.table({"x": [1]}), out / name)
    monkeypatch.chdir(tmp_path)
    uri = {"relative": "shards", "absolute": str(out), "file://": f"file://{out}"}[spell]
    shards, errors = list_parts(uri)
    assert [storage.relative(uri, f) for f in shards] == ["part-0.parquet"]
    assert [storage.relative(uri, f) for f in errors] == ["_errors/err-0.parquet"]
    with pytest.raises(ValueError, match="is not under"):
        storage.relative(uri, str(tmp_path / "elsewhere.parquet"))
