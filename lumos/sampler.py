"""AR-DF sampling (LUMOS_SPEC §8, §14.4): frames one after another, MaskGIT-style parallel unmasking inside a
frame, classifier-free guidance, KV cache with inference-time history masking.

Per latent frame f:

1. append a fully masked frame (BOI, grid tokens, h rows of w MASK + newline, EOI; newlines are given);
2. for s = 0..S-1: one forward of the conditional rows and one of the unconditional rows (the same sequence
   without the text, starting at VIDEO_BEGIN), fed only the frame's tokens on top of their KV caches; guided
   logits l = l_u + g·(l_c − l_u) over the visual codebook at the still-masked positions; temperature / top-k;
   multinomial sample; confidence = log p(x) + tau·Gumbel (fixed tokens: +inf; tau annealed per step, see
   :class:`~lumos.sampling.schedule.NoiseTemperature`); the m = floor(N·cos(π(s+1)/2S))
   (clamped to [1, #masked − 1], 0 at the last step) lowest-confidence positions are re-masked; both caches are
   cropped back to the frame start;
3. commit: the finished frame with a fixed subset of its content span (content + newline positions between the
   header and EOI; ratio 0.7, evenly spaced, the same positions in every frame — a temporal tube) replaced by MASK
   is fed once to both branches, appending its keys/values.

I2V feeds the given frames (tokenized by the video tokenizer) to both caches UNMASKED, as upstream's code does (spec
§8.2 step 6; ``mask_given_frames=True`` commits them with the history mask too) and generates the rest; the given
codes are returned unchanged. T2I is a one-frame video with duration 1 and fps 1.

Batches: B prompts (same grid) advance together; pass one ``torch.Generator`` per row to make row b's result equal
to generating it alone with that generator. Every forward is counted per branch (``stats``).

References: upstream ``inference_solver_vid.py`` (``generate_maskedAR_mmrope_v8_newcache``,
``mask_history_pattern``), MaskGIT.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from lumos.masking import history_indices
from lumos.model import LumosModel
from lumos.sampling.rows import Branches, FrameTemplate, frame_template
from lumos.sampling.schedule import NoiseTemperature, keep_masked_count
from lumos.sampling.tokens import filter_logits, guided_logits, gumbel_noise, remask_lowest, sample_tokens
from lumos.sequence import format_prompt, prompt_sequence
from lumos.vocab import VocabLayout

MODES = ("t2i", "t2v", "i2v")
HISTORY_MODES = ("even", "random")
VIDEO_CFG, IMAGE_CFG = 15.0, 16.0
"""Upstream guidance scales (spec §8.1). Small, briefly trained CPU models often do better with much lower scales
(2–5): large g amplifies the noise of a weak conditional model."""
UPSTREAM_DEFAULTS = {"steps": 50, "temperature": 1.0, "mask_given_frames": False}
"""What an unset ``SamplerConfig.steps`` / ``temperature`` / ``mask_given_frames`` means when nothing else fills it
(spec §8.1, §8.2 step 6)."""
RECORDED_KEYS = ("steps", "cfg_scale", "temperature", "mask_given_frames")
"""The settings that may be left unset (``None``) and filled by :meth:`SamplerConfig.with_defaults` (a
checkpoint records them in its ``sampling`` entry)."""


@dataclass(kw_only=True)
class SamplerConfig:
    """Settings of the AR-DF sampler (defaults = upstream, spec §8.1).

    ``steps``, ``cfg_scale`` and ``temperature`` may be left unset (``None``): :meth:`with_defaults` fills them from
    recorded defaults (a checkpoint's ``sampling`` entry), and the sampler treats what stays unset as upstream's
    values (50 steps, temperature 1, guidance 15 video / 16 image).
    """

    steps: int | None = None
    """Unmasking steps per latent frame (S); ``None`` = 50 (upstream) unless filled by :meth:`with_defaults`."""
    cfg_scale: float | None = None
    """Guidance scale g; ``None`` = upstream default for the mode (15 video, 16 image)."""
    use_cfg: bool = True
    """Run the unconditional branch; ``False`` samples from the conditional branch alone (no second forward)."""
    temperature: float | None = None
    """Logit temperature before sampling; ``None`` = 1 (upstream: none) unless filled by :meth:`with_defaults`."""
    top_k: int | None = None
    """Sample among the top-k visual codes only (upstream: no top-k)."""
    gumbel_tau: float = 1.0
    """Gumbel noise temperature of the confidence at the first step of a frame (by default)."""
    upstream_tau_decay: bool = False
    """Reproduce upstream's tau exactly: tau ← tau·(1 − (s+1)/S) BEFORE step s's confidence (step 0 already uses
    0.98·``gumbel_tau`` for S = 50) and never reset, so 0 from the first frame's last step on. By default tau
    restarts at ``gumbel_tau`` every frame and is annealed after each step (step 0 uses ``gumbel_tau``)."""
    history_ratio: float = 0.7
    """Fraction of a committed frame's content span replaced by MASK in the cache (0 = no history masking)."""
    history_mode: str = "even"
    """``even`` (evenly spaced, upstream) or ``random`` (a random subset per row); fixed for the whole video."""
    mask_given_frames: bool | None = None
    """I2V: also commit the GIVEN frames with the history mask. Unset (``None``): a checkpoint's recorded choice,
    else upstream's (spec §8.2 step 6): the given frames enter both KV caches unmasked; only generated frames are
    committed with the history mask."""
    use_kv_cache: bool = True
    """``False`` recomputes the whole sequence at every step (same logits, for checking and benchmarks)."""
    fuse_branches: bool = True
    """Run the conditional and unconditional rows as one batch (one forward per step)."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.cfg_scale is not None and not math.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale={self.cfg_scale} must be a finite number")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.gumbel_tau < 0:
            raise ValueError(f"gumbel_tau={self.gumbel_tau} must be >= 0")
        if not 0.0 <= self.history_ratio < 1.0:
            raise ValueError(f"history_ratio={self.history_ratio} must be in [0, 1)")
        if self.history_mode not in HISTORY_MODES:
            raise ValueError(f"history_mode={self.history_mode!r} must be one of {HISTORY_MODES}")

    def with_defaults(self, *layers: Mapping | None) -> SamplerConfig:
        """A copy whose unset (``None``) ``steps`` / ``cfg_scale`` / ``temperature`` / ``mask_given_frames`` take
        the first value found in ``layers`` (e.g. a checkpoint's ``sampling`` entry, then a tool's own fallbacks),
        else upstream's steps, temperature and unmasked given frames (``cfg_scale`` then stays ``None``: upstream's
        per-mode guidance)."""
        filled = {}
        for key in RECORDED_KEYS:
            if getattr(self, key) is None:
                found = (layer.get(key) for layer in (*layers, UPSTREAM_DEFAULTS) if layer)
                filled[key] = next((v for v in found if v is not None), None)
        return dataclasses.replace(self, **filled)

    def guidance(self, image: bool) -> float:
        """The guidance scale for an image (one frame) or a video."""
        if self.cfg_scale is not None:
            return float(self.cfg_scale)
        return IMAGE_CFG if image else VIDEO_CFG

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VideoPlan:
    """What to generate: latent frames, the duration/fps tokens, the latent grid and how many frames are given."""

    mode: str
    num_frames: int
    duration: int
    fps: int
    grid: tuple[int, int]
    given: int = 0

    @property
    def image(self) -> bool:
        return self.num_frames == 1


def plan_video(mode: str, grid: tuple[int, int], *, frames: int | None = None, fps: int | None = None,
               duration: int | None = None, given: int = 0) -> VideoPlan:
    """Resolve a mode into frame counts (spec §8.1).

    Args:
        mode: ``t2i`` (1 frame, duration 1, fps 1), ``t2v`` or ``i2v``.
        grid: latent (h, w).
        frames: latent frames in total (given ones included); default 1 + ceil((fps·duration − 1)/4).
        fps, duration: the video's fps / seconds tokens (default 12 / 2 for video).
        given: latent frames supplied for I2V.

    Returns:
        a :class:`VideoPlan`.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid={grid} must be positive")
    if mode == "t2i":
        if frames not in (None, 1):
            raise ValueError(f"frames={frames}: t2i generates exactly one frame")
        return VideoPlan("t2i", 1, 1, 1, (h, w))
    fps, duration = 12 if fps is None else int(fps), 2 if duration is None else int(duration)
    if fps < 1 or duration < 1:
        raise ValueError(f"fps={fps} and duration={duration} must be >= 1")
    total = 1 + math.ceil((fps * duration - 1) / 4) if frames is None else int(frames)
    if total < 1:
        raise ValueError(f"frames={frames} must be >= 1")
    if mode == "i2v" and given < 1:
        raise ValueError("mode='i2v' needs given frames (an image)")
    if mode != "i2v" and given:
        raise ValueError(f"given frames are only used by mode='i2v', not {mode!r}")
    if given >= total:
        raise ValueError(f"frames={total} must exceed the {given} given latent frame(s)")
    return VideoPlan(mode, total, duration, fps, (h, w), given)


def encode_prompt(text_tokenizer, layout: VocabLayout, caption: str, plan: VideoPlan,
                  spatial_compression: int = 8) -> list[int]:
    """Text ids (no BOS) of the prompt template for ``caption`` (spec §4): resolution, frames = fps·duration, fps."""
    h, w = plan.grid
    text = format_prompt(layout, caption, width=w * spatial_compression, height=h * spatial_compression,
                         frames=plan.fps * plan.duration, fps=plan.fps)
    return list(text_tokenizer.encode(text))


@dataclass
class GenerationResult:
    """Output of :func:`generate`.

    Attributes:
        codes: int64 [B, F, h, w] codebook indices (given I2V frames included, unchanged).
        stats: forward passes per branch (``forward_passes``, ``passes`` by kind: prefill/step/commit),
            tokens fed, frames, steps, guidance, seconds.
    """

    codes: torch.Tensor
    stats: dict


def _generators(generator, B: int, device) -> list[torch.Generator]:
    if generator is None:
        generator = torch.Generator(device).manual_seed(0)
    if isinstance(generator, torch.Generator):
        return [generator] * B
    gens = list(generator)
    if len(gens) != B:
        raise ValueError(f"generator: got {len(gens)} generators for {B} prompts")
    return gens


def _cpu_generator(g: torch.Generator) -> torch.Generator:
    """``g`` itself on CPU; on an accelerator, a CPU generator seeded by one draw from ``g``."""
    if g.device.type == "cpu":
        return g
    seed = int(torch.randint(2**62, (1,), generator=g, device=g.device))
    return torch.Generator().manual_seed(seed)


def _given(given_codes, B: int, plan: VideoPlan, codebook_size: int) -> torch.Tensor | None:
    if given_codes is None:
        return None
    c = torch.as_tensor(given_codes).long()
    c = c.unsqueeze(0).expand(B, *c.shape) if c.dim() == 3 else c
    if c.dim() != 4 or c.shape[0] != B or tuple(c.shape[2:]) != plan.grid:
        raise ValueError(f"given_codes must be [G, h, w] or [B={B}, G, h, w] with grid {plan.grid}, "
                         f"got {tuple(torch.as_tensor(given_codes).shape)}")
    if int(c.min()) < 0 or int(c.max()) >= codebook_size:
        raise ValueError(f"given_codes must lie in [0, {codebook_size})")
    return c


class SamplingStopped(RuntimeError):
    """Raised by the sampler when its ``should_stop`` callback returns True (checked before every step)."""


class ARDFRun:
    """One generation: the state between frames. Use :func:`generate` / :func:`iter_generate`."""

    should_stop: Callable[[], bool] | None = None
    """Called before every unmasking step; True abandons the run with :class:`SamplingStopped` (deadlines)."""

    def __init__(self, model: LumosModel, prompts: Sequence[Sequence[int]], plan: VideoPlan, cfg: SamplerConfig,
                 given_codes=None, generator=None, progress: bool = False):
        if len(prompts) < 1:
            raise ValueError("prompts: need at least one prompt")
        cfg = cfg.with_defaults()
        self.model, self.plan, self.cfg, self.layout = model, plan, cfg, model.layout
        self.B = len(prompts)
        self.device = model.lm_head.weight.device
        self.gens = _generators(generator, self.B, self.device)
        self.given = _given(given_codes, self.B, plan, self.layout.codebook_size)
        if (self.given is None) != (plan.given == 0) or (self.given is not None and self.given.shape[1] != plan.given):
            raise ValueError(f"given_codes must hold exactly plan.given={plan.given} frames")
        self.g = cfg.guidance(plan.image)
        cond = [prompt_sequence(self.layout, [int(t) for t in p], duration=plan.duration, fps=plan.fps)
                for p in prompts]
        uncond = None
        if cfg.use_cfg:
            uncond = [prompt_sequence(self.layout, None, duration=plan.duration, fps=plan.fps)] * self.B
        self.branches = Branches(model, cond, uncond, cfg.use_kv_cache, cfg.fuse_branches)
        self.history = self._history_positions()
        self.tau = NoiseTemperature(cfg.gumbel_tau, cfg.upstream_tau_decay)
        self.bar = tqdm(total=(plan.num_frames - plan.given) * cfg.steps, disable=not progress, unit="step",
                        desc="AR-DF", leave=False)
        self.seconds = 0.0

    def _history_positions(self) -> torch.Tensor:
        """int64 [B, K] positions (within a frame's content span) masked in committed frames, fixed per video."""
        h, w = self.plan.grid
        n = h * (w + 1)
        if self.cfg.history_mode == "even":
            return history_indices(n, self.cfg.history_ratio).expand(self.B, -1)
        return torch.stack([history_indices(n, self.cfg.history_ratio, "random", _cpu_generator(g))
                            for g in self.gens])

    def committed_frame(self, tmpl: FrameTemplate, codes: torch.Tensor, history_mask: bool = True):
        """The segment fed to the caches for frame codes [B, h, w]: history positions replaced by MASK (unless
        ``history_mask`` is false)."""
        seg = tmpl.segment(codes.reshape(self.B, -1).to(torch.long) + self.layout.visual_offset)
        if history_mask:
            rows = torch.arange(self.B).unsqueeze(1)  # (B, 1)
            seg.ids[rows, tmpl.span[self.history]] = self.layout.mask
        return seg

    def frames(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (frame index, codes int64 [B, h, w]) for every frame as it is committed (given frames first)."""
        for f in range(self.plan.given):
            self.branches.queue(self.committed_frame(frame_template(self.layout, self.plan.grid, f),
                                                     self.given[:, f], bool(self.cfg.mask_given_frames)))
            yield f, self.given[:, f].clone()
        for f in range(self.plan.given, self.plan.num_frames):
            t0 = time.perf_counter()
            with torch.inference_mode():  # entered per frame: the consumer's code between yields runs normally
                tmpl = frame_template(self.layout, self.plan.grid, f)
                codes = self.sample_frame(tmpl)
                self.branches.commit(self.committed_frame(tmpl, codes), outputs=False)
            self.seconds += time.perf_counter() - t0
            yield f, codes.clone()
        self.bar.close()

    def sample_frame(self, tmpl: FrameTemplate) -> torch.Tensor:
        """Unmask one frame in S steps; returns codes int64 [B, h, w] (CPU)."""
        h, w = self.plan.grid
        tokens = torch.full((self.B, h * w), self.layout.mask, dtype=torch.long, device=self.device)  # (B, N)
        masked = torch.ones(self.B, h * w, dtype=torch.bool, device=self.device)
        self.tau.start_frame()
        self.bar.set_postfix(frame=f"{tmpl.index + 1}/{self.plan.num_frames}", refresh=False)
        for s in range(self.cfg.steps):
            if self.should_stop is not None and self.should_stop():
                raise SamplingStopped(f"stopped before step {s} of latent frame {tmpl.index}")
            hidden_c, hidden_u = self.branches.peek(tmpl.segment(tokens))
            self.unmask_step(tokens, masked, hidden_c, hidden_u, tmpl, s, self.tau.for_step(s, self.cfg.steps))
            self.bar.update(1)
        return (tokens - self.layout.visual_offset).view(self.B, h, w).cpu()

    def unmask_step(self, tokens: torch.Tensor, masked: torch.Tensor, hidden_c: torch.Tensor,
                    hidden_u: torch.Tensor | None, tmpl: FrameTemplate, step: int, tau: float) -> None:
        """One MaskGIT step in place on ``tokens`` / ``masked`` [B, N] from pre-norm hidden states [B, Lf, D];
        ``tau`` is the Gumbel temperature of this step's confidence."""
        B, N = tokens.shape
        idx = masked.nonzero()[:, 1].view(B, -1)  # (B, M) still-masked content indices, ascending
        pos = tmpl.content.to(self.device)[idx]  # (B, M) positions within the frame
        gather = pos.unsqueeze(-1).expand(-1, -1, hidden_c.shape[-1])  # (B, M, D)
        lc = self.branches.logits(hidden_c.gather(1, gather))  # (B, M, C)
        lu = None if hidden_u is None else self.branches.logits(hidden_u.gather(1, gather))
        logits = filter_logits(guided_logits(lc, lu, self.g), self.cfg.temperature, self.cfg.top_k)
        m = keep_masked_count(N, step, self.cfg.steps, idx.shape[1])
        for b in range(B):
            x, logp = sample_tokens(logits[b], self.gens[b])  # (M,), (M,)
            conf = logp + tau * gumbel_noise(x.numel(), self.gens[b], self.device)
            accept = torch.ones_like(x, dtype=torch.bool)
            accept[remask_lowest(conf, m)] = False
            tokens[b, idx[b, accept]] = x[accept] + self.layout.visual_offset
            masked[b, idx[b, accept]] = False

    def stats(self) -> dict:
        return {**self.branches.stats(), "frames": self.plan.num_frames, "given_frames": self.plan.given,
                "steps": self.cfg.steps, "guidance": self.g if self.cfg.use_cfg else None, "rows": self.B,
                "seconds": self.seconds}


def iter_generate(model: LumosModel, prompts: Sequence[Sequence[int]], plan: VideoPlan,
                  cfg: SamplerConfig | None = None, *, given_codes=None, generator=None, progress: bool = False,
                  stats: dict | None = None, should_stop: Callable[[], bool] | None = None
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """Generate frame by frame, yielding (f, codes int64 [B, h, w]) as each frame is committed.

    Same arguments as :func:`generate`; ``stats``, if given, is filled in when the iterator is exhausted.
    """
    run = ARDFRun(model, prompts, plan, cfg or SamplerConfig(), given_codes, generator, progress)
    run.should_stop = should_stop
    yield from run.frames()
    if stats is not None:
        stats.update(run.stats())


def generate(model: LumosModel, prompts: Sequence[Sequence[int]], plan: VideoPlan, cfg: SamplerConfig | None = None,
             *, given_codes=None, generator=None, on_frame: Callable[[int, torch.Tensor], None] | None = None,
             progress: bool = False, should_stop: Callable[[], bool] | None = None) -> GenerationResult:
    """Sample videos (or images) for B prompts with AR-DF.

    Args:
        model: the backbone (eval mode).
        prompts: B lists of text ids (no BOS), e.g. from :func:`encode_prompt`.
        plan: frames, fps/duration tokens, grid, given frames (:func:`plan_video`).
        cfg: sampler settings.
        given_codes: I2V frames, int [G, h, w] (shared) or [B, G, h, w], G = ``plan.given``.
        generator: one ``torch.Generator`` (shared by all rows, in row order) or a list of B (row b uses the b-th:
            then a batch equals its rows generated one by one); on the model's device. Default: seed 0.
        on_frame: called with (f, codes int64 [B, h, w]) for every committed frame, given frames included.
        progress: show a tqdm bar over frames × steps.
        should_stop: called before every unmasking step; when it returns True the generation stops with
            :class:`SamplingStopped` (a deadline nobody waits for any more: stops within one step).

    Returns:
        :class:`GenerationResult` with codes int64 [B, F, h, w] and stats.
    """
    stats: dict = {}
    frames = []
    for f, codes in iter_generate(model, prompts, plan, cfg, given_codes=given_codes, generator=generator,
                                  progress=progress, stats=stats, should_stop=should_stop):
        frames.append(codes)
        if on_frame is not None:
            on_frame(f, codes)
    return GenerationResult(torch.stack(frames, dim=1), stats)


__all__ = ["GenerationResult", "HISTORY_MODES", "IMAGE_CFG", "MODES", "RECORDED_KEYS", "SamplerConfig", "SamplingStopped",
           "UPSTREAM_DEFAULTS", "VIDEO_CFG", "VideoPlan", "encode_prompt", "generate", "iter_generate", "plan_video"]
