"""DeepSpeed wrapping: the one place where the single-device model becomes a data-parallel ZeRO engine.

Builds the DeepSpeed config from :class:`workflows.training.train_config.PretrainConfig` (ZeRO stage 0–3, bf16 on GPU,
bf16 autocast or fp32 on CPU (:func:`precision`), gradient clipping, gradient accumulation), the AdamW optimizer of
the released recipes (LUMOS_SPEC §9.2: betas (0.9, 0.95), weight decay 0.1 on matrices only — norms, biases and embeddings are not decayed) and
the LR schedule (linear warm-up, then constant or half-cosine down to ``min_lr_ratio · lr``, as xllmx ``lr_sched``).

CPU facts this module works around (STACK_NOTES, DeepSpeed section):

* DeepSpeed's default AdamW on CPU is FusedAdam and JIT-compiles for about a minute, so CPU runs pass a client
  ``torch.optim.AdamW``; GPU runs pass torch's fused AdamW, or DeepSpeedCPUAdam with optimizer offload.
* The first ``deepspeed.initialize`` JIT-builds a shared-memory op only used by inference all-reduce;
  :func:`skip_shm_op_build` turns that build off on CPU.
* Ray Train has already created the process group (gloo on CPU, NCCL on GPU); DeepSpeed reuses it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import sys
from typing import Any

import torch

from workflows.training.optimizers import NS_DTYPES, MuonAdamW, muon_params
from workflows.training.train_config import OptimSection, PretrainConfig


class LRSchedule:
    """LR multiplier per optimizer step: linear warm-up, then constant or half-cosine down to ``min_lr_ratio · lr``.

    Args:
        optim: the optimizer section (min_lr_ratio, warmup_steps, max_steps, schedule).
    """

    def __init__(self, optim: OptimSection):
        self.min_ratio = optim.min_lr_ratio
        self.warmup, self.total, self.kind = optim.warmup_steps, optim.max_steps, optim.schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))


@functools.lru_cache(maxsize=8)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag); elsewhere oneDNN
    emulates bf16, no faster than fp32. Native is not always faster (:func:`cpu_bf16_pays` measures). Read once per
    process."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_PAYS_RATIO = 1.5
"""How much faster than fp32 this CPU's bf16 matmuls must be for bf16 autocast to pay (the casts cost the rest)."""


@functools.lru_cache(maxsize=8)
def cpu_bf16_pays(threads: int | None = None, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 autocast should pay on this CPU: it multiplies bf16 natively (:func:`cpu_has_native_bf16`) and
    its bf16 matmul peak is at least :data:`BF16_PAYS_RATIO` times its fp32 one, both as
    :func:`~workflows.training.run_metrics.cpu_peak_flops` gives them (measured now with ``threads``, or the best
    this machine has shown). The flag alone does not tell: an AMD EPYC with ``avx512_bf16`` multiplies bf16 at
    2.2× its fp32 rate (405 against 180 GFLOP/s on 2 threads), an Intel Xeon with the same flag at about half
    (190 against 366). Decided once per process and thread count."""
    if not cpu_has_native_bf16(cpuinfo):
        return False
    from workflows.training.run_metrics import cpu_peak_flops

    bf16 = cpu_peak_flops(threads, dtype=torch.bfloat16)
    return bf16 >= BF16_PAYS_RATIO * cpu_peak_flops(threads, dtype=torch.float32)


def muon_ns_dtype(cfg: PretrainConfig, on_gpu: bool) -> str:
    """``bf16`` or ``fp32``: ``optim.muon_ns_dtype``, with ``auto`` resolved as bf16 on GPU and on CPUs where bf16
    matmuls are clearly faster (:func:`cpu_bf16_pays`), fp32 elsewhere (bench/README.md, optimizer step)."""
    if cfg.optim.muon_ns_dtype != "auto":
        return cfg.optim.muon_ns_dtype
    return "bf16" if on_gpu or cpu_bf16_pays(cfg.ray.threads_per_worker) else "fp32"


def precision(cfg: PretrainConfig, on_gpu: bool) -> str:
    """``bf16``, ``amp_bf16`` or ``fp32``: ``auto`` means bf16 on GPU and fp32 on CPU, where bf16 autocast pays
    only for models wide enough (bench/README.md: +38 % tokens/s at dim 256, −8 % at dim 128), so recipes ask
    for it by name; ``amp_bf16_if_faster`` (and its older name ``amp_bf16_if_native``) means bf16 on GPU, and on
    CPU ``amp_bf16`` where bf16 matmuls are clearly faster than fp32 ones (:func:`cpu_bf16_pays`), else fp32."""
    if cfg.engine.precision == "auto":
        return "bf16" if on_gpu else "fp32"
    if cfg.engine.precision in ("amp_bf16_if_faster", "amp_bf16_if_native"):  # a model wide enough for bf16 to pay
        return "bf16" if on_gpu else ("amp_bf16" if cpu_bf16_pays(cfg.ray.threads_per_worker) else "fp32")
    return cfg.engine.precision


def precision_warning(cfg: PretrainConfig, on_gpu: bool) -> str | None:
    """A line to log when ``amp_bf16`` runs on a CPU whose bf16 matmuls are no faster than fp32 ones."""
    if on_gpu or precision(cfg, on_gpu) != "amp_bf16" or cpu_bf16_pays(cfg.ray.threads_per_worker):
        return None
    if not cpu_has_native_bf16():
        return ("engine.precision=amp_bf16 on a CPU without native bf16 (no avx512_bf16 / amx_bf16 flag): its bf16 "
                "matmuls are emulated and likely slower than fp32; set engine.precision=fp32")
    return ("engine.precision=amp_bf16 on a CPU whose bf16 matmuls are not clearly faster than its fp32 ones "
            "(measured peaks): likely slower than fp32; set engine.precision=fp32 or amp_bf16_if_faster")


def build_ds_config(cfg: PretrainConfig, world_size: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON config for this run.

    Args:
        cfg: the resolved pre-training config.
        world_size: number of data-parallel workers.
        on_gpu: whether the workers run on CUDA devices.

    Returns:
        A dict for ``deepspeed.initialize(config=...)``.
    """
    eng, opt = cfg.engine, cfg.optim
    prec = precision(cfg, on_gpu)
    zero: dict[str, Any] = {"stage": eng.zero_stage}
    if eng.zero_stage > 0:
        zero.update(overlap_comm=eng.overlap_comm and on_gpu, contiguous_gradients=True,
                    reduce_bucket_size=eng.reduce_bucket_size)
    if eng.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = eng.allgather_bucket_size
    if eng.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size=eng.allgather_bucket_size, stage3_param_persistence_threshold=10_000,
                    stage3_gather_16bit_weights_on_model_save=False)
    if eng.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch_size,
        "gradient_accumulation_steps": opt.grad_accum,
        "train_batch_size": cfg.data.micro_batch_size * opt.grad_accum * world_size,
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": prec == "bf16"},
        # amp_bf16: DeepSpeed runs the forward under torch.autocast(<accelerator>, bf16); weights stay fp32.
        "torch_autocast": {"enabled": prec == "amp_bf16", "dtype": "bfloat16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if eng.offload_optimizer:  # DeepSpeedCPUAdam is created by DeepSpeed from this section
        ds["optimizer"] = {"type": "AdamW", "params": {"lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps,
                                                       "weight_decay": opt.weight_decay}}
    return ds


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on weight matrices, none on norms, biases and embedding tables.

    Args:
        model: the (unwrapped) model.
        weight_decay: decay of the first group.

    Returns:
        ``[{"params": decayed, "weight_decay": wd}, {"params": others, "weight_decay": 0.0}]`` (empty groups
        dropped).
    """
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, other = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # ZeRO-3 partitions leave p.shape empty; ds_shape keeps the real one.
        ndim = len(getattr(p, "ds_shape", p.shape))
        (decay if ndim >= 2 and id(p) not in no_decay else other).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig, on_gpu: bool) -> torch.optim.Optimizer | None:
    """Client optimizer: torch AdamW (fused on GPU), or with ``optim.name: muon`` Muon on the decoder's matrices and
    AdamW on the rest (:class:`~workflows.training.optimizers.MuonAdamW`); ``None`` when DeepSpeed builds CPU-Adam
    for offload."""
    if cfg.engine.offload_optimizer:
        return None
    opt = cfg.optim
    if opt.name == "muon":
        return muon_adamw(model, cfg, on_gpu, NS_DTYPES[muon_ns_dtype(cfg, on_gpu)])
    return torch.optim.AdamW(param_groups(model, opt.weight_decay), lr=opt.lr, betas=tuple(opt.betas),
                             eps=opt.eps, fused=on_gpu)


def muon_adamw(model: torch.nn.Module, cfg: PretrainConfig, on_gpu: bool,
               ns_dtype: torch.dtype | None) -> MuonAdamW:
    """``optim.name: muon``'s optimizer with the Newton–Schulz dtype given (``None``: ``torch.optim.Muon`` itself,
    the reference the tests and ``bench/optimizer.py`` compare against)."""
    opt = cfg.optim
    matrices = muon_params(model)
    taken = {id(p) for p in matrices}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in taken]}
            for g in param_groups(model, opt.weight_decay)]
    return MuonAdamW(matrices, rest, lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas), eps=opt.eps,
                     momentum=opt.muon_momentum, fused=on_gpu, ns_dtype=ns_dtype)


def skip_shm_op_build() -> None:
    """Stop DeepSpeed from JIT-building its shared-memory inference all-reduce op (~45 s on CPU).

    ``import deepspeed.comm.torch as m`` would bind the real ``torch`` module (``deepspeed.comm`` has a ``torch``
    attribute), so the module is patched through ``sys.modules``.
    """
    import deepspeed.comm.torch  # noqa: F401  (registers the module)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def model_init_context(cfg: PretrainConfig, ds_config: dict, on_gpu: bool) -> contextlib.AbstractContextManager:
    """``deepspeed.zero.Init`` for ZeRO-3 on GPU (the model is built already partitioned), else a no-op."""
    if cfg.engine.zero_stage == 3 and cfg.engine.zero_init and on_gpu:
        import deepspeed

        return deepspeed.zero.Init(config_dict_or_path=ds_config)
    return contextlib.nullcontext()


class LossModule(torch.nn.Module):
    """What the engine wraps: ``forward(batch) = loss_fn(model, batch)``.

    Running the whole loss inside the engine's forward lets ZeRO-3 gather parameters that the loss touches outside
    their own module's forward (the AR-DF loss multiplies hidden states by a slice of ``lm_head.weight`` only,
    LUMOS_SPEC §9.3); those are registered as external parameters of this module.

    Args:
        model: the single-device model.
        loss_fn: ``(model, batch) -> (loss, metrics)``, e.g. :func:`lumos.loss.ardf_loss`.
    """

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.loss_fn(self.model, batch)


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor builds its CPU kernels with (``$CXX``, ``g++`` or ``clang++``), or ``None``."""
    return next((c for c in (os.environ.get("CXX"), "g++", "clang++") if c and shutil.which(c)), None)


def compile_blocks(model: torch.nn.Module, on_gpu: bool) -> None:
    """``engine.compile``: compile the model's decoder layers in place (see ``LumosModel.compile_blocks``).

    Raises:
        RuntimeError: on CPU when no C++ compiler is found (Inductor builds its CPU kernels with one).
    """
    if not on_gpu and cxx_compiler() is None:
        raise RuntimeError("engine.compile=true on CPU needs a C++ compiler (g++, clang++ or $CXX) on every "
                           "worker; install one (apt-get install g++) or set engine.compile=false")
    model.compile_blocks()


def external_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters used outside their module's forward: the lm_head weight (sliced by ``visual_logits``)."""
    head = getattr(model, "lm_head", None)
    return [head.weight] if head is not None else []


def build_engine(model: torch.nn.Module, loss_fn, cfg: PretrainConfig, world_size: int, on_gpu: bool):
    """Wrap ``model`` and its loss in a DeepSpeed engine with our optimizer and LR schedule.

    Args:
        model: the single-device model (already on its device unless built under ZeRO-3 init).
        loss_fn: ``(model, batch) -> (loss, metrics)``; ``engine(batch)`` runs it.
        cfg: the resolved pre-training config.
        world_size: data-parallel workers (Ray Train has initialised the process group).
        on_gpu: CUDA workers.

    Returns:
        The ``DeepSpeedEngine`` around :class:`LossModule`; ``engine.module.model`` is the model, and
        ``engine.optimizer`` / ``engine.lr_scheduler`` are attached.
    """
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    if not on_gpu:
        skip_shm_op_build()
    import deepspeed

    ds_config = build_ds_config(cfg, world_size, on_gpu)
    schedule = LRSchedule(cfg.optim)
    wrapper = LossModule(model, loss_fn)
    if cfg.engine.zero_stage == 3:
        for p in external_parameters(model):
            deepspeed.zero.register_external_parameter(wrapper, p)
    engine, _, _, _ = deepspeed.initialize(
        model=wrapper,
        model_parameters=param_groups(model, cfg.optim.weight_decay) if cfg.engine.offload_optimizer else None,
        optimizer=build_optimizer(model, cfg, on_gpu),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=ds_config,
        dist_init_required=False,
    )
    return engine


def gathered_params(engine) -> contextlib.AbstractContextManager:
    """Context in which every rank sees full (un-partitioned) parameters: needed under ZeRO-3 to write the
    consolidated weights; a no-op for stages 0–2."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(engine.module.model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


__all__ = ["BF16_PAYS_RATIO", "LRSchedule", "LossModule", "build_ds_config", "build_engine", "build_optimizer",
           "compile_blocks", "cpu_bf16_pays", "cpu_has_native_bf16", "cxx_compiler", "external_parameters",
           "gathered_params", "model_init_context", "muon_adamw", "muon_ns_dtype", "param_groups", "precision", "precision_warning",
           "skip_shm_op_build"]
