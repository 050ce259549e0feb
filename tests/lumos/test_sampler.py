"""AR-DF sampler (LUMOS_SPEC §8, §14.4): outputs, pass counts, determinism, KV cache, I2V, history masks, CFG,
batching, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from lumos.config import model_preset
from lumos.masking import history_indices
from lumos.model import LumosModel
from lumos.sampler import (
    ARDFRun,
    SamplerConfig,
    encode_prompt,
    generate,
    iter_generate,
    plan_video,
)
from lumos.sampling import (
    NoiseTemperature,
    RowBatch,
    filter_logits,
    frame_template,
    guided_logits,
    keep_masked_count,
    remask_lowest,
)
from lumos.sequence import build_sequence, frame_sequence, prompt_sequence
from lumos.tokenizers import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (3, 4)
PROMPTS = [[300, 301, 302, 303, 304], [310]]


@pytest.fixture(scope="module")
def model() -> LumosModel:
    torch.manual_seed(0)
    # a wide init makes the random model's predictions depend visibly on its inputs (prompt, given frames)
    return LumosModel(model_preset("debug", init_std=0.3)).eval()


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def video_plan(frames: int = 3, given: int = 0, mode: str = "t2v"):
    return plan_video(mode, GRID, frames=frames, fps=4, duration=2, given=given)


# ---------------------------------------------------------------------------------------------------------------
# schedule and token-choice helpers


def test_keep_masked_count_follows_the_cosine_schedule_and_reveals_everything():
    N, S = 24, 6
    masked, history = N, []
    for s in range(S):
        m = keep_masked_count(N, s, S, masked)
        expected = 0 if s == S - 1 else max(1, min(masked - 1, math.floor(N * math.cos(math.pi / 2 * (s + 1) / S))))
        assert m == expected
        assert m < masked  # at least one token revealed per step
        masked = m
        history.append(m)
    assert history[-1] == 0 and history == sorted(history, reverse=True)
    # more steps than tokens: one token stays masked until the last step (upstream max(1, ...) order)
    assert [keep_masked_count(3, s, 5, n) for s, n in zip(range(5), [3, 2, 1, 1, 1])] == [2, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="step"):
        keep_masked_count(N, 6, 6, 3)


def test_noise_temperature_resets_per_frame_unless_upstream_quirk():
    S = 4
    for upstream in (False, True):
        tau = NoiseTemperature(1.0, upstream_decay=upstream)
        seen = []
        for _frame in range(2):
            tau.start_frame()
            for s in range(S):
                seen.append(tau.value)
                tau.after_step(s, S)
        assert seen[0] == 1.0 and seen[1] == pytest.approx(0.75) and seen[2] == pytest.approx(0.75 * 0.5)
        if upstream:
            assert seen[S:] == [0.0] * S  # τ hit 0 at the first frame's last step and never recovers
        else:
            assert seen[S:] == seen[:S]


def test_guidance_and_filters():
    lc, lu = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.equal(guided_logits(lc, lu, 1.0), lc)
    assert torch.allclose(guided_logits(lc, lu, 3.0), lu + 3.0 * (lc - lu), atol=1e-6)
    assert torch.equal(guided_logits(lc, None, 3.0), lc)
    top = filter_logits(lc, 0.5, top_k=2)
    assert torch.isfinite(top).sum(1).eq(2).all()
    kept = top.masked_fill(~torch.isfinite(top), float("-inf")).topk(2).values  # (5, 2)
    assert torch.allclose(kept, (lc * 2).topk(2).values)
    assert torch.equal(remask_lowest(torch.tensor([0.3, -1.0, 0.3, 2.0]), 2), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(lc, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# the sampler


def test_only_visual_codes_come_out_and_every_mask_is_filled(model):
    plan = video_plan(frames=3)
    run = ARDFRun(model, PROMPTS, plan, SamplerConfig(steps=5), generator=gens(1, 2))
    frames = list(run.frames())
    assert [f for f, _ in frames] == [0, 1, 2]
    codes = torch.stack([c for _, c in frames], 1)  # (B, F, h, w)
    assert codes.shape == (2, 3, *GRID) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < model.layout.codebook_size
    # the committed sequence holds exactly these codes (+ offset) outside the history-masked positions
    committed = run.branches.batches[0].committed
    hist = history_indices(GRID[0] * (GRID[1] + 1), 0.7)
    for f in range(3):
        span = torch.nonzero(committed.visual & (committed.frame_ids == f)).squeeze(1)
        ids = committed.ids[:2, span].view(2, GRID[0], GRID[1] + 1)  # cond rows
        keep = torch.ones(span.numel(), dtype=torch.bool)
        keep[hist] = False
        keep = keep.view(GRID[0], GRID[1] + 1)
        assert torch.equal(ids[:, :, :GRID[1]][:, keep[:, :GRID[1]]],
                           codes[:, f][:, keep[:, :GRID[1]]] + model.layout.visual_offset)


def test_exactly_steps_passes_per_frame_per_branch_plus_one_commit(model):
    S, F = 4, 3
    calls = []
    hook = model.layers[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    try:
        res = generate(model, PROMPTS[:1], video_plan(frames=F), SamplerConfig(steps=S, fuse_branches=False),
                       generator=gens(0))
    finally:
        hook.remove()
    per_branch = {"prefill": 1, "step": F * S, "commit": F}
    assert res.stats["passes"] == {"cond": per_branch, "uncond": per_branch}
    assert res.stats["forward_passes"] == {"cond": 1 + F * (S + 1), "uncond": 1 + F * (S + 1)}
    assert len(calls) == 2 * (1 + F * (S + 1))  # the model really ran that often (cond and uncond apart)
    calls.clear()
    hook = model.layers[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    try:
        fused = generate(model, PROMPTS[:1], video_plan(frames=F), SamplerConfig(steps=S), generator=gens(0))
    finally:
        hook.remove()
    assert fused.stats["forward_passes"] == res.stats["forward_passes"]
    assert calls == [2] * (1 + F * (S + 1))  # one batch of cond + uncond rows per pass
    assert torch.equal(fused.codes, res.codes)


def test_seed_gives_the_same_output(model):
    plan, cfg = video_plan(frames=2), SamplerConfig(steps=4)
    a = generate(model, PROMPTS, plan, cfg, generator=torch.Generator().manual_seed(7)).codes
    b = generate(model, PROMPTS, plan, cfg, generator=torch.Generator().manual_seed(7)).codes
    c = generate(model, PROMPTS, plan, cfg, generator=torch.Generator().manual_seed(8)).codes
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_layer_level_forward_matches_the_model_forward(model):
    """RowBatch drives the model's modules itself; its logits must equal LumosModel.forward's."""
    layout = model.layout
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, layout.codebook_size, (2, *GRID), generator=g)
    seq = build_sequence(layout, PROMPTS[0], codes, duration=2, fps=4, close=False)
    ref = model.forward_sequences([seq])[0, :, layout.visual_offset:]  # (L, C)
    rows = RowBatch(model, [prompt_sequence(layout, PROMPTS[0], duration=2, fps=4)], use_cache=True)
    tmpl0, tmpl1 = frame_template(layout, GRID, 0), frame_template(layout, GRID, 1)
    with torch.inference_mode():
        h0 = rows.commit(tmpl0.segment(codes[0].reshape(1, -1) + layout.visual_offset))
        h1 = rows.peek(tmpl1.segment(codes[1].reshape(1, -1) + layout.visual_offset))
    n = len(tmpl0.ids)
    assert torch.allclose(rows.head(h0)[0], ref[-2 * n:-n], atol=1e-4)
    assert torch.allclose(rows.head(h1)[0], ref[-n:], atol=1e-4)


@pytest.mark.parametrize("fuse", [True, False])
def test_kv_cache_and_recompute_give_the_same_logits(model, fuse):
    """Cached (frame tokens only) vs uncached (whole sequence each step): same logits, padded rows included."""
    layout = model.layout
    g = torch.Generator().manual_seed(4)
    prefixes = [prompt_sequence(layout, p, duration=2, fps=4) for p in PROMPTS]
    unc = [prompt_sequence(layout, None, duration=2, fps=4)] * 2
    logits = {}
    for cached in (True, False):
        from lumos.sampling import Branches

        br = Branches(model, prefixes, unc, use_cache=cached, fuse=fuse)
        g.manual_seed(4)
        hist = history_indices(GRID[0] * (GRID[1] + 1), 0.7)
        out = []
        with torch.inference_mode():
            for f in range(3):
                tmpl = frame_template(layout, GRID, f)
                tokens = torch.randint(0, layout.codebook_size, (2, GRID[0] * GRID[1]), generator=g)
                tokens = tokens + layout.visual_offset
                tokens[:, ::3] = layout.mask  # a partially unmasked frame
                hc, hu = br.peek(tmpl.segment(tokens))
                out += [br.logits(hc), br.logits(hu)]
                seg = tmpl.segment(tokens.clamp(min=layout.visual_offset))
                seg.ids[:, tmpl.span[hist]] = layout.mask
                br.commit(seg, outputs=False)  # the cache-only commit the sampler uses
        logits[cached] = torch.stack(out)
    assert torch.allclose(logits[True], logits[False], atol=1e-4), (logits[True] - logits[False]).abs().max()


def test_kv_cache_and_recompute_sample_the_same_video(model):
    plan = video_plan(frames=3)
    a = generate(model, PROMPTS, plan, SamplerConfig(steps=4), generator=gens(1, 2))
    b = generate(model, PROMPTS, plan, SamplerConfig(steps=4, use_kv_cache=False), generator=gens(1, 2))
    assert torch.equal(a.codes, b.codes)
    assert b.stats["forward_passes"]["cond"] == 3 * 4  # no prefill/commit passes: every step recomputes
    assert b.stats["tokens_fed"]["cond"] > a.stats["tokens_fed"]["cond"]


def test_i2v_keeps_the_given_frames_bit_exact(model):
    g = torch.Generator().manual_seed(9)
    given = torch.randint(0, model.layout.codebook_size, (2, 2, *GRID), generator=g)  # B=2, G=2
    plan = video_plan(frames=4, given=2, mode="i2v")
    res = generate(model, PROMPTS, plan, SamplerConfig(steps=3), given_codes=given, generator=gens(1, 2))
    assert res.codes.shape == (2, 4, *GRID)
    assert torch.equal(res.codes[:, :2], given)
    assert res.stats["passes"]["cond"] == {"prefill": 1, "step": 2 * 3, "commit": 2}
    # the given frames condition the rest: other given frames → other continuation
    other = generate(model, PROMPTS, plan, SamplerConfig(steps=3), given_codes=(given + 1) % 240,
                     generator=gens(1, 2))
    assert not torch.equal(other.codes[:, 2:], res.codes[:, 2:])


@pytest.mark.parametrize("mode", ["even", "random"])
def test_committed_frames_carry_the_history_mask_at_fixed_positions(model, mode):
    plan = video_plan(frames=3)
    cfg = SamplerConfig(steps=2, history_ratio=0.5, history_mode=mode)
    run = ARDFRun(model, PROMPTS, plan, cfg, generator=gens(3, 4))
    codes = torch.stack([c for _, c in run.frames()], 1)
    committed = run.branches.batches[0].committed  # cond rows 0..1, uncond rows 2..3
    n = GRID[0] * (GRID[1] + 1)
    expected_k = round(n * 0.5)
    patterns = []
    for f in range(3):
        span = torch.nonzero(committed.visual & (committed.frame_ids == f)).squeeze(1)
        ids = committed.ids[:, span]  # (4, n)
        masked = ids == model.layout.mask
        assert masked.sum(1).eq(expected_k).all()
        assert torch.equal(masked[:2], masked[2:])  # cond and uncond caches see the same partial frame
        full = frame_sequence(model.layout, codes[0, f], f).ids[3:-1]
        assert torch.equal(ids[0][~masked[0]], full[~masked[0]])
        patterns.append(masked)
    assert all(torch.equal(p, patterns[0]) for p in patterns)  # a temporal tube: same positions every frame
    if mode == "even":
        assert torch.equal(torch.nonzero(patterns[0][0]).squeeze(1), history_indices(n, 0.5))
    else:
        assert not torch.equal(patterns[0][0], patterns[0][1])  # each row draws its own subset


def test_no_history_masking_when_ratio_is_zero(model):
    run = ARDFRun(model, PROMPTS[:1], video_plan(frames=2), SamplerConfig(steps=2, history_ratio=0.0),
                  generator=gens(0))
    list(run.frames())
    assert not (run.branches.batches[0].committed.ids == model.layout.mask).any()


def test_cfg_scale_one_equals_the_conditional_branch_alone(model):
    plan = video_plan(frames=2)
    guided = generate(model, PROMPTS, plan, SamplerConfig(steps=4, cfg_scale=1.0), generator=gens(1, 2))
    cond_only = generate(model, PROMPTS, plan, SamplerConfig(steps=4, use_cfg=False), generator=gens(1, 2))
    strong = generate(model, PROMPTS, plan, SamplerConfig(steps=4, cfg_scale=15.0), generator=gens(1, 2))
    assert torch.equal(guided.codes, cond_only.codes)
    assert guided.stats["forward_passes"]["uncond"] > 0 and "uncond" not in cond_only.stats["forward_passes"]
    assert not torch.equal(strong.codes, guided.codes)


def test_batched_generation_equals_one_by_one(model):
    plan, cfg = video_plan(frames=2), SamplerConfig(steps=4)
    both = generate(model, PROMPTS, plan, cfg, generator=gens(5, 6)).codes
    alone = [generate(model, [p], plan, cfg, generator=gens(s)).codes for p, s in zip(PROMPTS, (5, 6))]
    assert torch.equal(both, torch.cat(alone))


def test_t2i_and_frame_streaming(model):
    plan = plan_video("t2i", GRID)
    assert (plan.num_frames, plan.duration, plan.fps) == (1, 1, 1)
    assert SamplerConfig().guidance(plan.image) == 16.0 and SamplerConfig().guidance(False) == 15.0
    seen = []

    def on_frame(f, codes):
        assert not torch.is_inference_mode_enabled()  # the callback runs in the caller's normal mode
        codes.add_(0)  # an ordinary tensor: in-place use is fine
        seen.append((f, codes.shape))

    res = generate(model, PROMPTS, plan, SamplerConfig(steps=3), generator=gens(1, 2), on_frame=on_frame)
    assert seen == [(0, (2, *GRID))] and res.codes.shape == (2, 1, *GRID)
    stats: dict = {}
    frames = iter_generate(model, PROMPTS[:1], video_plan(frames=2), SamplerConfig(steps=2), generator=gens(1),
                           stats=stats)
    first = next(frames)
    assert first[0] == 0 and not stats  # streamed before the video is done
    assert [f for f, _ in frames] == [1] and stats["frames"] == 2


def test_plan_video_frame_counts():
    assert plan_video("t2v", GRID).num_frames == 1 + math.ceil((12 * 2 - 1) / 4) == 7
    assert plan_video("t2v", GRID, fps=8, duration=1).num_frames == 3
    assert plan_video("t2v", GRID, frames=5).num_frames == 5
    assert plan_video("i2v", GRID, frames=3, given=1).given == 1


def test_encode_prompt_uses_the_layout_template():
    layout = model_preset("debug").layout
    plan = plan_video("t2v", GRID, fps=4, duration=2)
    ids = encode_prompt(ByteTokenizer(layout), layout, "a red circle", plan)
    assert ids == ByteTokenizer(layout).encode("a red circle")  # compact layout: the caption alone


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(temperature=0.0), "temperature"), (dict(top_k=0), "top_k"),
    (dict(history_ratio=1.0), "history_ratio"), (dict(history_mode="tube"), "history_mode"),
    (dict(gumbel_tau=-1.0), "gumbel_tau"), (dict(cfg_scale=float("nan")), "cfg_scale"),
])
def test_bad_sampler_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


def test_bad_generation_arguments(model):
    with pytest.raises(ValueError, match="mode"):
        plan_video("v2v", GRID)
    with pytest.raises(ValueError, match="frames"):
        plan_video("t2v", GRID, frames=0)
    with pytest.raises(ValueError, match="i2v"):
        plan_video("i2v", GRID, frames=3)
    with pytest.raises(ValueError, match="exceed"):
        plan_video("i2v", GRID, frames=2, given=2)
    with pytest.raises(ValueError, match="t2i"):
        plan_video("t2i", GRID, frames=3)
    with pytest.raises(ValueError, match="generator"):
        generate(model, PROMPTS, video_plan(2), SamplerConfig(steps=1), generator=gens(1))
    with pytest.raises(ValueError, match="given_codes"):
        generate(model, PROMPTS, video_plan(3, given=1, mode="i2v"), SamplerConfig(steps=1),
                 given_codes=torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="given_codes"):
        generate(model, PROMPTS, video_plan(3, given=1, mode="i2v"), SamplerConfig(steps=1),
                 given_codes=torch.full((1, *GRID), 10_000))
    with pytest.raises(ValueError, match="prompts"):
        generate(model, [], video_plan(2), SamplerConfig(steps=1))
