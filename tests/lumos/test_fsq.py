"""FSQ: codebook sizes, code ↔ index round trip, grid values, straight-through gradients, errors."""

import pytest
import torch

from lumos.tokenizers.fsq import FSQ, FSQ_LEVELS, codebook_size


def test_preset_codebook_sizes_match_model_presets():
    from lumos.config import model_preset

    assert codebook_size(FSQ_LEVELS["debug"]) == 240 == model_preset("debug").codebook_size
    assert codebook_size(FSQ_LEVELS["small"]) == 1000 == model_preset("small").codebook_size
    assert codebook_size(FSQ_LEVELS["full"]) == 64000


@pytest.mark.parametrize("name", ["debug", "small", "full"])
def test_index_code_index_round_trip_covers_every_code(name):
    fsq = FSQ(FSQ_LEVELS[name])
    idx = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(idx)
    assert codes.shape == (fsq.codebook_size, len(FSQ_LEVELS[name]))
    assert torch.equal(fsq.codes_to_indices(codes), idx)
    assert codes.min() >= -1 and codes.max() <= 1
    assert len({tuple(c.tolist()) for c in codes}) == fsq.codebook_size  # all codes distinct


def test_quantize_lands_on_the_grid_and_indices_agree():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(4, 7, 4, generator=torch.Generator().manual_seed(0)) * 3
    codes, idx = fsq(z)
    half = torch.tensor([4, 2, 2, 2])
    digits = codes * half + half
    assert torch.allclose(digits, digits.round(), atol=1e-5)
    assert (digits >= 0).all() and (digits <= torch.tensor([7, 4, 4, 4])).all()
    assert idx.dtype == torch.int64 and idx.min() >= 0 and idx.max() < 1000
    assert torch.allclose(fsq.indices_to_codes(idx), codes)
    # every level is reachable for large inputs
    extremes = fsq.codes_to_indices(fsq.quantize(torch.tensor([[-50.0] * 4, [50.0] * 4])))
    assert extremes.tolist() == [0, 999]


def test_straight_through_gradient_flows():
    fsq = FSQ([8, 6, 5])
    z = torch.randn(16, 3, requires_grad=True)
    fsq.quantize(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_bad_levels_and_indices_raise():
    with pytest.raises(ValueError, match="levels"):
        FSQ([8, 1])
    fsq = FSQ([8, 6, 5])
    with pytest.raises(ValueError, match="indices"):
        fsq.indices_to_codes(torch.tensor([240]))
    with pytest.raises(ValueError, match="channels"):
        fsq.quantize(torch.zeros(2, 4))
