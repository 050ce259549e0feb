"""The tokenization job's settings (:mod:`tokenize_jobs.video`): one typed config, checked where it is built.

``python -m tokenize_jobs.video`` parses its flags onto :class:`TokenizeJobConfig` (one field per flag, same name,
and the parser takes its defaults from here); Python callers build one directly::

    run_job(TokenizeJobConfig(manifest="data/manifest.jsonl", out="runs/shards", fps=8, decode_concurrency="1,4"))

A bad value raises ``ValueError`` with one line naming the flag (the CLI prints it as its usage error, status 2).
"""

from __future__ import annotations

import operator
import os
from dataclasses import MISSING, dataclass, fields

from lumos import storage
from tokenize_jobs.decode import ClipSettings

Pool = tuple[int, int | None]
"""An actor pool's ``(MIN, MAX)``; MAX ``None`` = auto (sized from the cluster's resources at start)."""

LAYOUTS = ("compact", "chameleon")
STAGES = ("auto", "split", "fused")
NUM_GPUS = ("auto", "0", "1")


@dataclass(kw_only=True)
class TokenizeJobConfig:
    """Everything one tokenization job run is given; ``__post_init__`` checks and normalises it."""

    manifest: str
    """JSONL/CSV/Parquet manifest URI (columns ``path``, ``caption``, ...); relative paths in it are relative to it."""
    out: str
    """Output directory URI (local path or ``s3://``); made absolute."""
    tokenizer: str | None = None
    """Video tokenizer directory URI (``None``: the committed ``small`` tokenizer); made absolute."""
    layout: str = "compact"
    """Vocabulary layout: ``compact`` or ``chameleon``."""
    text_tokenizer: str | None = None
    """HF tokenizer JSON URI (required for ``chameleon``); made absolute."""
    # How clips are cut and sized: the defaults (and meanings) of tokenize_jobs.decode.ClipSettings.
    fps: int = ClipSettings.fps
    seconds: float = ClipSettings.seconds
    clip_policy: str = ClipSettings.clip_policy
    max_clips: int = ClipSettings.max_clips
    target_size: int = ClipSettings.target_size
    patch: int = ClipSettings.patch
    max_resolution: int = ClipSettings.max_resolution
    timeout: float = ClipSettings.timeout_s
    """ClipSettings.timeout_s: seconds per decode step (open a file, read a clip) before the child is killed."""
    max_text_tokens: int = 1024
    """Longer prompts are truncated (0 = no limit)."""
    batch_size: int = 8
    """Clips per tokenizer call."""
    stages: str = "auto"
    """``split``: a CPU decode pool feeding a tokenizer pool; ``fused``: one pool of actors that decode and tokenize;
    ``auto``: split when the tokenizer gets GPUs, else fused."""
    decode_concurrency: Pool | str = "1,auto"
    """Decode (or fused) actor pool ``"MIN"``, ``"MIN,MAX"``, ``"MIN,auto"`` or ``(MIN, MAX or None)``; a
    :data:`Pool` after init. auto: the CPUs the tokenizer pool leaves, or all CPUs when fused."""
    tokenize_concurrency: Pool | str = "1,auto"
    """Tokenizer actor pool, as ``decode_concurrency`` (split stages only). auto: the number of GPUs, or the CPUs
    decoding leaves."""
    decode_cpus: float = 1.0
    """CPUs per decode (or fused) actor; also its decoder threads."""
    tokenize_cpus: float = 1.0
    """CPUs per tokenizer actor (split stages)."""
    num_gpus: str = "auto"
    """GPUs per tokenizer actor: ``auto`` (1 if the cluster has GPUs), ``0`` or ``1`` (ints are accepted)."""
    rows_per_file: int = 1024
    """Clips per shard file."""
    retry_errors: bool = False
    """On a rerun, also retry the inputs and clips that failed before (e.g. a file that was missing)."""

    def __post_init__(self) -> None:
        self.manifest = os.fspath(self.manifest)
        for name in ("out", "tokenizer", "text_tokenizer"):  # Ray workers do not share the driver's cwd
            value = getattr(self, name)
            setattr(self, name, storage.absolute(None if value is None else os.fspath(value)))
        for name in ("seconds", "timeout", "decode_cpus", "tokenize_cpus"):  # seconds=2 hashes as the CLI's 2.0
            setattr(self, name, float(getattr(self, name)))
        self.decode_concurrency = _pool(self.decode_concurrency, "--decode-concurrency")
        self.tokenize_concurrency = _pool(self.tokenize_concurrency, "--tokenize-concurrency")
        self.num_gpus = str(self.num_gpus)
        _check(self.num_gpus in NUM_GPUS, "--num-gpus must be auto, 0 or 1")
        _check(self.batch_size >= 1, "--batch-size must be >= 1")
        _check(self.rows_per_file >= 1, "--rows-per-file must be >= 1")
        _check(self.max_text_tokens >= 0, "--max-text-tokens must be >= 0")
        _check(self.layout in LAYOUTS, f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        _check(self.stages in STAGES, f"--stages must be one of {', '.join(STAGES)}, got {self.stages!r}")
        self.clip_settings  # noqa: B018 -- ClipSettings checks fps, seconds, clip_policy, ... (its one-line message)

    @property
    def clip_settings(self) -> ClipSettings:
        """How clips are cut and sized (decoder threads follow ``decode_cpus``)."""
        return ClipSettings(fps=self.fps, seconds=self.seconds, clip_policy=self.clip_policy,
                            max_clips=self.max_clips, target_size=self.target_size, patch=self.patch,
                            max_resolution=self.max_resolution, timeout_s=self.timeout,
                            threads=max(1, int(self.decode_cpus)))


def defaults() -> dict:
    """The defaults of :class:`TokenizeJobConfig` by field name (what the CLI shows and uses)."""
    return {f.name: f.default for f in fields(TokenizeJobConfig) if f.default is not MISSING}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _pool(value: Pool | str, flag: str) -> Pool:
    """``"2"`` → (2, 2); ``"1,4"`` or ``(1, 4)`` → (1, 4); ``"1,auto"`` or ``(1, None)`` → (1, None)."""
    try:
        lo, hi = _parse_pool(value)
        if lo >= 1 and (hi is None or hi >= lo):
            return lo, hi
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{flag} must be MIN or MIN,MAX (MAX >= MIN >= 1, or auto)")


def _parse_pool(value: Pool | str) -> Pool:
    if isinstance(value, str):
        lo, _, hi = value.partition(",")
        return int(lo), None if hi.strip() == "auto" else int(hi or lo)
    lo, hi = value
    return operator.index(lo), None if hi is None else operator.index(hi)
