"""Key/value cache for incremental AR-DF decoding (LUMOS_SPEC §8.2).

The cache holds, per decoder layer, the rotated keys and the values of every token fed so far, plus the frame
ids of those tokens (needed for the causal ∪ same-frame rule when later queries belong to a frame that started in
the cache). The sampler appends a frame, reads logits, and :meth:`KVCache.crop` s back to the frame start.

All rows of a cached batch advance together: rows must not contain padding (a pad in the middle of a row would be
visible to later tokens). Under ``torch.no_grad`` keys/values live in preallocated buffers that grow by doubling;
with autograd enabled they are concatenated functionally so gradients still flow.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys/values [B, n_kv_heads, length, head_dim] and the frame ids [B, length] of cached tokens.

    Args:
        n_layers: number of decoder layers of the model that fills this cache.
    """

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self._k: list[torch.Tensor | None] = [None] * n_layers
        self._v: list[torch.Tensor | None] = [None] * n_layers
        self._frame_ids: torch.Tensor | None = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def batch_size(self) -> int | None:
        return None if self._frame_ids is None else self._frame_ids.shape[0]

    @property
    def frame_ids(self) -> torch.Tensor | None:
        """int64 [B, length] frame ids of the cached tokens (-1 outside frames); ``None`` while empty."""
        return None if self._frame_ids is None else self._frame_ids[:, :self.length]

    def keys(self, layer: int) -> torch.Tensor:
        """Cached keys of ``layer``: [B, n_kv_heads, length, head_dim]."""
        return self._k[layer][:, :, :self.length]

    def values(self, layer: int) -> torch.Tensor:
        """Cached values of ``layer``: [B, n_kv_heads, length, head_dim]."""
        return self._v[layer][:, :, :self.length]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new k/v [B, nkv, Lq, hd] of ``layer``; returns all keys/values [B, nkv, length + Lq, hd].

        The cache ``length`` advances only in :meth:`commit` (once per model forward, after every layer).
        """
        if self.length and k.shape[0] != self.batch_size:
            raise ValueError(f"cache holds batch size {self.batch_size}, got {k.shape[0]} rows")
        n = self.length + k.shape[2]
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            self._k[layer] = torch.cat([self._k[layer][:, :, :self.length], k], 2) if self.length else k
            self._v[layer] = torch.cat([self._v[layer][:, :, :self.length], v], 2) if self.length else v
        else:
            self._k[layer] = self._write(self._k[layer], k)
            self._v[layer] = self._write(self._v[layer], v)
        return self._k[layer][:, :, :n], self._v[layer][:, :, :n]

    def _write(self, buf: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        n = self.length + x.shape[2]
        if buf is None or buf.shape[2] < n or buf.requires_grad or buf.shape[0] != x.shape[0]:
            cap = max(n, 2 * (buf.shape[2] if buf is not None else 0), 64)
            new = x.new_empty(x.shape[0], x.shape[1], cap, x.shape[3])
            if self.length:
                new[:, :, :self.length] = buf[:, :, :self.length]
            buf = new
        buf[:, :, self.length:n] = x
        return buf

    def commit(self, frame_ids: torch.Tensor) -> None:
        """Advance ``length`` by the new tokens of one forward, recording their frame ids [B, Lq]."""
        frame_ids = frame_ids.long()
        if self._frame_ids is not None and self._frame_ids.shape[0] != frame_ids.shape[0]:
            raise ValueError(f"cache holds batch size {self._frame_ids.shape[0]}, got {frame_ids.shape[0]} rows")
        old = self.frame_ids
        self._frame_ids = frame_ids if old is None else torch.cat([old, frame_ids.to(old.device)], 1)
        self.length += frame_ids.shape[1]

    def crop(self, n: int) -> None:
        """Forget every token from index ``n`` on (length becomes min(length, n))."""
        if n < 0:
            raise ValueError(f"crop length n={n} must be >= 0")
        self.length = min(self.length, n)
        if self._frame_ids is not None:
            self._frame_ids = self._frame_ids[:, :self.length]

    def select_rows(self, rows: torch.Tensor | list[int]) -> KVCache:
        """A new cache holding only ``rows`` of the batch (copies)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        out = KVCache(self.n_layers)
        out.length = self.length
        for i in range(self.n_layers):
            if self._k[i] is not None:
                out._k[i] = self.keys(i).index_select(0, rows.to(self._k[i].device)).clone()
                out._v[i] = self.values(i).index_select(0, rows.to(self._v[i].device)).clone()
        if self._frame_ids is not None:
            out._frame_ids = self.frame_ids.index_select(0, rows.to(self._frame_ids.device)).clone()
        return out


__all__ = ["KVCache"]
