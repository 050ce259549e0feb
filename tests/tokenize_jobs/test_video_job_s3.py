"""The tokenization job with S3 input and output (moto on 127.0.0.1, the standard AWS environment; DESIGN §4.1)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from tj_media import JOB_ARGS, make_tokenizer, read_errors, read_shards, reference_clips, write_image

from lumos import storage
from tokenize_jobs.decode import ClipSettings
from tokenize_jobs.video import parse_args, run_job

SETTINGS = ClipSettings(fps=4, seconds=1, clip_policy="center", target_size=64, patch=16)


@pytest.mark.slow
@pytest.mark.ray
def test_s3_round_trip(ray_local, s3_bucket, tmp_path, clip_small):
    # inputs, manifest (relative paths) and tokenizer all on S3
    storage.write_bytes(f"{s3_bucket}/raw/videos/car.mp4", clip_small.read_bytes())
    img = write_image(tmp_path / "still.png", (64, 64))
    storage.write_bytes(f"{s3_bucket}/raw/images/still.png", img.read_bytes())
    rows = [{"path": "videos/car.mp4", "caption": "a car", "split": "train"},
            {"path": "images/still.png", "caption": "a still", "split": "val"},
            {"path": "videos/absent.mp4", "caption": "not uploaded", "split": "train"}]
    storage.write_text(f"{s3_bucket}/raw/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    local_tok = make_tokenizer(tmp_path / "tok")
    storage.upload_dir(local_tok, f"{s3_bucket}/tokenizers/debug")
    out = f"{s3_bucket}/shards/v1"

    doc = run_job(parse_args(["--manifest", f"{s3_bucket}/raw/manifest.jsonl", "--out", out,
                              "--tokenizer", f"{s3_bucket}/tokenizers/debug", *JOB_ARGS]))

    assert storage.exists(f"{out}/_manifest.json") and storage.exists(f"{out}/_settings.json")
    assert doc["counts"] == {"inputs": 3, "clips_written": 2, "errors": 1, "inputs_with_clips": 2,
                             "unaccounted_inputs": 0}
    table = read_shards(out)
    by_source = {r["source"]: r for r in table.to_pylist()}
    car = by_source[f"{s3_bucket}/raw/videos/car.mp4"]
    ref = reference_clips(clip_small, f"{s3_bucket}/raw/videos/car.mp4", "a car", SETTINGS, local_tok)[0]
    assert car["video_tokens"] == ref["video_tokens"] and car["text_ids"] == ref["text_ids"]
    assert car["split"] == "train" and by_source[f"{s3_bucket}/raw/images/still.png"]["split"] == "val"
    (err,) = read_errors(out)
    assert err["source"] == f"{s3_bucket}/raw/videos/absent.mp4" and err["stage"] == "read"
    # the shards are plain Parquet that pyarrow reads straight from S3
    fs, path = storage.resolve(f"{out}/{doc['shards'][0]}")
    assert pq.read_table(path, filesystem=fs).num_rows >= 1
    assert not [f for f in storage.list_files(out) if "_tmp" in f]
