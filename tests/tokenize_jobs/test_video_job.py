"""The tokenization job end to end on local Ray (DESIGN §4.4): shards read back and compared with a direct
decode + tokenize of the same clips; the CLI's --help and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest
from tj_media import (
    JOB_ARGS,
    make_tokenizer,
    read_errors,
    read_shards,
    reference_clips,
    write_image,
    write_manifest,
)

from tokenize_jobs.decode import ClipSettings
from tokenize_jobs.shards import SHARD_SCHEMA, clip_id
from tokenize_jobs.video import main, parse_args, run_job

SETTINGS = ClipSettings(fps=4, seconds=1, clip_policy="all", target_size=64, patch=16)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "debug")


def test_help_and_bad_arguments_exit_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tokenize_jobs.video", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--manifest" in out.stdout and "--clip-policy" in out.stdout
    with pytest.raises(SystemExit) as e:
        parse_args(["--manifest", "m.jsonl", "--out", "o", "--decode-concurrency", "3,1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(["--manifest", "m.jsonl", "--out", "o", "--fps", "0"])


def test_unusable_manifest_or_tokenizer_fail_before_any_work(tmp_path, capsys, tokenizer):
    code = main(["--manifest", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"), "--tokenizer", tokenizer])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --manifest") and "no such file" in err and "\n" not in err
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "a.mp4", "caption": "x"}])
    code = main(["--manifest", manifest, "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "nope")])
    assert code == 2 and "video tokenizer" in capsys.readouterr().err
    code = main(["--manifest", manifest, "--out", str(tmp_path / "o"), "--tokenizer", tokenizer, "--patch", "12",
                 "--target-size", "48"])
    assert code == 2 and "--patch 12 must be a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "o" / "_manifest.json").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_job_output_matches_direct_decode_and_tokenize(ray_local, tmp_path, tokenizer, clip_small, clip_medium,
                                                       request):
    inputs = [(clip_small, "a man in a car, talking", "carphone"), (clip_medium, "city street, bikes", "bikes")]
    try:
        inputs.append((request.getfixturevalue("clip_mpeg2"), "skyscrapers at dusk", "city"))
    except pytest.skip.Exception:
        pass
    image = write_image(tmp_path / "still.jpg", (120, 80))
    inputs.append((image, "a gradient", "still"))
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"path": str(p), "caption": c, "name": n, "rank": i} for i, (p, c, n) in enumerate(inputs)])
    out = tmp_path / "shards"
    doc = run_job(parse_args(["--manifest", manifest, "--out", str(out), "--tokenizer", tokenizer,
                              "--clip-policy", "all", *JOB_ARGS]))

    table = read_shards(out)
    assert table.schema.names == SHARD_SCHEMA.names + ["name", "rank"]
    assert table.schema.field("rank").type == pa.int64()
    rows = table.to_pylist()
    id_key = json.loads((out / "_settings.json").read_text())["id_key"]
    expected = 0
    for path, caption, name in inputs:
        ref = reference_clips(path, str(path), caption, SETTINGS, tokenizer)
        mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r["clip_index"])
        assert [r["clip_index"] for r in mine] == sorted(ref), name
        for r in mine:
            want = ref[r["clip_index"]]
            assert r["video_tokens"] == want["video_tokens"], (name, r["clip_index"])
            assert r["text_ids"] == want["text_ids"]
            assert (r["grid_t"], r["grid_h"], r["grid_w"]) == want["grid"]
            assert (r["width"], r["height"]) == want["size"]
            assert r["start_s"] == pytest.approx(want["start_s"])
            assert r["clip_id"] == clip_id(str(path), r["clip_index"], id_key)
            assert r["source_clips"] == len(ref) and r["caption"] == caption and r["source"] == str(path)
            assert r["num_frames"] == (1 if name == "still" else 5) and r["fps"] == (1 if name == "still" else 4)
        expected += len(ref)
    assert len({r["clip_id"] for r in rows}) == len(rows) == expected

    assert read_errors(out) == []
    counts = doc["counts"]
    assert counts == {"inputs": len(inputs), "clips_written": expected, "errors": 0,
                      "inputs_with_clips": len(inputs), "unaccounted_inputs": 0}
    assert json.loads((out / "_manifest.json").read_text())["counts"] == counts
    assert doc["tokenizer"]["identity"]["sha256"] and doc["tokenizer"]["uri"] == tokenizer
    assert len(doc["shards"]) >= 2  # --rows-per-file 8
    assert doc["last_run"]["strategies"] and sum(doc["last_run"]["strategies"].values()) == expected
    assert not list((out / "_tmp").glob("*")) if (out / "_tmp").exists() else True


@pytest.mark.slow
@pytest.mark.ray
def test_shapes_corpus_with_the_default_tokenizer(ray_local, tmp_path):
    """synth → tokenize with the job's default tokenizer, as the demo does; synth's extra columns carried."""
    from lumos.tokenizers import default_tokenizer_uri
    from tokenize_jobs import synth

    try:
        default = default_tokenizer_uri("small")
    except ValueError:
        pytest.skip("the committed 'small' tokenizer is not there yet")
    corpus = tmp_path / "corpus"
    assert synth.main(["--out", str(corpus), "--videos", "3", "--seed", "0"]) == 0
    out = tmp_path / "shards"
    doc = run_job(parse_args(["--manifest", str(corpus / "manifest.jsonl"), "--out", str(out), "--fps", "8",
                              "--seconds", "2", "--target-size", "64", "--patch", "16",
                              "--decode-concurrency", "1", "--tokenize-concurrency", "1"]))
    assert doc["tokenizer"]["uri"] == default
    assert doc["counts"]["clips_written"] == 3 and doc["counts"]["errors"] == 0
    rows = read_shards(out).to_pylist()
    manifest = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    settings = ClipSettings(fps=8, seconds=2, target_size=64, patch=16)
    for m in manifest:
        (row,) = [r for r in rows if r["source"] == str(corpus / m["path"])]
        assert row["caption"] == m["caption"] and row["gt"] == m["gt"] and row["split"] == m["split"]
        assert (row["grid_t"], row["grid_h"], row["grid_w"]) == (5, 8, 8) and row["num_frames"] == 17
        ref = reference_clips(corpus / m["path"], str(corpus / m["path"]), m["caption"], settings, default)[0]
        assert row["video_tokens"] == ref["video_tokens"] and row["text_ids"] == ref["text_ids"]
