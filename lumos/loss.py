"""AR-DF loss (LUMOS_SPEC §7.3, §9.3): cross-entropy over masked visual tokens, visual columns only.

Memory: the model returns final hidden states; only positions whose label is a visual code are gathered, and
only the ``codebook_size`` visual rows of ``lm_head`` are multiplied — never full-vocabulary logits for the whole
sequence. Rows are processed in chunks; with autograd each chunk is recomputed in the backward
(non-reentrant checkpoint), so at most one chunk of [chunk, codebook] fp32 logits is alive at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lumos.ardf import IGNORE_INDEX
from lumos.model.transformer import INPUT_NAMES

CE_CHUNK_ELEMENTS = 2**24
"""Logit elements per cross-entropy chunk (64 MB in fp32): 262 rows at 64,000 codes (upstream uses 200)."""


def _chunk_ce(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row CE of the visual logits: hidden [n, D], targets [n] in [0, C) -> float32 [n]."""
    return F.cross_entropy(model.visual_logits(hidden), targets, reduction="none")


def visual_cross_entropy(model, hidden: torch.Tensor, targets: torch.Tensor,
                         chunk: int | None = None) -> torch.Tensor:
    """Chunked per-token CE over the visual codebook.

    Args:
        model: a :class:`~lumos.model.LumosModel` (uses ``visual_logits``).
        hidden: [N, D] final-norm hidden states at masked visual positions.
        targets: int64 [N] codebook indices.
        chunk: rows per chunk; default ``CE_CHUNK_ELEMENTS // codebook_size`` (at least 16).

    Returns:
        float32 [N] per-token cross-entropy.
    """
    use_ckpt = torch.is_grad_enabled() and hidden.requires_grad
    chunk = chunk or max(16, CE_CHUNK_ELEMENTS // model.layout.codebook_size)
    out = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s:s + chunk], targets[s:s + chunk]
        out.append(checkpoint(_chunk_ce, model, h, t, use_reentrant=False) if use_ckpt else _chunk_ce(model, h, t))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def frame_losses(ce: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of per-token CE by latent frame index: ce [N], frames [N] -> two float32 [F_max + 1]."""
    n = int(frames.max()) + 1 if frames.numel() else 0
    sums = torch.zeros(n, dtype=torch.float32, device=ce.device).index_add_(0, frames, ce.detach().float())
    counts = torch.zeros(n, dtype=torch.float32, device=ce.device).index_add_(
        0, frames, torch.ones_like(ce, dtype=torch.float32))
    return sums, counts


def ardf_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Mean CE over every masked visual token of the batch.

    Args:
        model: a :class:`~lumos.model.LumosModel` (or a wrapper exposing ``visual_logits`` and the same forward).
        batch: output of :func:`lumos.ardf.make_batch` (tensors on the model's device).

    Returns:
        (scalar loss, metrics) where metrics holds ``loss`` (float), ``num_tokens`` (int),
        ``frame_loss`` (float32 [F] mean CE per latent frame index, NaN where a frame has no token),
        ``frame_loss_sum`` and ``frame_tokens`` (float32 [F], for all-reducing across workers).
    """
    hidden = model(**{k: batch[k] for k in INPUT_NAMES}, return_hidden=True)  # (B, L, D)
    labels = batch["labels"]
    sel = labels != IGNORE_INDEX  # masked visual positions only (make_batch never labels anything else)
    visual_offset = model.layout.visual_offset
    targets = labels[sel] - visual_offset  # (N,)
    if targets.numel() and int(targets.min()) < 0:
        raise ValueError("batch['labels'] holds non-visual ids; only visual codes may carry AR-DF loss")
    h = hidden[sel]  # (N, D)
    ce = visual_cross_entropy(model, h, targets)
    loss = ce.mean() if ce.numel() else hidden.sum() * 0.0
    sums, counts = frame_losses(ce, batch["coords"][..., 0][sel])
    metrics = {
        "loss": float(loss.detach()),
        "num_tokens": int(ce.numel()),
        "frame_loss": sums / counts,
        "frame_loss_sum": sums,
        "frame_tokens": counts,
    }
    return loss, metrics


__all__ = ["CE_CHUNK_ELEMENTS", "ardf_loss", "frame_losses", "visual_cross_entropy"]
