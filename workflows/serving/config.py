"""Settings of the HTTP sampler (DESIGN §4.6): request limits and defaults, sampler, batching, scaling, auth.

One :class:`ServeConfig` (its ``sampler`` a :class:`lumos.sampler.SamplerConfig`) is built from defaults ← an
optional YAML file ← overrides, through :mod:`workflows.config_io` (unknown key = error). The same dataclass backs ``python -m workflows.serve`` (flags +
``key.sub=value`` overrides) and ``workflows.serve:build_app(args)`` (the ``args`` of a ``serve run`` config or a
KubeRay RayService: ``{checkpoint: ..., config: FILE, limits: {...}, ...}``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lumos.sampler import SamplerConfig
from workflows.config_io import ConfigError, build_dataclass, load_config, merge

TOKEN_ENV = "LUMOS_API_TOKEN"


@dataclass(kw_only=True)
class Limits:
    """What a request may ask for; checked in the ingress before any work (4xx otherwise)."""

    max_prompt_chars: int = 1000
    """Longest prompt, in characters."""
    max_frames: int = 8
    """Most latent frames per video (output frames = 1 + 4·(F − 1))."""
    max_steps: int = 100
    """Most unmasking steps per latent frame."""
    max_token_steps: int = 2_000_000
    """Most work per request: generated latent frames × steps × tokens per latent frame (h·w of the latent
    grid). The default admits e.g. 7 frames × 50 steps at 512×512 (64×64 latent tokens) on an 8× tokenizer, and
    refuses the same at 1024×1024; so one request cannot hold a replica for many minutes."""
    min_cfg: float = 0.0
    """Smallest guidance scale."""
    max_cfg: float = 30.0
    """Largest guidance scale (upstream uses 15 for video, 16 for images)."""
    max_side: int = 1024
    """Largest output width or height in pixels (``/v1/models`` advertises the value enforced: this, rounded down
    to the checkpoint's size unit and capped by the sizes its vocabulary's grid tokens can say)."""
    max_image_bytes: int = 8 * 1024 * 1024
    """Largest i2v input image (decoded base64 bytes)."""
    max_image_pixels: int = 4096 * 4096
    """Largest i2v input image in pixels (checked from the header, before decoding)."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body (413 beyond)."""
    max_queued: int = 64
    """Most requests in flight per ingress replica; more get 503 with a Retry-After header."""
    retry_after_s: int = 2
    """Retry-After value (seconds) of a 503."""
    request_timeout_s: float = 300.0
    """Per-request deadline (504 beyond); the sampler stops working on a batch whose rows are all past it."""

    def __post_init__(self) -> None:
        for name in ("max_prompt_chars", "max_frames", "max_steps", "max_token_steps", "max_side", "max_image_bytes",
                     "max_image_pixels", "max_body_bytes", "max_queued"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.min_cfg <= self.max_cfg:
            raise ValueError(f"limits.min_cfg={self.min_cfg} and max_cfg={self.max_cfg} need 0 <= min <= max")
        if self.request_timeout_s <= 0 or self.retry_after_s < 0:
            raise ValueError("limits.request_timeout_s must be > 0 and retry_after_s >= 0")


@dataclass(kw_only=True)
class Defaults:
    """The shape of what a request leaves out (its sampler settings: :attr:`ServeConfig.sampler`)."""

    frames: int | None = None
    """Latent frames of t2v/i2v; ``None`` = from the checkpoint's recorded fps × duration, else 12 fps × 2 s (7)."""
    width: int | None = None
    """Output width; ``None`` = the checkpoint's ``resolution`` entry, else 64."""
    height: int | None = None
    """Output height; ``None`` = the checkpoint's ``resolution`` entry, else 64."""

    def __post_init__(self) -> None:
        for name in ("frames", "width", "height"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(kw_only=True)
class Batching:
    """``@serve.batch`` settings of the sampler deployment; ``max_batch_size: 1`` turns batching off."""

    max_batch_size: int = 16
    """Most requests gathered into one sampler call (compatible ones share one batched forward)."""
    batch_wait_timeout_s: float = 0.05
    """How long the first request of a batch waits for more."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("batching.max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@dataclass(kw_only=True)
class Scaling:
    """Replicas and resources of the sampler deployment (Serve autoscaling on ongoing requests)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 16.0
    """Autoscaling target per replica (about one full batch)."""
    num_gpus: float | None = None
    """GPUs per sampler replica; ``None`` = 1 when the Ray cluster has a GPU when the app is built (this machine's
    CUDA without Ray), else 0. Set it to 1 on clusters whose GPU nodes scale up from zero."""
    num_cpus: float = 1.0
    """CPUs per sampler replica."""
    ingress_replicas: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"scaling: need 0 <= min_replicas={self.min_replicas} <= "
                             f"max_replicas={self.max_replicas} and max_replicas >= 1")
        if self.target_ongoing_requests <= 0 or self.ingress_replicas < 1:
            raise ValueError("scaling.target_ongoing_requests must be > 0 and ingress_replicas >= 1")


@dataclass(kw_only=True)
class ServeConfig:
    """Everything the HTTP sampler needs (see the module docstring)."""

    checkpoint: str = ""
    """Checkpoint directory URI (DESIGN §4.5), local or s3:// (required)."""
    tokenizer: str | None = None
    """Video tokenizer URI; default: the checkpoint's ``video_tokenizer`` entry."""
    device: str | None = None
    """Torch device of the sampler; default cuda when the replica has a GPU, else cpu."""
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    app_name: str = "lumos"
    token: str | None = field(default=None, repr=False)
    """Bearer token for /v1/* (also read from $LUMOS_API_TOKEN); ``None`` = no auth. Never logged."""
    limits: Limits = field(default_factory=Limits)
    defaults: Defaults = field(default_factory=Defaults)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """The sampler's settings (:class:`lumos.sampler.SamplerConfig`, as in eval's config). A request's ``steps`` and
    ``cfg_scale`` replace these; what stays unset comes from the checkpoint's ``sampling`` entry, else upstream's."""
    batching: Batching = field(default_factory=Batching)
    scaling: Scaling = field(default_factory=Scaling)

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("checkpoint is required (a checkpoint directory URI)")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix={self.route_prefix!r} must start with '/'")
        if not 0 < self.port < 65536:
            raise ValueError(f"port={self.port} must be in 1..65535")

    def resolved_token(self) -> str | None:
        """The configured token, else ``$LUMOS_API_TOKEN``, else ``None`` (auth off)."""
        return self.token or os.environ.get(TOKEN_ENV) or None


def serve_config_from_args(args: dict[str, Any] | None) -> ServeConfig:
    """A :class:`ServeConfig` from builder args: ``config`` (a YAML file) merged with the other keys on top.

    Raises:
        ConfigError: one line naming the bad key or value.
    """
    args = dict(args or {})
    path = args.pop("config", None)
    base: dict = {}
    if path:
        import yaml

        from lumos import storage

        try:
            base = yaml.safe_load(storage.read_text(str(path))) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        if not isinstance(base, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
    return build_dataclass(ServeConfig, merge(base, args))


__all__ = ["Batching", "ConfigError", "Defaults", "Limits", "Scaling", "ServeConfig", "TOKEN_ENV", "load_config",
           "serve_config_from_args"]
