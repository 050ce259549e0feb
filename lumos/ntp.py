"""Next-token (raster-order, causal) decoding over the Lumos model and KV cache — a speed baseline for AR-DF.

This is NOT how Lumos-1 was trained (AR-DF predicts masked tokens in place, LUMOS_SPEC §7.3, and the released
latency table compares it with next-token decoding, spec §8.2: 960 s NTP vs 77.8 s AR-DF + KV): it exists to
measure what token-by-token decoding costs with the same model, cache, guidance and batching. Every visual code
is one forward of the previous token(s) on top of the cache; the hidden state of the last fed token is read
through the visual head as the distribution of the next code (the usual causal shift). Attention is plain causal
(no intra-frame bidirectionality: a raster decoder cannot see later tokens). Newlines, EOI and the next frame's
header are fed together with the token before them (causally, so this equals feeding them one by one), so a frame
of N codes costs N forwards per branch.
No history masking (every token enters the cache as it is generated); sampling is multinomial with the same
guidance, temperature and top-k as :mod:`lumos.sampler`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from lumos.model import LumosModel
from lumos.sampler import GenerationResult, SamplerConfig, VideoPlan, _generators, _given
from lumos.sampling.rows import Branches, FrameTemplate, Segment, frame_template
from lumos.sampling.tokens import filter_logits, guided_logits, sample_tokens
from lumos.sequence import prompt_sequence


def _chunk(tmpls: list[tuple[FrameTemplate, int, int]], values: list[torch.Tensor]) -> Segment:
    """Concatenated template slices [a, b) with ids ``values`` (each int64 [B, b - a])."""
    parts = [Segment(v, t.frame_ids[a:b], t.coords[a:b], t.visual[a:b]) for (t, a, b), v in zip(tmpls, values)]
    return parts[0] if len(parts) == 1 else Segment.cat(parts)


class NTPRun:
    """One raster-order generation (see the module docstring)."""

    def __init__(self, model: LumosModel, prompts: Sequence[Sequence[int]], plan: VideoPlan, cfg: SamplerConfig,
                 given_codes=None, generator=None, progress: bool = False):
        cfg = cfg.with_defaults()
        self.layout, self.plan, self.cfg, self.B = model.layout, plan, cfg, len(prompts)
        self.device = model.lm_head.weight.device
        self.gens = _generators(generator, self.B, self.device)
        self.given = _given(given_codes, self.B, plan, self.layout.codebook_size)
        self.g = cfg.guidance(plan.image)
        cond = [prompt_sequence(self.layout, [int(t) for t in p], duration=plan.duration, fps=plan.fps)
                for p in prompts]
        uncond = [prompt_sequence(self.layout, None, duration=plan.duration, fps=plan.fps)] * self.B
        self.branches = Branches(model, cond, uncond if cfg.use_cfg else None, use_cache=True,
                                 fuse=cfg.fuse_branches, causal=True)
        h, w = plan.grid
        self.bar = tqdm(total=(plan.num_frames - plan.given) * h * w, disable=not progress, unit="tok",
                        desc="next-token", leave=False)

    def _ids(self, tmpl: FrameTemplate, a: int, b: int) -> torch.Tensor:
        return tmpl.ids[a:b].to(self.device).expand(self.B, -1)

    def run(self) -> torch.Tensor:
        """Generate; returns codes int64 [B, F, h, w]."""
        h, w = self.plan.grid
        frames = []
        with torch.inference_mode():
            for f in range(self.plan.given):
                tmpl = frame_template(self.layout, self.plan.grid, f)
                self.branches.queue(tmpl.segment(self.given[:, f].reshape(self.B, -1) + self.layout.visual_offset))
                frames.append(self.given[:, f])
            tmpl = frame_template(self.layout, self.plan.grid, self.plan.given)
            pending = _chunk([(tmpl, 0, 3)], [self._ids(tmpl, 0, 3)])  # first header
            for f in range(self.plan.given, self.plan.num_frames):
                codes, pending = self._frame(tmpl, pending, f)
                frames.append(codes.view(self.B, h, w).cpu())
                tmpl = frame_template(self.layout, self.plan.grid, f + 1)
            self.branches.commit(pending, kind="token")  # close the last frame (newline + EOI)
        self.bar.close()
        return torch.stack(frames, dim=1).clone()  # an ordinary tensor, usable outside inference mode

    def _frame(self, tmpl: FrameTemplate, pending: Segment, f: int) -> tuple[torch.Tensor, Segment]:
        """Decode the N codes of frame ``f``; ``pending`` (header, or the previous frame's tail + header) is fed
        first. Returns (codes [B, N], the unfed tail of this frame + next header)."""
        h, w = self.plan.grid
        codes = torch.empty(self.B, h * w, dtype=torch.long, device=self.device)
        last = f == self.plan.num_frames - 1
        nxt = frame_template(self.layout, self.plan.grid, f + 1)
        for k in range(h * w):
            hc, hu = self.branches.commit(pending, kind="token")
            codes[:, k] = self._sample(hc[:, -1], None if hu is None else hu[:, -1])
            pos = int(tmpl.content[k])
            end = pos + 1 + (k % w == w - 1)  # the code, plus the row's newline after the last column
            parts, values = [(tmpl, pos, end)], [self._ids(tmpl, pos, end).clone()]
            values[0][:, 0] = codes[:, k] + self.layout.visual_offset
            if k == h * w - 1:  # EOI, then the next frame's header (its first code is predicted from it)
                parts.append((tmpl, end, end + 1))
                values.append(self._ids(tmpl, end, end + 1))
                if not last:
                    parts.append((nxt, 0, 3))
                    values.append(self._ids(nxt, 0, 3))
            pending = _chunk(parts, values)
            self.bar.update(1)
        return codes, pending

    def _sample(self, hidden_c: torch.Tensor, hidden_u: torch.Tensor | None) -> torch.Tensor:
        """Next code per row from pre-norm hidden states [B, D] -> int64 [B] codebook indices."""
        lc = self.branches.logits(hidden_c)  # (B, C)
        lu = None if hidden_u is None else self.branches.logits(hidden_u)
        logits = filter_logits(guided_logits(lc, lu, self.g), self.cfg.temperature, self.cfg.top_k)
        return torch.stack([sample_tokens(logits[b:b + 1], self.gens[b])[0][0] for b in range(self.B)])


def generate_ntp(model: LumosModel, prompts: Sequence[Sequence[int]], plan: VideoPlan,
                 cfg: SamplerConfig | None = None, *, given_codes=None, generator=None,
                 progress: bool = False) -> GenerationResult:
    """Raster-order next-token generation with CFG and the KV cache (comparison baseline).

    Arguments as :func:`lumos.sampler.generate` (``steps``, Gumbel and history settings are ignored; the KV cache
    is always on).

    Returns:
        :class:`~lumos.sampler.GenerationResult`: codes int64 [B, F, h, w]; stats with ``forward_passes`` per
        branch (h·w per generated frame, plus the prefill and one closing pass) and seconds.
    """
    run = NTPRun(model, prompts, plan, cfg or SamplerConfig(), given_codes, generator, progress)
    t0 = time.perf_counter()
    codes = run.run()
    stats = {**run.branches.stats(), "frames": plan.num_frames, "given_frames": plan.given, "rows": run.B,
             "guidance": run.g if run.cfg.use_cfg else None, "seconds": time.perf_counter() - t0}
    return GenerationResult(codes, stats)


__all__ = ["NTPRun", "generate_ntp"]
