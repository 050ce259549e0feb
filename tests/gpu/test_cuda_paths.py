"""The CUDA paths, on a real GPU: the committed ``small`` model in fp32 and bf16 against the CPU, a bf16 training
step with the fused AdamW, the sampler's seed rule on the GPU (the Serve guarantee), the video tokenizer, and the
attention kernels. Marked ``gpu``: ``make test`` deselects them and they skip without CUDA; ``bench/gpu_checks.sh``
runs them on a machine with a GPU (no Ray or DeepSpeed needed there)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumos.ardf import make_batch
from lumos.config import ARDFConfig
from lumos.loss import ardf_loss
from lumos.sampler import SamplerConfig
from lumos.shapes.world import render_clip, sample_scene, scene_rng
from lumos.tokenizers import default_tokenizer_uri, load_video_tokenizer
from workflows.generation import VideoSpec, load_generator

pytestmark = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def cpu_bundle():
    return load_generator("small", "cpu")


@pytest.fixture(scope="module")
def gpu_bundle():
    return load_generator("small", "cuda")


def _clips(n: int, frames: int = 17, seed: int = 0) -> np.ndarray:
    return np.stack([render_clip(sample_scene(scene_rng(seed, i)), size=64, fps=8.0, num_frames=frames)
                     for i in range(n)])


def _batch(bundle, n: int = 4) -> dict[str, torch.Tensor]:
    """An AR-DF training batch of rendered clips through the committed tokenizer, with their captions."""
    codes = bundle.video_tokenizer.encode(_clips(n)).long()
    samples = [{"text_ids": bundle.text_tokenizer.encode(f"a scene number {i}"), "codes": codes[i], "duration": 2,
                "fps": 8} for i in range(n)]
    return make_batch(samples, bundle.layout, ARDFConfig(mask_type="tube", min_mask_ratio=0.5),
                      torch.Generator().manual_seed(0))


def _loss(model, batch, device, bf16: bool = False) -> float:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = ardf_loss(model, batch)
    return float(loss)


def test_the_small_model_on_cuda_matches_the_cpu_in_fp32_and_bf16(cpu_bundle, gpu_bundle):
    batch = _batch(cpu_bundle)
    cpu = _loss(cpu_bundle.model, batch, torch.device("cpu"))
    fp32 = _loss(gpu_bundle.model, batch, CUDA)
    bf16 = _loss(gpu_bundle.model, batch, CUDA, bf16=True)
    assert 0.0 < cpu < 10.0
    assert fp32 == pytest.approx(cpu, rel=1e-3)
    assert bf16 == pytest.approx(cpu, rel=3e-2)


def test_a_bf16_training_step_on_cuda_with_the_fused_adamw_learns(cpu_bundle):
    from lumos.model import LumosModel

    torch.manual_seed(0)
    model = LumosModel(cpu_bundle.model.cfg).to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, fused=True)
    batch = {k: v.to(CUDA) for k, v in _batch(cpu_bundle).items()}
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = ardf_loss(model, batch)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_sampling_on_cuda_keeps_the_seed_rule(gpu_bundle):
    """Row b of a batch equals the same prompt sampled alone with its seed: what Serve's batching relies on."""
    spec, sampler = VideoSpec("t2v", 64, 64, frames=3), SamplerConfig(steps=4, cfg_scale=3.0)
    prompts = ["a red circle moving right", "a blue square on the left", "two green triangles"]
    batch = gpu_bundle.sample(prompts, spec, sampler, seeds=[5, 6, 7]).codes
    alone = gpu_bundle.sample(prompts[1:2], spec, sampler, seeds=[6]).codes
    again = gpu_bundle.sample(prompts, spec, sampler, seeds=[5, 6, 7]).codes
    assert batch.shape == (3, 3, 8, 8) and batch.device.type == "cpu"
    assert torch.equal(batch, again) and torch.equal(batch[1], alone[0])
    assert int(batch.max()) < gpu_bundle.video_tokenizer.codebook_size
    frames = gpu_bundle.decode(batch)
    assert frames.shape == (3, 9, 64, 64, 3) and frames.dtype == np.uint8


def test_the_video_tokenizer_on_cuda_matches_the_cpu():
    uri = default_tokenizer_uri("small")
    cpu, gpu = load_video_tokenizer(uri, "cpu"), load_video_tokenizer(uri, "cuda")
    clips = _clips(3)
    a, b = cpu.encode(clips), gpu.encode(clips)
    assert a.shape == b.shape and (a == b).float().mean() > 0.99
    da, db = cpu.decode(a).int(), gpu.decode(a).int()
    assert (da - db).abs().float().mean() < 1.0  # uint8 levels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_on_cuda_matches_the_cpu(dtype):
    from lumos.model.attention import attend_piece

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 96, 32, generator=g)
    for kv_len, causal in ((96, True), (96, False), (160, True)):  # the last: a chunk of queries over a longer cache
        k, v = (torch.randn(2, 4, kv_len, 32, generator=g) for _ in range(2))
        ref = attend_piece(q, k, v, causal)
        out = attend_piece(*(t.to(CUDA, dtype) for t in (q, k, v)), causal).float().cpu()
        assert torch.allclose(out, ref, atol=2e-2 if dtype == torch.bfloat16 else 1e-4), (dtype, kv_len, causal)
