"""Our discrete video tokenizer: a causal, factorized 3D-conv autoencoder with an FSQ bottleneck.

A small stand-in for Cosmos-Tokenizer-DV4x8x8 (LUMOS_SPEC §3.1) with the same interface and compression:
temporal ×4 (first frame alone, then groups of 4, causal), spatial ×8×8, FSQ codes. Small enough to train on a
CPU in minutes at 64×64.

Causality: the clip is padded on the *past* side with three copies of frame 0, so RGB frame k sits at time
k + 3 and latent frame f covers times 4f..4f+3, i.e. frame 0 alone (f = 0) and frames 4f−3..4f after that.
Time is only ever reduced by folding non-overlapping pairs into channels (and restored the same way); every
temporal convolution is padded on the past side only. Hence latent f depends on frames ≤ 4f and decoded frame k
on latents ≤ ceil(k/4). Normalization is per frame (GroupNorm over C, H, W of one time step), which keeps this.
Spatial work is factorized: 2D 3×3 convs per frame plus kernel-3 causal temporal convs (cf. Cosmos's factorized
3D encoder); a 4×4 space-to-depth "patching" (Cosmos uses a Haar patcher) keeps it cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lumos.tokenizers.fsq import FSQ, FSQ_LEVELS, codebook_size

TEMPORAL = 4
SPATIAL = 8
PATCH = 4


@dataclass(kw_only=True)
class ConvTokenizerConfig:
    """Size of a :class:`CausalConvAutoencoder`."""

    levels: list[int] = field(default_factory=lambda: list(FSQ_LEVELS["debug"]))
    """FSQ levels; the codebook size is their product."""
    channels: int = 32
    """Width at 1/4 spatial resolution."""
    latent_channels: int = 48
    """Width at 1/8 spatial resolution."""
    num_res_blocks: int = 1
    """Residual blocks per stage."""

    def __post_init__(self) -> None:
        if not self.levels or any(int(v) < 2 for v in self.levels):
            raise ValueError(f"levels must be integers >= 2, got {self.levels}")
        for name in ("channels", "latent_channels"):
            if getattr(self, name) < 8 or getattr(self, name) % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {getattr(self, name)}")
        if self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")

    @property
    def codebook_size(self) -> int:
        return codebook_size(self.levels)

    def to_dict(self) -> dict:
        return asdict(self)


TOKENIZER_PRESETS = {
    "debug": ConvTokenizerConfig(levels=list(FSQ_LEVELS["debug"]), channels=32, latent_channels=48),
    "small": ConvTokenizerConfig(levels=list(FSQ_LEVELS["small"]), channels=64, latent_channels=96),
    "full": ConvTokenizerConfig(levels=list(FSQ_LEVELS["full"]), channels=128, latent_channels=256,
                                num_res_blocks=2),
}


def tokenizer_preset(name: str) -> ConvTokenizerConfig:
    """A copy of a named tokenizer size (``debug``, ``small``, ``full``)."""
    if name not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r} (choose from {sorted(TOKENIZER_PRESETS)})")
    return ConvTokenizerConfig(**TOKENIZER_PRESETS[name].to_dict())


def per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every time step of x [B, C, T, H, W]."""
    b = x.shape[0]
    y = module(rearrange(x, "b c t h w -> (b t) c h w"))  # (B*T, C, H, W)
    return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def frame_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=8, num_channels=channels, eps=1e-6)


class TimeConv3d(nn.Conv3d):
    """A ``Conv3d`` whose kernel spans time only (k×1×1, stride 1, no padding), run as a 2D convolution over
    (time, height·width) on CPU: the same parameters and result, but PyTorch's CPU backend sends such 3D kernels to
    its slow reference path (a third of the encoder's time), and 2D ones to oneDNN. One call per clip, so that a
    clip's result never depends on what else is in the batch (oneDNN picks its kernels by shape). Other devices
    (cuDNN) run the 3D convolution as it is, one call per batch."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1):
        super().__init__(c_in, c_out, kernel_size=(kernel, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        b, c, t, h, w = x.shape
        weight = self.weight.view(self.out_channels, c, self.kernel_size[0], 1)
        flat = x.reshape(b, c, t, h * w)
        y = torch.cat([F.conv2d(flat[i:i + 1], weight, self.bias) for i in range(b)])  # (B, C_out, T−k+1, H·W)
        return y.view(b, self.out_channels, y.shape[2], h, w)


class CausalTimeConv(nn.Module):
    """Kernel-k temporal convolution padded on the past side only: output t sees inputs t−k+1..t."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.pad = kernel - 1
        self.conv = TimeConv3d(channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 0, 0, 0, self.pad, 0)))  # (B, C, T, H, W)


class ResBlock(nn.Module):
    """Pre-norm residual block: per-frame 3×3 conv, then causal temporal conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = frame_norm(channels)
        self.spatial = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = frame_norm(channels)
        self.temporal = CausalTimeConv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = per_frame(self.spatial, F.silu(per_frame(self.norm1, x)))
        h = self.temporal(F.silu(per_frame(self.norm2, h)))
        return x + h


def res_stack(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(n)])


class TimeDown(nn.Module):
    """Fold non-overlapping pairs of time steps into channels, then mix: T → T/2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = TimeConv3d(2 * c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(rearrange(x, "b c (t two) h w -> b (c two) t h w", two=2))


class TimeUp(nn.Module):
    """Unfold channels into pairs of time steps: T → 2T; each pair comes from one input step."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = TimeConv3d(c_in, 2 * c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b (c two) t h w -> b c (t two) h w", two=2)


class Encoder(nn.Module):
    """float [B, 3, 4F, H, W] (past-padded) → latents [B, len(levels), F, H/8, W/8]."""

    def __init__(self, cfg: ConvTokenizerConfig):
        super().__init__()
        c1, c2, n = cfg.channels, cfg.latent_channels, cfg.num_res_blocks
        self.conv_in = TimeConv3d(3 * PATCH * PATCH, c1)
        self.stage1 = res_stack(c1, n)
        self.time1 = TimeDown(c1, c1)
        self.stage2 = res_stack(c1, n)
        self.space = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.time2 = TimeDown(c2, c2)
        self.stage3 = res_stack(c2, max(n, 1))
        self.norm_out = frame_norm(c2)
        self.conv_out = TimeConv3d(c2, len(cfg.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=PATCH, q=PATCH)  # (B, 48, T, H/4, W/4)
        x = self.stage1(self.conv_in(x))
        x = self.stage2(self.time1(x))  # (B, c1, T/2, H/4, W/4)
        x = self.time2(per_frame(self.space, x))  # (B, c2, T/4, H/8, W/8)
        x = self.stage3(x)
        return self.conv_out(F.silu(per_frame(self.norm_out, x)))


class Decoder(nn.Module):
    """codes [B, len(levels), F, h, w] → float [B, 3, 4F, 8h, 8w] (first 3 steps are the past padding)."""

    def __init__(self, cfg: ConvTokenizerConfig):
        super().__init__()
        c1, c2, n = cfg.channels, cfg.latent_channels, cfg.num_res_blocks
        self.conv_in = TimeConv3d(len(cfg.levels), c2)
        self.stage1 = res_stack(c2, max(n, 1))
        self.time1 = TimeUp(c2, c2)
        self.stage2 = res_stack(c2, n)
        self.space = nn.Sequential(nn.Conv2d(c2, 4 * c1, 3, padding=1), nn.PixelShuffle(2))
        self.stage3 = res_stack(c1, n)
        self.time2 = TimeUp(c1, c1)
        self.stage4 = res_stack(c1, n)
        self.norm_out = frame_norm(c1)
        self.conv_out = TimeConv3d(c1, 3 * PATCH * PATCH)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.conv_in(z))
        x = self.stage2(self.time1(x))  # (B, c2, 2F, h, w)
        x = per_frame(self.space, x)  # (B, c1, 2F, 2h, 2w)
        x = self.stage4(self.time2(self.stage3(x)))  # (B, c1, 4F, 2h, 2w)
        x = self.conv_out(F.silu(per_frame(self.norm_out, x)))
        return rearrange(x, "b (c p q) t h w -> b c t (h p) (w q)", p=PATCH, q=PATCH)  # (B, 3, 4F, H, W)


def pad_time(x: torch.Tensor) -> torch.Tensor:
    """float [B, C, N, H, W] → [B, C, 4F, H, W]: 3 copies of frame 0 in front, last frame repeated at the end."""
    n = x.shape[2]
    num_latent = 1 + -(-(n - 1) // TEMPORAL)
    tail = TEMPORAL * num_latent - (TEMPORAL - 1) - n
    parts = [x[:, :, :1].expand(-1, -1, TEMPORAL - 1, -1, -1), x]
    if tail:
        parts.append(x[:, :, -1:].expand(-1, -1, tail, -1, -1))
    return torch.cat(parts, dim=2)


class CausalConvAutoencoder(nn.Module):
    """Encoder + FSQ + decoder on float video in [−1, 1] (channels-first)."""

    def __init__(self, cfg: ConvTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.fsq = FSQ(cfg.levels)
        self.decoder = Decoder(cfg)

    def encode_latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float [B, 3, N, H, W] → (codes float [B, F, h, w, d] with STE gradients, indices int64 [B, F, h, w])."""
        z = rearrange(self.encoder(pad_time(x)), "b d f h w -> b f h w d")  # (B, F, h, w, d)
        return self.fsq(z)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """float codes [B, F, h, w, d] → float video [B, 3, 1 + 4(F − 1), H, W]."""
        x = self.decoder(rearrange(codes, "b f h w d -> b d f h w"))
        return x[:, :, TEMPORAL - 1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct a clip.

        Args:
            x: float [B, 3, N, H, W] in [−1, 1].

        Returns:
            (reconstruction float [B, 3, N, H, W], indices int64 [B, F, h, w]).
        """
        codes, indices = self.encode_latents(x)
        return self.decode_codes(codes)[:, :, : x.shape[2]], indices
