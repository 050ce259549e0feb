"""tokenize_jobs.synth: decodable mp4s + a valid manifest, local and S3; stills; clear errors."""

import json
import subprocess
import sys

import pytest

from lumos import storage
from lumos.shapes import metrics
from lumos.shapes.world import Scene, caption_split
from tokenize_jobs import synth

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _rows(uri):
    return [json.loads(line) for line in storage.read_text(storage.join(uri, "manifest.jsonl")).splitlines()]


def _check_corpus(uri, n, size=32, frames=9):
    import decord

    rows = _rows(uri)
    assert [r["scene_index"] for r in rows] == list(range(n))
    for r in rows:
        assert set(r) >= {"path", "caption", "split", "gt", "num_objects"}
        gt = json.loads(r["gt"])
        scene = Scene.from_dict(gt)
        assert scene.caption() == r["caption"] == gt["caption"]
        assert r["split"] == "train" == caption_split(r["caption"])
        data = storage.read_bytes(storage.join(uri, r["path"]))
        vr = decord.VideoReader(__import__("io").BytesIO(data))
        assert len(vr) == frames and vr[0].shape == (size, size, 3)
        clip = vr.get_batch(list(range(frames))).asnumpy()
        got = {o["color"]: o for o in metrics.recover_scene(clip[[0, -1]])}
        assert {o.color for o in scene.objects} == set(got)  # the mp4 still shows the scene
    return rows


def test_synth_local_is_deterministic(tmp_path):
    argv = ["--videos", "3", "--seed", "4", "--size", "32", "--fps", "4", "--seconds", "2"]
    assert synth.main(["--out", str(tmp_path / "a"), *argv]) == 0
    assert synth.main(["--out", str(tmp_path / "b"), *argv]) == 0
    rows = _check_corpus(str(tmp_path / "a"), 3)
    assert rows == _rows(str(tmp_path / "b"))


def test_synth_s3(s3_bucket):
    uri = f"{s3_bucket}/raw/corpus"
    assert synth.main(["--out", uri, "--videos", "2", "--seed", "0", "--size", "32", "--fps", "4"]) == 0
    _check_corpus(uri, 2)
    assert len(storage.list_files(uri)) == 3


def test_synth_png_stills_and_heldout(tmp_path):
    out = str(tmp_path / "stills")
    assert synth.main(["--out", out, "--videos", "3", "--seed", "1", "--format", "png", "--split", "heldout"]) == 0
    from lumos.media import read_image

    for r in _rows(out):
        assert r["path"].endswith(".png") and r["split"] == "heldout"
        assert "moving" not in r["caption"] and "still" not in r["caption"]
        assert read_image(storage.join(out, r["path"])).shape == (64, 64, 3)


@pytest.mark.parametrize("args,message", [
    (["--videos", "0"], "--videos must be >= 1"),
    (["--videos", "1", "--size", "30"], "--size must be a positive multiple of 8"),
    (["--videos", "1", "--fps", "0"], "--fps must be positive"),
])
def test_synth_bad_arguments_fail_with_one_line(tmp_path, capsys, args, message):
    assert synth.main(["--out", str(tmp_path), "--seed", "0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "manifest.jsonl").exists()


def test_synth_help_runs():
    out = subprocess.run([sys.executable, "-m", "tokenize_jobs.synth", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--videos" in out.stdout
