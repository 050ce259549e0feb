"""Pre-training configuration: nested dataclasses loaded from a YAML recipe plus dotted overrides.

``python -m workflows.pretrain --config workflows/configs/pretrain_debug.yaml optim.lr=1e-3 model.preset=small``

Sections follow DESIGN §4.2 and LUMOS_SPEC §7, §9 (AR-DF training, the released recipes: AdamW (0.9, 0.95),
weight decay 0.1, gradient clipping 4.0, linear warm-up then constant or half-cosine LR). Loading goes through
:func:`workflows.config_io.load_config`, so an unknown key is a one-line ``ConfigError`` naming it, and the
resolved config is written next to every checkpoint (``train_config.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lumos.config import ARDFConfig, ModelConfig, model_preset
from tokenize_jobs.cli import first_line
from workflows.config_io import ConfigError, load_config

STAGES = ("image", "joint")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adamw", "muon")
MUON_NS_DTYPES = ("auto", "bf16", "fp32")
PRECISIONS = ("auto", "bf16", "amp_bf16", "amp_bf16_if_faster", "amp_bf16_if_native", "fp32")
ZERO_STAGES = (0, 1, 2, 3)


RUNTIME_MODEL_FIELDS = ("activation_checkpointing", "max_seq_len")
"""``ModelConfig`` fields that change how a model runs, not its weights. With ``model.init_from`` they are the only
ones the recipe (``preset`` + ``overrides``) decides; all others come from the checkpoint."""


@dataclass(kw_only=True)
class ModelSection:
    """Which model to train: a named preset of :mod:`lumos.config` plus field overrides, or a checkpoint to
    fine-tune from (``init_from``)."""

    preset: str = "debug"
    """``debug``, ``small``, ``1b`` or ``3b``. With ``init_from`` only its runtime fields count (see there)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """``ModelConfig`` fields to change, e.g. ``{n_layers: 4, activation_checkpointing: true}``."""
    init_from: str | None = None
    """Fine-tune: a consolidated checkpoint directory (local or s3://; ``model.safetensors`` + ``config.json`` as
    written by ``workflows.convert_hf`` or a run's ``final/``) whose weights every rank loads before training.
    The architecture then comes from the checkpoint's ``config.json``; the preset's architecture is ignored (the
    run logs a note) and supplies only the runtime fields ``activation_checkpointing`` / ``max_seq_len`` (so the
    1B/3B recipes keep activation checkpointing), which ``overrides`` may change too. An ``overrides`` entry of any
    other field must equal the checkpoint's value, else a ``ConfigError`` names it before Ray starts (no silent
    disagreement). The token shards must match the checkpoint's vocabulary layout and codebook. Relaunching a run
    that has a checkpoint resumes it instead: its Ray Train checkpoint takes precedence over ``init_from``."""

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        for key in self.overrides:
            if key not in known:
                raise ConfigError(f"unknown key: model.overrides.{key}")
        if self.init_from is not None and not str(self.init_from).strip():
            self.init_from = None
        try:
            if self.init_from:  # the rest is resolved against the checkpoint by build() (before Ray starts)
                model_preset(self.preset, **{k: v for k, v in self.overrides.items() if k in RUNTIME_MODEL_FIELDS})
            else:
                self.build()
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None

    def build(self) -> ModelConfig:
        """The resolved :class:`ModelConfig`: the preset with overrides, or the ``init_from`` checkpoint's config
        with the recipe's runtime fields (raises ``ConfigError`` on an unreadable checkpoint or a conflicting
        override)."""
        if not self.init_from:
            return model_preset(self.preset, **self.overrides)
        return self.init_checkpoint()[0]

    def init_checkpoint(self) -> tuple[ModelConfig, dict]:
        """``(the checkpoint's ModelConfig with the recipe's runtime fields, the other config.json keys)`` of
        ``init_from`` (read once)."""
        cached = getattr(self, "_init_cache", None)
        if cached is not None and cached[0] == self.init_from:
            return cached[1], cached[2]
        from lumos.checkpoint import read_config

        uri = self.init_from
        try:
            ckpt, meta = read_config(uri)
        except FileNotFoundError:
            raise ConfigError(f"model.init_from={uri}: no config.json (expected a checkpoint directory with "
                              "model.safetensors + config.json; convert released HF weights with "
                              "python -m workflows.convert_hf)") from None
        except (OSError, ValueError, TypeError) as e:
            first = first_line(e)
            if "no 'model' section" in first:
                first += " (a Hugging Face checkpoint? convert it first: python -m workflows.convert_hf)"
            raise ConfigError(f"model.init_from={uri}: {first}") from None
        try:
            recipe = model_preset(self.preset, **{k: v for k, v in self.overrides.items()
                                                  if k in RUNTIME_MODEL_FIELDS})
            runtime = {k: getattr(recipe, k) for k in RUNTIME_MODEL_FIELDS}
            merged = ModelConfig.from_dict({**ckpt.to_dict(), **self.overrides, **runtime})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model with model.init_from: {e}") from None
        for key in self.overrides:
            if key not in RUNTIME_MODEL_FIELDS and getattr(merged, key) != getattr(ckpt, key):
                raise ConfigError(f"model.overrides.{key}={self.overrides[key]!r} conflicts with model.init_from="
                                  f"{uri} ({key}={getattr(ckpt, key)!r}); the architecture comes from the "
                                  "checkpoint: drop the override")
        self._init_cache = (uri, merged, meta)
        return merged, meta


@dataclass(kw_only=True)
class DataSection:
    """Token shards (DESIGN §4.4) streamed through Ray Data."""

    shards: str = ""
    """URI (local or s3://) of a finished tokenization output (must hold ``_manifest.json``)."""
    stage: str = "joint"
    """``image``: one latent frame per sample (spec §9.1 stage 1); ``joint``: images and videos (stage 2)."""
    video_first_frame_as_image: bool = True
    """Image stage: also train on the first latent frame of videos. The video tokenizer is causal, so that frame
    is exactly the encoding of the clip's first RGB frame alone (spec §3.1)."""
    max_latent_frames: int | None = None
    """Temporal crop: keep at most this many latent frames per clip (spec §7.1 step 4); ``None`` keeps all."""
    micro_batch_size: int = 2
    """Sequences per worker per forward/backward."""
    bucket_window: int = 32
    """Samples gathered, sorted by length and cut into micro-batches of similar length (little padding)."""
    materialize: bool = False
    """Read the shards once into the Ray object store before training (small datasets: later epochs then skip
    the Parquet read tasks)."""
    shuffle: bool = True
    """Shuffle each bucket window's batches and the rows fed into it (seeded by seed, epoch, rank)."""
    global_shuffle: bool = True
    """Shuffle all rows once on the driver before the split (Ray Data ``random_shuffle`` seeded by ``seed``), so
    the order the shards were written in never reaches training. Without it the window shuffle only mixes
    neighbours: a corpus written stills-first trains on stills alone until the stream reaches the clips. Turn it
    off for corpora too large to shuffle in the object store."""
    video_tokenizer: str | None = None
    """Video tokenizer URI recorded in (and copied into) checkpoints; ``None`` = the one named in the shards'
    ``_manifest.json``."""
    text_tokenizer: str | None = None
    """Text tokenizer URI recorded in checkpoints (``None`` = built-in byte tokenizer of the compact layout)."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"data.stage={self.stage!r} not in {STAGES}")
        if self.max_latent_frames is not None and self.max_latent_frames < 1:
            raise ConfigError("data.max_latent_frames must be >= 1")
        if self.micro_batch_size < 1:
            raise ConfigError("data.micro_batch_size must be >= 1")
        if self.bucket_window < self.micro_batch_size:
            raise ConfigError("data.bucket_window must be >= data.micro_batch_size")


@dataclass(kw_only=True)
class OptimSection:
    """Optimizer + LR schedule (spec §9.2: AdamW)."""

    name: str = "adamw"
    """``adamw`` (the paper's) or ``muon``: Muon on the decoder blocks' matrices, AdamW on embeddings, head, norms
    and biases, one LR for both (:mod:`workflows.training.optimizers`; needs ``engine.zero_stage: 0``)."""
    muon_momentum: float = 0.95
    """Muon's (Nesterov) momentum; only with ``name: muon``."""
    muon_ns_dtype: str = "auto"
    """The dtype of Muon's Newton–Schulz matmuls: ``auto`` (default) is bf16 on GPU and on CPUs whose bf16 matmuls
    are clearly faster (the ``amp_bf16_if_faster`` test), else fp32 — same loss and t2i at equal steps, up to 1.8x
    faster iterations where bf16 is slow (bench/README.md); or ``bf16`` (torch's, bit for bit) or ``fp32``."""
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    """Final LR of the cosine schedule as a fraction of ``lr`` (ignored by ``constant``)."""
    schedule: str = "constant"
    """``constant`` (the released recipes: lr = min_lr) or ``cosine`` (half-cosine from lr to lr·min_lr_ratio)."""
    warmup_steps: int = 0
    max_steps: int = 100
    """Optimizer steps of the run."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Applied to matrices only; norms, biases and embeddings are not decayed."""
    grad_clip: float = 4.0
    grad_accum: int = 1
    """Micro-batches per optimizer step (DeepSpeed ``gradient_accumulation_steps``)."""

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name={self.name!r} not in {OPTIMIZERS}")
        if not 0 <= self.muon_momentum < 1:
            raise ConfigError(f"optim.muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.muon_ns_dtype not in MUON_NS_DTYPES:
            raise ConfigError(f"optim.muon_ns_dtype={self.muon_ns_dtype!r} not in {MUON_NS_DTYPES}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r} not in {SCHEDULES}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_steps < 1 or self.warmup_steps < 0 or self.grad_accum < 1:
            raise ConfigError("optim.max_steps and optim.grad_accum must be >= 1, optim.warmup_steps >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("optim.grad_clip and optim.weight_decay must be >= 0")


@dataclass(kw_only=True)
class EngineSection:
    """DeepSpeed settings (the only place parallel wrapping is configured; see :mod:`workflows.training.engine`)."""

    zero_stage: int = 2
    precision: str = "auto"
    """``auto`` = bf16 on GPU, fp32 on CPU; or force ``bf16`` (DeepSpeed's: bf16 weights, fp32 master copy in the
    optimizer), ``amp_bf16`` (fp32 weights and optimizer, the forward under ``torch.autocast`` to bf16: matmuls in
    bf16, softmax and loss in fp32 — on CPUs with native bf16 dot products, avx512_bf16 or AMX, the fast CPU path
    for models of dim >= 256, where bf16 matmuls are clearly faster than fp32 ones: not on every CPU with the flag),
    ``amp_bf16_if_faster`` (``amp_bf16`` on a CPU whose measured bf16 matmul peak is >= 1.5x its fp32 one, fp32 on
    other CPUs, bf16 on GPU; ``amp_bf16_if_native`` is its older name) or ``fp32``."""
    zero_init: bool = True
    """ZeRO-3 on GPU: build the model partitioned (``deepspeed.zero.Init``) so no rank holds it whole."""
    offload_optimizer: bool = False
    """GPU only: keep optimizer states in CPU memory (DeepSpeedCPUAdam)."""
    compile: bool = False
    """``torch.compile`` each decoder layer (:meth:`lumos.model.LumosModel.compile_blocks`); ZeRO stages 0–2. On
    CPU it needs a C++ compiler (g++ or clang++, or ``$CXX``)."""
    overlap_comm: bool = True
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000

    def __post_init__(self) -> None:
        if self.zero_stage not in ZERO_STAGES:
            raise ConfigError(f"engine.zero_stage={self.zero_stage} not in {ZERO_STAGES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"engine.precision={self.precision!r} not in {PRECISIONS}")
        if self.compile and self.zero_stage == 3:
            raise ConfigError("engine.compile=true works with engine.zero_stage 0, 1 or 2 only (ZeRO-3 gathers each "
                              "layer's parameters in module hooks; that path is not supported compiled)")


@dataclass(kw_only=True)
class RaySection:
    """Ray cluster and Ray Train scaling."""

    address: str | None = None
    """``None`` starts/joins a local Ray; ``auto`` joins a running cluster."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    """Logical CPUs per training worker. Below 1 on small machines so Ray Data read tasks still get a CPU
    (STACK_NOTES: Ray Data + Ray Train can hang on 2 CPUs otherwise)."""
    threads_per_worker: int = 1
    """torch intra-op threads in each worker (CPU runs)."""
    max_failures: int = 1
    """Restarts of the whole worker group from the latest checkpoint after a worker is lost."""

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.threads_per_worker < 1 or self.cpus_per_worker <= 0:
            raise ConfigError("ray.num_workers, ray.threads_per_worker, ray.cpus_per_worker must be positive")
        if self.max_failures < -1:
            raise ConfigError("ray.max_failures must be >= -1 (-1 = retry forever)")


@dataclass(kw_only=True)
class CheckpointSection:
    """Where runs and checkpoints go (local path or s3://) and how often."""

    storage: str = "runs"
    """Ray ``RunConfig.storage_path``; the run lives under ``<storage>/<name>``."""
    name: str = "pretrain"
    """Run name. Launching again with the same storage + name resumes from the latest checkpoint."""
    every_steps: int = 50
    keep: int = 2
    """Checkpoints kept (``CheckpointConfig.num_to_keep``)."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"checkpoint.name={self.name!r} must be a non-empty name without '/'")
        if self.every_steps < 1 or self.keep < 1:
            raise ConfigError("checkpoint.every_steps and checkpoint.keep must be >= 1")


@dataclass(kw_only=True)
class MetricsSection:
    """Metrics written as the run goes (JSONL + TensorBoard) and plotted at the end."""

    every_steps: int = 10
    tensorboard: bool = True
    plots: bool = True
    progress: bool = True
    """A progress bar on rank 0 (off: the metrics log only, e.g. ``workflows.ablate --quiet``)."""

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ConfigError("metrics.every_steps must be >= 1")


@dataclass(kw_only=True)
class FaultSection:
    """Fault injection for tests and drills: one worker exits hard once, at a given step."""

    exit_at_step: int | None = None
    exit_rank: int = 1
    marker: str = ""
    """Local file created before the exit; while it exists the fault does not fire again."""

    def __post_init__(self) -> None:
        if self.exit_at_step is not None and not self.marker:
            raise ConfigError("fault.marker must be set when fault.exit_at_step is")


@dataclass(kw_only=True)
class SamplingSection:
    """Sampler defaults recorded in the checkpoint (``config.json`` ``sampling``): ``workflows.generate``,
    ``workflows.eval`` and ``workflows.serve`` use them where a flag or a request leaves them out (``None`` = the
    tool's own default)."""

    steps: int | None = None
    cfg_scale: float | None = None
    temperature: float | None = None
    fps: int | None = None
    """fps token of t2v / i2v prompts (the clips' rate in training), when a request leaves it out."""
    duration: int | None = None
    """Seconds token of t2v / i2v prompts, when a request leaves it out (latent frames follow from fps·duration)."""
    mask_given_frames: bool | None = None
    """I2V: commit the given frames to the KV caches with the history mask too (unset: unmasked, as upstream)."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError("sampling.steps must be >= 1")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError("sampling.temperature must be > 0")
        for key in ("fps", "duration"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"sampling.{key} must be >= 1")

    def to_meta(self) -> dict:
        """The non-default entries, for config.json."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(kw_only=True)
class StageSection:
    """One stage of a curriculum (:mod:`workflows.training.curriculum`): the recipe with these dotted overrides."""

    name: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted keys of this config, e.g. ``{data.stage: image, optim.max_steps: 1500}``."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"stage name {self.name!r} must be a non-empty name without '/'")


@dataclass(kw_only=True)
class PretrainConfig:
    """Everything one pre-training run needs; workers rebuild it from a plain dict."""

    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    ardf: ARDFConfig = field(default_factory=ARDFConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    engine: EngineSection = field(default_factory=EngineSection)
    ray: RaySection = field(default_factory=RaySection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    fault: FaultSection = field(default_factory=FaultSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    stages: list[StageSection] = field(default_factory=list)
    """A curriculum (:mod:`workflows.training.curriculum`): stages run in order, each the recipe with its overrides, each
    starting from the previous stage's weights. Empty = one run of this config."""

    def __post_init__(self) -> None:
        if self.engine.offload_optimizer and not self.ray.use_gpu:
            raise ConfigError("engine.offload_optimizer needs ray.use_gpu=true (CPU-Adam JIT-compiles on CPU)")
        if self.optim.name == "muon":
            self._check_muon()
        if self.fault.exit_at_step is not None and self.fault.exit_rank >= self.ray.num_workers:
            raise ConfigError(f"fault.exit_rank={self.fault.exit_rank} >= ray.num_workers")

    def _check_muon(self) -> None:
        """Muon orthogonalises whole matrices: DeepSpeed must hand the client optimizer the model's own tensors,
        which it does under ZeRO-0 in fp32 or bf16 autocast, not under ZeRO 1–3, optimizer offload or its bf16
        optimizer (flat partitions)."""
        if self.engine.zero_stage != 0 or self.engine.offload_optimizer:
            raise ConfigError("optim.name=muon needs engine.zero_stage=0 and no engine.offload_optimizer (Muon needs "
                              f"whole matrices), got zero_stage={self.engine.zero_stage}")
        from workflows.training.engine import precision  # lazy: engine imports this module

        # On CPU only an explicit bf16 means bf16 weights; asking precision() there would measure matmul peaks.
        if self.engine.precision == "bf16" or (self.ray.use_gpu and precision(self, on_gpu=True) == "bf16"):
            raise ConfigError("optim.name=muon needs fp32 weights: set engine.precision=amp_bf16 (bf16 autocast) or "
                              f"fp32, not {self.engine.precision!r} (DeepSpeed's bf16 optimizer flattens the matrices)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """Inverse of :meth:`to_dict` (validates again)."""
        from workflows.config_io import build_dataclass

        return build_dataclass(cls, d)


def load_pretrain_config(path: str | None, overrides: list[str] | None = None) -> PretrainConfig:
    """Defaults ← YAML recipe ← ``key.sub=value`` overrides; raises ``ConfigError`` with one line (for a
    curriculum, also when a stage's resolved config is invalid)."""
    cfg = load_config(PretrainConfig, path, overrides)
    if cfg.stages:
        from workflows.training.curriculum import stage_configs

        stage_configs(cfg)
    return cfg


__all__ = ["RUNTIME_MODEL_FIELDS", "CheckpointSection", "DataSection", "EngineSection", "FaultSection",
           "MetricsSection", "ModelSection", "OptimSection", "PretrainConfig", "RaySection", "SamplingSection", "StageSection",
           "load_pretrain_config"]
