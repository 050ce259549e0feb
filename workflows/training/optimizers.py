"""The pre-training optimizers: AdamW (the paper's), or Muon on the decoder's hidden matrices with AdamW on the rest.

``optim.name: muon`` (:class:`MuonAdamW`) updates every 2-D weight inside the decoder blocks (attention and FFN
projections) with ``torch.optim.Muon`` — momentum, then the update orthogonalised by a Newton–Schulz iteration,
its size matched to AdamW's RMS (``adjust_lr_fn="match_rms_adamw"``, Moonlight's rule) so one LR and one schedule
serve both — and the embedding table, the output head, norms and biases with AdamW, as Muon's authors do. It is
one ``torch.optim.Optimizer`` whose parameter groups are the two inner optimizers' own group dicts: the LR
schedule (``LambdaLR``), gradient clipping and DeepSpeed's ZeRO-0 engine see one optimizer, the state dict holds
both. The Muon part is :class:`BatchedMuon`: ``torch.optim.Muon``'s update, state and hyperparameters, with the
Newton–Schulz iteration run once per matrix shape on the stacked matrices (one batched matmul instead of one per
matrix) and in a chosen dtype — bf16 as torch's where bf16 matmuls are the fast ones (GPUs, some CPUs), fp32 on CPUs
that multiply bf16 no faster (``optim.muon_ns_dtype``). Muon needs each matrix whole, so it runs with ``engine.zero_stage: 0`` only (ZeRO 1–3 and DeepSpeed's bf16
optimizer hand the optimizer flat partitions); the config check says so.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim._muon import EPS, _adjust_lr

NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def muon_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The decoder blocks' 2-D weights (``layers.*``): what Muon updates; everything else stays with AdamW."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError("optim.name=muon needs a model with decoder blocks under .layers")
    return [p for p in layers.parameters() if p.requires_grad and p.ndim == 2]


def _closure_loss(closure):
    """``Optimizer.step``'s closure protocol: the loss the closure recomputes, with gradients on, or ``None``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def newton_schulz(updates: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  dtype: torch.dtype = torch.bfloat16, eps: float = EPS) -> torch.Tensor:
    """``torch.optim.Muon``'s quintic Newton–Schulz orthogonalisation of a stack of matrices ``[n, rows, cols]``
    (``rows <= cols``), each scaled to Frobenius norm 1 first, computed in ``dtype``; returns ``dtype``."""
    a, b, c = coefficients
    x = updates.to(dtype)
    x = x / x.flatten(1).norm(dim=1).clamp(min=eps).view(-1, 1, 1)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


class BatchedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` (same momentum, update, LR adjustment, weight decay, state and group keys, so its
    checkpoints load either way) whose Newton–Schulz step runs once per matrix shape on the stacked updates, in
    ``ns_dtype`` (torch's: bf16 per matrix)."""

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            momentum, lr = group["momentum"], float(group["lr"])
            by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, bool]]] = {}
            for p, g, buf in zip(params, grads, bufs, strict=True):
                buf.lerp_(g, 1 - momentum)
                update = g.lerp(buf, momentum) if group["nesterov"] else buf
                tall = update.size(0) > update.size(1)
                update = update.mT if tall else update
                by_shape.setdefault(tuple(update.shape), []).append((p, update, tall))
            for items in by_shape.values():
                ortho = newton_schulz(torch.stack([u for _, u, _ in items]), group["ns_coefficients"],
                                      group["ns_steps"], self.ns_dtype, group["eps"])
                for (p, _, tall), o in zip(items, ortho, strict=True):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(o.mT if tall else o, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon on ``muon`` parameters, AdamW on the ``adamw`` groups, stepped together under one LR.

    Args:
        muon: the matrices Muon updates (decoupled weight decay ``weight_decay``).
        adamw: AdamW parameter groups (each may set its own ``weight_decay``).
        lr: the shared peak LR (Muon's is RMS-matched to AdamW's, so the same number fits both).
        weight_decay: Muon's decoupled weight decay.
        betas, eps: AdamW's.
        momentum: Muon's (Nesterov).
        fused: AdamW's fused kernel (CUDA).
        ns_dtype: the dtype of Muon's Newton–Schulz matmuls (:class:`BatchedMuon`); ``None``: ``torch.optim.Muon``
            itself (one bf16 iteration per matrix), the reference the batched one is tested against.
    """

    def __init__(self, muon: list[torch.nn.Parameter], adamw: list[dict[str, Any]], *, lr: float,
                 weight_decay: float, betas: tuple[float, float], eps: float, momentum: float = 0.95,
                 fused: bool = False, ns_dtype: torch.dtype | None = torch.bfloat16):
        if not muon:
            raise ValueError("MuonAdamW: no matrices for Muon")
        groups = [{"params": list(muon), "kind": "muon", "weight_decay": weight_decay},
                  *({**g, "kind": "adamw"} for g in adamw if g["params"])]
        super().__init__(groups, {"lr": lr})
        # The inner optimizers adopt these very group dicts, so an LR written here (LambdaLR) reaches them.
        muon_groups = [g for g in self.param_groups if g["kind"] == "muon"]
        kwargs = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True,
                      adjust_lr_fn="match_rms_adamw")
        self.muon = (torch.optim.Muon(muon_groups, **kwargs) if ns_dtype is None
                     else BatchedMuon(muon_groups, ns_dtype=ns_dtype, **kwargs))
        self.adamw = torch.optim.AdamW([g for g in self.param_groups if g["kind"] == "adamw"], lr=lr,
                                       betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("MuonAdamW.load_state_dict: expected the state of a MuonAdamW (keys 'muon', 'adamw'); "
                             "was the run started with another optim.name?")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # load_state_dict gives the inner optimizers new group dicts: share them again.
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]


__all__ = ["NS_DTYPES", "BatchedMuon", "MuonAdamW", "muon_params", "newton_schulz"]
