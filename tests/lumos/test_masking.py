"""Masks (LUMOS_SPEC §6, §7.2, §8.2) against brute-force definitions."""

from __future__ import annotations

import math

import pytest
import torch

from lumos.masking import (
    attention_mask,
    diffusion_forcing_mask,
    history_indices,
    random_mask,
    sample_mask_ratio,
    tube_mask,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_attention_mask_brute_force():
    fids = [-1, -1, 0, 0, 0, 1, 1, -1, 2, 2, -1]
    m = attention_mask(torch.tensor(fids))
    for i in range(len(fids)):
        for j in range(len(fids)):
            assert bool(m[i, j]) == (j <= i or (fids[i] >= 0 and fids[i] == fids[j]))
    assert m[2, 4] and not m[4, 5] and not m[0, 1]  # within-frame bidirectional, no future frame, text causal
    batched = attention_mask(torch.tensor([fids, [-1] * len(fids)]))
    assert torch.equal(batched[0], m) and torch.equal(batched[1], torch.ones_like(m).tril())


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.5, 0.7, 0.93, 1.0])
def test_tube_mask_same_pattern_every_frame(ratio):
    F, N = 5, 37
    m = tube_mask(F, N, ratio, gen())
    assert m.shape == (F, N) and m.dtype == torch.bool
    assert (m == m[0]).all()
    assert int(m[0].sum()) == max(1, round(N * ratio))


def test_tube_mask_depends_on_generator_only():
    a, b, c = tube_mask(3, 50, 0.5, gen(1)), tube_mask(3, 50, 0.5, gen(1)), tube_mask(3, 50, 0.5, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_mask_global_count_and_not_a_tube():
    m = random_mask(6, 40, 0.7, gen())
    assert int(m.sum()) == round(6 * 40 * 0.7)
    assert not (m == m[0]).all()


def test_diffusion_forcing_mask_per_frame_ratios():
    m = diffusion_forcing_mask(8, 100, 0.7, gen())
    counts = m.sum(1)
    assert ((counts >= 70) & (counts <= 100)).all()
    assert not (m == m[0]).all()


def test_sample_mask_ratio_distribution():
    g = gen()
    r = torch.tensor([sample_mask_ratio(g, 0.7) for _ in range(4000)])
    assert r.min() >= 0.7 and r.max() <= 1.0
    # P(cos(pi U / 2) <= 0.7) = 1 - 2 acos(0.7) / pi ≈ 0.494 (spec §7.2)
    expected = 1 - 2 * math.acos(0.7) / math.pi
    assert abs(float((r == 0.7).float().mean()) - expected) < 0.03


def test_history_indices_even_literal():
    # round(k * 10 / 7) for k = 0..6 (round half to even)
    assert history_indices(10, 0.7).tolist() == [0, 1, 3, 4, 6, 7, 9]
    assert history_indices(12, 0.5).tolist() == [0, 2, 4, 6, 8, 10]
    assert history_indices(5, 0.0).tolist() == []
    assert history_indices(4, 1.0).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("n", [1, 7, 33, 4084])
@pytest.mark.parametrize("ratio", [0.3, 0.7, 1.0])
def test_history_indices_unique_in_range(n, ratio):
    for mode in ("even", "random"):
        idx = history_indices(n, ratio, mode, gen())
        assert idx.numel() == round(n * ratio)
        assert idx.unique().numel() == idx.numel() and (idx >= 0).all() and (idx < n).all()
        assert torch.equal(idx, idx.sort().values)


def test_mask_functions_validate_arguments():
    with pytest.raises(ValueError, match="ratio"):
        tube_mask(2, 4, 1.5, gen())
    with pytest.raises(ValueError, match="mode"):
        history_indices(10, 0.5, "odd")
    with pytest.raises(ValueError, match="generator"):
        history_indices(10, 0.5, "random")
