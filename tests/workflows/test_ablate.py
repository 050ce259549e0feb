"""``workflows.ablate``: data made by the product jobs (synth → tokenize job on Ray), the rope / mask / history studies
end to end on the debug preset, identical budgets and seeds across variants, fixed validation tubes, result files,
bad arguments."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lumos.checkpoint import save_checkpoint
from lumos.model import LumosModel
from lumos.tokenizers import build_video_tokenizer, default_tokenizer_uri, save_video_tokenizer
from workflows.ablate import (
    STUDIES,
    AblationConfig,
    batch_stream,
    load_samples,
    main,
    prepare_data,
    validation_batches,
    variant_configs,
)
from workflows.eval import update_doc_section
from workflows.eval_sets import is_heldout_prompt

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "2", "--eval-every", "1", "--batch", "2", "--eval-num", "1", "--eval-steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(ray_local, tmp_path_factory) -> dict:
    """Train/validation shards of 32-px shapes clips made by tokenize_jobs.synth + tokenize_jobs.video."""
    root = tmp_path_factory.mktemp("ablate_data")
    try:
        tok = default_tokenizer_uri("debug")
    except ValueError:
        tok = str(root / "tokenizer")
        save_video_tokenizer(tok, build_video_tokenizer("debug", seed=0))
    shards, val = prepare_data(str(root / "data"), tok, videos=6, images=6, val_videos=3, size=32, seed=0)
    return {"shards": shards, "val": val, "tok": tok, "root": root}


def _args(data: dict, out: Path) -> list[str]:
    return ["--shards", data["shards"], "--val-shards", data["val"], "--tokenizer", data["tok"], "--out", str(out)]


def _report(out: Path, study: str) -> dict:
    return json.loads((out / study / "results.json").read_text())


@pytest.mark.slow  # shares the data fixture: Ray + tokenize job, ~40 s idle, minutes on a busy CPU
def test_data_comes_from_the_tokenize_job_and_keeps_splits_apart(data):
    train_manifest = json.loads((Path(data["shards"]) / "_manifest.json").read_text())
    val_manifest = json.loads((Path(data["val"]) / "_manifest.json").read_text())
    assert train_manifest["counts"]["errors"] == 0 and val_manifest["counts"]["clips_written"] == 3
    rows = [json.loads(x) for x in (Path(data["shards"]).parent / "train.jsonl").read_text().splitlines()]
    stills = [r for r in rows if r["path"].endswith(".png")]
    assert len(rows) - len(stills) == 6 and all(not is_heldout_prompt(r["caption"]) for r in stills)
    assert train_manifest["counts"]["clips_written"] == len(rows)
    train, geo = load_samples(data["shards"], None)
    val, _ = load_samples(data["val"], None)
    assert geo == {"size": 32, "fps": 8, "duration": 2, "latent_frames": 5}
    assert {tuple(s["codes"].shape) for s in train} == {(5, 4, 4), (1, 4, 4)}
    val_rows = [json.loads(x) for x in (Path(data["val"]).parent / "val.jsonl").read_text().splitlines()]
    assert all(r["split"] == "heldout" for r in val_rows) and len(val) == 3


@pytest.mark.slow  # shares the data fixture: Ray + tokenize job, ~40 s idle, minutes on a busy CPU
def test_variants_start_from_the_same_weights_and_see_the_same_batches(data):
    inits = []
    for variant in STUDIES["rope"]:
        model_cfg, _ = variant_configs(AblationConfig(study="rope"), variant)
        assert model_cfg.rope_variant == variant
        torch.manual_seed(0)
        inits.append(LumosModel(model_cfg).state_dict())
    assert all(torch.equal(inits[0][k], other[k]) for other in inits[1:] for k in inits[0])
    train, _ = load_samples(data["shards"], None)
    a, b = batch_stream(train, 2, seed=0), batch_stream(train, 2, seed=0)
    for _ in range(8):
        x, y = next(a), next(b)
        assert [s["text_ids"] for s in x] == [s["text_ids"] for s in y]
        assert len({s["codes"].shape[0] for s in x}) == 1  # images and videos are not mixed in a batch


@pytest.mark.slow  # shares the data fixture: Ray + tokenize job, ~40 s idle, minutes on a busy CPU
def test_validation_batches_are_fixed_tube_masks(data):
    val, _ = load_samples(data["val"], None)
    layout = variant_configs(AblationConfig(study="mask"), "random")[0].layout
    one, two = validation_batches(val, layout, 2, 0.7, seed=0), validation_batches(val, layout, 2, 0.7, seed=0)
    assert all(torch.equal(p[k], q[k]) for p, q in zip(one, two) for k in p)
    for batch in one:
        for b in range(batch["ids"].shape[0]):
            vis = batch["visual"][b].nonzero().squeeze(1).view(5, -1)  # (F, N) content + newline positions
            masked = batch["ids"][b][vis] == layout.mask  # (F, N)
            assert all(torch.equal(masked[0], masked[f]) for f in range(5))  # the same tube in every frame
            assert int(masked[0].sum()) == round(vis.shape[1] * 0.7)


@pytest.mark.slow
def test_rope_study_end_to_end(data, tmp_path, capsys):
    out, doc = tmp_path / "out", tmp_path / "docs" / "results.md"
    assert main(["--study", "rope", *_args(data, out), *FAST, "--results-doc", str(doc)]) == 0
    report = _report(out, "rope")
    assert list(report["variants"]) == list(STUDIES["rope"])
    for name, res in report["variants"].items():
        assert [c["step"] for c in res["curve"]] == [1, 2]
        assert all(math.isfinite(c["val_loss"]) and math.isfinite(c["train_loss"]) for c in res["curve"])
        assert len(res["val_frame_loss"]) == 5
        assert (out / "rope" / name / "model.safetensors").exists()
        cfg = json.loads((out / "rope" / name / "config.json").read_text())
        assert cfg["model"]["rope_variant"] == name and cfg["video_tokenizer"] == data["tok"]
    assert report["config"]["steps"] == 2 and report["data"]["val_clips"] == 3
    assert report["plots"] == ["rope_loss.png"] and (out / "rope" / "rope_loss.png").stat().st_size > 1000
    md = (out / "rope" / "results.md").read_text()
    assert md.count("\n| ") == 1 + len(STUDIES["rope"]) and md in capsys.readouterr().out
    text = doc.read_text()
    assert "<!-- ablate:rope begin -->" in text and "](img/ablate_rope_rope_loss.png)" in text
    assert (doc.parent / "img" / "ablate_rope_rope_loss.png").stat().st_size > 1000
    update_doc_section(str(doc), "ablate:rope", "replaced", {})
    assert doc.read_text().count("ablate:rope begin") == 1 and "replaced" in doc.read_text()


@pytest.mark.slow
def test_mask_study_end_to_end(data, tmp_path):
    out = tmp_path / "out"
    assert main(["--study", "mask", *_args(data, out), *FAST]) == 0
    report = _report(out, "mask")
    assert list(report["variants"]) == list(STUDIES["mask"])
    for res in report["variants"].values():
        assert len(res["val_frame_loss"]) == 5 and len(res["train_frame_loss"]) in (0, 5)
        assert set(res["eval"]) == {"t2i", "t2v", "i2v"}
        assert "overall" in res["eval"]["t2i"] and "motion_direction" in res["eval"]["i2v"]
        assert all(0.0 <= v <= 1.0 for s in res["eval"].values() for v in s.values())
    assert set(report["plots"]) == {"mask_loss.png", "mask_frame_loss.png", "mask_scores.png"}
    assert all((out / "mask" / p).stat().st_size > 1000 for p in report["plots"])
    assert "| tube |" in (out / "mask" / "results.md").read_text()


def test_history_study_scores_a_checkpoint_with_and_without_history_masks(tmp_path):
    tok = str(tmp_path / "tokenizer")
    save_video_tokenizer(tok, build_video_tokenizer("debug", seed=0))
    torch.manual_seed(0)
    model_cfg, _ = variant_configs(AblationConfig(study="history"), "0.7")
    model = LumosModel(model_cfg)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(str(ckpt), model, model_cfg, extra={"video_tokenizer": tok, "text_tokenizer": None,
                                                        "resolution": [32, 32]})
    out = tmp_path / "out"
    assert main(["--study", "history", "--checkpoint", str(ckpt), "--out", str(out), "--eval-num", "2",
                 "--eval-steps", "1", "--quiet"]) == 0
    report = _report(out, "history")
    assert list(report["variants"]) == ["0.7", "0.0"] and report["model"] == {"checkpoint": str(ckpt)}
    for res in report["variants"].values():
        assert set(res["eval"]) == {"t2v", "i2v"} and set(res["eval"]["t2v"]) == {
            "motion_direction", "subject_consistency", "background_stability"}
    assert (out / "history" / "history_scores.png").stat().st_size > 1000
    md = (out / "history" / "results.md").read_text()
    assert f"Checkpoint `{ckpt}` sampled with and without" in md and "Preset" not in md  # nothing was trained


def test_bad_arguments_exit_with_one_line(tmp_path, capsys):
    cases = [(["--study", "rope", "--variants", "mm,nope"], "'nope' is not a rope variant"),
             (["--study", "rope", "--steps", "0"], "--steps must be >= 1"),
             (["--study", "mask", "--checkpoint", "x"], "--checkpoint is only used by --study history"),
             (["--study", "rope", "--shards", "x"], "--shards and --val-shards go together"),
             (["--study", "rope", "--shards", str(tmp_path), "--val-shards", str(tmp_path), "--tokenizer", "t"],
              "no _manifest.json")]
    for argv, msg in cases:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(["--study", "nope"])
    assert e.value.code == 2
    out = subprocess.run([sys.executable, "-m", "workflows.ablate", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and "--study" in out.stdout and "--val-ratio" in out.stdout
