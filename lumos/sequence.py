"""Sequence layout (LUMOS_SPEC §4): text + video → one token sequence, and back.

```
[BOS] prompt-text [SEP]
[VIDEO_BEGIN] [num(duration_s)] [num(fps)]
  per latent frame f:  [BOI] [num(h/grid_unit)] [num(w/grid_unit)]  ( v(r,0) .. v(r,w-1) [NEWLINE] ) × h  [EOI]
[VIDEO_END] [SEP]
```

An image is a 1-frame video with duration 1 and fps 1. Alongside the ids the builder returns, per token:

* ``frame_ids`` — latent frame index for every token of a frame segment (BOI .. EOI inclusive), −1 elsewhere
  (the input of :func:`lumos.masking.attention_mask`);
* ``visual`` — True for frame content and newline tokens (the tokens that get 3D MM-RoPE positions);
* ``coords`` — (f, r, c) of visual tokens (c == w for the newline), 0 elsewhere. MM-RoPE turns them into
  positions p0 + (4f, 8r, 8c); see :mod:`lumos.rope`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lumos.vocab import VocabLayout

# Upstream prompt template (spec §4); the compact layout conditions on the caption alone (grid, duration and fps
# tokens already carry the shape).
PROMPT_TEMPLATES = {
    "chameleon": ("Generate a video with a resolution of {width}x{height}, consisting of {frames} frames at "
                  "{fps} frames per second, according to the following prompt:\n {caption}"),
    "compact": "{caption}",
}


def format_prompt(layout: VocabLayout, caption: str, *, width: int, height: int, frames: int, fps: int) -> str:
    """The prompt text the model sees for ``caption`` under ``layout`` (before text tokenization)."""
    return PROMPT_TEMPLATES[layout.name].format(caption=caption, width=width, height=height, frames=frames,
                                                fps=fps)


@dataclass
class TokenSequence:
    """One sequence with its per-token layout metadata (all tensors length L)."""

    ids: torch.Tensor  # (L,) int64
    frame_ids: torch.Tensor  # (L,) int64, -1 outside frame segments
    visual: torch.Tensor  # (L,) bool, content + newline tokens
    coords: torch.Tensor  # (L, 3) int64, (f, r, c) for visual tokens

    def __len__(self) -> int:
        return int(self.ids.numel())

    @property
    def p0(self) -> int:
        """Index of the first visual content token (MM-RoPE offset); 0 if the sequence has none."""
        idx = torch.nonzero(self.visual)
        return int(idx[0, 0]) if idx.numel() else 0

    def cat(self, other: TokenSequence) -> TokenSequence:
        """Concatenate (frame ids of ``other`` must already be global)."""
        return TokenSequence(torch.cat([self.ids, other.ids]), torch.cat([self.frame_ids, other.frame_ids]),
                             torch.cat([self.visual, other.visual]), torch.cat([self.coords, other.coords]))

    def slice(self, start: int, end: int | None = None) -> TokenSequence:
        return TokenSequence(self.ids[start:end], self.frame_ids[start:end], self.visual[start:end],
                             self.coords[start:end])


def _plain(ids: list[int]) -> TokenSequence:
    n = len(ids)
    return TokenSequence(torch.tensor(ids, dtype=torch.long), torch.full((n,), -1, dtype=torch.long),
                         torch.zeros(n, dtype=torch.bool), torch.zeros(n, 3, dtype=torch.long))


def prompt_sequence(layout: VocabLayout, text_ids: list[int] | None, *, duration: int, fps: int) -> TokenSequence:
    """BOS + text + SEP + [VIDEO_BEGIN, num(duration), num(fps)]; ``text_ids=None`` gives the CFG-unconditional
    prefix that starts at VIDEO_BEGIN (spec §7.1 step 5, §8.2 step 3)."""
    head = [] if text_ids is None else [layout.bos, *[int(t) for t in text_ids], layout.sep]
    return _plain(head + [layout.video_begin, layout.num_token(duration), layout.num_token(fps)])


def frame_sequence(layout: VocabLayout, codes: torch.Tensor | None, frame_index: int, *,
                   grid: tuple[int, int] | None = None) -> TokenSequence:
    """One frame segment: BOI, grid tokens, h rows of (w codes + NEWLINE), EOI.

    Args:
        codes: (h, w) codebook indices (NOT offset), or ``None`` for a fully masked frame of size ``grid``.
        frame_index: latent frame index f stored in ``frame_ids``/``coords``.
    """
    if codes is None:
        if grid is None:
            raise ValueError("a masked frame needs grid=(h, w)")
        h, w = grid
        content = torch.full((h, w), layout.mask, dtype=torch.long)
    else:
        h, w = codes.shape
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= layout.codebook_size):
            raise ValueError(f"codes must lie in [0, {layout.codebook_size})")
        content = codes.long() + layout.visual_offset
    if h % layout.grid_unit or w % layout.grid_unit:
        raise ValueError(f"latent grid {h}x{w} must be a multiple of {layout.grid_unit} for layout {layout.name}")
    body = torch.cat([content, torch.full((h, 1), layout.newline, dtype=torch.long)], dim=1)  # (h, w+1)
    head = torch.tensor([layout.boi, layout.num_token(h // layout.grid_unit), layout.num_token(w // layout.grid_unit)])
    ids = torch.cat([head, body.reshape(-1), torch.tensor([layout.eoi])])
    n = ids.numel()
    visual = torch.zeros(n, dtype=torch.bool)
    visual[3:-1] = True
    coords = torch.zeros(n, 3, dtype=torch.long)
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w + 1), indexing="ij")  # (h, w+1)
    coords[3:-1, 0] = frame_index
    coords[3:-1, 1] = r.reshape(-1)
    coords[3:-1, 2] = c.reshape(-1)
    return TokenSequence(ids, torch.full((n,), frame_index, dtype=torch.long), visual, coords)


def video_end_sequence(layout: VocabLayout) -> TokenSequence:
    return _plain([layout.video_end, layout.sep])


def build_sequence(layout: VocabLayout, text_ids: list[int] | None, codes: torch.Tensor, *, duration: int,
                   fps: int, close: bool = True) -> TokenSequence:
    """The full training/prompt sequence for text + video codes.

    Args:
        text_ids: tokenized prompt text (no BOS); ``None`` drops the text prefix (CFG-unconditional).
        codes: (F, h, w) codebook indices; an image is F = 1 (use duration=1, fps=1).
        close: append VIDEO_END + SEP.
    """
    if codes.dim() != 3:
        raise ValueError(f"codes must be (F, h, w), got shape {tuple(codes.shape)}")
    seq = prompt_sequence(layout, text_ids, duration=duration, fps=fps)
    for f in range(codes.shape[0]):
        seq = seq.cat(frame_sequence(layout, codes[f], f))
    return seq.cat(video_end_sequence(layout)) if close else seq


def frame_length(h: int, w: int) -> int:
    """Tokens of one frame segment of an ``h × w`` latent grid (:func:`frame_sequence`): BOI, 2 grid tokens,
    h rows of (w codes + NEWLINE), EOI."""
    return h * (w + 1) + 4


def sequence_length(text_len: int, frames: int, h: int, w: int, *, close: bool = True) -> int:
    """``len(build_sequence(...))`` for ``text_len`` text ids and ``frames`` latent frames of ``h × w`` codes, without
    building it: BOS + text + SEP + 3 (VIDEO_BEGIN, duration, fps), the frames, and with ``close`` VIDEO_END + SEP."""
    return text_len + 5 + frames * frame_length(h, w) + (2 if close else 0)


def frame_content_positions(seq: TokenSequence, frame: int, *, include_newline: bool = False) -> torch.Tensor:
    """Indices (into the sequence) of the content tokens of latent frame ``frame``, row-major."""
    sel = seq.visual & (seq.frame_ids == frame)
    if not include_newline:
        w = int(seq.coords[sel, 2].max())  # the newline column
        sel = sel & (seq.coords[:, 2] < w)
    return torch.nonzero(sel).squeeze(1)


@dataclass
class ParsedSequence:
    text_ids: list[int] | None
    codes: torch.Tensor  # (F, h, w) codebook indices
    duration: int | None
    fps: int | None


def parse_sequence(layout: VocabLayout, ids: torch.Tensor | list[int]) -> ParsedSequence:
    """Inverse of :func:`build_sequence`: text ids, the (F, h, w) code grid, duration and fps.

    Only complete frames (BOI .. EOI) are returned. Raises ``ValueError`` on a malformed frame.
    """
    ids = [int(t) for t in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    text_ids = None
    if layout.video_begin in ids:
        vb = ids.index(layout.video_begin)
    else:
        vb = len(ids)
    if vb > 0 and ids[0] == layout.bos:
        end = vb - 1 if vb >= 1 and ids[vb - 1] == layout.sep else vb
        text_ids = ids[1:end]
    duration = fps = None
    if vb + 2 < len(ids):
        duration, fps = layout.token_num(ids[vb + 1]), layout.token_num(ids[vb + 2])
    frames = []
    i = vb
    while True:
        try:
            i = ids.index(layout.boi, i)
        except ValueError:
            break
        if i + 2 >= len(ids):
            break
        h = layout.token_num(ids[i + 1]) * layout.grid_unit
        w = layout.token_num(ids[i + 2]) * layout.grid_unit
        end = i + 3 + h * (w + 1)
        if end >= len(ids) or ids[end] != layout.eoi:
            break  # incomplete trailing frame
        body = torch.tensor(ids[i + 3:end]).reshape(h, w + 1)
        if (body[:, w] != layout.newline).any():
            raise ValueError(f"frame at token {i}: rows do not end with the newline token")
        frames.append(body[:, :w] - layout.visual_offset)
        i = end + 1
    codes = torch.stack(frames) if frames else torch.zeros(0, 0, 0, dtype=torch.long)
    return ParsedSequence(text_ids, codes, duration, fps)


def latent_frames(num_rgb_frames: int, temporal_compression: int = 4) -> int:
    """Causal temporal compression: N RGB frames → 1 + ceil((N−1)/t) latent frames (spec §3.1)."""
    if num_rgb_frames < 1:
        raise ValueError("need at least one frame")
    return 1 + -(-(num_rgb_frames - 1) // temporal_compression)


def collate_sequences(seqs: list[TokenSequence], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad sequences into the model's input tensors.

    Padding gets ``pad_id``, frame id -1, visual False, coords 0, and a continuing 1D index.

    Args:
        seqs: B token sequences (lengths may differ).
        pad_id: padding token id (``layout.pad``).

    Returns:
        dict with ``ids`` [B, L], ``frame_ids`` [B, L], ``coords`` [B, L, 3], ``visual`` [B, L] bool,
        ``pos1d`` [B, L], ``p0`` [B] and ``lengths`` [B] (int64 unless noted), L = the longest sequence.
    """
    if not seqs:
        raise ValueError("collate_sequences needs at least one sequence")
    B, L = len(seqs), max(len(s) for s in seqs)
    out = {
        "ids": torch.full((B, L), pad_id, dtype=torch.long),
        "frame_ids": torch.full((B, L), -1, dtype=torch.long),
        "coords": torch.zeros(B, L, 3, dtype=torch.long),
        "visual": torch.zeros(B, L, dtype=torch.bool),
        "pos1d": torch.arange(L, dtype=torch.long).expand(B, L).clone(),
        "p0": torch.tensor([s.p0 for s in seqs], dtype=torch.long),
        "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.long),
    }
    for b, s in enumerate(seqs):
        n = len(s)
        out["ids"][b, :n] = s.ids
        out["frame_ids"][b, :n] = s.frame_ids
        out["coords"][b, :n] = s.coords
        out["visual"][b, :n] = s.visual
    return out
