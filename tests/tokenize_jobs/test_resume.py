"""Resume: rerunning with the same --out after an interrupted run gives exactly the rows of an uninterrupted run
(no duplicates, nothing lost), clip ids are stable across runs, and other settings are refused."""

from __future__ import annotations

import json
import shutil

import pytest
from tj_media import JOB_ARGS, make_tokenizer, read_errors, read_shards, write_image, write_manifest

from tokenize_jobs.shards import list_parts
from tokenize_jobs.video import JobError, parse_args, run_job


def rows_by_id(out) -> dict[str, dict]:
    rows = read_shards(out).to_pylist()
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate clip ids"
    return {r["clip_id"]: r for r in rows}


def error_keys(out) -> list[tuple]:
    return sorted((e["source"], e["stage"], e["error"]) for e in read_errors(out))


@pytest.mark.slow
@pytest.mark.ray
def test_resume_after_interruption_matches_an_uninterrupted_run(ray_local, tmp_path, clip_small, clip_medium):
    media = tmp_path / "media"
    media.mkdir()
    rows = [{"path": str(clip_small), "caption": "car", "k": 1},
            {"path": str(write_image(media / "a.jpg", (80, 64))), "caption": "still", "k": 2},
            {"path": str(clip_medium), "caption": "bikes", "k": 3},
            {"path": str(media / "missing.mp4"), "caption": "gone", "k": 4},
            {"path": "", "caption": "no path", "k": 5}]
    full = write_manifest(media / "full.jsonl", rows)
    half = write_manifest(media / "half.jsonl", rows[:2])
    tok = make_tokenizer(tmp_path / "tok")

    def run(manifest, out, *extra):
        return run_job(parse_args(["--manifest", manifest, "--out", str(out), "--tokenizer", tok,
                                   "--clip-policy", "all", *JOB_ARGS, "--rows-per-file", "3", *extra]))

    ref_doc = run(full, tmp_path / "ref")
    ref = rows_by_id(tmp_path / "ref")
    assert len(ref) == ref_doc["counts"]["clips_written"] == 3 + 1 + 8

    # 1) interrupted after half of the manifest, then resumed with all of it
    out = tmp_path / "resumed"
    run(half, out)
    doc = run(full, out)
    assert doc["last_run"]["inputs_skipped"] == 2
    assert rows_by_id(out) == ref  # same ids (stable across runs), same tokens, same carried columns
    assert error_keys(out) == error_keys(tmp_path / "ref")
    assert doc["counts"] == ref_doc["counts"]

    # 2) killed part-way: a finished shard file of bikes' clips lost, _manifest.json not yet written, and a
    # half-written temp file left behind. The rerun redoes only the missing clips.
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "ref", killed)
    shards, _ = list_parts(str(killed))
    bikes_files = [f for f in shards if any(r["caption"] == "bikes" for r in read_part(f))]
    lost = read_part(bikes_files[0])
    (killed / bikes_files[0].rsplit("/", 1)[-1]).unlink()
    (killed / "_manifest.json").unlink()
    (killed / "_tmp").mkdir(exist_ok=True)
    (killed / "_tmp" / "part-x.parquet.tmp").write_bytes(b"PAR1 half written")
    doc = run(full, killed)
    assert doc["last_run"]["clips"] == len(lost)
    assert doc["last_run"]["inputs_processed"] == len({r["source"] for r in lost})
    assert rows_by_id(killed) == ref
    assert not list((killed / "_tmp").glob("*"))

    # 3) nothing left to do: a rerun writes nothing and stays complete
    doc = run(full, killed)
    assert doc["last_run"]["inputs_processed"] == 0 and rows_by_id(killed) == ref

    # 4) other settings into the same --out are refused before any work
    with pytest.raises(JobError, match="other settings"):
        run(full, killed, "--fps", "2")
    assert json.loads((killed / "_manifest.json").read_text())["counts"] == ref_doc["counts"]


def read_part(uri: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(uri).to_pylist()


def test_done_state_from_part_files(tmp_path):
    """Bookkeeping without Ray: finished files count, temp/hidden files do not, partial inputs get skip lists."""
    import pyarrow as pa

    from tokenize_jobs.shards import ERROR_SCHEMA, prepare_output, scan_outputs, write_table

    out = tmp_path / "out"
    prepare_output(str(out), {"id_key": "k1"})
    clips = pa.table({"source": ["a", "a", "b"], "clip_id": ["a0", "a1", "b0"],
                      "source_clips": pa.array([2, 2, 3], pa.int32())})
    write_table(clips, str(out / "part-r1-00000.parquet"))
    errors = pa.Table.from_pylist([
        {"source": "b", "stage": "decode", "error": "x", "clip_id": "b1", "source_clips": 3},
        {"source": "c", "stage": "open", "error": "not a video", "clip_id": None, "source_clips": None},
        {"source": "d", "stage": "manifest", "error": "row 3: duplicate", "clip_id": None, "source_clips": None},
    ], schema=ERROR_SCHEMA)
    write_table(errors, str(out / "_errors" / "err-part-r1-00000.parquet"))
    (out / ".hidden.parquet").write_bytes(b"junk")
    (out / "_tmp").mkdir(exist_ok=True)
    (out / "_tmp" / "part-r2.parquet.tmp").write_bytes(b"junk")

    state = scan_outputs(str(out))
    assert [p.rsplit("/", 1)[-1] for p in state.shard_files] == ["part-r1-00000.parquet"]
    assert state.num_clips == 3 and state.num_errors == 3
    assert state.is_done("a") and state.is_done("c")
    assert not state.is_done("b") and state.skip_ids("b") == ["b0", "b1"]  # b2 still missing
    assert not state.is_done("d") and not state.is_done("new")  # a manifest error does not finish a source
    assert state.accounted_sources() == {"a", "b", "c", "d"}

    prepare_output(str(out), {"id_key": "k1"})  # same settings: fine, temp files cleared
    assert not (out / "_tmp").exists()
    with pytest.raises(ValueError, match="other settings"):
        prepare_output(str(out), {"id_key": "k2", "fps": 3})


def test_a_bad_text_tokenizer_is_refused_before_any_work(tmp_path, clip_small):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": str(clip_small), "caption": "car"}])
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    out = tmp_path / "out"
    tok = make_tokenizer(tmp_path / "t")
    args = parse_args(["--manifest", str(manifest), "--out", str(out), "--tokenizer", tok, "--text-tokenizer", str(bad)])
    with pytest.raises(JobError):
        run_job(args)
    assert not (out / "_manifest.json").exists()
