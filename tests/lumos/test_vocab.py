"""Vocabulary layouts (LUMOS_SPEC §3.2–3.3)."""

from __future__ import annotations

import pytest

from lumos.vocab import build_layout, chameleon_layout, compact_layout, layout_from_dict


def test_chameleon_ids_match_spec_table():
    v = chameleon_layout()
    assert (v.bos, v.pad, v.sep, v.boi, v.eoi, v.newline, v.num_zero, v.mask, v.video_begin, v.video_end) == (
        0, 0, 8710, 8197, 8196, 8803, 8804, 9003, 9004, 9005)
    assert (v.vocab_size, v.text_vocab_size, v.visual_offset, v.codebook_size) == (129536, 65536, 65536, 64000)
    # <reservedNNNNN> has id NNNNN + 4
    assert (v.sep, v.newline, v.num_zero, v.mask, v.video_begin, v.video_end) == tuple(
        n + 4 for n in (8706, 8799, 8800, 8999, 9000, 9001))
    assert v.grid_unit == 4


def test_number_tokens():
    v = chameleon_layout()
    assert v.num_token(12) == 8816 and v.token_num(8816) == 12
    with pytest.raises(ValueError):
        v.num_token(-1)
    with pytest.raises(ValueError):
        v.token_num(5)


def test_compact_layout_and_roundtrip():
    v = compact_layout(240)
    assert v.vocab_size == 512 + 240
    specials = {v.bos, v.sep, v.boi, v.eoi, v.newline, v.mask, v.video_begin, v.video_end}
    assert len(specials) == 8 and max(specials) < v.num_zero
    assert layout_from_dict(v.to_dict()) == v
    assert build_layout("compact", 240) == v and build_layout("chameleon") == chameleon_layout()


def test_build_layout_errors():
    with pytest.raises(ValueError, match="unknown vocab layout"):
        build_layout("gpt2")
    with pytest.raises(ValueError, match="codebook_size"):
        build_layout("chameleon", 1000)
    with pytest.raises(ValueError, match="codebook_size"):
        build_layout("compact")
