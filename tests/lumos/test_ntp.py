"""Next-token raster decoder (comparison baseline for AR-DF, LUMOS_SPEC §8.2 latency table)."""

from __future__ import annotations

import pytest
import torch

from lumos.config import model_preset
from lumos.model import INPUT_NAMES, LumosModel
from lumos.ntp import generate_ntp
from lumos.sampler import SamplerConfig, plan_video
from lumos.sequence import collate_sequences, frame_sequence, prompt_sequence

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (2, 3)
PROMPTS = [[300, 301, 302], [310, 311, 312, 313, 314]]


@pytest.fixture(scope="module")
def model() -> LumosModel:
    torch.manual_seed(0)
    return LumosModel(model_preset("debug", init_std=0.3)).eval()


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_ntp_outputs_codes_with_one_pass_per_code(model):
    F = 3
    plan = plan_video("t2v", GRID, frames=F, fps=4, duration=2)
    res = generate_ntp(model, PROMPTS, plan, SamplerConfig(), generator=gens(1, 2))
    assert res.codes.shape == (2, F, *GRID)
    assert res.codes.min() >= 0 and res.codes.max() < model.layout.codebook_size
    per_branch = {"prefill": 1, "token": F * GRID[0] * GRID[1] + 1}  # + the pass that closes the last frame
    assert res.stats["passes"] == {"cond": per_branch, "uncond": per_branch}
    again = generate_ntp(model, PROMPTS, plan, SamplerConfig(), generator=gens(1, 2))
    assert torch.equal(res.codes, again.codes)
    alone = generate_ntp(model, PROMPTS[1:], plan, SamplerConfig(), generator=gens(2))
    assert torch.equal(res.codes[1:], alone.codes)  # padded batch rows == the row alone


def _reference_greedy(model, prompt, plan):
    """Greedy raster decoding with the model's own forward and KVCache, one token per forward."""
    layout = model.layout
    cache = model.new_cache()
    fed = prompt_sequence(layout, prompt, duration=plan.duration, fps=plan.fps)

    def feed(seq, start):
        batch = collate_sequences([seq])
        inputs = {k: batch[k] for k in INPUT_NAMES}
        inputs["pos1d"] = inputs["pos1d"] + start
        inputs["p0"] = torch.tensor([len(fed) + 3])
        return model(**inputs, cache=cache)[0, -1, layout.visual_offset:]

    logits = feed(fed, 0)
    codes = []
    for f in range(plan.num_frames):
        frame = frame_sequence(layout, torch.zeros(GRID, dtype=torch.long), f)
        frame_codes = []
        for i in range(len(frame)):
            tok = frame.slice(i, i + 1)
            if frame.visual[i] and int(frame.coords[i, 2]) < GRID[1]:  # a code position: predict it
                c = int(logits.argmax())
                frame_codes.append(c)
                tok.ids = torch.tensor([layout.visual_offset + c])
            logits = feed(tok, len(cache))
        codes.append(torch.tensor(frame_codes).view(GRID))
    return torch.stack(codes)


def test_greedy_ntp_matches_token_by_token_model_forward(model):
    plan = plan_video("t2v", GRID, frames=2, fps=4, duration=2)
    res = generate_ntp(model, PROMPTS[:1], plan, SamplerConfig(use_cfg=False, top_k=1), generator=gens(0))
    with torch.inference_mode():
        ref = _reference_greedy(model, PROMPTS[0], plan)
    assert torch.equal(res.codes[0], ref)


def test_ntp_i2v_keeps_given_frames(model):
    given = torch.randint(0, model.layout.codebook_size, (1, *GRID), generator=torch.Generator().manual_seed(3))
    plan = plan_video("i2v", GRID, frames=3, fps=4, duration=2, given=1)
    res = generate_ntp(model, PROMPTS, plan, SamplerConfig(), given_codes=given, generator=gens(1, 2))
    assert torch.equal(res.codes[:, 0], given.expand(2, *GRID))
    assert res.stats["passes"]["cond"]["token"] == 2 * GRID[0] * GRID[1] + 1
