"""The pre-training optimizers: AdamW (the paper's), or Muon on the decoder's hidden matrices with AdamW on the rest.

``optim.name: muon`` (:class:`MuonAdamW`) updates every 2-D weight inside the decoder blocks (attention and FFN
projections) with ``torch.optim.Muon`` — momentum, then the update orthogonalised by a Newton–Schulz iteration,
its size matched to AdamW's RMS (``adjust_lr_fn="match_rms_adamw"``, Moonlight's rule) so one LR and one schedule
serve both — and the embedding table, the output head, norms and biases with AdamW, as Muon's authors do. It is
one ``torch.optim.Optimizer`` whose parameter groups are the two inner optimizers' own group dicts: the LR
schedule (``LambdaLR``), gradient clipping and DeepSpeed's ZeRO-0 engine see one optimizer, the state dict holds
both. Muon needs each matrix whole, so it runs with ``engine.zero_stage: 0`` only (ZeRO 1–3 and DeepSpeed's bf16
optimizer hand the optimizer flat partitions); the config check says so.
"""

from __future__ import annotations

from typing import Any

import torch


def muon_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The decoder blocks' 2-D weights (``layers.*``): what Muon updates; everything else stays with AdamW."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError("optim.name=muon needs a model with decoder blocks under .layers")
    return [p for p in layers.parameters() if p.requires_grad and p.ndim == 2]


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
    """

    def __init__(self, muon: list[torch.nn.Parameter], adamw: list[dict[str, Any]], *, lr: float,
                 weight_decay: float, betas: tuple[float, float], eps: float, momentum: float = 0.95,
                 fused: bool = False):
        if not muon:
            raise ValueError("MuonAdamW: no matrices for Muon")
        groups = [{"params": list(muon), "kind": "muon", "weight_decay": weight_decay},
                  *({**g, "kind": "adamw"} for g in adamw if g["params"])]
        super().__init__(groups, {"lr": lr})
        # The inner optimizers adopt these very group dicts, so an LR written here (LambdaLR) reaches them.
        self.muon = torch.optim.Muon([g for g in self.param_groups if g["kind"] == "muon"], lr=lr,
                                     weight_decay=weight_decay, momentum=momentum, nesterov=True,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW([g for g in self.param_groups if g["kind"] == "adamw"], lr=lr,
                                       betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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


__all__ = ["MuonAdamW", "muon_params"]
