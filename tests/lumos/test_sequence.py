"""Sequence layout (LUMOS_SPEC §4): build, parse, metadata, collate."""

from __future__ import annotations

import pytest
import torch

from lumos.sequence import (
    build_sequence,
    collate_sequences,
    frame_content_positions,
    frame_length,
    frame_sequence,
    latent_frames,
    parse_sequence,
    prompt_sequence,
    sequence_length,
)
from lumos.vocab import chameleon_layout, compact_layout


def test_chameleon_layout_literal():
    v = chameleon_layout()
    codes = torch.arange(2 * 4 * 4).view(2, 4, 4)  # 2 latent frames of 4x4 latents (= 32x32 px each)
    seq = build_sequence(v, [100, 101], codes, duration=2, fps=12)
    expect = [0, 100, 101, 8710, 9004, 8804 + 2, 8804 + 12]
    for f in range(2):
        expect += [8197, 8804 + 1, 8804 + 1]  # grid counts 32-px patches: 4 latents / 4
        for r in range(4):
            expect += [65536 + int(c) for c in codes[f, r]] + [8803]
        expect += [8196]
    expect += [9005, 8710]
    assert seq.ids.tolist() == expect
    assert seq.p0 == 10  # first content token, right after BOI + 2 grid tokens


def test_metadata_frame_ids_visual_coords():
    v = compact_layout(240)
    seq = build_sequence(v, [300], torch.randint(0, 240, (2, 2, 3)), duration=1, fps=2)
    n_frame = 3 + 2 * 4 + 1
    assert seq.frame_ids.tolist() == [-1] * 6 + [0] * n_frame + [1] * n_frame + [-1] * 2
    assert int(seq.visual.sum()) == 2 * 2 * 4
    f1 = frame_content_positions(seq, 1)
    assert f1.numel() == 6 and (seq.coords[f1, 0] == 1).all() and seq.coords[f1, 2].max() == 2
    nl = frame_content_positions(seq, 1, include_newline=True)
    assert (seq.ids[nl][seq.coords[nl, 2] == 3] == v.newline).all()


@pytest.mark.parametrize("layout", [compact_layout(240), chameleon_layout()])
def test_build_parse_roundtrip(layout):
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, layout.codebook_size, (3, 4, 8), generator=g)
    seq = build_sequence(layout, [300, 301, 302], codes, duration=2, fps=12)
    parsed = parse_sequence(layout, seq.ids)
    assert parsed.text_ids == [300, 301, 302] and parsed.duration == 2 and parsed.fps == 12
    assert torch.equal(parsed.codes, codes)
    uncond = parse_sequence(layout, build_sequence(layout, None, codes, duration=2, fps=12).ids)
    assert uncond.text_ids is None and torch.equal(uncond.codes, codes)


@pytest.mark.parametrize("layout", [compact_layout(240), chameleon_layout()])
@pytest.mark.parametrize(("text", "frames", "h", "w"), [(0, 1, 4, 4), (3, 3, 4, 8), (17, 7, 8, 12)])
def test_sequence_length_is_the_built_sequences_length(layout, text, frames, h, w):
    codes = torch.zeros(frames, h, w, dtype=torch.long)
    for close in (True, False):
        seq = build_sequence(layout, list(range(300, 300 + text)), codes, duration=2, fps=12, close=close)
        assert sequence_length(text, frames, h, w, close=close) == len(seq.ids)
    assert frame_length(h, w) == len(frame_sequence(layout, None, 0, grid=(h, w)).ids)


def test_masked_frame_and_prompt():
    v = compact_layout(240)
    p = prompt_sequence(v, None, duration=1, fps=1)
    assert p.ids.tolist() == [v.video_begin, v.num_token(1), v.num_token(1)]
    f = frame_sequence(v, None, 4, grid=(2, 2))
    assert (f.ids[f.visual & (f.coords[:, 2] < 2)] == v.mask).all() and (f.frame_ids == 4).all()
    with pytest.raises(ValueError, match="grid"):
        frame_sequence(v, None, 0)


def test_collate_pads_right():
    v = compact_layout(240)
    a = build_sequence(v, [300, 301], torch.zeros(1, 2, 2, dtype=torch.long), duration=1, fps=1)
    b = build_sequence(v, None, torch.zeros(2, 2, 2, dtype=torch.long), duration=1, fps=1)
    batch = collate_sequences([a, b], pad_id=v.pad)
    L = max(len(a), len(b))
    assert batch["ids"].shape == (2, L) and batch["lengths"].tolist() == [len(a), len(b)]
    assert (batch["ids"][0, len(a):] == v.pad).all() and (batch["frame_ids"][0, len(a):] == -1).all()
    assert batch["pos1d"][0].tolist() == list(range(L))
    assert batch["p0"].tolist() == [a.p0, b.p0]
    with pytest.raises(ValueError):
        collate_sequences([])


def test_latent_frames():
    assert [latent_frames(n) for n in (1, 2, 5, 6, 25, 84)] == [1, 2, 2, 3, 7, 22]
