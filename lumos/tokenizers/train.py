"""Training pieces for our conv tokenizer (single device; the Ray Train wrapper is ``workflows/train_tokenizer``).

Loss = L1 + MSE on pixels in [−1, 1] (no perceptual term: the shapes world is flat colour, and a perceptual
network would need a download). Data: shapes-world clips rendered on the fly from a seed (:mod:`lumos.shapes`),
optionally mixed with random crops of real clips (see ``workflows/train_tokenizer``). Quality is reported as PSNR
(dB, peak-to-peak 255) on held-out clips.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lumos.shapes.world import render_clip, sample_scene
from lumos.tokenizers.causal_conv import CausalConvAutoencoder
from lumos.tokenizers.frames import check_video, from_unit, to_unit


def foreground_weights(target: torch.Tensor, fg_weight: float, threshold: float = 0.1) -> torch.Tensor:
    """Per-pixel loss weights 1 + ``fg_weight`` where a pixel differs from its frame's median colour.

    Small objects on a plain background (the shapes world) cover ~5% of the pixels, so an unweighted loss is
    dominated by the background and the codes learn to drop the objects' colours; on busy real frames almost every
    pixel is "foreground" and this is only a rescale.

    Args:
        target: float [B, 3, N, H, W] in [−1, 1].

    Returns:
        float [B, 1, N, H, W].
    """
    median = target.flatten(3).median(dim=-1).values[..., None, None]  # (B, 3, N, 1, 1)
    fg = ((target - median).abs().amax(dim=1, keepdim=True) > threshold).to(target.dtype)
    return 1.0 + fg_weight * fg


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, mse_weight: float = 1.0,
                        fg_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L1 + ``mse_weight`` · MSE, with foreground pixels up-weighted by ``fg_weight`` (:func:`foreground_weights`).

    Args:
        recon, target: float [B, 3, N, H, W] in [−1, 1].

    Returns:
        (scalar loss, {"l1", "mse"} floats, both unweighted).
    """
    err = recon - target
    per_pixel = err.abs() + mse_weight * err.square()
    if fg_weight > 0:
        w = foreground_weights(target, fg_weight)
        loss = (per_pixel * w).mean() / w.mean()
    else:
        loss = per_pixel.mean()
    l1, mse = err.detach().abs().mean(), err.detach().square().mean()
    return loss, {"l1": float(l1), "mse": float(mse)}


def psnr(a, b) -> float:
    """PSNR in dB between two uint8 videos of the same shape (peak 255)."""
    a, b = torch.as_tensor(np.asarray(a)).float(), torch.as_tensor(np.asarray(b)).float()
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def shapes_clips(rng: np.random.Generator, count: int, num_frames: int, size: int, fps: float = 8.0,
                 split: str | None = "train") -> np.ndarray:
    """``count`` rendered shapes-world clips, uint8 [count, num_frames, size, size, 3]."""
    seconds = max((num_frames - 1) / fps, 1.0 / fps)
    return np.stack([render_clip(sample_scene(rng, seconds=seconds, split=split), size=size, fps=fps,
                                 num_frames=num_frames) for _ in range(count)])


def train_step(model: CausalConvAutoencoder, optimizer: torch.optim.Optimizer, video_u8: torch.Tensor,
               mse_weight: float = 1.0, fg_weight: float = 0.0) -> dict:
    """One optimizer step on a uint8 batch [B, N, H, W, 3]; returns loss metrics."""
    x = to_unit(check_video(video_u8)[0].to(next(model.parameters()).device))
    recon, _ = model(x)
    loss, metrics = reconstruction_loss(recon, x, mse_weight, fg_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **metrics}


@torch.no_grad()
def evaluate(model: CausalConvAutoencoder, clips_u8, batch_size: int = 8) -> dict:
    """Reconstruction quality of uint8 clips [B, N, H, W, 3]: ``psnr`` (dB) and ``l1`` (pixels in [−1, 1])."""
    was_training = model.training
    model.eval()
    x_all, _ = check_video(clips_u8)
    recons = []
    for x in x_all.split(batch_size):
        recon, _ = model(to_unit(x.to(next(model.parameters()).device)))
        recons.append(from_unit(recon).cpu())
    model.train(was_training)
    recon = torch.cat(recons)
    l1 = float((recon.float() - x_all.float()).abs().mean() / 127.5)
    return {"psnr": psnr(recon, x_all), "l1": l1}


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def fit_clip(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize (shorter side → ``size``, antialiased) and centre-crop a clip to a square.

    Args:
        frames: uint8 [N, H, W, 3].

    Returns:
        uint8 [N, size, size, 3].
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, size, size, 3)


def real_clips_batch(rng: np.random.Generator, clips: list[np.ndarray], count: int, num_frames: int) -> np.ndarray:
    """``count`` random windows of ``num_frames`` consecutive frames from fitted clips (short clips repeat their
    last frame). Returns uint8 [count, num_frames, S, S, 3]."""
    out = []
    for _ in range(count):
        clip = clips[int(rng.integers(len(clips)))]
        start = int(rng.integers(max(1, len(clip) - num_frames + 1)))
        idx = np.minimum(np.arange(start, start + num_frames), len(clip) - 1)
        out.append(clip[idx])
    return np.stack(out)
