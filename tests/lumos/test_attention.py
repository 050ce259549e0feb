"""The frame-chunked attention equals the dense causal ∪ same-frame reference (LUMOS_SPEC §6)."""

from __future__ import annotations

import pytest
import torch

from lumos.model.attention import AttentionPlan, plan_pieces


def brute_force_mask(frame_ids: list[int]) -> torch.Tensor:
    """Spec §6 by loops: i sees j iff j <= i, or both in the same frame segment."""
    L = len(frame_ids)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            m[i, j] = j <= i or (frame_ids[i] >= 0 and frame_ids[i] == frame_ids[j])
    return m


def naive_attention(q, k, v, frame_ids_rows, q_offset=0):
    """Softmax attention with an explicit mask; q [B, nh, Lq, hd], k/v [B, nkv, Lk, hd]."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, nh, Lq, Lk)
    mask = torch.stack([brute_force_mask(f)[q_offset:] for f in frame_ids_rows])[:, None]
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def random_layout(g: torch.Generator, pad_to: int | None = None) -> list[int]:
    """text, then frames (each preceded by nothing, followed by optional trailing text), then padding."""
    ids = [-1] * int(torch.randint(1, 6, (), generator=g))
    for f in range(int(torch.randint(1, 4, (), generator=g))):
        ids += [f] * int(torch.randint(2, 9, (), generator=g))
    ids += [-1] * int(torch.randint(0, 3, (), generator=g))
    if pad_to is not None:
        ids += [-1] * (pad_to - len(ids))
    return ids


def qkv(B, L, nh=4, nkv=2, hd=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, n, L, hd, generator=g, requires_grad=True) for n in (nh, nkv, nkv)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("text_chunk", [256, 2])
@pytest.mark.parametrize("dense_max_keys", [0, None], ids=["pieces", "dense-mask"])
def test_plan_matches_dense_reference_outputs_and_grads(seed, text_chunk, dense_max_keys):
    g = torch.Generator().manual_seed(seed)
    rows = [random_layout(g) for _ in range(3)]
    L = max(len(r) for r in rows) + 2
    rows = [r + [-1] * (L - len(r)) for r in rows]  # right padding → rows have different plans
    frame_ids = torch.tensor(rows)
    q, k, v = qkv(3, L, seed=seed)
    plan = AttentionPlan.build(frame_ids, text_chunk=text_chunk, dense_max_keys=dense_max_keys)
    assert (plan.dense_mask is None) == (dense_max_keys == 0)
    out = plan.attend(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = naive_attention(q, k, v, rows)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rows_with_equal_layout_share_one_group():
    frame_ids = torch.tensor([[-1, -1, 0, 0, 1, 1, -1]] * 3)
    plan = AttentionPlan.build(frame_ids)
    assert len(plan.groups) == 1 and plan.groups[0][0] is None


def test_pieces_tile_queries_and_never_need_future_keys():
    g = torch.Generator().manual_seed(1)
    fids = random_layout(g)
    for offset in range(len(fids)):
        pieces = plan_pieces(torch.tensor(fids), offset, text_chunk=3)
        covered = [i for p in pieces for i in range(p.q_start, p.q_end)]
        assert covered == list(range(offset, len(fids)))
        for p in pieces:
            # a frame piece ends at its segment end; a text piece at its own last query
            assert p.k_end == p.q_end
            assert p.causal == (fids[p.q_start] < 0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dense_max_keys", [0, None], ids=["pieces", "dense-mask"])
def test_queries_after_a_cached_prefix(seed, dense_max_keys):
    g = torch.Generator().manual_seed(seed)
    fids = random_layout(g)
    L = len(fids)
    q, k, v = qkv(1, L, seed=seed)
    for offset in (0, 1, L // 2, L - 1):
        plan = AttentionPlan.build(torch.tensor([fids]), offset, dense_max_keys=dense_max_keys)
        out = plan.attend(q[:, :, offset:], k, v)
        ref = naive_attention(q[:, :, offset:], k, v, [fids], offset)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
