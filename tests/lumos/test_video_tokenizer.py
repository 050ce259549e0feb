"""Our conv video tokenizer: shapes and ranges, causality, errors, save/load (local + S3), training helps."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lumos.tokenizers import (
    VideoTokenizer,
    build_video_tokenizer,
    load_video_tokenizer,
    save_video_tokenizer,
)
from lumos.tokenizers.frames import latent_frames, rgb_frames


@pytest.fixture(scope="module")
def tok():
    return build_video_tokenizer("debug", seed=0)


def _video(n, h=32, w=32, b=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, h, w, 3) if b is None else (b, n, h, w, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def test_protocol_attributes(tok):
    assert isinstance(tok, VideoTokenizer)
    assert tok.codebook_size == 240 and tok.temporal_compression == 4 and tok.spatial_compression == 8
    ident = tok.identity
    assert ident["kind"] == "fsq_conv" and ident["levels"] == [8, 6, 5] and len(ident["sha256"]) == 64


@pytest.mark.parametrize("n", [1, 2, 4, 5, 8, 9, 17])
def test_encode_decode_shapes_and_ranges(tok, n):
    codes = tok.encode(_video(n, 32, 48))
    f = 1 + -(-(n - 1) // 4)
    assert codes.shape == (f, 4, 6) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < tok.codebook_size
    out = tok.decode(codes)
    assert out.shape == (1 + 4 * (f - 1), 32, 48, 3) and out.dtype == torch.uint8
    assert latent_frames(n) == f and rgb_frames(f) == out.shape[0]


def test_batched_encode_matches_single_and_accepts_numpy(tok):
    video = _video(5, b=3)
    batch = tok.encode(video.numpy())
    assert batch.shape == (3, 2, 4, 4)
    assert torch.equal(batch[1], tok.encode(video[1]))
    assert tok.decode(batch).shape == (3, 5, 32, 32, 3)


def test_encoder_is_causal(tok):
    video = _video(13)
    base = tok.encode(video)  # F = 4: frame 0 | 1-4 | 5-8 | 9-12
    changed = video.clone()
    changed[6] = 255 - changed[6]  # frame 6 lives in latent frame 2
    codes = tok.encode(changed)
    assert torch.equal(codes[:2], base[:2])
    assert not torch.equal(codes[2:], base[2:])
    first = video.clone()
    first[0] = 0
    assert not torch.equal(tok.encode(first)[0], base[0])


def test_decoder_is_causal(tok):
    codes = torch.randint(0, 240, (4, 4, 4), generator=torch.Generator().manual_seed(1))
    base = tok.decode(codes)
    changed = codes.clone()
    changed[2] = (changed[2] + 17) % 240  # latent 2 = frames 5..8
    out = tok.decode(changed)
    assert torch.equal(out[:5], base[:5])
    assert not torch.equal(out[5:], base[5:])


def test_bad_inputs_raise_one_clear_error(tok):
    with pytest.raises(ValueError, match="multiples of 8"):
        tok.encode(_video(5, 36, 32))
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(_video(5).float())
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        tok.encode(torch.zeros(5, 32, 32, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        tok.encode(torch.zeros(32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="codes must lie in"):
        tok.decode(torch.full((2, 4, 4), 240))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.zeros(2, 4, 4))


def _check_same(a, b):
    video = _video(5, seed=3)
    assert a.identity == b.identity
    assert torch.equal(a.encode(video), b.encode(video))


def test_save_load_local(tok, tmp_path):
    save_video_tokenizer(str(tmp_path / "tok"), tok, metrics={"psnr": 1.0})
    loaded = load_video_tokenizer(str(tmp_path / "tok"))
    _check_same(tok, loaded)
    assert loaded.metrics == {"psnr": 1.0}


def test_save_load_s3(tok, s3_bucket):
    uri = f"{s3_bucket}/tokenizers/debug"
    save_video_tokenizer(uri, tok)
    _check_same(tok, load_video_tokenizer(uri))


def test_load_rejects_unknown_directory(tmp_path):
    with pytest.raises(ValueError, match="expected config.json"):
        load_video_tokenizer(str(tmp_path))


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_video_tokenizer("debug", seed=5), build_video_tokenizer("debug", seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.identity["sha256"] == b.identity["sha256"]
    assert build_video_tokenizer("debug", seed=6).identity["sha256"] != a.identity["sha256"]


@pytest.mark.slow
def test_training_on_shapes_clips_improves_reconstruction():
    from lumos.tokenizers.train import build_optimizer, evaluate, shapes_clips, train_step

    model = build_video_tokenizer("debug", seed=0).model.train()
    held = shapes_clips(np.random.default_rng(123), 6, 5, 32, split="heldout")
    before = evaluate(model, held)
    opt = build_optimizer(model, lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        train_step(model, opt, torch.from_numpy(shapes_clips(rng, 4, 5, 32)))
    after = evaluate(model, held)
    assert after["psnr"] > before["psnr"] + 6.0, (before, after)
    assert after["l1"] < 0.5 * before["l1"]


def test_committed_small_tokenizer_reconstructs_heldout_shapes():
    from lumos.shapes import metrics
    from lumos.tokenizers import default_tokenizer_uri
    from lumos.tokenizers.train import psnr, shapes_clips

    uri = default_tokenizer_uri("small")
    tok = load_video_tokenizer(uri)
    saved = json.loads((Path(uri) / "config.json").read_text())
    assert tok.codebook_size == 1000 and tok.identity["sha256"] == saved["sha256"]
    clips = shapes_clips(np.random.default_rng(77), 4, 9, 64, split="heldout")
    codes = tok.encode(clips)
    assert codes.shape == (4, 3, 8, 8)
    recon = tok.decode(codes).numpy()
    assert psnr(recon, clips) > 20.0
    # the reconstruction still shows every object's colour in the first frame
    for clip, rec in zip(clips, recon):
        want = {d.color for d in metrics.detect_objects(clip[0])}
        assert want <= {d.color for d in metrics.detect_objects(rec[0])}


def test_default_tokenizer_uri_unknown_name():
    from lumos.tokenizers import default_tokenizer_uri

    with pytest.raises(ValueError, match="no committed tokenizer named 'huge'"):
        default_tokenizer_uri("huge")


def test_foreground_weights_single_out_objects_and_loss_reduces_to_l1_plus_mse():
    from lumos.tokenizers.train import foreground_weights, reconstruction_loss

    target = -torch.ones(1, 3, 2, 16, 16)
    target[:, 0, :, 4:8, 4:8] = 1.0  # a red square on a black background
    w = foreground_weights(target, fg_weight=8.0)
    assert w.shape == (1, 1, 2, 16, 16)
    assert (w[..., 4:8, 4:8] == 9.0).all() and w.sum() == 256 * 2 + 8 * 16 * 2
    recon = target + 0.1 * torch.randn_like(target)
    plain, m = reconstruction_loss(recon, target, mse_weight=1.0)
    assert plain.item() == pytest.approx(m["l1"] + m["mse"], rel=1e-5)
    recon_bad_object = target.clone()
    recon_bad_object[:, :, :, 4:8, 4:8] = 0.0  # object wrong, background perfect
    assert (reconstruction_loss(recon_bad_object, target, fg_weight=8.0)[0]
            > 4 * reconstruction_loss(recon_bad_object, target)[0])
