"""``python -m workflows.demo``: stage bookkeeping (reuse, settings changes, interrupted stages) and the quick demo
end to end on local Ray (corpus with real clips → tokenizer → shards → DeepSpeed pre-training → samples → eval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumos.shapes.world import caption_split
from workflows import demo
from workflows.demo import Stages


def _writer(name: str, text: str, calls: list):
    def fn(tmp: Path) -> dict:
        calls.append(name)
        (tmp / name).write_text(text)
        return {"paths": [name], "note": text}
    return fn


def test_finished_stage_is_reused_until_its_settings_change(tmp_path):
    calls = []
    first = Stages(tmp_path).run("corpus", "t", {"n": 1}, _writer("corpus", "a", calls))
    again = Stages(tmp_path).run("corpus", "t", {"n": 1}, _writer("corpus", "b", calls))
    assert (first.status, again.status, calls) == ("ran", "reused", ["corpus"])
    assert (tmp_path / "corpus").read_text() == "a" and again.artifacts == first.artifacts

    changed = Stages(tmp_path).run("corpus", "t", {"n": 2}, _writer("corpus", "c", calls))
    assert changed.status == "ran" and (tmp_path / "corpus").read_text() == "c"
    record = json.loads((tmp_path / "_stages" / "corpus.json").read_text())
    assert record["settings"] == {"n": 2} and record["outputs"] == ["corpus"]
    assert not (tmp_path / ".tmp" / "corpus").exists()


def test_missing_output_makes_the_stage_run_again(tmp_path):
    calls = []
    Stages(tmp_path).run("eval", "t", {}, _writer("eval", "x", calls))
    (tmp_path / "eval").unlink()
    assert Stages(tmp_path).run("eval", "t", {}, _writer("eval", "y", calls)).status == "ran"
    assert calls == ["eval", "eval"]


def test_interrupted_stage_leaves_nothing_a_rerun_trusts(tmp_path):
    calls = []
    Stages(tmp_path).run("generate", "t", {"v": 1}, _writer("samples", "old", calls))

    def interrupted(tmp: Path) -> dict:
        (tmp / "samples").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path).run("generate", "t", {"v": 2}, interrupted)
    assert not (tmp_path / "_stages" / "generate.json").exists()  # the old record no longer describes samples
    assert (tmp_path / "samples").read_text() == "old"  # the partial output never replaced the committed one
    rerun = Stages(tmp_path).run("generate", "t", {"v": 2}, _writer("samples", "new", calls))
    assert rerun.status == "ran" and (tmp_path / "samples").read_text() == "new"


def test_resumable_stage_keeps_its_temp_dir_only_for_the_same_settings(tmp_path):
    seen = []

    def interrupted(tmp: Path) -> dict:
        (tmp / "progress").write_text("step 5")
        raise KeyboardInterrupt

    def finish(tmp: Path) -> dict:
        progress = tmp / "progress"
        seen.append(progress.read_text() if progress.exists() else None)
        progress.unlink(missing_ok=True)
        (tmp / "run").write_text("done")
        return {"paths": ["run"]}

    def attempt(settings: dict, resumable: bool) -> None:
        with pytest.raises(KeyboardInterrupt):
            Stages(tmp_path).run("pretrain", "t", settings, interrupted, resumable=resumable)
        Stages(tmp_path).run("pretrain", "t", settings, finish, resumable=resumable)

    attempt({"s": 1}, resumable=True)   # same settings after the interrupt: continue in the temp dir
    attempt({"s": 2}, resumable=False)  # a stage that cannot resume starts clean
    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path).run("pretrain", "t", {"s": 3}, interrupted, resumable=True)
    Stages(tmp_path).run("pretrain", "t", {"s": 4}, finish, resumable=True)  # other settings: start clean
    assert seen == ["step 5", None, None]
    assert not (tmp_path / "progress").exists() and (tmp_path / "run").read_text() == "done"


def test_heldout_sample_prompts_are_never_training_captions():
    scenes = demo.heldout_scenes(0)
    assert list(scenes) == ["t2i", "t2v", "i2v"]
    assert caption_split(scenes["t2i"].caption(with_motion=False)) == "heldout"
    assert all(caption_split(scenes[m].caption()) == "heldout" for m in ("t2v", "i2v"))
    assert demo.heldout_scenes(0)["t2v"].caption() == scenes["t2v"].caption()  # seeded


def test_curriculum_stages_take_the_plan_s_learning_rates(tmp_path):
    """The full demo: stills at a high peak LR, then a gentler joint stage on the video job's shards; the quick demo
    keeps its recipe's LR."""
    from workflows.training.curriculum import stage_configs
    from workflows.training.train_config import load_pretrain_config

    full, quick = demo.PLANS["full"], demo.PLANS["quick"]
    image, joint = demo.curriculum(full, tmp_path / "shards")
    assert image.overrides == {"data.stage": "image", "optim.max_steps": full.image_steps, "optim.lr": 4e-3}
    assert joint.overrides["optim.lr"] == 1e-3 and joint.overrides["data.shards"] == str(tmp_path / "shards")
    assert all("optim.lr" not in st.overrides for st in demo.curriculum(quick, tmp_path / "shards"))
    cfg = load_pretrain_config(str(demo.CONFIGS / full.pretrain_recipe),
                               [*demo.pretrain_overrides(full, tmp_path / "stills"), f"checkpoint.storage={tmp_path}"])
    cfg.stages = [image, joint]
    assert [(c.optim.lr, c.optim.max_steps, c.data.stage) for c in stage_configs(cfg)] == [
        (4e-3, full.image_steps, "image"), (1e-3, full.joint_steps, "joint")]
    assert not any(c.engine.compile for c in stage_configs(cfg))  # the goal recipe compiles; the demo does not
    assert [c.optim.name for c in stage_configs(cfg)] == ["muon", "muon"]  # the quick demo keeps its recipe's AdamW
    quick_cfg = load_pretrain_config(str(demo.CONFIGS / quick.pretrain_recipe),
                                     demo.pretrain_overrides(quick, tmp_path / "stills"))
    assert quick_cfg.optim.name == "adamw"


def test_bad_arguments_exit_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        demo.parse_args(["--train-tokenizer", "--tokenizer", "x"])
    assert e.value.code == 2 and "exclude each other" in capsys.readouterr().err
    assert demo.main(["--quick", "--tokenizer", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    assert "not a video tokenizer directory" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_quick_demo_end_to_end_then_reuse_and_interrupt(ray_local, tmp_path, monkeypatch, capsys):
    import numpy as np

    from lumos.checkpoint import load_checkpoint
    from lumos.media import read_video_frames
    from tokenize_jobs.shards import ShardManifest

    out = tmp_path / "demo"
    assert demo.main(["--quick", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"{name:<10} ran" in table for name in demo.STAGES), table

    rows = [json.loads(line) for line in (out / "corpus" / "manifest.jsonl").read_text().splitlines()]
    real = [r for r in rows if r["split"] == "real"]
    assert sorted(Path(r["path"]).stem for r in real) == ["bikes", "carphone_pristine"]
    shards = ShardManifest.read(str(out / "shards"))
    assert shards.counts["errors"] == 0 and shards.counts["unaccounted_inputs"] == 0
    assert shards.clips_written >= len(rows)  # every input yields at least one clip

    model, cfg, meta = load_checkpoint(str(out / "final"))
    assert cfg.n_layers == 2 and meta["train"]["step"] == demo.PLANS["quick"].joint_steps
    assert all((out / f"pretrain-{stage}" / "metrics" / "loss.png").exists() for stage in ("image", "joint"))
    stills = ShardManifest.read(str(out / "stills"))  # the curriculum's image stage: the shapes job's stills
    assert stills.clips_written == demo.PLANS["quick"].stills and stills.text_tokenizer == str(demo.TEXT_TOKENIZER)
    assert ShardManifest.read(str(out / "shards")).text_tokenizer == str(demo.TEXT_TOKENIZER)  # the same vocabulary
    assert (out / "final" / "text_tokenizer.json").exists()
    t2i, t2v = (read_video_frames(str(out / "samples" / f"{m}.gif")) for m in ("t2i", "t2v"))
    assert t2i.shape == (1, 32, 32, 3) and t2v.shape == (17, 32, 32, 3) and t2v.std() > 0
    overview = read_video_frames(str(out / "samples" / "overview.gif"))  # demo / committed small / world render
    assert overview.shape == (17, 3 * 36 * 2, 3 * 36 * 2, 3)
    i2v_in = read_video_frames(str(out / "samples" / "i2v_input.png"))
    assert i2v_in.shape == (1, 32, 32, 3) and np.unique(i2v_in.reshape(-1, 3), axis=0).shape[0] > 1
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert sorted(report["suites"]) == ["i2v", "t2i", "t2v"] and report["size"] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == list(demo.STAGES)

    # A rerun reuses every stage.
    assert demo.main(["--quick", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"{name:<10} reused" in table for name in demo.STAGES), table

    # Ctrl-C while sampling: no record for generate/eval, the rerun redoes exactly those two.
    real_sample_one = demo.sample_one

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "sample_one", interrupt)
    assert demo.main(["--quick", "--out", str(out), "--redo", "generate"]) == 130
    assert not (out / "_stages" / "generate.json").exists() and not (out / "_stages" / "eval.json").exists()
    monkeypatch.setattr(demo, "sample_one", real_sample_one)
    assert demo.main(["--quick", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    statuses = {name: "ran" if f"{name:<10} ran" in table else "reused" for name in demo.STAGES}
    assert statuses == {"corpus": "reused", "tokenizer": "reused", "tokenize": "reused", "stills": "reused",
                        "pretrain": "reused", "generate": "ran", "eval": "ran"}
    assert not (out / ".tmp" / "generate").exists()


def test_showcase_writes_the_readme_gif_layout(tmp_path):
    """``python -m workflows.showcase`` (the README's top GIF): per seed, the committed checkpoint's t2i / t2v / i2v
    samples over the world's render of each prompt."""
    from lumos.media import read_video_frames
    from workflows import showcase

    out = tmp_path / "small.gif"
    assert showcase.main(["--checkpoint", "small", "--out", str(out), "--seeds", "0", "--steps", "1"]) == 0
    gif = read_video_frames(str(out))
    assert gif.shape == (17, 2 * 68 * 2, 3 * 68 * 2, 3)  # 2 rows × 3 modes of 64-px cells (+4 px border), ×2
    assert (gif[0, 4:132, :] != gif[0, 140:268, :]).any()  # the generations are not the renders
    with pytest.raises(SystemExit):
        showcase.main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(out)])
