"""LumosModel: dense-reference parity, no future-frame leak, KV cache, heads, init, counts (LUMOS_SPEC §2, §6)."""

from __future__ import annotations

import math

import pytest
import torch

from lumos.config import ModelConfig, model_preset
from lumos.flops import flops_per_token, num_params
from lumos.masking import attention_mask
from lumos.model import INPUT_NAMES, KVCache, LumosModel
from lumos.model import attention as attention_mod
from lumos.sequence import build_sequence, collate_sequences, frame_sequence, prompt_sequence
from workflows.training.engine import cxx_compiler


def tiny_cfg(**kw) -> ModelConfig:
    return model_preset("debug", **kw)


def sequences(layout, g):
    a = build_sequence(layout, [300, 301, 302, 303], torch.randint(0, 240, (3, 2, 3), generator=g),
                       duration=1, fps=4)
    b = build_sequence(layout, None, torch.randint(0, 240, (2, 3, 2), generator=g), duration=1, fps=2)
    c = build_sequence(layout, [310], torch.randint(0, 240, (1, 2, 2), generator=g), duration=1, fps=1)
    return [a, b, c]


def inputs(batch):
    return {k: batch[k] for k in INPUT_NAMES}


class DenseAttention:
    """Swap the model's attention for SDPA with the dense reference mask (lumos.masking.attention_mask)."""

    def __init__(self, monkeypatch):
        build = attention_mod.AttentionPlan.build.__func__

        def build_keep(cls, frame_ids, q_offset=0, text_chunk=attention_mod.TEXT_CHUNK):
            plan = build(cls, frame_ids, q_offset, text_chunk)
            plan.dense_frame_ids = frame_ids
            return plan

        def dense(plan, q, k, v):
            mask = attention_mask(plan.dense_frame_ids)[:, None, plan.q_offset:]  # (B, 1, Lq, Lk)
            rep = q.shape[1] // k.shape[1]
            return torch.nn.functional.scaled_dot_product_attention(
                q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask)

        monkeypatch.setattr(attention_mod.AttentionPlan, "build", classmethod(build_keep))
        monkeypatch.setattr(attention_mod.AttentionPlan, "attend", dense)


def test_model_matches_dense_mask_reference_outputs_and_grads(monkeypatch):
    cfg = tiny_cfg()
    model = LumosModel(cfg)
    batch = collate_sequences(sequences(cfg.layout, torch.Generator().manual_seed(0)))
    out = model(**inputs(batch))
    grads = torch.autograd.grad(out.square().mean(), list(model.parameters()))
    DenseAttention(monkeypatch)
    ref = model(**inputs(batch))
    ref_grads = torch.autograd.grad(ref.square().mean(), list(model.parameters()))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_no_future_frame_leak():
    cfg = tiny_cfg()
    model = LumosModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    seq = build_sequence(cfg.layout, [300, 301], torch.randint(0, 240, (3, 2, 2), generator=g), duration=1, fps=4)
    for k in range(2):
        end = int(torch.nonzero(seq.frame_ids == k)[-1]) + 1  # one past frame k's EOI
        changed = seq.ids.clone()
        later = seq.frame_ids == k + 1
        changed[later & seq.visual] = cfg.layout.visual_offset + torch.randint(
            0, 240, (int((later & seq.visual).sum()),), generator=g)
        a = model.forward_sequences([seq])
        b = model.forward_sequences([type(seq)(changed, seq.frame_ids, seq.visual, seq.coords)])
        torch.testing.assert_close(a[:, :end], b[:, :end], atol=0, rtol=0)
        assert not torch.allclose(a[:, end:], b[:, end:])  # the perturbation is visible downstream


def test_frame_tokens_see_their_whole_frame():
    cfg = tiny_cfg()
    model = LumosModel(cfg).eval()
    seq = build_sequence(cfg.layout, [300], torch.zeros(1, 2, 2, dtype=torch.long), duration=1, fps=1)
    first = int(torch.nonzero(seq.visual)[0])
    changed = seq.ids.clone()
    changed[int(torch.nonzero(seq.visual)[-1])] = cfg.layout.visual_offset + 7  # last content token of frame 0
    a = model.forward_sequences([seq])
    b = model.forward_sequences([type(seq)(changed, seq.frame_ids, seq.visual, seq.coords)])
    assert not torch.allclose(a[0, first], b[0, first])  # bidirectional within the frame


def _split_forward(model, seq, cuts):
    cache = model.new_cache()
    full = collate_sequences([seq])
    outs, bounds = [], [0, *cuts, len(seq)]
    for s, e in zip(bounds[:-1], bounds[1:]):
        part = {k: (full[k][:, s:e] if k != "p0" else full[k]) for k in INPUT_NAMES}
        outs.append(model(**part, cache=cache))
    assert cache.length == len(seq)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("rope_variant", ["mm", "1d", "mrope"])
def test_kv_cache_incremental_equals_full_forward(rope_variant):
    cfg = tiny_cfg(rope_variant=rope_variant)
    model = LumosModel(cfg).eval()
    g = torch.Generator().manual_seed(2)
    seq = build_sequence(cfg.layout, [300, 301, 302], torch.randint(0, 240, (3, 2, 3), generator=g),
                         duration=1, fps=4)
    starts = [int(torch.nonzero(seq.frame_ids == f)[0]) for f in range(3)]
    with torch.no_grad():
        full = model.forward_sequences([seq])
        # prefix | frame 0 | frame 1 | frame 2 + tail ; and text token by token then the rest
        torch.testing.assert_close(_split_forward(model, seq, starts), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_split_forward(model, seq, [1, 2, 3, starts[0]]), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_crop_and_batch():
    cfg = tiny_cfg()
    model = LumosModel(cfg).eval()
    layout = cfg.layout
    g = torch.Generator().manual_seed(3)
    prompt = prompt_sequence(layout, [300, 301], duration=1, fps=2)
    frame_a = frame_sequence(layout, torch.randint(0, 240, (2, 2), generator=g), 0)
    frame_b = frame_sequence(layout, None, 0, grid=(2, 2))  # a fully masked frame, fed at once
    p0 = len(prompt) + 3

    def feed(seq, offset, cache):
        batch = collate_sequences([seq, seq])
        batch["pos1d"] += offset
        batch["p0"][:] = p0
        return model(**inputs(batch), cache=cache)

    with torch.no_grad():
        cache = model.new_cache()
        feed(prompt, 0, cache)
        feed(frame_a, len(prompt), cache)
        cache.crop(len(prompt))
        assert cache.length == len(prompt) and cache.frame_ids.shape == (2, len(prompt))
        out_b = feed(frame_b, len(prompt), cache)
        full = model.forward_sequences([prompt.cat(frame_b)] * 2)
    torch.testing.assert_close(out_b, full[:, len(prompt):], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b[0], out_b[1])
    sub = cache.select_rows([1])
    assert isinstance(sub, KVCache) and sub.batch_size == 1 and sub.length == cache.length


def test_visual_logits_are_the_visual_columns_of_lm_head():
    cfg = tiny_cfg()
    model = LumosModel(cfg)
    batch = collate_sequences(sequences(cfg.layout, torch.Generator().manual_seed(4)))
    hidden = model(**inputs(batch), return_hidden=True)
    logits = model(**inputs(batch))
    lo = cfg.layout.visual_offset
    torch.testing.assert_close(model.visual_logits(hidden), logits[..., lo:lo + cfg.codebook_size])
    assert logits.dtype == torch.float32 and logits.shape[-1] == cfg.vocab_size


def test_activation_checkpointing_gives_identical_gradients():
    cfg = tiny_cfg()
    batch = collate_sequences(sequences(cfg.layout, torch.Generator().manual_seed(5)))
    torch.manual_seed(0)
    plain = LumosModel(cfg).train()
    ckpt = LumosModel(tiny_cfg(activation_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    ga = torch.autograd.grad(plain(**inputs(batch)).mean(), list(plain.parameters()))
    gb = torch.autograd.grad(ckpt(**inputs(batch)).mean(), list(ckpt.parameters()))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.skipif(cxx_compiler() is None, reason="Inductor needs a C++ compiler")
@pytest.mark.parametrize("dense_max_keys", [attention_mod.DENSE_MAX_KEYS, 0], ids=["dense-mask", "pieces"])
def test_compiled_blocks_give_the_eager_outputs_and_gradients(monkeypatch, dense_max_keys):
    """``compile_blocks`` (Inductor on CPU) keeps the state dict's names and computes what eager computes, on the
    dense-mask path and on the piece path (kept out of the graph: no recompilation per batch layout)."""
    import torch._dynamo

    monkeypatch.setattr(attention_mod, "DENSE_MAX_KEYS", dense_max_keys)
    torch._dynamo.reset()
    cfg = tiny_cfg()
    eager = LumosModel(cfg).train()
    compiled = LumosModel(cfg).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for seed in (7, 8):  # two batches of other layouts and lengths
        batch = collate_sequences(sequences(cfg.layout, torch.Generator().manual_seed(seed)))
        out, ref = compiled(**inputs(batch)), eager(**inputs(batch))
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        ga = torch.autograd.grad(out.square().mean(), list(compiled.parameters()))
        gb = torch.autograd.grad(ref.square().mean(), list(eager.parameters()))
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_architecture_details():
    cfg = tiny_cfg()
    model = LumosModel(cfg)
    attn = model.layers[0].attention
    hd = cfg.head_dim
    assert attn.q_norm.weight.shape == (hd,) and attn.q_norm.bias.shape == (hd,)  # ONE shared LN over head_dim
    assert attn.wk.weight.shape == (cfg.n_kv_heads * hd, cfg.dim)  # GQA
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.lm_head.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()  # untied
    big = LumosModel(model_preset("small"))
    std = big.layers[0].feed_forward.w1.weight.std().item()
    resid = big.layers[0].feed_forward.w2.weight.std().item()
    assert abs(std - 0.02) < 0.002
    assert abs(resid - 0.02 / math.sqrt(2 * big.cfg.n_layers)) < 0.001


@pytest.mark.parametrize("preset", ["debug", "small", "1b", "3b"])
def test_num_params_config_matches_model_formula(preset):
    cfg = model_preset(preset)
    if preset in ("debug", "small"):
        assert num_params(cfg) == num_params(LumosModel(cfg))
    with torch.device("meta"):
        model = LumosModel(cfg)
    assert num_params(cfg) == sum(p.numel() for p in model.parameters())
    n = num_params(cfg, non_embedding=True)
    assert n == num_params(cfg) - cfg.vocab_size * cfg.dim
    assert flops_per_token(cfg, 1000) == 6 * n + 6 * cfg.n_layers * cfg.dim * 1000


def test_forward_rejects_bad_shapes():
    cfg = tiny_cfg()
    model = LumosModel(cfg)
    batch = collate_sequences(sequences(cfg.layout, torch.Generator().manual_seed(6)))
    bad = inputs(batch) | {"coords": batch["coords"][..., :2]}
    with pytest.raises(ValueError, match="coords"):
        model(**bad)
    with pytest.raises(ValueError, match="p0"):
        model(**(inputs(batch) | {"p0": batch["p0"][:1]}))
