"""``python -m workflows.generate``: GIF/PNG/MP4/NPY outputs from a debug checkpoint, I2V, batches, S3, bad args."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lumos import storage
from lumos.checkpoint import read_config, save_checkpoint
from lumos.config import model_preset
from lumos.media import read_image, read_video_frames, write_video
from lumos.model import LumosModel
from lumos.sampler import SamplerConfig
from lumos.tokenizers import (
    build_video_tokenizer,
    default_tokenizer_uri,
    load_video_tokenizer,
    save_video_tokenizer,
)
from workflows.generate import main
from workflows.generation import VideoSpec, load_generator, tokenizer_uri

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SIZE = ["--width", "32", "--height", "32"]
FAST = ["--steps", "2", "--cfg", "3", "--quiet", "--threads", "1"]


def _debug_tokenizer(out_dir: Path) -> str:
    """The committed debug tokenizer, else a debug tokenizer trained for a few steps on shapes-world clips."""
    try:
        return default_tokenizer_uri("debug")
    except ValueError:
        pass
    from lumos.tokenizers.train import build_optimizer, shapes_clips, train_step

    tok = build_video_tokenizer("debug", seed=0)
    opt = build_optimizer(tok.model, lr=2e-3)
    clips = torch.from_numpy(shapes_clips(np.random.default_rng(0), 4, 5, 32))
    tok.model.train()
    for _ in range(3):
        train_step(tok.model, opt, clips)
    tok.model.eval()
    tok.refresh_identity()
    save_video_tokenizer(str(out_dir), tok)
    return str(out_dir)


def _save(ckpt_uri: str, tokenizer_ref: str) -> str:
    torch.manual_seed(0)
    model = LumosModel(model_preset("debug", init_std=0.3))
    save_checkpoint(ckpt_uri, model, model.cfg, extra={"video_tokenizer": tokenizer_ref, "text_tokenizer": None})
    return ckpt_uri


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("gen")
    tok = _debug_tokenizer(root / "ckpt" / "tokenizer")
    ref = "tokenizer" if Path(tok) == root / "ckpt" / "tokenizer" else tok  # relative = the copy inside
    return _save(str(root / "ckpt"), ref)


def test_t2v_writes_a_gif_with_the_right_frames_and_size(checkpoint, tmp_path, capsys):
    out = tmp_path / "v.gif"
    rc = main(["--checkpoint", checkpoint, "--prompt", "a red circle moving right", "--frames", "2", *SIZE, *FAST,
               "--out", str(out)])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out)
    frames = read_video_frames(str(out))
    assert frames.shape == (1 + 4 * (2 - 1), 32, 32, 3)


def test_t2i_png_and_t2v_mp4(checkpoint, tmp_path):
    png, mp4 = tmp_path / "i.png", tmp_path / "v.mp4"
    assert main(["--checkpoint", checkpoint, "--mode", "t2i", "--prompt", "a blue square", *SIZE, *FAST,
                 "--out", str(png)]) == 0
    assert read_image(str(png)).shape == (32, 32, 3)
    assert main(["--checkpoint", checkpoint, "--prompt", "a blue square", "--frames", "2", "--width", "48",
                 "--height", "32", *FAST, "--out", str(mp4)]) == 0
    assert read_video_frames(str(mp4)).shape == (5, 32, 48, 3)


def test_i2v_keeps_the_encoded_image_as_frame_zero(checkpoint, tmp_path, clip_small):
    first = read_video_frames(str(clip_small))[0]  # real footage, 176x144
    image = tmp_path / "first.png"
    write_video(str(image), first[None], format="png")
    out = tmp_path / "codes.npy"
    assert main(["--checkpoint", checkpoint, "--mode", "i2v", "--image", str(image), "--prompt", "a man talking",
                 "--frames", "3", *SIZE, *FAST, "--out", str(out)]) == 0
    codes = np.load(out)
    assert codes.shape == (3, 4, 4) and codes.dtype == np.int64
    from lumos.buckets import resize_center_crop

    tok = load_video_tokenizer(tokenizer_uri(checkpoint, read_config(checkpoint)[1]))
    expected = tok.encode(resize_center_crop(read_image(str(image)), (32, 32))[None])
    assert np.array_equal(codes[0], expected[0].numpy())


def test_batch_of_prompts_equals_single_runs_with_shifted_seeds(checkpoint, tmp_path):
    out = tmp_path / "c.npy"
    assert main(["--checkpoint", checkpoint, "--prompt", "a red circle", "--prompt", "two green triangles",
                 "--frames", "2", "--seed", "4", *SIZE, *FAST, "--out", str(out)]) == 0
    batch = [np.load(tmp_path / "c-0.npy"), np.load(tmp_path / "c-1.npy")]
    single = tmp_path / "s.npy"
    assert main(["--checkpoint", checkpoint, "--prompt", "two green triangles", "--frames", "2", "--seed", "5",
                 *SIZE, *FAST, "--out", str(single)]) == 0
    assert np.array_equal(batch[1], np.load(single))
    assert not np.array_equal(batch[0], batch[1])


def test_checkpoint_and_output_on_s3(s3_bucket, tmp_path):
    tok = build_video_tokenizer("debug", seed=0)
    save_video_tokenizer(f"{s3_bucket}/ckpt/tokenizer", tok)
    ckpt = _save(f"{s3_bucket}/ckpt", "tokenizer")
    out = f"{s3_bucket}/out/codes.npy"
    assert main(["--checkpoint", ckpt, "--mode", "t2i", "--prompt", "a circle", *SIZE, *FAST, "--out", out]) == 0
    import io

    codes = np.load(io.BytesIO(storage.read_bytes(out)))
    assert codes.shape == (1, 4, 4)


@pytest.mark.parametrize("args, needle", [
    (["--mode", "i2v", "--out", "x.gif"], "--image"),
    (["--out", "x.webm"], "extension"),
    (["--frames", "0", "--out", "x.gif"], "--frames"),
    (["--steps", "0", "--out", "x.gif"], "--steps"),
    (["--threads", "0", "--out", "x.gif"], "--threads"),
    (["--history-ratio", "1.5", "--out", "x.gif"], "history_ratio"),
    (["--width", "30", "--out", "x.gif"], "--width"),
    (["--mode", "i2v", "--image", "/nonexistent.png", "--out", "x.gif"], "/nonexistent.png"),
    (["--mode", "t2v", "--frames", "1", "--out", "x.gif", "--checkpoint-override"], "unrecognized"),
])
def test_bad_arguments_exit_2_with_one_line(checkpoint, tmp_path, capsys, args, needle):
    argv = ["--checkpoint", checkpoint, "--prompt", "p", *args]
    argv = [a if a not in ("x.gif", "x.webm") else str(tmp_path / a) for a in argv]
    with pytest.raises(SystemExit) as e:
        sys.exit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, capsys):
    rc = main(["--checkpoint", str(tmp_path / "nope"), "--prompt", "p", "--out", str(tmp_path / "x.gif")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot read checkpoint" in err


def test_module_entry_point_help_and_exit_status(tmp_path):
    env_cmd = [sys.executable, "-m", "workflows.generate"]
    ok = subprocess.run([*env_cmd, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "--checkpoint" in ok.stdout and "--history-ratio" in ok.stdout
    bad = subprocess.run([*env_cmd, "--checkpoint", str(tmp_path), "--prompt", "p", "--out", "x.bmp"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_cli_modes_match_the_sampler():
    from lumos.sampler import MODES
    from workflows import generate as cli

    assert cli.MODES == MODES


def test_sampler_flags_reach_the_sampler_config():
    from workflows.generate import build_parser, sampler_config

    base = ["--checkpoint", "c", "--prompt", "p", "--out", "x.gif"]
    default = sampler_config(build_parser().parse_args(base))
    assert not default.upstream_tau_decay and default.mask_given_frames is None  # our tau reset; I2V: recorded
    cfg = sampler_config(build_parser().parse_args([*base, "--upstream-tau-decay", "--mask-given-frames"]))
    assert cfg.upstream_tau_decay and cfg.mask_given_frames is True
    assert sampler_config(build_parser().parse_args([*base, "--no-mask-given-frames"])).mask_given_frames is False


def test_unset_sampler_flags_come_from_the_checkpoint_then_the_builtin_defaults(checkpoint):
    from workflows.eval import EvalSettings
    from workflows.generate import build_parser, sampler_config

    gen = load_generator(checkpoint, "cpu")
    assert "sampling" not in gen.meta
    base = ["--checkpoint", "c", "--prompt", "p", "--out", "x.gif"]
    cfg = gen.sampler_config(sampler_config(build_parser().parse_args(base)))
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature) == (50, None, 1.0)  # no checkpoint entry: upstream's defaults
    assert cfg.mask_given_frames is False
    gen.meta["sampling"] = {"steps": 12, "cfg_scale": 2.5, "temperature": 0.8, "mask_given_frames": True}
    cfg = gen.sampler_config(sampler_config(build_parser().parse_args(base)))
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature, cfg.mask_given_frames) == (12, 2.5, 0.8, True)
    no_mask = gen.sampler_config(sampler_config(build_parser().parse_args([*base, "--no-mask-given-frames"])))
    assert no_mask.mask_given_frames is False  # the flag wins over the recorded choice
    flags = ["--steps", "4", "--cfg", "6", "--temperature", "1.5"]
    cfg = gen.sampler_config(sampler_config(build_parser().parse_args([*base, *flags])))
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature) == (4, 6.0, 1.5)  # flags win

    s = EvalSettings().resolved(gen.meta).sampler
    assert (s.steps, s.cfg_scale, s.temperature, s.mask_given_frames) == (12, 2.5, 0.8, True)

    size = gen.size(None, None)
    assert gen.plan(VideoSpec("t2v", *size)).fps == 12  # no recorded fps: the sampler's 12 fps x 2 s
    gen.meta["sampling"] |= {"fps": 8, "duration": 2}
    plan = gen.plan(VideoSpec("t2v", *size))
    assert (plan.fps, plan.duration, plan.num_frames) == (8, 2, 5)  # 1 + ceil((8*2 - 1)/4)
    assert gen.plan(VideoSpec("i2v", *size, fps=4), given=1).fps == 4 and gen.plan(VideoSpec("t2i", *size)).fps == 1
    s = EvalSettings(sampler=SamplerConfig(steps=3)).resolved({}).sampler
    assert (s.steps, s.cfg_scale, s.temperature) == (3, 3.0, 1.0)  # eval's own fallbacks: CFG 3


def test_one_seed_rule_across_generate_eval_and_serve(checkpoint, tmp_path):
    """Item i of a run seeded S samples with S + i: the CLI's second prompt, eval's item i and a Serve job with
    that seed give the same codes for the same prompt and settings."""
    from workflows.eval import EvalSettings, generate_batch
    from workflows.evaluation.eval_sets import prompt_set
    from workflows.generation import item_seed
    from workflows.serving.engine import SamplerEngine
    from workflows.serving.jobs import Job

    gen = load_generator(checkpoint, "cpu")
    item = prompt_set("t2v", 3, seed=0)[2]
    settings = EvalSettings(num=3, seed=1, size=32, fps=12, duration=2, frames=2, references=False,
                            sampler=SamplerConfig(steps=2, cfg_scale=3.0))
    seed = item_seed(settings.seed, item.index)
    assert seed == 3
    from_eval = generate_batch(gen, "t2v", [item], settings)[0][0].numpy()

    out = tmp_path / "c.npy"
    assert main(["--checkpoint", checkpoint, "--prompt", "another prompt", "--prompt", item.prompt, "--frames", "2",
                 "--fps", "12", "--duration", "2", "--seed", str(seed - 1), *SIZE, *FAST, "--out", str(out)]) == 0
    assert np.array_equal(np.load(tmp_path / "c-1.npy"), from_eval)

    job = Job(prompt=item.prompt, mode="t2v", frames=2, steps=2, cfg_scale=3.0, seed=seed, width=32, height=32)
    served = SamplerEngine(gen).run([job])[0]
    assert served.status == 200 and np.array_equal(served.codes, from_eval)

    # the service's sampler settings (ServeConfig.sampler) reach the sampler; the job's steps and guidance win
    greedy = replace(settings, sampler=SamplerConfig(steps=2, cfg_scale=3.0, top_k=1, history_ratio=0.0))
    from_eval = generate_batch(gen, "t2v", [item], greedy)[0][0].numpy()
    served = SamplerEngine(gen, SamplerConfig(steps=9, cfg_scale=1.0, top_k=1, history_ratio=0.0)).run([job])[0]
    assert served.status == 200 and np.array_equal(served.codes, from_eval)


def test_committed_small_checkpoint_loads_by_name_and_draws_the_prompt(tmp_path):
    """``--checkpoint small`` = lumos/assets/model_small (the goal run): it loads by name with its sampler defaults
    and draws held-out single-object prompts in the right colour."""
    from lumos.checkpoint import named_checkpoints
    from lumos.media import read_video_frames
    from lumos.shapes.metrics import geneval_scores
    from workflows import generate
    from workflows.evaluation.eval_sets import prompt_set

    assert "small" in named_checkpoints()
    gen = load_generator("small", "cpu")
    assert gen.meta["sampling"] == {"steps": 16, "cfg_scale": 3.0, "temperature": 1.0,
                                   "fps": 8, "duration": 2, "mask_given_frames": True}
    assert gen.sampler_config(SamplerConfig()).mask_given_frames is True  # its i2v commits given frames masked
    items = [it for it in prompt_set("t2i", 12, seed=5) if it.num_objects == 1]  # 4 held-out prompts
    argv = ["--checkpoint", "small", "--mode", "t2i", "--out", str(tmp_path / "x.png"), "--quiet", "--threads", "2"]
    for it in items:
        argv += ["--prompt", it.prompt]
    assert generate.main(argv) == 0
    paths = generate.output_paths(str(tmp_path / "x.png"), len(items))
    scores = [geneval_scores(read_video_frames(p)[0], it.scene) for p, it in zip(paths, items)]
    assert sum(s["colors"] for s in scores) >= 3, scores
