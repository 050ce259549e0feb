"""MM-RoPE (LUMOS_SPEC §5, §14.1–14.2) against literal tables and naive references written here."""

from __future__ import annotations

import pytest
import torch

from lumos.config import model_preset
from lumos.rope import (
    RotaryEmbedding,
    apply_rotary,
    axis_table,
    cos_sin,
    inv_freq,
    mm_rope_axes,
    rope_angles,
    rope_positions,
)
from lumos.sequence import build_sequence, collate_sequences

BLOCK = "t t t t h h w w h h w w h h w w".split()  # spec §5.1, one block of 16 frequencies


def test_axis_table_head_dim_64_literal():
    assert mm_rope_axes(64) == [
        "t", "t", "t", "t", "h", "h", "w", "w", "h", "h", "w", "w", "h", "h", "w", "w",
        "t", "t", "t", "t", "h", "h", "w", "w", "h", "h", "w", "w", "h", "h", "w", "w",
    ]


def test_axis_table_head_dim_128_literal():
    axes = mm_rope_axes(128)
    assert axes == BLOCK * 4
    assert (axes.count("t"), axes.count("h"), axes.count("w")) == (16, 24, 24)


@pytest.mark.parametrize("bad", [0, 48, 100])
def test_axis_table_rejects_bad_head_dim(bad):
    with pytest.raises(ValueError, match="head_dim"):
        mm_rope_axes(bad)


def naive_rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Vanilla 1D rotate-half RoPE, x [B, nh, L, hd], pos [B, L]."""
    hd = x.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = pos.float()[..., None] * freqs  # (B, L, hd/2)
    emb = torch.cat([ang, ang], -1)[:, None]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def naive_mm_positions(ids: list[int], layout, t_stride=4, s_stride=8):
    """Spec §14.2 literally: scan tokens, read grid tokens after each BOI."""
    L = len(ids)
    pos = [[n, n, n] for n in range(L)]
    vis = [False] * L
    boi = [i for i, t in enumerate(ids) if t == layout.boi]
    p0 = boi[0] + 3 if boi else 0
    for f, i in enumerate(boi):
        rows = layout.token_num(ids[i + 1]) * layout.grid_unit
        cols = layout.token_num(ids[i + 2]) * layout.grid_unit
        for r in range(rows):
            for c in range(cols + 1):
                n = i + 3 + r * (cols + 1) + c
                pos[n] = [p0 + t_stride * f, p0 + s_stride * r, p0 + s_stride * c]
                vis[n] = True
    return torch.tensor(pos), torch.tensor(vis), p0


def _seq(layout, text=(300, 301, 302), frames=3, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, layout.codebook_size, (frames, h, w), generator=g)
    return build_sequence(layout, list(text), codes, duration=1, fps=4)


def test_mm_positions_match_spec_scan():
    layout = model_preset("debug").layout
    seq = _seq(layout)
    ref_pos, ref_vis, ref_p0 = naive_mm_positions(seq.ids.tolist(), layout)
    assert seq.p0 == ref_p0 and torch.equal(seq.visual, ref_vis)
    b = collate_sequences([seq])
    pos = rope_positions(b["pos1d"], b["coords"], b["visual"], b["p0"], variant="mm")
    assert torch.equal(pos[0], ref_pos)


def test_text_path_is_bit_identical_to_1d_rope():
    hd, theta = 64, 10000.0
    B, L = 2, 37
    pos1d = torch.arange(L).expand(B, L)
    coords = torch.randint(0, 9, (B, L, 3))
    visual = torch.zeros(B, L, dtype=torch.bool)  # text only
    x = torch.randn(B, 4, L, hd)
    for variant in ("mm", "1d", "3d", "mrope", "mm_noscale", "mm_nodist"):
        cos, sin = RotaryEmbedding(hd, theta, variant)(pos1d, coords, visual, torch.zeros(B, dtype=torch.long))
        assert torch.equal(apply_rotary(x, cos, sin), naive_rope(x, pos1d, theta)), variant


def test_text_tokens_keep_1d_rope_inside_a_video_sequence():
    cfg = model_preset("debug")
    seq = _seq(cfg.layout)
    b = collate_sequences([seq])
    rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, "mm")
    cos, sin = rope(b["pos1d"], b["coords"], b["visual"], b["p0"])
    x = torch.randn(1, 2, len(seq), cfg.head_dim)
    text = ~seq.visual
    torch.testing.assert_close(apply_rotary(x, cos, sin)[0, :, text], naive_rope(x, b["pos1d"], 1e4)[0, :, text],
                               atol=0, rtol=0)


def test_equal_axis_positions_reduce_to_1d_rope():
    hd = 64
    pos = torch.randint(0, 1000, (1, 20))
    ang = rope_angles(pos[..., None].expand(1, 20, 3), axis_table(hd, "mm"), inv_freq(hd, 1e4))
    cos, sin = cos_sin(ang)
    x = torch.randn(1, 2, 20, hd)
    assert torch.equal(apply_rotary(x, cos, sin), naive_rope(x, pos, 1e4))


def naive_mm_rope(x: torch.Tensor, pos3: torch.Tensor, theta: float) -> torch.Tensor:
    """Per-channel reference: channel c uses axis_of(c mod hd/2) from the literal block table."""
    hd = x.shape[-1]
    out = torch.empty_like(x)
    for c in range(hd // 2):
        axis = "thw".index(BLOCK[c % 16])
        ang = pos3[..., axis].double()[:, None] * theta ** (-2 * c / hd)  # (B, 1, L)
        a, b = x[..., c].double(), x[..., c + hd // 2].double()
        out[..., c] = (a * ang.cos() - b * ang.sin()).float()
        out[..., c + hd // 2] = (b * ang.cos() + a * ang.sin()).float()
    return out


def test_mm_rope_matches_per_channel_reference():
    hd = 64
    pos3 = torch.randint(0, 500, (2, 15, 3))
    x = torch.randn(2, 3, 15, hd)
    cos, sin = cos_sin(rope_angles(pos3, axis_table(hd, "mm"), inv_freq(hd, 1e4)))
    torch.testing.assert_close(apply_rotary(x, cos, sin), naive_mm_rope(x, pos3, 1e4), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("variant", ["mm", "mm_nodist", "3d"])
def test_qk_scores_are_invariant_to_shifting_one_axis(axis, variant):
    hd = 64
    pos3 = torch.randint(0, 200, (1, 12, 3))
    shifted = pos3.clone()
    shifted[..., axis] += 37
    q, k = torch.randn(1, 2, 12, hd, dtype=torch.float64), torch.randn(1, 2, 12, hd, dtype=torch.float64)

    def scores(p):
        cos, sin = cos_sin(rope_angles(p, axis_table(hd, variant), inv_freq(hd, 1e4)), torch.float64)
        qr = q * cos[:, None].double() + torch.cat([-q[..., 32:], q[..., :32]], -1) * sin[:, None].double()
        kr = k * cos[:, None].double() + torch.cat([-k[..., 32:], k[..., :32]], -1) * sin[:, None].double()
        return qr @ kr.transpose(-1, -2)

    torch.testing.assert_close(scores(pos3), scores(shifted), atol=1e-3, rtol=1e-4)


def test_variant_positions():
    layout = model_preset("debug").layout
    seq = _seq(layout)
    b = collate_sequences([seq])
    args = (b["pos1d"], b["coords"], b["visual"], b["p0"])
    f, r, c = seq.coords[seq.visual].unbind(-1)
    p0 = seq.p0
    expected = {
        "mm": (p0 + 4 * f, p0 + 8 * r, p0 + 8 * c),
        "mm_nodist": (p0 + 4 * f, p0 + 8 * r, p0 + 8 * c),
        "mm_noscale": (p0 + f, p0 + r, p0 + c),
        "mrope": (p0 + f, p0 + r, p0 + c),
        "3d": (f, r, c),
    }
    for variant, (t, h, w) in expected.items():
        pos = rope_positions(*args, variant=variant)[0]
        assert torch.equal(pos[seq.visual], torch.stack([t, h, w], -1)), variant
        assert torch.equal(pos[~seq.visual], b["pos1d"][0, ~seq.visual, None].expand(-1, 3)), variant
    pos = rope_positions(*args, variant="1d")[0]
    assert torch.equal(pos, b["pos1d"][0, :, None].expand(-1, 3))


def test_contiguous_variants_split_2_3_3():
    for variant in ("3d", "mrope", "mm_nodist"):
        assert axis_table(64, variant).tolist() == [0] * 8 + [1] * 12 + [2] * 12
        assert axis_table(128, variant).tolist() == [0] * 16 + [1] * 24 + [2] * 24
    assert axis_table(64, "mm_noscale").tolist() == ["thw".index(a) for a in BLOCK * 2]
