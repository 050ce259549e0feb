"""A corpus of bad inputs through the whole job: every manifest row ends up as clips or as an error row with its
stage; nothing stops the job (DESIGN §4.4, §5)."""

from __future__ import annotations

import os

import pytest
from tj_media import (
    JOB_ARGS,
    make_tokenizer,
    one_frame_video,
    read_errors,
    read_shards,
    truncated_copy,
    write_image,
    write_manifest,
)

from lumos.tokenizers import ByteTokenizer
from lumos.vocab import compact_layout
from tokenize_jobs.video import parse_args, run_job

LONG_CAPTION = "a very long caption about nothing in particular " * 200


@pytest.mark.slow
@pytest.mark.ray
def test_bad_input_corpus_is_fully_accounted_for(ray_local, tmp_path, clip_small, clip_medium, clip_hd):
    media = tmp_path / "media"
    media.mkdir()
    (media / "zero.mp4").write_bytes(b"")
    (media / "notes.mp4").write_text("this is a text file, not a video\n")
    os.mkfifo(media / "hangs.mp4")  # opening it blocks forever: the per-step timeout must cut it
    rows = [
        {"path": str(clip_small), "caption": "🎬 caméra — 日本語のキャプション", "expect": "clips"},
        {"path": str(clip_small), "caption": "listed twice", "expect": "manifest"},
        {"path": str(write_image(media / "a.jpg", (96, 64))), "caption": "", "expect": "clips"},
        {"path": str(write_image(media / "b.png", (64, 96), rgba=True)), "caption": LONG_CAPTION, "expect": "clips"},
        {"path": str(truncated_copy(clip_medium, media / "truncated.mp4")), "caption": "cut", "expect": "open"},
        {"path": "zero.mp4", "caption": "zero bytes", "expect": "read"},
        {"path": "notes.mp4", "caption": "text", "expect": "open"},
        {"path": "missing.mp4", "caption": "gone", "expect": "read"},
        {"path": str(one_frame_video(media / "one.mp4")), "caption": "one frame", "expect": "sample"},
        {"path": str(clip_hd), "caption": "too big for --max-resolution", "expect": "open"},
        {"path": "hangs.mp4", "caption": "hangs", "expect": "open"},
        {"path": "", "caption": "no path", "expect": "manifest"},
        {"path": "https://example.com/v.mp4", "caption": "web", "expect": "manifest"},
    ]
    manifest = write_manifest(media / "manifest.jsonl", [{"path": r["path"], "caption": r["caption"]} for r in rows])
    out = tmp_path / "out"
    doc = run_job(parse_args(["--manifest", manifest, "--out", str(out), "--tokenizer",
                              make_tokenizer(tmp_path / "tok"), "--max-resolution", "1000", "--timeout", "10",
                              "--max-text-tokens", "64", *JOB_ARGS]))

    shards = read_shards(out).to_pylist()
    errors = read_errors(out)
    by_source = {}
    for e in errors:
        by_source.setdefault(e["source"], []).append(e)
    for i, r in enumerate(rows):
        src = r["path"] if os.path.isabs(r["path"]) or not r["path"] else str(media / r["path"])
        if r["expect"] == "clips":
            assert any(s["source"] == src for s in shards), r
        elif r["expect"] == "manifest":
            assert any(e["stage"] == "manifest" and e["error"].startswith(f"row {i}:") for e in errors), r
        else:
            (err,) = by_source[src]
            assert err["stage"] == r["expect"], (r, err)
            assert err["clip_id"] is None and "\n" not in err["error"]
    messages = {e["source"].rsplit("/", 1)[-1]: e["error"] for e in errors if e["stage"] != "manifest"}
    assert "timed out after 10 s" in messages["hangs.mp4"]
    assert "over the limit 1000" in messages[clip_hd.name]
    assert "too short" in messages["one.mp4"]
    assert "empty file" in messages["zero.mp4"] and "no such file" in messages["missing.mp4"]

    text = ByteTokenizer(compact_layout(240))
    caps = {s["caption"]: s for s in shards}
    assert text.decode(caps[rows[0]["caption"]]["text_ids"]) == rows[0]["caption"]
    assert caps[""]["text_ids"] == []
    assert len(caps[LONG_CAPTION]["text_ids"]) == 64 and doc["last_run"]["text_truncated"] == 1
    assert caps[LONG_CAPTION]["grid_t"] == 1 and caps[LONG_CAPTION]["num_frames"] == 1

    counts = doc["counts"]
    assert counts["inputs"] == len(rows) and counts["unaccounted_inputs"] == 0
    assert counts["clips_written"] == len(shards) == 3 and counts["errors"] == len(errors) == 10
