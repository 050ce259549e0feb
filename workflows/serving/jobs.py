"""What travels between the ingress and the sampler deployment: a validated :class:`Job` and its
:class:`JobResult` (plain dataclasses of numbers and numpy arrays, cheap to pickle through Ray's object store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Job:
    """One validated generation request.

    Attributes:
        prompt: caption text.
        mode: ``t2i``, ``t2v`` or ``i2v``.
        frames: latent frames in total (t2i: 1; i2v: the given image is frame 0).
        steps: unmasking steps per latent frame.
        cfg_scale: guidance scale (``None`` = upstream default for the mode).
        seed: seed of this row's own ``torch.Generator`` (a batched row equals the same request run alone).
        width, height: output size in pixels (multiples of the checkpoint's size unit).
        image: i2v input, uint8 [height, width, 3] already resized + centre-cropped; else ``None``.
        deadline: wall-clock time (``time.time()``) after which nobody waits for the result.
    """

    prompt: str
    mode: str
    frames: int
    steps: int
    cfg_scale: float | None
    seed: int
    width: int
    height: int
    image: np.ndarray | None = None
    deadline: float | None = None

    def batch_key(self) -> tuple:
        """Jobs with equal keys run as rows of one batched sampler call."""
        return (self.mode, self.height, self.width, self.frames, self.steps, self.cfg_scale)


@dataclass
class JobResult:
    """Output of one job.

    Attributes:
        codes: int64 [F, h, w] codebook indices (``None`` on error).
        frames: uint8 [N, H, W, 3] decoded video, N = 1 + 4·(F − 1) (``None`` on error).
        fps: playback rate (the prompt's fps token; 1 for t2i).
        rows: rows of the batched sampler call that produced it.
        seconds: wall time of that sampler call (generation + decoding).
        error: one-line message when ``status`` is not 200.
        status: HTTP status to answer with.
    """

    codes: np.ndarray | None = None
    frames: np.ndarray | None = None
    fps: int = 1
    rows: int = 1
    seconds: float = 0.0
    error: str | None = None
    status: int = 200


__all__ = ["Job", "JobResult"]
