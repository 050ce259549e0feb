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
    gumbel_noise,
    keep_masked_count,
    remask_lowest,
    sample_tokens,
)
from lumos.sequence import TokenSequence, build_sequence, frame_sequence, prompt_sequence
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


def upstream_taus(tau: float, steps: int, frames: int) -> list[float]:
    """The Gumbel temperature of every step as upstream's loop computes it (spec §8.2 step 4): ``temperature =
    temperature * (1.0 - ratio)`` with ``ratio = 1.0 * (step + 1) / timesteps``, BEFORE the confidence, no reset."""
    seen = []
    for _frame in range(frames):
        for step in range(steps):
            ratio = 1.0 * (step + 1) / steps
            tau = tau * (1.0 - ratio)
            seen.append(tau)
    return seen


def test_noise_temperature_resets_per_frame_and_decays_after_the_step_by_default():
    S = 4
    tau = NoiseTemperature(1.0)
    seen = []
    for _frame in range(2):
        tau.start_frame()
        seen += [tau.for_step(s, S) for s in range(S)]
    assert seen[:S] == [1.0, 0.75, 0.75 * 0.5, 0.75 * 0.5 * 0.25]
    assert seen[S:] == seen[:S]
    with pytest.raises(ValueError, match="step"):
        tau.for_step(S, S)


def test_upstream_tau_decay_equals_upstreams_sequence():
    S = 50
    tau = NoiseTemperature(1.0, upstream_decay=True)
    seen = []
    for _frame in range(2):
        tau.start_frame()
        seen += [tau.for_step(s, S) for s in range(S)]
    assert seen == upstream_taus(1.0, S, 2)  # bit-exact, same float operations in the same order
    assert seen[0] == 0.98 and seen[1] == pytest.approx(0.9408, abs=1e-15)
    assert seen[S - 1] == 0.0 and seen[S:] == [0.0] * S  # 0 at the first frame's last step, never recovers
    half = NoiseTemperature(0.5, upstream_decay=True)
    assert [half.for_step(s, 4) for s in range(4)] == upstream_taus(0.5, 4, 1)


def test_sampler_uses_upstreams_tau_per_step_under_the_option(model, monkeypatch):
    """The tau values the sampler multiplies the Gumbel noise with, step by step over two frames."""
    S = 50
    used: dict[bool, list[float]] = {}
    for upstream in (False, True):
        run = ARDFRun(model, PROMPTS[:1], video_plan(frames=2), SamplerConfig(steps=S, upstream_tau_decay=upstream),
                      generator=gens(0))
        used[upstream] = steps = []

        def spy(*args, real=run.unmask_step, seen=steps):
            seen.append(args[-1])  # the tau argument
            return real(*args)

        monkeypatch.setattr(run, "unmask_step", spy)
        list(run.frames())
    assert used[True] == upstream_taus(1.0, S, 2)
    one_frame = [1.0]
    for s in range(S - 1):
        one_frame.append(one_frame[-1] * (1.0 - (s + 1) / S))
    assert used[False] == one_frame * 2


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


def given_frame_spans(layout, committed, G: int) -> list[torch.Tensor]:
    """Indices (into a committed segment) of each given frame's content + newline span."""
    return [torch.nonzero(committed.visual & (committed.frame_ids == f)).squeeze(1) for f in range(G)]


@pytest.mark.parametrize("fuse", [True, False])
def test_i2v_given_frames_enter_both_caches_unmasked_by_default(model, fuse):
    """Upstream clones the cache input before it masks the given frames (spec §8.2 step 6): the KV caches of both
    branches are built from the given frames as they are; only generated frames carry the history mask."""
    layout = model.layout
    given = torch.randint(0, layout.codebook_size, (2, 2, *GRID), generator=torch.Generator().manual_seed(9))
    plan = video_plan(frames=4, given=2, mode="i2v")
    n = GRID[0] * (GRID[1] + 1)
    hist = history_indices(n, 0.7)
    for mask_given in (False, True):
        fed: list[torch.Tensor] = []  # ids of every forward (the input whose keys/values the caches keep)
        hook = model.tok_embeddings.register_forward_hook(lambda mod, inp, out, fed=fed: fed.append(inp[0].clone()))
        try:
            run = ARDFRun(model, PROMPTS, plan, SamplerConfig(steps=2, mask_given_frames=mask_given,
                                                              fuse_branches=fuse),
                          given_codes=given, generator=gens(1, 2))
            codes = torch.stack([c for _, c in run.frames()], 1)
        finally:
            hook.remove()
        # the prefill (prompt + given frames, one forward per batch) is the first forward of each batch
        prefills = fed[:len(run.branches.batches)]
        for batch, ids in zip(run.branches.batches, prefills):
            committed = batch.committed
            assert ids.shape[0] == committed.ids.shape[0]  # 2B rows fused, else B per branch
            for f, span in enumerate(given_frame_spans(layout, committed, 2)):
                full = torch.stack([frame_sequence(layout, given[b, f], f).ids[3:-1] for b in range(2)])
                full = full.repeat(ids.shape[0] // 2, 1)  # cond rows then uncond rows
                expected = full.clone()
                if mask_given:
                    expected[:, hist] = layout.mask
                assert torch.equal(ids[:, span], expected)  # what the prefill forward (and so the cache) saw
                assert torch.equal(committed.ids[:, span], expected)
            # generated frames are committed with the history mask whatever the option
            for f in (2, 3):
                span = torch.nonzero(committed.visual & (committed.frame_ids == f)).squeeze(1)
                masked = committed.ids[:, span] == layout.mask
                assert torch.equal(torch.nonzero(masked.all(0)).squeeze(1), hist) and masked.sum(1).eq(len(hist)).all()
        assert torch.equal(codes[:, :2], given)


def test_mask_given_frames_changes_the_i2v_continuation(model):
    given = torch.randint(0, model.layout.codebook_size, (1, *GRID), generator=torch.Generator().manual_seed(5))
    plan = video_plan(frames=3, given=1, mode="i2v")
    out = {m: generate(model, PROMPTS, plan, SamplerConfig(steps=4, mask_given_frames=m), given_codes=given,
                       generator=gens(1, 2)).codes for m in (False, True)}
    assert torch.equal(out[False][:, 0], out[True][:, 0])
    assert not torch.equal(out[False][:, 1:], out[True][:, 1:])
    # without history masking there is nothing to mask: the option changes nothing
    off = {m: generate(model, PROMPTS, plan, SamplerConfig(steps=4, history_ratio=0.0, mask_given_frames=m),
                       given_codes=given, generator=gens(1, 2)).codes for m in (False, True)}
    assert torch.equal(off[False], off[True])


def _masked_copy(seq: TokenSequence, positions: torch.Tensor, mask_id: int) -> TokenSequence:
    ids = seq.ids.clone()
    ids[positions] = mask_id
    return TokenSequence(ids, seq.frame_ids, seq.visual, seq.coords)


def reference_video(model, text: list[int], plan, cfg: SamplerConfig, generator: torch.Generator,
                    given: torch.Tensor | None = None) -> torch.Tensor:
    """Spec §8.2 / §14.4 written out for one prompt as upstream's loop runs it, without KV caches or padding: every
    step runs the WHOLE cond sequence and the whole text-free uncond sequence through ``model.forward_sequences``.
    Committed frames carry the history mask (even positions, fixed per video); I2V given frames enter unmasked unless
    ``cfg.mask_given_frames``; tau as upstream (decayed before the confidence, no reset) under
    ``cfg.upstream_tau_decay``. Random draws in the sampler's order (one uniform per masked position for the
    multinomial, then one Gumbel per masked position). Returns codes int64 [F, h, w]."""
    layout = model.layout
    h, w = plan.grid
    N = h * w
    hist = 3 + history_indices(h * (w + 1), cfg.history_ratio)  # indices within a frame segment
    content = 3 + torch.arange(h * (w + 1)).view(h, w + 1)[:, :w].reshape(-1)  # (N,)
    g = cfg.guidance(plan.image)
    cond = prompt_sequence(layout, text, duration=plan.duration, fps=plan.fps)
    uncond = prompt_sequence(layout, None, duration=plan.duration, fps=plan.fps)
    frames = []
    for f in range(plan.given):
        seg = frame_sequence(layout, given[f], f)
        if cfg.mask_given_frames:
            seg = _masked_copy(seg, hist, layout.mask)
        cond, uncond = cond.cat(seg), uncond.cat(seg)
        frames.append(given[f])
    tau = cfg.gumbel_tau
    lo, hi = layout.visual_offset, layout.visual_offset + layout.codebook_size
    for f in range(plan.given, plan.num_frames):
        frame = frame_sequence(layout, None, f, grid=(h, w))
        if not cfg.upstream_tau_decay:
            tau = cfg.gumbel_tau
        for s in range(cfg.steps):
            logits = model.forward_sequences([cond.cat(frame), uncond.cat(frame)])[..., lo:hi].float()
            still = torch.nonzero(frame.ids[content] == layout.mask).squeeze(1)  # masked content indices
            lc, lu = logits[0, len(cond) + content[still]], logits[1, len(uncond) + content[still]]
            x, logp = sample_tokens(lu + g * (lc - lu), generator)
            if cfg.upstream_tau_decay:
                tau *= 1.0 - (s + 1) / cfg.steps
            conf = logp + tau * gumbel_noise(x.numel(), generator)
            if not cfg.upstream_tau_decay:
                tau *= 1.0 - (s + 1) / cfg.steps
            m = 0 if s == cfg.steps - 1 else max(1, min(len(still) - 1,
                                                        math.floor(N * math.cos(math.pi / 2 * (s + 1) / cfg.steps))))
            accept = torch.ones(len(still), dtype=torch.bool)
            accept[torch.argsort(conf, stable=True)[:m]] = False
            ids = frame.ids.clone()
            ids[content[still[accept]]] = x[accept] + lo
            frame = TokenSequence(ids, frame.frame_ids, frame.visual, frame.coords)
        frames.append((frame.ids[content] - lo).view(h, w))
        seg = _masked_copy(frame, hist, layout.mask) if cfg.history_ratio > 0 else frame
        cond, uncond = cond.cat(seg), uncond.cat(seg)
    return torch.stack(frames)


@pytest.mark.parametrize("mode, options", [
    ("t2v", {}),
    ("t2v", {"upstream_tau_decay": True}),
    ("i2v", {}),
    ("i2v", {"mask_given_frames": True}),
    ("i2v", {"upstream_tau_decay": True}),
])
def test_sampler_equals_the_spec_reference_loop_with_history_masking(model, mode, options):
    """Pins our codes (KV caches, left-padded batch of two prompts, fused branches) to the uncached one-prompt
    reference of upstream's loop above, with history masking on (ratio 0.7) and upstream's guidance 15."""
    given = None
    if mode == "i2v":
        given = torch.randint(0, model.layout.codebook_size, (1, *GRID), generator=torch.Generator().manual_seed(7))
    plan = video_plan(frames=3, given=0 if given is None else 1, mode=mode)
    cfg = SamplerConfig(steps=4, history_ratio=0.7, **options)
    ours = generate(model, PROMPTS, plan, cfg, given_codes=given, generator=gens(1, 2)).codes
    with torch.inference_mode():
        ref = torch.stack([reference_video(model, p, plan, cfg, g, given) for p, g in zip(PROMPTS, gens(1, 2))])
    assert torch.equal(ours, ref), f"{(ours != ref).sum().item()} of {ours.numel()} codes differ"


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


def test_unset_sampler_settings_take_recorded_then_upstream_defaults():
    recorded, fallback = {"steps": 12, "cfg_scale": None, "temperature": 0.8}, {"steps": 16, "cfg_scale": 3.0}
    cfg = SamplerConfig(top_k=5).with_defaults(recorded, fallback)
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature, cfg.top_k) == (12, 3.0, 0.8, 5)  # first layer with a value
    cfg = SamplerConfig(steps=4, cfg_scale=6.0, temperature=1.5).with_defaults(recorded, fallback)
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature) == (4, 6.0, 1.5)  # set values win
    cfg = SamplerConfig().with_defaults(None, {})
    assert (cfg.steps, cfg.cfg_scale, cfg.temperature) == (50, None, 1.0)  # upstream's; guidance stays per mode
    assert cfg.mask_given_frames is False  # upstream's I2V: the given frames enter the caches unmasked
    assert SamplerConfig().with_defaults({"mask_given_frames": True}).mask_given_frames is True  # a recorded choice
    assert SamplerConfig(mask_given_frames=False).with_defaults({"mask_given_frames": True}).mask_given_frames is False


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
