"""tokenize_jobs.shapes: scenes rendered and tokenized straight into shards (deterministic, train captions only)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from lumos.shapes.world import MOTIONS, caption_split
from lumos.tokenizers import default_tokenizer_uri, load_text_tokenizer, load_video_tokenizer
from lumos.tokenizers.video import ASSETS
from lumos.vocab import build_layout
from tokenize_jobs import shapes

WORDS = str(ASSETS / "text_words.json")


def test_items_are_deterministic_and_never_heldout():
    a = [shapes.render_item(i, stills=30, seed=3, size=32, fps=8, seconds=2) for i in range(60)]
    b = [shapes.render_item(i, stills=30, seed=3, size=32, fps=8, seconds=2) for i in range(60)]
    assert all(x[1] == y[1] and np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    kinds, captions, frames = zip(*a)
    assert kinds == ("still",) * 30 + ("clip",) * 30
    assert all(f.shape == ((1 if k == "still" else 17), 32, 32, 3) for k, f in zip(kinds, frames))
    assert all(caption_split(c) == "train" for c in captions)  # never a held-out eval caption
    assert not any(f"moving {m}" in c or "staying" in c for c in captions[:30] for m in MOTIONS)
    other = shapes.render_item(0, stills=30, seed=4, size=32, fps=8, seconds=2)
    assert other[1] != captions[0] or not np.array_equal(other[2], frames[0])


def test_bad_arguments_are_one_line(capsys):
    assert shapes.main(["--out", "/tmp/x", "--stills", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --stills and --clips must be >= 0 with at least one item, got 0, 0"]
    assert shapes.main(["--stills", "3"]) == 2


def test_cli_and_python_build_the_same_typed_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, _ = shapes.parse_args(["--out", "rel/out", "--stills", "4", "--fps", "4", "--text-tokenizer", WORDS])
    assert cfg == shapes.ShapesJobConfig(out="rel/out", stills=4, fps=4, text_tokenizer=WORDS)
    assert cfg.out == str(tmp_path / "rel" / "out") and cfg.fps == 4.0 and cfg.world["stills"] == 4
    with pytest.raises(ValueError, match=r"^--size must be a positive multiple of 8, got 12$"):
        shapes.ShapesJobConfig(out="o", stills=1, size=12)
    assert shapes.parse_args(["--write-text-tokenizer", "w.json"])[0] is None


@pytest.mark.ray
def test_job_writes_shards_equal_to_in_process_encoding_and_resumes(ray_local, tmp_path, capsys):
    out = str(tmp_path / "shards")
    argv = ["--out", out, "--stills", "5", "--clips", "2", "--seed", "1", "--size", "32", "--actors", "1",
            "--batch-size", "3", "--text-tokenizer", WORDS]
    assert shapes.main(argv) == 0
    table = pq.read_table(sorted((tmp_path / "shards").glob("*.parquet"))).to_pylist()
    manifest = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
    assert manifest["counts"]["clips_written"] == 7 == len(table) and manifest["counts"]["errors"] == 0
    assert manifest["settings"]["text_tokenizer"] == WORDS
    tok = load_video_tokenizer(default_tokenizer_uri("small"))
    text = load_text_tokenizer(WORDS, build_layout("compact", tok.codebook_size))
    rows = {r["source"]: r for r in table}
    for i in range(7):
        kind, caption, frames = shapes.render_item(i, stills=5, seed=1, size=32, fps=8, seconds=2)
        r = rows[shapes.item_source(1, i, kind)]
        codes = tok.encode(frames[None]).numpy()[0]
        assert r["caption"] == caption and r["text_ids"] == text.encode(caption)
        assert (r["grid_t"], r["grid_h"], r["grid_w"]) == codes.shape == ((1 if kind == "still" else 5), 4, 4)
        assert r["video_tokens"] == codes.reshape(-1).tolist()
    assert len({r["clip_id"] for r in table}) == 7

    # a finished output is left alone; an interrupted one (no manifest, one part lost) renders only what is missing
    capsys.readouterr()
    assert shapes.main(argv) == 0
    assert "already finished, nothing rendered" in capsys.readouterr().out
    assert json.loads((tmp_path / "shards" / "_manifest.json").read_text())["last_run"] == manifest["last_run"]
    parts = sorted((tmp_path / "shards").glob("*.parquet"))
    lost = {r["source"] for r in pq.read_table(parts[0]).to_pylist()}
    parts[0].unlink()
    (tmp_path / "shards" / "_manifest.json").unlink()
    assert shapes.main(argv) == 0
    again = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
    assert again["last_run"]["items_processed"] == len(lost) and again["counts"]["clips_written"] == 7
    assert sorted(r["clip_id"] for r in pq.read_table(sorted((tmp_path / "shards").glob("*.parquet"))).to_pylist()) \
        == sorted(r["clip_id"] for r in table)
