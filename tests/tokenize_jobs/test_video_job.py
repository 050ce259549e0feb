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
from tokenize_jobs.video import main, parse_args, pool_sizes, run_job

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


def test_pools_fuse_decode_and_tokenize_on_cpus_and_split_them_for_gpus(caplog):
    def pools(*extra, cpus=4, gpus=0):
        return pool_sizes(parse_args(["--manifest", "m.jsonl", "--out", "o", *extra]), cpus, gpus)

    # CPU only: one pool of decode+tokenize actors, one per CPU, all started at once (auto MAX)
    assert pools() == {"stages": "fused", "decode": (1, 4, 4), "tokenize": None, "num_gpus": 0, "device": "cpu"}
    assert pools("--decode-concurrency", "2,8")["decode"] == (2, 8, 2)  # an explicit MAX starts at MIN
    assert pools("--decode-cpus", "2", cpus=5)["decode"] == (1, 2, 2)
    # GPUs: decoding on the CPUs the GPU tokenizer actors leave
    assert pools(cpus=16, gpus=2) == {"stages": "split", "decode": (1, 14, 14), "tokenize": (1, 2, 2), "num_gpus": 1,
                                      "device": "cuda"}
    # split on CPUs when asked: the tokenizer pool starts at MIN and may grow into what decoding leaves
    assert pools("--stages", "split") == {"stages": "split", "decode": (1, 3, 3), "tokenize": (1, 3, 1),
                                          "num_gpus": 0, "device": "cpu"}
    with caplog.at_level("WARNING"):
        assert pools("--stages", "fused", gpus=1)["stages"] == "fused"
    assert "--num-gpus is ignored" in caplog.text
    with pytest.raises(SystemExit):
        parse_args(["--manifest", "m.jsonl", "--out", "o", "--stages", "both"])


def test_fused_actor_gives_the_rows_of_decode_then_tokenize(tmp_path, tokenizer, clip_small):
    """DecodeTokenizeClips (CPU clusters) and DecodeClips → TokenizeClips (GPU clusters) write the same rows."""
    from dataclasses import asdict

    from tokenize_jobs.udfs import DecodeClips, DecodeTokenizeClips, TokenizeClips

    inputs = pa.table({"source": [str(clip_small), str(tmp_path / "missing.mp4")], "caption": ["a car", "none"],
                       "input_index": [0, 1], "skip": [[], []]})
    settings = asdict(SETTINGS)
    fused = DecodeTokenizeClips(settings, "key", batch_size=3, tokenizer=tokenizer)
    outputs = list(fused(inputs))
    decode, tokenize = DecodeClips(settings, "key"), TokenizeClips(tokenizer)
    want = tokenize(pa.concat_tables(list(decode(inputs)))).drop_columns(["decode_s"]).to_pylist()
    got = pa.concat_tables(outputs).drop_columns(["decode_s"]).to_pylist()
    assert got == want
    assert len(want) >= 4 and [r["stage"] for r in want].count("read") == 1 and want[0]["video_tokens"]
    assert [t.num_rows for t in outputs[:-1]] == [3] * (len(outputs) - 1)  # tokenized 3 clips at a time
    for worker in (fused.decode.worker, decode.worker):
        worker.close()


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
    assert doc["last_run"]["pools"]["stages"] == "fused"  # no GPU: decode and tokenize in one actor pool
    assert not (out / "_tmp").exists()  # every file renamed into place, the scratch directory removed


@pytest.mark.slow
@pytest.mark.ray
def test_shapes_corpus_with_the_default_tokenizer(ray_local, tmp_path):
    """synth → tokenize with the job's default tokenizer, as the demo does; synth's extra columns carried; with
    the split stages of GPU clusters (a decode pool feeding a tokenizer pool), here on CPUs."""
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
                              "--decode-concurrency", "1", "--tokenize-concurrency", "1", "--stages", "split"]))
    assert doc["tokenizer"]["uri"] == default and doc["last_run"]["pools"]["stages"] == "split"
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
