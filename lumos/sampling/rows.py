"""Batched, KV-cached model evaluation for the samplers (LUMOS_SPEC §8.2): prompt rows of different lengths,
the CFG conditional / unconditional branches, frame templates.

Rows (several prompts, and the text-free unconditional prefix that starts at VIDEO_BEGIN) have prefixes of
different lengths. They are LEFT-padded to one length so that every frame segment sits at the same index in all
rows (one attention plan, one :class:`~lumos.model.KVCache` for the whole batch). Padding is made invisible
without any mask: :class:`PaddedPlan` groups rows by pad length and lets each group attend only to keys from its
first real token on, which is exactly the computation of that row alone. Each row's 1D positions and MM-RoPE
offset p0 are those of its unpadded sequence.

The forward reuses the model's own modules (embedding, decoder layers, final norm, visual rows of lm_head) with
this plan and with cos/sin tables and plans built once per frame and reused at every unmasking step; only the
hidden states the sampler asks for go through the head.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from lumos.model import KVCache, LumosModel
from lumos.model.attention import attend_piece, plan_pieces
from lumos.rope import apply_rotary
from lumos.sequence import TokenSequence, frame_sequence
from lumos.vocab import VocabLayout


@dataclass
class Segment:
    """New tokens fed to every row: per-row ids and the layout shared by all rows.

    Attributes:
        ids: int64 [R, L] token ids (per row).
        frame_ids: int64 [L] frame index (-1 outside frame segments).
        coords: int64 [L, 3] (f, r, c) of visual tokens.
        visual: bool [L] content + newline tokens.
    """

    ids: torch.Tensor
    frame_ids: torch.Tensor
    coords: torch.Tensor
    visual: torch.Tensor
    key: object = None
    """Hashable name of the layout (e.g. ``("frame", 3)``): equal keys at equal positions reuse rope/plan tables."""

    def __len__(self) -> int:
        return int(self.frame_ids.numel())

    def repeat_rows(self, times: int) -> Segment:
        """The same segment for ``times`` copies of the rows (cond rows then uncond rows)."""
        return Segment(self.ids.repeat(times, 1), self.frame_ids, self.coords, self.visual, self.key)

    @staticmethod
    def cat(parts: list[Segment], key: object = None) -> Segment:
        """Concatenate along the sequence axis (``key`` names the result's layout, if it is fixed)."""
        return Segment(torch.cat([p.ids for p in parts], 1), torch.cat([p.frame_ids for p in parts]),
                       torch.cat([p.coords for p in parts]), torch.cat([p.visual for p in parts]), key)


@dataclass
class FrameTemplate:
    """The token layout of one latent frame f (BOI, 2 grid tokens, h rows of w codes + newline, EOI).

    Attributes:
        ids: int64 [Lf] with MASK at every code position.
        frame_ids, coords, visual: layout of the frame (see :class:`Segment`).
        content: int64 [h·w] indices (within the frame) of the code positions, row-major.
        span: int64 [h·(w+1)] indices of the content + newline span (between the header and EOI).
    """

    ids: torch.Tensor
    frame_ids: torch.Tensor
    coords: torch.Tensor
    visual: torch.Tensor
    content: torch.Tensor
    span: torch.Tensor
    index: int = 0

    def segment(self, codes_ids: torch.Tensor) -> Segment:
        """The frame with code positions set to ``codes_ids`` (int64 [R, h·w] vocabulary ids or MASK)."""
        ids = self.ids.expand(codes_ids.shape[0], -1).clone()  # (R, Lf)
        ids[:, self.content] = codes_ids.to(ids.device)
        return Segment(ids, self.frame_ids, self.coords, self.visual, key=("frame", self.index))


def frame_template(layout: VocabLayout, grid: tuple[int, int], frame_index: int) -> FrameTemplate:
    """A fully masked frame ``frame_index`` of latent size ``grid = (h, w)`` (spec §8.2 step 1)."""
    seq = frame_sequence(layout, None, frame_index, grid=grid)
    h, w = grid
    span = torch.arange(3, 3 + h * (w + 1))
    content = span.view(h, w + 1)[:, :w].reshape(-1)  # (h*w,)
    return FrameTemplate(seq.ids, seq.frame_ids, seq.coords, seq.visual, content, span, frame_index)


def sequence_segment(seqs: list[TokenSequence]) -> Segment:
    """Rows of equal layout (e.g. the same frames with different codes) as one :class:`Segment`."""
    first = seqs[0]
    for s in seqs[1:]:
        if len(s) != len(first) or not torch.equal(s.frame_ids, first.frame_ids):
            raise ValueError("rows of a segment must share one token layout")
    return Segment(torch.stack([s.ids for s in seqs]), first.frame_ids, first.coords, first.visual)


class PaddedPlan:
    """Causal ∪ same-frame attention over left-padded rows, without masks.

    Rows are grouped by pad length P; a group's queries attend only to keys [P, k_end) of each piece of the
    model's plan (:func:`lumos.model.attention.plan_pieces`), and queries inside the padding are left at zero.

    Args:
        frame_ids: int64 [Lk] frame ids of all keys (cached + new); identical for every row.
        pad: int64 [R] pad length of every row.
        q_offset: index of the first query (= cached length).
        causal: make every piece causal (plain causal LM attention, for next-token decoding).
    """

    def __init__(self, frame_ids: torch.Tensor, pad: torch.Tensor, q_offset: int, causal: bool = False):
        self.pieces = plan_pieces(frame_ids.cpu(), q_offset)
        if causal:
            self.pieces = tuple(replace(p, causal=True) for p in self.pieces)
        self.q_offset = q_offset
        by_pad: dict[int, list[int]] = {}
        for r, p in enumerate(pad.tolist()):
            by_pad.setdefault(int(p), []).append(r)
        self.groups = [(p, _rows_index(rows)) for p, rows in sorted(by_pad.items())]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [R, nh, Lq, hd], k/v [R, nkv, Lk, hd] -> [R, nh, Lq, hd]."""
        if len(self.groups) == 1:
            return self._attend_group(q, k, v, self.groups[0][0])
        out = q.new_empty(q.shape)
        for pad, rows in self.groups:
            out[rows] = self._attend_group(q[rows], k[rows], v[rows], pad)
        return out

    def _attend_group(self, q, k, v, pad: int) -> torch.Tensor:
        off = self.q_offset
        outs = []
        for p in self.pieces:
            a = min(max(p.q_start, pad), p.q_end)
            if a > p.q_start:  # queries inside the padding: never read, left at zero
                outs.append(q.new_zeros(*q.shape[:2], a - p.q_start, q.shape[3]))
            if a < p.q_end:  # one query at the end of its keys: causal needs no mask
                causal = p.causal and p.q_end - a > 1
                outs.append(attend_piece(q[:, :, a - off:p.q_end - off], k[:, :, pad:p.k_end],
                                         v[:, :, pad:p.k_end], causal))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _rows_index(rows: list[int]) -> slice | torch.Tensor:
    """A slice when ``rows`` are contiguous (views, no copies of the cache), else an index tensor."""
    if rows == list(range(rows[0], rows[-1] + 1)):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, dtype=torch.long)


def _append_keys_values(layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache,
                        i: int) -> None:
    """The key/value half of ``layer``'s attention (as :class:`lumos.model.attention.Attention` computes them):
    x [R, L, D] -> rotated keys and values appended to ``cache`` layer ``i``. Parity with the full layer is
    checked by the KV-cache tests (cached vs recomputed logits)."""
    attn = layer.attention
    R, L, _ = x.shape
    h = layer.attention_norm(x)
    k = attn.k_norm(attn.wk(h).view(R, L, attn.n_kv_heads, attn.head_dim)).transpose(1, 2)  # (R, nkv, L, hd)
    v = attn.wv(h).view(R, L, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
    cache.update(i, apply_rotary(k, cos, sin).to(v.dtype), v)


class RowBatch:
    """R rows that advance together through one model: left-padded prefixes, then shared-layout segments.

    With ``use_cache`` every committed token lives in a :class:`KVCache` and :meth:`peek` feeds only the new
    tokens; without it the whole sequence (committed + new) is recomputed by every call. The committed tokens
    themselves are kept in :attr:`committed` in both modes (padded layout).

    Args:
        model: the backbone (its modules are called directly; run under ``torch.inference_mode``).
        prefixes: R prompt sequences (possibly of different lengths, no frames of their own).
        use_cache: keep keys/values of committed tokens.
        causal: plain causal attention everywhere (next-token decoding) instead of causal ∪ same-frame.
    """

    def __init__(self, model: LumosModel, prefixes: list[TokenSequence], use_cache: bool = True,
                 causal: bool = False):
        self.model = model
        self.causal = causal
        self.device = model.lm_head.weight.device
        lengths = torch.tensor([len(s) for s in prefixes])
        width = int(lengths.max())
        self.pad = (width - lengths).to(self.device)  # (R,)
        self.p0 = (lengths + 3).to(self.device)  # first visual token: after the prefix and a frame header
        self.cache: KVCache | None = model.new_cache() if use_cache else None
        ids = torch.full((len(prefixes), width), model.layout.pad, dtype=torch.long)
        for r, s in enumerate(prefixes):
            ids[r, width - len(s):] = s.ids
        self.pending: Segment | None = Segment(ids, torch.full((width,), -1, dtype=torch.long),
                                               torch.zeros(width, 3, dtype=torch.long),
                                               torch.zeros(width, dtype=torch.bool), key="prefix")
        self.committed: Segment | None = None
        self._tables: dict = {}

    @property
    def use_cache(self) -> bool:
        return self.cache is not None

    @property
    def length(self) -> int:
        """Committed tokens (padded coordinates)."""
        return 0 if self.committed is None else len(self.committed)

    def _inputs(self, seg: Segment, start: int) -> dict:
        """Model inputs for ``seg`` placed at padded index ``start``."""
        R, L = seg.ids.shape
        pos = torch.arange(start, start + L, device=self.device).expand(R, L) - self.pad[:, None]  # (R, L)
        return dict(frame_ids=seg.frame_ids.to(self.device).expand(R, L),
                    coords=seg.coords.to(self.device).expand(R, L, 3),
                    visual=seg.visual.to(self.device).expand(R, L), pos1d=pos.clamp(min=0), p0=self.p0)

    def _tables_for(self, seg: Segment, start: int):
        """(cos, sin, plan, frame_ids [R, L]) of ``seg`` at ``start``, memoised for segments with a ``key``
        (the unmasking steps of a frame feed the same layout S times)."""
        key = (start, len(seg), seg.key)
        if seg.key is None or key not in self._tables:
            self._tables.clear()
            inp = self._inputs(seg, start)
            cos, sin = self.model.rope(inp["pos1d"], inp["coords"], inp["visual"], inp["p0"])
            keys = seg.frame_ids if start == 0 else torch.cat([self.committed.frame_ids, seg.frame_ids])
            self._tables[key] = (cos, sin, PaddedPlan(keys, self.pad, start, self.causal), inp["frame_ids"])
        return self._tables[key]

    def _run(self, seg: Segment, start: int, outputs: bool = True) -> torch.Tensor | None:
        """Feed ``seg`` at ``start`` (on top of the cache, if any); returns pre-norm hidden [R, L, D].

        ``outputs=False`` (cached mode): only the keys/values matter, so the last layer computes just those.
        """
        cos, sin, plan, frame_ids = self._tables_for(seg, start)
        x = self.model.tok_embeddings(seg.ids.to(self.device))  # (R, L, D)
        last = len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers):
            if i == last and not outputs and self.cache is not None:
                _append_keys_values(layer, x, cos, sin, self.cache, i)
                x = None
            else:
                x = layer(x, cos, sin, plan, self.cache, i)
        if self.cache is not None:
            self.cache.commit(frame_ids)
        return x

    def peek(self, seg: Segment) -> torch.Tensor:
        """Hidden states [R, L, D] of ``seg`` on top of the committed tokens, without keeping ``seg``."""
        self._flush()
        if not self.use_cache:
            full = Segment.cat([self.committed, seg], key=seg.key)
            return self._run(full, 0)[:, self.length:]
        h = self._run(seg, self.length)
        self.cache.crop(self.length)  # back to the frame start
        return h

    def commit(self, seg: Segment, outputs: bool = True) -> torch.Tensor | None:
        """Append ``seg`` for good. Cached: one forward, returns its hidden states [R, L, D] (``None`` with
        ``outputs=False``, which skips everything of the last layer but its keys/values); uncached: ``None``."""
        self._flush()
        return self._append(seg, outputs)

    def _append(self, seg: Segment, outputs: bool = True) -> torch.Tensor | None:
        h = self._run(seg, self.length, outputs) if self.use_cache else None
        self.committed = seg if self.committed is None else Segment.cat([self.committed, seg])
        return h

    def _flush(self) -> None:
        if self.pending is not None:
            seg, self.pending = self.pending, None
            self._append(seg, outputs=False)  # nobody reads the prompt's outputs

    def queue(self, seg: Segment) -> None:
        """Append ``seg`` to the not-yet-fed prefix (so that the prefill stays one forward)."""
        if self.pending is None:
            raise ValueError("queue() is only allowed before the first forward")
        self.pending = Segment.cat([self.pending, seg], key="prefix")

    def prefill(self) -> bool:
        """Feed the pending prefix now; returns whether a model forward ran (cached mode only)."""
        ran = self.pending is not None and self.use_cache
        self._flush()
        return ran

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Visual-codebook logits of pre-norm hidden states: [..., D] -> float32 [..., C]."""
        return self.model.visual_logits(self.model.norm(hidden))


class Branches:
    """The conditional rows and (with CFG) the unconditional rows, fused into one batch or kept apart.

    Args:
        model: the backbone.
        cond: B prompt sequences with text.
        uncond: B text-free prefixes (from VIDEO_BEGIN), or ``None`` for no guidance.
        use_cache: KV caching (see :class:`RowBatch`).
        fuse: run cond and uncond as one batch of 2B rows (one forward per step instead of two).
        causal: plain causal attention (see :class:`RowBatch`).
    """

    def __init__(self, model: LumosModel, cond: list[TokenSequence], uncond: list[TokenSequence] | None,
                 use_cache: bool = True, fuse: bool = True, causal: bool = False):
        self.B = len(cond)
        self.guided = uncond is not None
        self.fused = fuse and self.guided
        if self.fused:
            self.batches = [RowBatch(model, [*cond, *uncond], use_cache, causal)]
        else:
            self.batches = [RowBatch(model, cond, use_cache, causal)]
            if self.guided:
                self.batches.append(RowBatch(model, uncond, use_cache, causal))
        self.passes: Counter = Counter()
        self.tokens: Counter = Counter()

    @property
    def use_cache(self) -> bool:
        return self.batches[0].use_cache

    def _count(self, kind: str, new_tokens: int) -> None:
        """One forward per branch; tokens the model computed (without a cache: the committed ones too)."""
        for branch, batch in zip(("cond", "uncond"), self.batches * (2 if self.fused else 1)):
            self.passes[(branch, kind)] += 1
            self.tokens[branch] += new_tokens + (0 if self.use_cache else batch.length)

    def _split(self, outs: list[torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if outs[0] is None:
            return None, None
        if self.fused:
            return outs[0][:self.B], outs[0][self.B:]
        return outs[0], (outs[1] if self.guided else None)

    def _rows(self, seg: Segment) -> list[Segment]:
        return [seg.repeat_rows(2)] if self.fused else [seg] * len(self.batches)

    def queue(self, seg: Segment) -> None:
        """Add ``seg`` (ids [B, L]) to the prefill of both branches (I2V given frames)."""
        for b, s in zip(self.batches, self._rows(seg)):
            b.queue(s)

    def prefill(self) -> None:
        """Run the prompts (and queued frames) through the model once."""
        ran = [b.prefill() for b in self.batches][0]
        if ran:
            self._count("prefill", self.batches[0].length)

    def peek(self, seg: Segment) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pre-norm hidden states (cond [B, L, D], uncond or None) of ``seg`` without keeping it."""
        self.prefill()
        self._count("step", len(seg))
        return self._split([b.peek(s) for b, s in zip(self.batches, self._rows(seg))])

    def commit(self, seg: Segment, kind: str = "commit",
               outputs: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Append ``seg`` to both branches; hidden states as in :meth:`peek` (cached mode with ``outputs``; else
        None). ``kind`` names the pass in :meth:`stats` (``commit`` for AR-DF frames, ``token`` for next-token
        steps); ``outputs=False`` when only the cache matters (see :meth:`RowBatch.commit`)."""
        self.prefill()
        if self.use_cache:
            self._count(kind, len(seg))
        return self._split([b.commit(s, outputs) for b, s in zip(self.batches, self._rows(seg))])

    def logits(self, hidden: torch.Tensor | None) -> torch.Tensor | None:
        """Visual logits float32 [..., C] of pre-norm hidden states (``None`` passes through)."""
        return None if hidden is None else self.batches[0].head(hidden)

    def stats(self) -> dict:
        """Forward passes per branch and kind, and tokens fed per branch."""
        out: dict = {"forward_passes": {}, "passes": {}, "tokens_fed": dict(self.tokens)}
        for (branch, kind), n in sorted(self.passes.items()):
            out["forward_passes"][branch] = out["forward_passes"].get(branch, 0) + n
            out["passes"].setdefault(branch, {})[kind] = n
        return out


__all__ = ["Branches", "FrameTemplate", "PaddedPlan", "RowBatch", "Segment", "frame_template",
           "sequence_segment"]
