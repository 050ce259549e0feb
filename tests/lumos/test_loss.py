"""AR-DF batches and loss (LUMOS_SPEC §7, §14.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lumos.ardf import IGNORE_INDEX, frame_token_mask, make_batch
from lumos.config import ARDFConfig, model_preset
from lumos.loss import ardf_loss, visual_cross_entropy
from lumos.masking import sample_mask_ratio, tube_mask
from lumos.model import INPUT_NAMES, LumosModel


def samples(n=2, frames=3, h=3, w=4, seed=0, codebook=240):
    g = torch.Generator().manual_seed(seed)
    return [dict(text_ids=[300 + i, 301, 302], codes=torch.randint(0, codebook, (frames, h, w), generator=g),
                 duration=1, fps=4) for i in range(n)]


def batch_for(cfg, ardf=None, n=2, seed=0, **kw):
    return make_batch(samples(n, seed=seed, **kw), cfg.layout, ardf or ARDFConfig(text_drop_prob=0.0),
                      torch.Generator().manual_seed(seed))


def test_make_batch_tube_mask_and_labels():
    cfg = model_preset("debug")
    layout = cfg.layout
    raw = samples(3, frames=3, h=3, w=4)
    batch = make_batch(raw, layout, ARDFConfig(text_drop_prob=0.0), torch.Generator().manual_seed(1))
    for b, sample in enumerate(raw):
        n = int(batch["lengths"][b])
        ids, labels, vis = batch["ids"][b, :n], batch["labels"][b, :n], batch["visual"][b, :n]
        masked = (ids == layout.mask).view(-1)
        assert not masked[~vis].any()  # only content + newline positions are ever masked
        per_frame = masked[vis].view(3, 3 * 5)  # (F, h*(w+1))
        assert (per_frame == per_frame[0]).all()  # temporal tube
        ratio = per_frame[0].float().mean()
        assert 0.7 - 1 / 15 <= ratio <= 1.0
        codes = sample["codes"].reshape(-1) + layout.visual_offset
        newline = batch["coords"][b, :n, 2] == 4
        # labels: original code at masked content positions, -100 elsewhere (incl. masked newlines)
        assert torch.equal(labels[masked & vis & ~newline], codes[per_frame.view(3, 3, 5)[..., :4].reshape(-1)])
        assert (labels[~(masked & vis & ~newline)] == IGNORE_INDEX).all()
        assert (labels[labels != IGNORE_INDEX] >= layout.visual_offset).all()
    pad = batch["ids"][0, int(batch["lengths"][0]):]
    assert (pad == layout.pad).all()


def test_fixed_tube_ratio_gives_the_same_masks_for_every_config_and_keeps_text():
    cfg = model_preset("debug")
    raw = samples(4, frames=3, h=3, w=4)
    one = make_batch(raw, cfg.layout, ARDFConfig(mask_type="random", text_drop_prob=0.9),
                     torch.Generator().manual_seed(5), fixed_tube_ratio=0.4)
    two = make_batch(raw, cfg.layout, ARDFConfig(mask_type="diffusion_forcing", min_mask_ratio=0.9),
                     torch.Generator().manual_seed(5), fixed_tube_ratio=0.4)
    assert all(torch.equal(one[k], two[k]) for k in one)  # the mask config plays no part
    for b in range(4):
        n = int(one["lengths"][b])
        assert (one["ids"][b, :n] == 300 + b).any()  # the text is never dropped
        per_frame = (one["ids"][b, :n] == cfg.layout.mask)[one["visual"][b, :n]].view(3, 15)
        assert (per_frame == per_frame[0]).all() and int(per_frame[0].sum()) == round(15 * 0.4)
    with pytest.raises(ValueError, match="fixed_tube_ratio must be in"):
        make_batch(raw, cfg.layout, ARDFConfig(), torch.Generator(), fixed_tube_ratio=0.0)


def test_make_batch_text_drop_starts_at_video_begin():
    cfg = model_preset("debug")
    batch = make_batch(samples(40), cfg.layout, ARDFConfig(text_drop_prob=0.5), torch.Generator().manual_seed(0))
    first = batch["ids"][:, 0]
    dropped = first == cfg.layout.video_begin
    assert 5 < int(dropped.sum()) < 35
    assert (first[~dropped] == cfg.layout.bos).all()
    assert (batch["p0"][dropped] == 3 + 3).all()  # VIDEO_BEGIN, duration, fps, BOI, grid h, grid w


@pytest.mark.parametrize("mask_type", ["random", "diffusion_forcing"])
def test_make_batch_other_mask_types(mask_type):
    cfg = model_preset("debug")
    batch = make_batch(samples(1, frames=4, h=4, w=4), cfg.layout, ARDFConfig(mask_type=mask_type, text_drop_prob=0.0),
                       torch.Generator().manual_seed(0))
    masked = (batch["ids"][0] == cfg.layout.mask)[batch["visual"][0]].view(4, 20)
    assert masked.any() and not (masked == masked[0]).all()


def test_mask_mix_masks_that_share_of_samples_per_frame():
    gen = torch.Generator().manual_seed(0)
    tube_only = [frame_token_mask(4, 20, ARDFConfig(), gen) for _ in range(200)]
    assert all((m == m[0]).all() for m in tube_only)
    mixed = [frame_token_mask(4, 20, ARDFConfig(mask_mix=0.25), gen) for _ in range(400)]
    per_frame = sum(not bool((m == m[0]).all()) for m in mixed) / len(mixed)
    assert 0.12 < per_frame < 0.35  # diffusion forcing: independent positions per frame (ratio 1 in both: same)
    every = [frame_token_mask(4, 20, ARDFConfig(mask_mix=1.0, mask_mix_type="random"), gen) for _ in range(50)]
    assert sum(not bool((m == m[0]).all()) for m in every) > 35  # (ratios near 1 mask every position)
    # without a mix the generator's stream is the tube draw alone, as before the option (old runs reproduce)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        assert torch.equal(frame_token_mask(3, 12, ARDFConfig(), a), tube_mask(3, 12, sample_mask_ratio(b, 0.7), b))


def test_make_batch_rejects_bad_samples():
    cfg = model_preset("debug")
    with pytest.raises(ValueError, match="codes"):
        make_batch([dict(text_ids=[1], codes=torch.zeros(2, 2), duration=1, fps=1)], cfg.layout, ARDFConfig(),
                   torch.Generator())
    with pytest.raises(ValueError, match="fps"):
        make_batch([dict(text_ids=[1], codes=torch.zeros(1, 2, 2), duration=1)], cfg.layout, ARDFConfig(),
                   torch.Generator())


def naive_loss(model, batch):
    logits = model(**{k: batch[k] for k in INPUT_NAMES})
    sel = batch["labels"] != IGNORE_INDEX
    lo = model.layout.visual_offset
    return F.cross_entropy(logits[sel][:, lo:], batch["labels"][sel] - lo)


def test_loss_equals_full_vocab_reference():
    cfg = model_preset("debug")
    model = LumosModel(cfg)
    batch = batch_for(cfg)
    loss, metrics = ardf_loss(model, batch)
    torch.testing.assert_close(loss, naive_loss(model, batch))
    assert metrics["num_tokens"] == int((batch["labels"] != IGNORE_INDEX).sum())
    assert metrics["frame_loss"].shape == (3,)
    torch.testing.assert_close(metrics["frame_loss_sum"].sum() / metrics["num_tokens"], loss.detach())


def test_chunked_ce_matches_unchunked_with_grads():
    cfg = model_preset("debug")
    model = LumosModel(cfg)
    h = torch.randn(50, cfg.dim, requires_grad=True)
    t = torch.randint(0, cfg.codebook_size, (50,))
    a = visual_cross_entropy(model, h, t, chunk=7)
    ga = torch.autograd.grad(a.sum(), h)[0]
    b = visual_cross_entropy(model, h, t, chunk=1000)
    gb = torch.autograd.grad(b.sum(), h)[0]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)


class NoisyOutside(torch.nn.Module):
    """Wraps a model and adds noise to the hidden states of positions without a label."""

    def __init__(self, model, labels):
        super().__init__()
        self.model, self.labels = model, labels
        self.layout = model.layout

    def forward(self, **kw):
        h = self.model(**kw)
        noise = torch.randn_like(h) * 10 * (self.labels == IGNORE_INDEX)[..., None]
        return h + noise

    def visual_logits(self, h):
        return self.model.visual_logits(h)


def test_loss_ignores_unmasked_and_non_visual_positions():
    cfg = model_preset("debug")
    model = LumosModel(cfg)
    batch = batch_for(cfg)
    loss, _ = ardf_loss(model, batch)
    noisy, _ = ardf_loss(NoisyOutside(model, batch["labels"]), batch)
    torch.testing.assert_close(loss, noisy)
    # and the per-frame losses follow the labelled frame of each token
    _, m = ardf_loss(model, batch)
    assert torch.isfinite(m["frame_loss"]).all()


def test_debug_model_overfits_one_batch():
    torch.manual_seed(0)
    cfg = model_preset("debug")
    model = LumosModel(cfg).train()
    batch = batch_for(cfg, n=2, frames=2, h=2, w=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(150):  # reaches -90% near step 85 (lr 3e-3)
        loss, _ = ardf_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first, (first, loss.item())


def test_code_frequency_weights_from_a_known_histogram():
    from lumos.loss import code_frequency_weights

    counts = torch.tensor([996, 0, 2, 1])  # N = 999, C = 4: p = (n + 1) / 1003, uniform 1/4
    w = code_frequency_weights(counts, power=1.0, max_weight=5.0)
    p = (counts.double() + 1) / 1003
    expect = (0.25 / p).clamp(1, 5).float()
    assert torch.allclose(w, expect)
    assert w[0] == 1.0 and w[1] == 5.0  # common code weighs 1, rare codes are capped
    assert torch.equal(code_frequency_weights(counts, power=0.0), torch.ones(4))
    with pytest.raises(ValueError, match="histogram"):
        code_frequency_weights(torch.tensor([[1, 2]]))


def test_weighted_loss_is_plain_ce_when_off_and_weights_only_masked_targets():
    from lumos.loss import code_frequency_weights

    cfg = model_preset("debug")
    torch.manual_seed(0)
    model = LumosModel(cfg).eval()
    batch = batch_for(cfg, n=3)
    targets = batch["labels"][batch["labels"] != IGNORE_INDEX] - cfg.layout.visual_offset
    plain, m = ardf_loss(model, batch)
    ones, _ = ardf_loss(model, batch, code_weights=torch.full((cfg.codebook_size,), 3.0))
    assert torch.allclose(plain, ones) and m["loss"] == pytest.approx(m["objective"])

    w = code_frequency_weights(torch.randint(0, 50, (cfg.codebook_size,)), max_weight=5.0)
    weighted, mw = ardf_loss(model, batch, code_weights=w)
    hidden = model(**{k: batch[k] for k in INPUT_NAMES}, return_hidden=True)
    ce = visual_cross_entropy(model, hidden[batch["labels"] != IGNORE_INDEX], targets)
    assert torch.allclose(weighted, (w[targets] * ce).sum() / w[targets].sum(), atol=1e-6)
    assert mw["loss"] == pytest.approx(float(ce.mean()), abs=1e-5)  # the logged loss stays the plain mean

    unused = torch.ones(cfg.codebook_size, dtype=torch.bool)
    unused[targets] = False
    w2 = w.clone()
    w2[unused] = 100.0  # codes that are never a masked target cannot change the loss
    assert torch.allclose(ardf_loss(model, batch, code_weights=w2)[0], weighted)

    seen = {}

    def keep(mod, inp, out):
        out.retain_grad()
        seen["h"] = out

    hook = model.norm.register_forward_hook(keep)
    loss, _ = ardf_loss(model, batch, code_weights=w)
    hook.remove()
    loss.backward()
    grad = seen["h"].grad.abs().sum(-1)  # (B, L): d loss / d final hidden state
    masked = batch["labels"] != IGNORE_INDEX
    assert bool((grad[~masked] == 0).all()) and bool((grad[masked] > 0).all())


def test_unknown_loss_weighting_is_one_line():
    with pytest.raises(ValueError, match=r"^ardf.loss_weighting='inverse' not in"):
        ARDFConfig(loss_weighting="inverse")
    with pytest.raises(ValueError, match="loss_weight_max"):
        ARDFConfig(loss_weighting="code_frequency", loss_weight_max=0.5)
