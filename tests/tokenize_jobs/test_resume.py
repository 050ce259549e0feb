"""Resume: rerunning with the same --out after an interrupted run gives exactly the rows of an uninterrupted run
(no duplicates, nothing lost), clip ids are stable across runs, and other settings are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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

    # 4) a retried write task wrote a shard file and an error file a second time (another random name): the
    # rerun removes the copies, and the output is the reference again
    shards, errors = list_parts(str(killed))
    for f in (shards[0], errors[0]):
        src = Path(f)
        shutil.copy(src, src.with_name(src.name.replace(".parquet", "-again.parquet")))
    doc = run(full, killed)
    assert doc["last_run"]["reconciled"]["files_deleted"] == 2
    assert rows_by_id(killed) == ref and error_keys(killed) == error_keys(tmp_path / "ref")
    assert doc["counts"] == ref_doc["counts"]

    # 5) other settings into the same --out are refused before any work
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


def test_reconcile_removes_rows_that_retried_write_tasks_wrote_twice(tmp_path):
    """A retried write task's second file (same rows, another name), a partly overlapping file, an error row of a
    clip that a retry then wrote, a whole-input error of an input whose clips are all written, and a failure
    recorded twice: after reconciling, each clip and each failure is there once and no other row is lost."""
    import pyarrow as pa

    from tokenize_jobs.reconcile import reconcile_outputs
    from tokenize_jobs.shards import ERROR_SCHEMA, prepare_output, scan_outputs, write_table

    out = tmp_path / "out"
    prepare_output(str(out), {"id_key": "k1"})

    def shard(name, ids):
        src = [i[0] for i in ids]
        t = pa.table({"source": src, "clip_id": ids, "source_clips": pa.array([2] * len(ids), pa.int32()),
                      "k": list(range(len(ids)))})
        write_table(t, str(out / name))

    def errors(name, rows):
        keys = ["source", "stage", "error", "clip_id", "source_clips"]
        write_table(pa.Table.from_pylist([dict(zip(keys, r)) for r in rows], schema=ERROR_SCHEMA),
                    str(out / "_errors" / name))

    shard("part-r1-00000-aaaa.parquet", ["a0", "a1", "b0"])
    shard("part-r1-00000-bbbb.parquet", ["a0", "a1", "b0"])  # the same task, retried: every row again
    shard("part-r1-00001-cccc.parquet", ["b0", "b1", "c0"])  # overlaps in b0 only
    errors("err-part-r1-00002-dddd.parquet", [("m", "read", "no such file", None, None),
                                              ("b", "decode", "timeout", "b1", 2),  # b1 was written after all
                                              ("a", "open", "worker died", None, None),  # a is complete
                                              ("c", "decode", "bad frame", "c1", 2)])
    errors("err-part-r1-00003-eeee.parquet", [("m", "read", "no such file", None, None),  # m failed twice
                                              ("x", "manifest", "row 3: duplicate", None, None),
                                              ("x", "manifest", "row 4: duplicate", None, None)])

    kept_state, done = reconcile_outputs(str(out))
    assert done.as_dict() == {"duplicate_clip_rows": 4, "stale_error_rows": 3, "files_rewritten": 3,
                              "files_deleted": 1}
    state = scan_outputs(str(out))
    assert kept_state == state  # what reconciling kept, as a fresh scan reads it
    assert state.num_clips == 5 and {s: sorted(v) for s, v in state.clips.items()} == {
        "a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0"]}
    assert state.num_errors == 4 and state.failed == {"m"} and dict(state.clip_errors) == {"c": {"c1"}}
    assert sorted(k for k in state.error_keys if k[1] == "manifest") == [
        ("x", "manifest", "row 3: duplicate"), ("x", "manifest", "row 4: duplicate")]
    kept = [r for f in state.shard_files for r in read_part(f)]
    assert sorted((r["clip_id"], r["k"]) for r in kept) == [
        ("a0", 0), ("a1", 1), ("b0", 2), ("b1", 1), ("c0", 2)]  # the carried column travels with its row
    assert reconcile_outputs(str(out))[1].as_dict()["duplicate_clip_rows"] == 0  # idempotent
    assert not list((out / "_tmp").glob("*"))

