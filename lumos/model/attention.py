"""Attention of the Lumos backbone: GQA, Chameleon QK-norm, MM-RoPE, causal ∪ same-frame masking without L×L
masks (LUMOS_SPEC §2, §6; STACK_NOTES "Attention on CPU").

The dependency rule (token i may see token j iff j ≤ i or both lie in the same frame segment BOI..EOI) is exact
under this decomposition of the query axis into contiguous pieces:

* a frame segment [s, e) → its queries attend to keys [0, e) with no mask at all;
* a run of text/special/padding tokens [s, e), cut into chunks [a, b) of at most ``TEXT_CHUNK`` queries → keys
  [0, b) with a bottom-right-aligned causal mask (``is_causal`` when a == 0, i.e. query and key lengths agree).

Each piece is one ``scaled_dot_product_attention`` call (or one flash-attn call on CUDA, whose ``causal=True``
is bottom-right aligned), so memory grows linearly with L. Rows of a batch whose layouts differ are grouped by
identical piece plans. With a :class:`~lumos.model.kv_cache.KVCache` the plan is built over cached + new tokens
and only the new queries are computed.

Short sequences go the other way: below ``DENSE_MAX_KEYS`` keys the plan also holds the dense boolean mask
(:func:`lumos.masking.attention_mask`, built once per forward and shared by every layer) and, unless flash-attn
runs, attends with one masked SDPA call per layer. There the pieces' per-call overhead, the per-plan row groups
of a batch with mixed text lengths and the zero-filled gradients of every sliced key block cost more than the
masked-out half of the L×L scores: at the small model's training shapes (16 rows, 4 heads × 64) one layer's
forward + backward took 1.64 s → 0.31 s at L = 420 and 0.30 s → 0.06 s at L = 101 on 2 threads; above ~2k keys
the pieces win (bench/attention.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lumos.config import ModelConfig
from lumos.masking import attention_mask
from lumos.rope import apply_rotary

TEXT_CHUNK = 256
"""Longest query chunk of a text run; bounds the causal mask of a chunk to TEXT_CHUNK × L."""
DENSE_MAX_KEYS = 1024
"""Key lengths up to this attend with one dense-masked SDPA call per layer (see the module docstring)."""


@dataclass(frozen=True)
class Piece:
    """Queries [q_start, q_end) (key-space indices) attend keys [0, k_end); ``causal`` = bottom-right causal."""

    q_start: int
    q_end: int
    k_end: int
    causal: bool


def _run_bounds(frame_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs (start, end, frame id) of equal frame ids in a 1-D tensor (no Python loop over tokens)."""
    L = frame_ids.numel()
    change = torch.nonzero(frame_ids[1:] != frame_ids[:-1]).squeeze(1) + 1  # run starts after 0
    starts = [0, *change.tolist()]
    ends = [*starts[1:], L]
    values = frame_ids[torch.tensor(starts, dtype=torch.long, device=frame_ids.device)].tolist()
    return list(zip(starts, ends, values))


def plan_pieces(frame_ids: torch.Tensor, q_offset: int = 0, text_chunk: int = TEXT_CHUNK) -> tuple[Piece, ...]:
    """Pieces covering queries [q_offset, L) of one row.

    Args:
        frame_ids: int [L] frame id of every key (cached + new), -1 outside frames. Frame segments must be
            contiguous (as the sequence builder makes them).
        q_offset: index of the first query (= cache length).
        text_chunk: longest text query chunk.

    Returns:
        Pieces in query order; their query ranges tile [q_offset, L).
    """
    pieces = []
    for s, e, fid in _run_bounds(frame_ids):
        if e <= q_offset:
            continue
        s = max(s, q_offset)
        if fid >= 0:
            pieces.append(Piece(s, e, e, causal=False))
            continue
        for a in range(s, e, text_chunk):
            b = min(a + text_chunk, e)
            pieces.append(Piece(a, b, b, causal=True))
    return tuple(pieces)


@dataclass
class AttentionPlan:
    """Piece plans for a batch, grouped by rows that share a plan. Built once per forward, used by every layer."""

    groups: list[tuple[torch.Tensor | None, tuple[Piece, ...]]]
    q_offset: int
    batch_size: int
    dense_mask: torch.Tensor | None = None
    """bool [B, 1, Lq, Lk] when Lk ≤ ``DENSE_MAX_KEYS``: one masked SDPA call per layer instead of the pieces."""

    @classmethod
    def build(cls, frame_ids: torch.Tensor, q_offset: int = 0, text_chunk: int = TEXT_CHUNK,
              dense_max_keys: int | None = None) -> AttentionPlan:
        """From frame ids [B, Lk] of all keys (cached + new); queries are [q_offset, Lk). ``dense_max_keys``
        (default ``DENSE_MAX_KEYS``; 0 = never) bounds the key length that also gets a dense mask."""
        by_plan: dict[tuple[Piece, ...], list[int]] = {}
        for b, row in enumerate(frame_ids.cpu()):
            by_plan.setdefault(plan_pieces(row, q_offset, text_chunk), []).append(b)
        B, Lk = frame_ids.shape
        limit = DENSE_MAX_KEYS if dense_max_keys is None else dense_max_keys
        dense = attention_mask(frame_ids)[:, None, q_offset:, :] if Lk <= limit else None  # (B, 1, Lq, Lk)
        if len(by_plan) == 1:
            return cls([(None, next(iter(by_plan)))], q_offset, B, dense)
        groups = [(torch.tensor(rows, dtype=torch.long), plan) for plan, rows in by_plan.items()]
        return cls(groups, q_offset, B, dense)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, nh, Lq, hd], k/v [B, nkv, Lk, hd] -> [B, nh, Lq, hd] under causal ∪ same-frame."""
        if self.dense_mask is not None and not _uses_flash(q):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense_mask.to(q.device),
                                                  enable_gqa=q.shape[1] != k.shape[1])
        return self._attend_pieces(q, k, v)

    @torch.compiler.disable
    def _attend_pieces(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The piece path; kept out of ``torch.compile`` graphs (a compiled block would specialise on every
        distinct plan, i.e. recompile per batch layout)."""
        if len(self.groups) == 1:
            return self._attend_group(q, k, v, self.groups[0][1])
        outs, order = [], []
        for rows, pieces in self.groups:
            r = rows.to(q.device)
            outs.append(self._attend_group(q.index_select(0, r), k.index_select(0, r), v.index_select(0, r),
                                           pieces))
            order.append(r)
        inverse = torch.argsort(torch.cat(order))
        return torch.cat(outs, 0).index_select(0, inverse)

    def _attend_group(self, q, k, v, pieces: tuple[Piece, ...]) -> torch.Tensor:
        off = self.q_offset
        outs = [attend_piece(q[:, :, p.q_start - off:p.q_end - off], k[:, :, :p.k_end], v[:, :, :p.k_end],
                             p.causal) for p in pieces]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


@functools.cache
def _flash_attn_func():
    """flash_attn.flash_attn_func when flash-attn and CUDA are available, else None (lazy, guarded)."""
    if not torch.cuda.is_available():
        return None
    try:
        from flash_attn import flash_attn_func
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None
    return flash_attn_func


def _uses_flash(q: torch.Tensor) -> bool:
    """Whether :func:`attend_piece` runs flash-attn for these queries (CUDA, half precision, flash-attn present)."""
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_attn_func() is not None


def attend_piece(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """One mask-free (``causal=False``) or bottom-right-causal attention call.

    Args:
        q: [B, nh, Lq, hd]; k, v: [B, nkv, Lk, hd] with Lk ≥ Lq, nh a multiple of nkv.

    Returns:
        [B, nh, Lq, hd].
    """
    Lq, Lk = q.shape[2], k.shape[2]
    if _uses_flash(q):
        out = _flash_attn_func()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)  # (B, Lq, nh, hd)
        return out.transpose(1, 2)
    gqa = q.shape[1] != k.shape[1]
    if not causal:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    if Lq == Lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)  # (Lq, Lk), Lq ≤ TEXT_CHUNK
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class QKNorm(nn.Module):
    """Chameleon QK-norm: LayerNorm over head_dim with one weight+bias [head_dim] shared by all heads, or, when
    ``n_heads`` is given, one per head [n_heads, head_dim] (HF transformers' Chameleon layout)."""

    def __init__(self, head_dim: int, eps: float, n_heads: int | None = None):
        super().__init__()
        self.eps = eps
        shape = (head_dim,) if n_heads is None else (n_heads, head_dim)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., heads, head_dim] -> same shape (statistics over head_dim only)."""
        if self.weight.dim() == 1:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return F.layer_norm(x, (x.shape[-1],), None, None, self.eps) * self.weight + self.bias


class Attention(nn.Module):
    """Multi-head attention with GQA, optional QK-norm (before RoPE) and no projection biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        per_head = cfg.qk_norm_per_head
        self.q_norm = QKNorm(cfg.head_dim, cfg.norm_eps, cfg.n_heads if per_head else None) if cfg.qk_norm \
            else nn.Identity()
        self.k_norm = QKNorm(cfg.head_dim, cfg.norm_eps, cfg.n_kv_heads if per_head else None) if cfg.qk_norm \
            else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache=None, layer: int = 0) -> torch.Tensor:
        """x [B, L, D]; cos/sin [B, L, hd]; returns [B, L, D]. With ``cache`` the new k/v are appended."""
        B, L, _ = x.shape
        q = self.q_norm(self.wq(x).view(B, L, self.n_heads, self.head_dim))  # (B, L, nh, hd)
        k = self.k_norm(self.wk(x).view(B, L, self.n_kv_heads, self.head_dim))  # (B, L, nkv, hd)
        v = self.wv(x).view(B, L, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, L, hd)
        # QK-norm may run in fp32 under autocast: bring q/k back to v's dtype (one dtype for SDPA / flash-attn)
        q, k = apply_rotary(q, cos, sin).to(v.dtype), apply_rotary(k, cos, sin).to(v.dtype)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, Lc + L, hd)
        out = plan.attend(q, k, v)  # (B, nh, L, hd)
        return self.wo(out.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_ids: torch.Tensor,
                    q_offset: int = 0) -> torch.Tensor:
    """Reference: SDPA with the dense :func:`lumos.masking.attention_mask` (tests and benchmarks only).

    Args:
        q: [B, nh, Lq, hd]; k, v: [B, nkv, Lk, hd]; frame_ids: [B, Lk]; queries are keys [q_offset, Lk).
    """
    mask = attention_mask(frame_ids)[:, None, q_offset:, :]  # (B, 1, Lq, Lk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


__all__ = ["Attention", "AttentionPlan", "DENSE_MAX_KEYS", "Piece", "QKNorm", "TEXT_CHUNK", "attend_piece", "dense_attention",
           "plan_pieces"]
