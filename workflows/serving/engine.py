"""The sampler behind the HTTP API, without Ray (LUMOS_SPEC §8; DESIGN §4.6): runs validated :class:`Job`\\ s on
a checkpoint loaded once.

Batching: jobs with the same :meth:`Job.batch_key` (mode, size, frames, steps, guidance) become the rows of one
:meth:`workflows.generation.GenerationBundle.sample` call. Every row has its own ``torch.Generator`` seeded with the
job's seed (the one seed rule of :mod:`workflows.generation`, a request being item 0), so a batched row equals the
same request served alone (and ``python -m workflows.generate --seed`` with the same settings). I2V images are
encoded one by one, as the CLI does.

Streaming: :meth:`SamplerEngine.stream` decodes the committed latent frames as they come. The video tokenizer is
causal in time, so decoding frames ``0..f`` gives exactly the first ``1 + 4f`` RGB frames of the final video; each
event carries the RGB frames that latent frame ``f`` adds (1 for frame 0, then 4).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lumos.config import PRESETS, ModelConfig
from lumos.flops import num_params
from lumos.media import encode_video
from lumos.sampler import SamplerConfig, SamplingStopped, VideoPlan
from tokenize_jobs.cli import first_line
from workflows.generation import GenerationBundle, VideoSpec, item_seed, load_generator
from workflows.serving.jobs import Job, JobResult

log = logging.getLogger("workflows.serve")


class Stopped(RuntimeError):
    """Raised inside the sampler's frame callback to abandon a generation nobody waits for any more."""


TIMEOUT_MESSAGE = "request timed out (timeout_s, at most limits.request_timeout_s)"


@dataclass
class ModelInfo:
    """What ``GET /v1/models`` tells about a checkpoint (read from config.json only, no weights)."""

    checkpoint: str
    preset: str
    params: int
    model: dict
    layout: str
    codebook_size: int
    spatial: int
    """Pixels per latent cell (the video tokenizer's spatial compression)."""
    size_unit: int
    """Width and height must be multiples of this (spatial compression × vocab grid unit)."""
    resolution: tuple[int, int]
    """Default (width, height)."""
    max_seq_len: int
    max_number: int
    """Largest fps / duration the vocabulary's number tokens can say."""
    sampling: dict = field(default_factory=dict)
    """The checkpoint's sampler defaults (config.json ``sampling``: steps, cfg_scale, temperature, fps, duration,
    mask_given_frames)."""


def preset_name(cfg: ModelConfig) -> str:
    """The named preset whose architecture ``cfg`` has, else ``custom``."""
    for name, fields in PRESETS.items():
        if all(getattr(cfg, k) == v for k, v in fields.items() if k != "activation_checkpointing"):
            return name
    return "custom"


def model_info(checkpoint: str) -> ModelInfo:
    """Read a checkpoint's config.json (local or s3://) into a :class:`ModelInfo`.

    Raises:
        ValueError: the checkpoint has no readable config.json (one line).
    """
    from lumos.checkpoint import read_config

    try:
        cfg, meta = read_config(checkpoint)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read checkpoint {checkpoint}: {type(e).__name__}: {e}") from None
    layout = cfg.layout
    unit = cfg.spatial_compression * layout.grid_unit
    res = meta.get("resolution") or [64, 64]
    return ModelInfo(checkpoint=checkpoint, preset=preset_name(cfg), params=num_params(cfg), model=cfg.to_dict(),
                     layout=layout.name, codebook_size=cfg.codebook_size,
                     spatial=cfg.spatial_compression, size_unit=unit,
                     resolution=(int(res[0]), int(res[1])), max_seq_len=cfg.max_seq_len,
                     max_number=int(layout.num_max), sampling=dict(meta.get("sampling") or {}))


def png_base64(frame: np.ndarray) -> str:
    """One uint8 [H, W, 3] frame as base64 PNG text."""
    return base64.b64encode(encode_video(frame, format="png")).decode("ascii")


class SamplerEngine:
    """A loaded checkpoint that runs jobs (see the module docstring)."""

    def __init__(self, bundle: GenerationBundle, sampler: SamplerConfig | None = None):
        self.bundle = bundle
        self.sampler = sampler or SamplerConfig()
        """The service's sampler settings; each job sets ``steps`` and ``cfg_scale``."""

    @classmethod
    def load(cls, checkpoint: str, tokenizer: str | None = None, device: str | None = None,
             sampler: SamplerConfig | None = None) -> SamplerEngine:
        """Load model + tokenizers of a checkpoint (local or s3://) once."""
        return cls(load_generator(checkpoint, device, tokenizer), sampler)

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    def run(self, jobs: list[Job]) -> list[JobResult]:
        """Run jobs, grouping compatible ones into batched sampler calls; results in the order of ``jobs``.

        A job already past its deadline when its group is about to start is answered 504 without sampling; a
        group whose jobs all pass their deadlines stops before its next unmasking step.
        """
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.batch_key(), []).append(i)
        results: list[JobResult | None] = [None] * len(jobs)
        for rows in groups.values():
            now = time.time()
            late = [i for i in rows if jobs[i].deadline is not None and jobs[i].deadline <= now]
            for i in late:
                results[i] = JobResult(error=TIMEOUT_MESSAGE, status=504, rows=0)
            rows = [i for i in rows if i not in late]
            if late:
                log.info("dropped %d request(s) past their deadline before sampling", len(late))
            if not rows:
                continue
            group = [jobs[i] for i in rows]
            for i, res in zip(rows, self.run_group(group, should_stop=_all_late(group))):
                results[i] = res
        return results  # type: ignore[return-value]

    def run_group(self, jobs: list[Job], on_frame: Callable[[int, torch.Tensor], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[JobResult]:
        """One batched sampler call for jobs with equal batch keys; errors become per-job results."""
        t0 = time.perf_counter()
        try:
            codes, frames, plan = self._generate(jobs, on_frame, should_stop)
        except (Stopped, SamplingStopped) as e:
            log.info("sampler batch of %d abandoned: %s", len(jobs), e)
            return [JobResult(error=TIMEOUT_MESSAGE, status=504, rows=len(jobs)) for _ in jobs]
        except ValueError as e:
            return [JobResult(error=first_line(e), status=422, rows=len(jobs)) for _ in jobs]
        except Exception as e:  # one bad batch must not take the replica down
            log.exception("sampler batch of %d failed", len(jobs))
            return [JobResult(error=f"sampler failed: {first_line(e)}", status=500, rows=len(jobs)) for _ in jobs]
        seconds = time.perf_counter() - t0
        return [JobResult(codes=codes[b], frames=frames[b], fps=plan.fps, rows=len(jobs), seconds=seconds)
                for b in range(len(jobs))]

    def _generate(self, jobs: list[Job], on_frame, should_stop) -> tuple[np.ndarray, np.ndarray, VideoPlan]:
        """codes int64 [B, F, h, w], frames uint8 [B, N, H, W, 3] and the plan of a batch."""
        first = jobs[0]
        images = [j.image[None] for j in jobs] if first.mode == "i2v" else None  # one [1, H, W, 3] clip per row

        def frame_done(f: int, codes: torch.Tensor) -> None:
            if should_stop is not None and should_stop():
                raise Stopped(f"stopped after latent frame {f}")
            if on_frame is not None:
                on_frame(f, codes)

        res = self.bundle.sample([j.prompt for j in jobs], VideoSpec(first.mode, first.width, first.height,
                                                                     frames=first.frames),
                                 replace(self.sampler, steps=first.steps, cfg_scale=first.cfg_scale),
                                 [item_seed(j.seed, 0) for j in jobs], images, on_frame=frame_done,
                                 should_stop=should_stop)
        return res.codes.cpu().numpy(), self.bundle.decode(res.codes), res.plan

    def stream(self, job: Job, emit: Callable[[dict], None],
               should_stop: Callable[[], bool] | None = None) -> JobResult:
        """Run one job, calling ``emit`` with a ``frame`` event as every latent frame is committed.

        An event is ``{"event": "frame", "latent_frame": f, "first_frame": i, "images": [base64 PNG, ...],
        "committed_at": time.time()}`` with the RGB frames i, i+1, ... that frame f adds.
        """
        committed: list[torch.Tensor] = []
        sent = 0

        def on_frame(f: int, codes: torch.Tensor) -> None:
            nonlocal sent
            committed.append(codes[0])
            with torch.inference_mode():
                video = self.bundle.video_tokenizer.decode(torch.stack(committed)).cpu().numpy()  # (n, H, W, 3)
            emit({"event": "frame", "latent_frame": f, "first_frame": sent,
                  "images": [png_base64(x) for x in video[sent:]], "committed_at": time.time()})
            sent = video.shape[0]

        stop = should_stop or _all_late([job])
        return self.run_group([job], on_frame=on_frame, should_stop=stop)[0]


def _all_late(jobs: list[Job]) -> Callable[[], bool]:
    """True once every job of a group is past its deadline (nobody waits for the batch any more)."""
    deadlines = [j.deadline for j in jobs]
    if any(d is None for d in deadlines):
        return lambda: False
    last = max(deadlines)
    return lambda: time.time() > last


__all__ = ["ModelInfo", "SamplerEngine", "Stopped", "TIMEOUT_MESSAGE", "model_info", "png_base64", "preset_name"]
