"""Manifest reading (DESIGN §4.3): formats, relative paths, carried columns, per-row and whole-file errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lumos import storage
from tokenize_jobs.manifest import ManifestError, read_manifest, resolve_source


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_jsonl_relative_paths_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "videos").mkdir()
    uri = write_jsonl(tmp_path / "videos" / "m.jsonl", [
        {"path": "a.mp4", "caption": "one", "score": 0.5},
        {"path": "sub/b.mp4", "caption": "two", "score": 1.5},
        {"path": str(tmp_path / "abs.mp4"), "caption": "three", "score": None},
    ])
    m = read_manifest(uri)
    assert m.num_rows == 3 and m.errors.num_rows == 0
    assert m.inputs.column("source").to_pylist() == [
        str(tmp_path / "videos" / "a.mp4"), str(tmp_path / "videos" / "sub" / "b.mp4"), str(tmp_path / "abs.mp4")]
    assert m.extra_columns == ["score"]
    assert m.inputs.column("score").to_pylist() == [0.5, 1.5, None]
    assert m.inputs.column("input_index").to_pylist() == [0, 1, 2]


def test_csv_and_parquet_give_the_same_inputs(tmp_path):
    rows = [{"path": "x.mp4", "caption": "12", "tag": "a"}, {"path": "y.png", "caption": "", "tag": "b"}]
    (tmp_path / "m.csv").write_text("path,caption,tag\nx.mp4,12,a\ny.png,,b\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    a, b = read_manifest(str(tmp_path / "m.csv")), read_manifest(str(tmp_path / "m.parquet"))
    assert a.inputs.column("source").to_pylist() == b.inputs.column("source").to_pylist()
    # numeric-looking and empty captions stay strings
    assert a.inputs.column("caption").to_pylist() == ["12", ""] == b.inputs.column("caption").to_pylist()


def test_odd_captions_survive(tmp_path):
    long = "très long " * 5000
    uri = write_jsonl(tmp_path / "m.jsonl", [
        {"path": "a.mp4", "caption": "🎬 vidéo — 日本語"}, {"path": "b.mp4", "caption": ""},
        {"path": "c.mp4", "caption": None}, {"path": "d.mp4", "caption": long}])
    caps = read_manifest(uri).inputs.column("caption").to_pylist()
    assert caps == ["🎬 vidéo — 日本語", "", "", long]


def test_bad_rows_become_manifest_errors_not_failures(tmp_path):
    uri = write_jsonl(tmp_path / "m.jsonl", [
        {"path": "a.mp4", "caption": "ok"}, {"path": "", "caption": "empty"},
        {"path": "http://example.com/v.mp4", "caption": "web"}, {"path": "./a.mp4", "caption": "again"}])
    m = read_manifest(uri)
    assert m.inputs.num_rows == 1 and m.errors.num_rows == 3
    assert set(m.errors.column("stage").to_pylist()) == {"manifest"}
    errs = " | ".join(m.errors.column("error").to_pylist())
    assert "empty path" in errs and "unsupported URI scheme" in errs and "duplicate of row 0" in errs


@pytest.mark.parametrize("content,name,match", [
    ('{"caption": "no path"}\n', "m.jsonl", "no 'path' column"),
    ('{"path": "a.mp4"}\n', "m.jsonl", "no 'caption' column"),
    ('{"path": "a.mp4", "caption": "x", "clip_id": 3}\n', "m.jsonl", "clashes with an output column"),
    ('{"path": "a.mp4", "caption": ', "m.jsonl", "cannot read json"),
    ("whatever", "m.txt", "unknown format"),
])
def test_whole_manifest_problems_raise_one_line(tmp_path, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError, match=match) as info:
        read_manifest(str(tmp_path / name))
    assert "\n" not in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(str(tmp_path / "nope.jsonl"))


def test_resolve_source_keeps_s3_and_joins_s3_bases():
    assert resolve_source("s3://b/x.mp4", "/local") == "s3://b/x.mp4"
    assert resolve_source("clips/../x.mp4", "s3://b/raw") == "s3://b/raw/x.mp4"
    assert resolve_source("file:///data/v.mp4", "/elsewhere") == "/data/v.mp4"


def test_manifest_on_s3(s3_bucket):
    storage.write_text(f"{s3_bucket}/raw/m.jsonl",
                       json.dumps({"path": "v/a.mp4", "caption": "c", "split": "train"}) + "\n")
    m = read_manifest(f"{s3_bucket}/raw/m.jsonl")
    assert m.inputs.column("source").to_pylist() == [f"{s3_bucket}/raw/v/a.mp4"]
    assert m.inputs.column("split").to_pylist() == ["train"]
