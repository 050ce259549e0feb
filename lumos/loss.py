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


def code_frequency_weights(counts, power: float = 1.0, max_weight: float = 5.0) -> torch.Tensor:
    """Per-code loss weights from a histogram of the training codes (``ARDFConfig.loss_weighting="code_frequency"``).

    With p_c = (n_c + 1) / (N + C) (add-one smoothing) and the uniform frequency u = 1 / C, the weight is
    ``clip((u / p_c) ** power, 1, max_weight)``: codes at least as common as uniform weigh 1, rarer codes up to
    ``max_weight``. Nothing here knows what the codes depict.

    Args:
        counts: int/float [C] occurrences of each code (a bincount of the shards' ``video_tokens``).

    Returns:
        float32 [C].
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0 or bool((counts < 0).any()):
        raise ValueError("counts must be a non-empty 1-D histogram of non-negative counts")
    c = counts.numel()
    p = (counts + 1.0) / (counts.sum() + c)
    return ((1.0 / c) / p).pow(power).clamp(1.0, max_weight).float()


def ardf_loss(model, batch: dict[str, torch.Tensor],
              code_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Mean CE over every masked visual token of the batch (weighted by target code when ``code_weights``).

    Args:
        model: a :class:`~lumos.model.LumosModel` (or a wrapper exposing ``visual_logits`` and the same forward).
        batch: output of :func:`lumos.ardf.make_batch` (tensors on the model's device).
        code_weights: float [C] weight of each target code (:func:`code_frequency_weights`); the loss is then
            Σ w·CE / Σ w over the masked codes. ``None``: the plain mean (the paper).

    Returns:
        (scalar loss, metrics) where metrics holds ``loss`` (float: the plain mean CE, comparable across
        weightings), ``objective`` (float: the optimised, possibly weighted, loss), ``num_tokens`` (int),
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
    if not ce.numel():
        loss = hidden.sum() * 0.0
    elif code_weights is None:
        loss = ce.mean()
    else:
        w = code_weights.to(ce.device)[targets]
        loss = (w * ce).sum() / w.sum()
    sums, counts = frame_losses(ce, batch["coords"][..., 0][sel])
    metrics = {
        "loss": float(ce.detach().mean()) if ce.numel() else 0.0,
        "objective": float(loss.detach()),
        "num_tokens": int(ce.numel()),
        "frame_loss": sums / counts,
        "frame_loss_sum": sums,
        "frame_tokens": counts,
    }
    return loss, metrics


__all__ = ["CE_CHUNK_ELEMENTS", "ardf_loss", "code_frequency_weights", "frame_losses", "visual_cross_entropy"]
