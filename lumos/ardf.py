"""AR-DF training batches (LUMOS_SPEC §7.1–7.2, §14.3): sequences with temporal tube masks and CFG text drop.

For every sample: with probability ``text_drop_prob`` the text prefix is dropped (the sequence starts at
VIDEO_BEGIN); a mask ratio rho = max(cos(pi U / 2), min_mask_ratio) is drawn; the maskable positions of each frame
(content AND newline tokens, N = h·(w+1)) are masked by the configured mask type — ``tube`` (one spatial pattern
repeated in every frame), ``random`` or ``diffusion_forcing`` — and replaced by MASK. Labels keep the original
token at masked *visual code* positions and are -100 elsewhere (a masked newline never carries loss).
"""

from __future__ import annotations

import torch

from lumos.config import ARDFConfig
from lumos.masking import diffusion_forcing_mask, random_mask, sample_mask_ratio, tube_mask
from lumos.sequence import TokenSequence, build_sequence, collate_sequences
from lumos.vocab import VocabLayout

IGNORE_INDEX = -100


def frame_token_mask(num_frames: int, tokens_per_frame: int, ardf_cfg: ARDFConfig,
                     generator: torch.Generator) -> torch.Tensor:
    """bool [F, N] masked positions of one sample under ``ardf_cfg.mask_type`` (``mask_mix_type`` for a
    ``mask_mix`` share of the samples; the draw that picks it is taken only when ``mask_mix`` > 0, so runs without a
    mix keep their random stream)."""
    mask_type = ardf_cfg.mask_type
    if ardf_cfg.mask_mix > 0 and float(torch.rand((), generator=generator)) < ardf_cfg.mask_mix:
        mask_type = ardf_cfg.mask_mix_type
    if mask_type == "diffusion_forcing":
        return diffusion_forcing_mask(num_frames, tokens_per_frame, ardf_cfg.min_mask_ratio, generator)
    ratio = sample_mask_ratio(generator, ardf_cfg.min_mask_ratio)
    fn = tube_mask if mask_type == "tube" else random_mask
    return fn(num_frames, tokens_per_frame, ratio, generator)


def _check_sample(i: int, sample: dict) -> torch.Tensor:
    missing = {"text_ids", "codes", "duration", "fps"} - set(sample)
    if missing:
        raise ValueError(f"samples[{i}] lacks key {sorted(missing)[0]!r}")
    codes = torch.as_tensor(sample["codes"], dtype=torch.long)
    if codes.dim() != 3 or 0 in codes.shape:
        raise ValueError(f"samples[{i}]['codes'] must be a non-empty (F, h, w) grid, got {tuple(codes.shape)}")
    return codes


def mask_sample(seq: TokenSequence, layout: VocabLayout, ardf_cfg: ARDFConfig,
                generator: torch.Generator, ratio: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the AR-DF mask to one built sequence (``ratio``: a tube mask of exactly this ratio instead of the
    configured mask type and a drawn ratio).

    Returns:
        (input ids [L] with MASK applied, labels [L] with -100 outside masked visual codes).
    """
    pos = torch.nonzero(seq.visual).squeeze(1)  # content + newline positions, frame by frame, row-major
    num_frames = int(seq.frame_ids[pos].max()) + 1
    pos = pos.view(num_frames, -1)  # (F, N): every frame has the same grid
    if ratio is None:
        frame_mask = frame_token_mask(num_frames, pos.shape[1], ardf_cfg, generator)
    else:
        frame_mask = tube_mask(num_frames, pos.shape[1], ratio, generator)
    masked = pos[frame_mask]
    ids, labels = seq.ids.clone(), torch.full_like(seq.ids, IGNORE_INDEX)
    is_code = seq.ids[masked] >= layout.visual_offset
    labels[masked[is_code]] = seq.ids[masked[is_code]]
    ids[masked] = layout.mask
    return ids, labels


def make_batch(samples: list[dict], layout: VocabLayout, ardf_cfg: ARDFConfig,
               generator: torch.Generator, fixed_tube_ratio: float | None = None) -> dict[str, torch.Tensor]:
    """Build one padded AR-DF training batch.

    Args:
        samples: dicts with ``text_ids`` (list[int], no BOS), ``codes`` (int [F, h, w] codebook indices),
            ``duration`` (int seconds) and ``fps`` (int).
        layout: vocabulary layout.
        ardf_cfg: mask type, min mask ratio, text drop probability.
        generator: the only source of randomness.
        fixed_tube_ratio: a validation batch instead: text always kept and a tube mask of exactly this ratio for
            every sample, whatever ``ardf_cfg`` says (the same masks for every model scored on the same samples
            and generator seed).

    Returns:
        dict of tensors: ``ids``, ``labels``, ``frame_ids``, ``pos1d`` [B, L] int64; ``coords`` [B, L, 3];
        ``visual`` [B, L] bool; ``p0``, ``lengths`` [B]. Padding: pad id, label -100, frame id -1.
    """
    if not samples:
        raise ValueError("make_batch needs at least one sample")
    if fixed_tube_ratio is not None and not 0.0 < fixed_tube_ratio <= 1.0:
        raise ValueError(f"fixed_tube_ratio must be in (0, 1], got {fixed_tube_ratio}")
    seqs, masked = [], []
    for i, sample in enumerate(samples):
        codes = _check_sample(i, sample)
        drop = fixed_tube_ratio is None and float(torch.rand((), generator=generator)) < ardf_cfg.text_drop_prob
        text = None if drop else [int(t) for t in sample["text_ids"]]
        seq = build_sequence(layout, text, codes, duration=int(sample["duration"]), fps=int(sample["fps"]))
        seqs.append(seq)
        masked.append(mask_sample(seq, layout, ardf_cfg, generator, fixed_tube_ratio))
    batch = collate_sequences(seqs, pad_id=layout.pad)
    batch["labels"] = torch.full_like(batch["ids"], IGNORE_INDEX)
    for b, (ids, labels) in enumerate(masked):
        batch["ids"][b, :ids.numel()] = ids
        batch["labels"][b, :labels.numel()] = labels
    return batch


__all__ = ["IGNORE_INDEX", "frame_token_mask", "make_batch", "mask_sample"]
