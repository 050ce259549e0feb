"""Generation from a checkpoint: the one code path behind ``workflows.generate``, ``workflows.eval``,
``workflows.bench_sets``, ``workflows.demo``, ``workflows.ablate`` and the Serve engine (LUMOS_SPEC §8).

Usage::

    gen = load_generator("runs/demo/final")                        # model + video/text tokenizers, once
    spec = VideoSpec("t2v", width=64, height=64, frames=3)
    out = gen.sample(["a red circle moving right"], spec, SamplerConfig(steps=16), seeds=[item_seed(0, 0)])
    videos = gen.decode(out.codes)                                 # uint8 [B, N, H, W, 3]

**The seed rule.** Row ``b`` of a :meth:`GenerationBundle.sample` call samples with its own ``torch.Generator``
(on the model's device) seeded with ``seeds[b]``, so a row's result does not depend on the batch it ran in. Every
tool derives the seed of its item ``index`` from its ``--seed`` with :func:`item_seed` = ``seed + index``: prompt
``i`` of ``workflows.generate``, held-out prompt ``i`` of an eval suite, sample ``j`` of benchmark prompt ``i``
(item ``i·samples + j``), the ``k``-th demo mode; a Serve request's ``seed`` is used as is (item 0). So the same
prompt and settings give the same codes from ``workflows.generate --seed S``, a request with ``"seed": S`` and eval
item ``i`` run with ``--seed S - i``.

**Sampler settings** are a :class:`lumos.sampler.SamplerConfig`; its unset (``None``) steps / cfg_scale /
temperature come from the checkpoint's recorded ``sampling`` entry (config.json), then a tool's own fallbacks,
then upstream's defaults (:meth:`GenerationBundle.sampler_config`).

**Images** (I2V) are uint8 arrays at the output size: one clip [G, H, W, 3] shared by every row, or one clip per
row ([B, G, H, W, 3] or a list); each clip is encoded alone by the checkpoint's video tokenizer and becomes the
first G latent frames, kept exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenize_jobs.cli import first_line

if TYPE_CHECKING:  # torch and the model load lazily: CLIs answer --help and argument errors at once
    import numpy as np
    import torch

    from lumos.sampler import SamplerConfig, VideoPlan


class UsageError(ValueError):
    """A bad argument or an unreadable checkpoint (a command line exits with status 2 and this one line)."""


def item_seed(seed: int, index: int) -> int:
    """The seed of item ``index`` of a run seeded ``seed`` (the module's one seed rule): ``seed + index``."""
    return int(seed) + int(index)


@dataclass(frozen=True)
class VideoSpec:
    """What to generate: mode, output size in pixels, and the frame count / fps / duration tokens (``None`` = the
    checkpoint's recorded ``sampling`` fps / duration, else the sampler's 12 fps × 2 s; frames 1 +
    ceil((fps·duration − 1)/4) latent frames; t2i: one frame)."""

    mode: str
    width: int
    height: int
    frames: int | None = None
    fps: int | None = None
    duration: int | None = None


@dataclass
class Samples:
    """Output of :meth:`GenerationBundle.sample`.

    Attributes:
        codes: int64 [B, F, h, w] codebook indices (given I2V frames included, unchanged).
        plan: the :class:`lumos.sampler.VideoPlan` that was sampled (its ``fps`` is the playback rate).
        stats: the sampler's stats (forward passes per branch, steps, guidance, seconds).
    """

    codes: torch.Tensor
    plan: VideoPlan
    stats: dict


@dataclass
class GenerationBundle:
    """Everything generation needs from a checkpoint: model, vocabulary, tokenizers (see the module docstring)."""

    model: torch.nn.Module  # LumosModel
    model_cfg: object
    meta: dict
    video_tokenizer: object
    text_tokenizer: object
    device: torch.device

    @property
    def layout(self):
        return self.model.layout

    @property
    def spatial(self) -> int:
        return int(getattr(self.video_tokenizer, "spatial_compression", 8))

    def size(self, width: int | None = None, height: int | None = None) -> tuple[int, int]:
        """(width, height) in pixels: the given ones, else the checkpoint's ``resolution`` [W, H] entry, else 64."""
        default = self.meta.get("resolution") or [64, 64]
        return int(width or default[0]), int(height or default[1])

    def sampler_config(self, sampler: SamplerConfig, *fallbacks: dict) -> SamplerConfig:
        """``sampler`` with its unset steps / cfg_scale / temperature from the checkpoint's ``sampling`` entry,
        then ``fallbacks`` (a tool's own defaults), then upstream's."""
        return sampler.with_defaults(self.meta.get("sampling"), *fallbacks)

    def plan(self, spec: VideoSpec, given: int = 0) -> VideoPlan:
        """The :class:`lumos.sampler.VideoPlan` of ``spec`` with ``given`` I2V latent frames.

        Raises:
            ValueError: a size, frame count or fps/duration this checkpoint cannot generate (one line).
        """
        from lumos.sampler import plan_video

        recorded = self.meta.get("sampling") or {}  # the checkpoint's video fps / duration when spec leaves them out
        fps = spec.fps if spec.fps is not None else recorded.get("fps")
        duration = spec.duration if spec.duration is not None else recorded.get("duration")
        plan = plan_video(spec.mode, latent_grid(self, spec.width, spec.height), frames=spec.frames, fps=fps,
                          duration=duration, given=given)
        if max(plan.fps, plan.duration) > self.layout.num_max:
            raise ValueError(f"fps/duration must be <= {self.layout.num_max} for layout {self.layout.name}, "
                             f"got {plan.fps}/{plan.duration}")
        return plan

    def encode_images(self, images) -> torch.Tensor | None:
        """I2V clips as codes: one shared clip uint8 [G, H, W, 3] → int64 [G, h, w]; one clip per row → int64
        [B, G, h, w] (each encoded alone, so a row does not depend on its batch)."""
        import numpy as np
        import torch

        if images is None:
            return None
        with torch.inference_mode():
            if isinstance(images, np.ndarray) and images.ndim == 4:
                return self.video_tokenizer.encode(images).long()
            return torch.stack([self.video_tokenizer.encode(np.asarray(clip)).long() for clip in images])

    def sample(self, prompts: Sequence[str], spec: VideoSpec, sampler: SamplerConfig, seeds: Sequence[int],
               images=None, *, progress: bool = False, on_frame: Callable[[int, torch.Tensor], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> Samples:
        """Sample one batch: row ``b`` is ``prompts[b]`` with ``torch.Generator().manual_seed(seeds[b])``.

        Args:
            prompts: B captions (one grid and plan for all).
            spec: mode, size and frames (:class:`VideoSpec`).
            sampler: sampler settings; unset ones resolved by :meth:`sampler_config`.
            seeds: B seeds (derive them with :func:`item_seed`).
            images: I2V clips (see :meth:`encode_images`); ``None`` for t2i/t2v.
            progress, on_frame, should_stop: as :func:`lumos.sampler.generate`.

        Raises:
            ValueError: a spec this checkpoint cannot generate, or seeds that do not match the prompts.
        """
        import torch

        from lumos.sampler import encode_prompt, generate

        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        given = self.encode_images(images)
        plan = self.plan(spec, given=0 if given is None else given.shape[-3])
        ids = [encode_prompt(self.text_tokenizer, self.layout, p, plan, self.spatial) for p in prompts]
        generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        res = generate(self.model, ids, plan, self.sampler_config(sampler), given_codes=given, generator=generators,
                       on_frame=on_frame, progress=progress, should_stop=should_stop)
        return Samples(res.codes, plan, res.stats)

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Codes int64 [..., F, h, w] → uint8 [..., N, H, W, 3] pixels, all latent frames of a clip jointly."""
        import torch

        with torch.inference_mode():
            return self.video_tokenizer.decode(codes).cpu().numpy()


def tokenizer_uri(checkpoint: str, meta: dict, override: str | None = None) -> str:
    """The video tokenizer of a checkpoint: ``override``, else config.json's ``video_tokenizer`` (relative paths
    are relative to the checkpoint directory)."""
    uri = override or meta.get("video_tokenizer")
    if not uri:
        raise UsageError(f"checkpoint {checkpoint} names no video tokenizer in config.json; pass --tokenizer URI")
    from lumos.checkpoint import resolve_ref

    return resolve_ref(checkpoint, uri)


def load_generator(checkpoint: str, device: str | torch.device | None = None,
                   tokenizer: str | None = None) -> GenerationBundle:
    """Load model + video/text tokenizers of a checkpoint directory (local, s3:// or a committed name).

    Raises:
        UsageError: the checkpoint or its tokenizer cannot be read (one line).
    """
    import torch

    from lumos.checkpoint import load_checkpoint, resolve_ref
    from lumos.tokenizers import load_text_tokenizer, load_video_tokenizer

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model, cfg, meta = load_checkpoint(checkpoint, device)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read checkpoint {checkpoint}: {first_line(e, with_type=True)}") from None
    uri = tokenizer_uri(checkpoint, meta, tokenizer)
    try:
        video_tok = load_video_tokenizer(uri, device)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read video tokenizer {uri}: {first_line(e, with_type=True)}") from None
    if video_tok.codebook_size != cfg.codebook_size:
        raise UsageError(f"video tokenizer {uri} has {video_tok.codebook_size} codes, the model expects "
                         f"{cfg.codebook_size}")
    try:
        text_ref = meta.get("text_tokenizer")
        text_tok = load_text_tokenizer(resolve_ref(checkpoint, text_ref) if text_ref else None, model.layout)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read text tokenizer of {checkpoint}: {first_line(e, with_type=True)}") from None
    return GenerationBundle(model, cfg, meta, video_tok, text_tok, device)


def latent_grid(gen: GenerationBundle, width: int, height: int) -> tuple[int, int]:
    """Latent (h, w) for a pixel size; sizes must be multiples of spatial compression × grid unit."""
    unit = gen.spatial * gen.layout.grid_unit
    if width < unit or height < unit or width % unit or height % unit:
        raise UsageError(f"--width/--height must be positive multiples of {unit} pixels for this checkpoint, "
                         f"got {width}x{height}")
    return height // gen.spatial, width // gen.spatial


def read_images(paths: list[str], width: int, height: int) -> np.ndarray:
    """I2V image files (local or s3://) resized + centre-cropped to width×height: one clip uint8 [G, H, W, 3]."""
    import numpy as np

    from lumos.buckets import resize_center_crop
    from lumos.media import read_image

    frames = []
    for path in paths:
        try:
            frames.append(resize_center_crop(read_image(path), (width, height)))
        except (OSError, ValueError) as e:
            raise UsageError(f"--image {path}: {first_line(e, with_type=True)}") from None
    return np.stack(frames)


__all__ = ["GenerationBundle", "Samples", "UsageError", "VideoSpec", "item_seed", "latent_grid", "load_generator",
           "read_images", "tokenizer_uri"]
