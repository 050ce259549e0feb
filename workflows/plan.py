"""Plan a pre-training recipe's GPU memory with DeepSpeed's own estimators — no GPU, no Ray, no weights.

::

    python -m workflows.plan --config workflows/configs/pretrain_1b_48gpu.yaml \\
        --config workflows/configs/pretrain_3b_48gpu.yaml [--cluster cluster/aws-48gpu.yaml] [--markdown] [--json F]
    python -m workflows.pretrain --config workflows/configs/pretrain_3b_48gpu.yaml --plan   # same, one recipe

The recipe's model is built on the meta device (shapes only: a 3B model costs no memory) to count its parameters
and its largest layer. **Model states** (bf16 parameters, gradients, fp32 master weights and AdamW moments) per GPU
come from DeepSpeed's estimators at the recipe's GPU count, with the recipe's offload and ``zero_init`` settings:
``deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs`` (ZeRO-3) or
``deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs`` (ZeRO-2) — the functions that
``estimate_zero3_model_states_mem_needs_all_cold`` / ``estimate_zero2_..._all_cold`` print their tables from (the
printed table of the matching ``_all_cold`` call is kept in the JSON output). DeepSpeed's ``model_to_params`` keys
parameters by ``data_ptr()``, which is 0 for every meta tensor, so the two counts are taken here by the same rule
(shared parameters once; largest layer = the most parameters any module holds directly) but by identity.

**Activations** (not DeepSpeed's business) are added per GPU for the longest micro-batch the recipe can form:
``B = data.micro_batch_size`` sequences of ``L`` tokens, where ``L`` is the sequence
:func:`lumos.sequence.build_sequence` builds for a prompt of ``--text-tokens`` (the tokenizer job's
``--max-text-tokens``, 1,024) and ``data.max_latent_frames`` latent frames (1 for ``data.stage=image``) of the bucket
with the most tokens in the ``--target-size`` family (the tokenizer job's, 352 = 256p). With ``D`` = dim,
``Dkv`` = kv heads × head_dim, ``F`` = ffn_dim, ``H`` = heads, ``hd`` = head_dim, ``n`` = layers, ``b`` = 2 bytes
(bf16) and ``C`` = visual codes:

* ``checkpoints`` = ``n · B·L·D·b`` (each layer's input, kept by ``torch.utils.checkpoint``) + the MM-RoPE tables
  ``2 · B·L·hd · 4`` (fp32 cos/sin, shared by all layers). Without activation checkpointing this row is
  ``n ×`` the next one instead.
* ``one layer`` = the tensors one decoder layer saves for its backward, recomputed in the backward:
  ``B·L · [2(4 + 2b)·D`` (two RMSNorms: fp32 input copy, normalised and output in bf16)
  ``+ 2b·(D + Dkv) + 8(H + Hkv)`` (q, k: projection (QK-norm input) and rotated copy; QK-norm statistics)
  ``+ b·Dkv`` (v) ``+ 2b·D + 4H`` (attention output and its reshaped copy, fp32 log-sum-exp; flash/SDPA pieces,
  no L×L) ``+ 4b·F]`` (SwiGLU: gate, up, silu, product) plus the backward's working set of gradients
  ``B·L · 2(D + F)·b``. ``tests/workflows/test_plan.py`` checks the bracket against the bytes a real bf16 layer
  saves for its backward (``torch.autograd.graph.saved_tensors_hooks``).
* ``loss`` = the final RMSNorm ``B·L·D·(4 + 2b)`` + the hidden states of the masked codes gathered for the AR-DF
  loss ``B·F_lat·h·w · D·b`` (every code masked, the worst case) + one chunk of the chunked cross-entropy
  recomputed in the backward: ``rows · C · (b + 4 + 4)`` (bf16 logits, fp32 logits, fp32 gradient) with
  ``rows = max(16, CE_CHUNK_ELEMENTS // C)`` (:mod:`lumos.loss`).
* ``buckets`` = ``(engine.reduce_bucket_size + engine.allgather_bucket_size) · b``: the gradient-reduction and
  parameter all-gather/prefetch buffers in flight.
* ``overhead`` = ``--overhead-gib`` (CUDA context, NCCL buffers, allocator fragmentation; default 4 GiB).

The verdict compares the total with one GPU's memory: ``--gpu-memory-gib`` if given, else the GPU of the GPU node
type of ``--cluster`` (a Ray cluster launcher YAML whose ``InstanceType`` is looked up in :data:`GPU_TYPES`), else
80 GiB. All figures are GiB (2**30 bytes), as DeepSpeed prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenize_jobs.cli import first_line
from workflows.config_io import ConfigError
from workflows.training.train_config import PretrainConfig, load_pretrain_config

GIB = 2**30
DEFAULT_CLUSTER = "cluster/aws-48gpu.yaml"
DEFAULT_GPU_MEMORY_GIB = 80.0
DEFAULT_OVERHEAD_GIB = 4.0
DEFAULT_TEXT_TOKENS = 1024
"""The tokenization job's ``--max-text-tokens`` default: the longest prompt a shard row can hold."""
DEFAULT_TARGET_SIZE = 352
"""The tokenization job's ``--target-size`` default (the 256p bucket family)."""
TIGHT_FRACTION = 0.9
"""Above this fraction of the GPU's memory the verdict is "tight"."""

GPU_TYPES: dict[str, tuple[str, float]] = {
    "p4d.24xlarge": ("A100-SXM4-40GB", 40.0),
    "p4de.24xlarge": ("A100-SXM4-80GB", 80.0),
    "p5.48xlarge": ("H100-SXM-80GB", 80.0),
    "p5e.48xlarge": ("H200-141GB", 141.0),
    "p5en.48xlarge": ("H200-141GB", 141.0),
    "p3.16xlarge": ("V100-16GB", 16.0),
    "p3dn.24xlarge": ("V100-32GB", 32.0),
    "g5.48xlarge": ("A10G-24GB", 24.0),
    "g6e.48xlarge": ("L40S-48GB", 48.0),
}
"""AWS GPU instance type → (GPU, memory per GPU in GiB) for the cluster recipe's GPU node type."""


class PlanError(ValueError):
    """A recipe or cluster file the planner cannot plan for (one line)."""


@dataclass
class ClusterGPU:
    """The GPUs a plan is checked against."""

    name: str
    memory_gib: float
    gpus_per_node: int
    max_gpus: int | None = None
    """GPUs the cluster can hold (None: unknown / not checked)."""
    source: str = ""


@dataclass
class Plan:
    """The planned per-GPU memory of one recipe (bytes unless named otherwise)."""

    recipe: str
    preset: str
    total_params: int
    largest_layer_params: int
    num_gpus: int
    num_nodes: int
    gpus_per_node: int
    zero_stage: int
    precision: str
    offload_optimizer: bool
    zero_init: bool
    activation_checkpointing: bool
    micro_batch_size: int
    seq_len: int
    text_tokens: int
    latent_frames: int
    bucket: tuple[int, int]
    frame_tokens: int
    model_states: int
    """Per GPU, from DeepSpeed's estimator."""
    cpu_model_states_per_node: int
    """Per node (CPU memory), from DeepSpeed's estimator."""
    activations: dict[str, int]
    buckets: int
    overhead: int
    total: int
    gpu: ClusterGPU
    verdict: str
    deepspeed_table: str = field(default="", repr=False)
    """What DeepSpeed's ``..._all_cold`` estimator printed for this model and GPU count."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_gib"] = round(self.total / GIB, 3)
        return d


# ----------------------------------------------------------------------------------------------- inputs


def read_cluster_gpu(path: str | os.PathLike) -> ClusterGPU:
    """The GPU node type of a Ray cluster launcher YAML: its GPU (via ``InstanceType``), GPUs per node and the most
    GPUs the autoscaler can bring up. Raises :class:`PlanError` when the file names no known GPU node type."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PlanError(f"cannot read cluster file {path}: {str(e).splitlines()[0]}") from None
    types = (doc or {}).get("available_node_types") if isinstance(doc, dict) else None
    if not isinstance(types, dict):
        raise PlanError(f"{path}: no available_node_types (not a Ray cluster launcher YAML); pass --gpu-memory-gib")
    gpu_types = {name: t for name, t in types.items()
                 if isinstance(t, dict) and float((t.get("resources") or {}).get("GPU", 0) or 0) > 0}
    if len(gpu_types) != 1:
        raise PlanError(f"{path}: expected one node type with GPU resources, found {len(gpu_types)}; "
                        "pass --gpu-memory-gib")
    name, node = next(iter(gpu_types.items()))
    instance = (node.get("node_config") or {}).get("InstanceType", "")
    if instance not in GPU_TYPES:
        raise PlanError(f"{path}: node type {name} has InstanceType {instance or '(none)'!r} with unknown GPU "
                        f"memory; pass --gpu-memory-gib")
    gpu, mem = GPU_TYPES[instance]
    per_node = int(node["resources"]["GPU"])
    max_workers = node.get("max_workers")
    return ClusterGPU(name=f"{gpu} ({instance})", memory_gib=mem, gpus_per_node=per_node,
                      max_gpus=None if max_workers is None else int(max_workers) * per_node, source=str(path))


def model_counts(model_cfg) -> tuple[int, int]:
    """``(total parameters, largest layer's parameters)`` of the model built on the meta device."""
    import torch

    from lumos.model import LumosModel

    with torch.device("meta"):
        model = LumosModel(model_cfg)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def longest_sequence(cfg: PretrainConfig, text_tokens: int, target_size: int,
                     patch: int = 32) -> tuple[int, int, tuple[int, int], int, int]:
    """The longest training sequence of the recipe: ``(tokens, latent frames, bucket (W, H), tokens per frame,
    visual codes)``, as :func:`lumos.sequence.build_sequence` builds it (:func:`lumos.sequence.sequence_length`),
    for the bucket of ``target_size`` with the most tokens per frame."""
    from lumos.buckets import bucket_sizes
    from lumos.sequence import frame_length, sequence_length

    model_cfg = cfg.model.build()
    layout = model_cfg.layout
    if cfg.data.stage == "image":
        frames = 1
    elif cfg.data.max_latent_frames is None:
        raise PlanError("data.max_latent_frames is unset, so the sequence length is unbounded: set it "
                        "(e.g. data.max_latent_frames=7) to plan memory")
    else:
        frames = cfg.data.max_latent_frames
    s = model_cfg.spatial_compression
    unit = s * layout.grid_unit  # the grid tokens count latent rows in units of grid_unit
    grids = [(w // s, h // s) for w, h in bucket_sizes(target_size, patch) if (w % unit == 0 and h % unit == 0)]
    if not grids:
        raise PlanError(f"no bucket of --target-size {target_size} fits layout {layout.name} (sides multiple of {unit})")
    gw, gh = max(grids, key=lambda g: frame_length(g[1], g[0]))
    return (sequence_length(text_tokens, frames, gh, gw), frames, (gw * s, gh * s), frame_length(gh, gw),
            frames * gh * gw)


def model_state_bytes(zero_stage: int, total_params: int, largest_layer_params: int, num_nodes: int,
                      gpus_per_node: int, offload_optimizer: bool, zero_init: bool) -> tuple[int, int, str]:
    """``(GPU bytes per GPU, CPU bytes per node, the matching _all_cold printout)`` from DeepSpeed's estimators."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # planning needs no accelerator; skip DeepSpeed's detection
    out = io.StringIO()
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import (
            estimate_zero3_model_states_mem_needs,
            estimate_zero3_model_states_mem_needs_all_cold,
        )

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=total_params, largest_layer_params=largest_layer_params, num_gpus_per_node=gpus_per_node,
            num_nodes=num_nodes, cpu_offload=offload_optimizer, cpu_offload_params=False, zero_init=zero_init)
        with contextlib.redirect_stdout(out):
            estimate_zero3_model_states_mem_needs_all_cold(total_params=total_params,
                                                           largest_layer_params=largest_layer_params,
                                                           num_gpus_per_node=gpus_per_node, num_nodes=num_nodes)
    elif zero_stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs,
            estimate_zero2_model_states_mem_needs_all_cold,
        )

        cpu, gpu = estimate_zero2_model_states_mem_needs(total_params=total_params, num_gpus_per_node=gpus_per_node,
                                                         num_nodes=num_nodes, cpu_offload=offload_optimizer)
        with contextlib.redirect_stdout(out):
            estimate_zero2_model_states_mem_needs_all_cold(total_params=total_params, num_gpus_per_node=gpus_per_node,
                                                           num_nodes=num_nodes)
    else:
        raise PlanError(f"engine.zero_stage={zero_stage}: DeepSpeed's estimators cover ZeRO-2 and ZeRO-3 only")
    return int(gpu), int(cpu), out.getvalue()


def layer_bytes_per_token(model_cfg, act_bytes: int = 2) -> int:
    """Bytes one decoder layer saves for its backward per token (the bracket of the module docstring)."""
    b, D, F, H, hd = act_bytes, model_cfg.dim, model_cfg.ffn_dim, model_cfg.n_heads, model_cfg.head_dim
    hkv = model_cfg.n_kv_heads
    dkv = hkv * hd
    qk_stats = 8 * (H + hkv) if model_cfg.qk_norm else 0
    return 2 * (4 + 2 * b) * D + 2 * b * (D + dkv) + qk_stats + b * dkv + 2 * b * D + 4 * H + 4 * b * F


def activation_bytes(model_cfg, micro_batch: int, seq_len: int, visual_codes: int, act_bytes: int = 2) -> dict[str, int]:
    """Activation memory per GPU by the formula of the module docstring: ``checkpoints``, ``one_layer``, ``loss``."""
    from lumos.loss import CE_CHUNK_ELEMENTS

    b, D, F, hd = act_bytes, model_cfg.dim, model_cfg.ffn_dim, model_cfg.head_dim
    tokens = micro_batch * seq_len
    layer_saved = tokens * layer_bytes_per_token(model_cfg, b)
    grads = tokens * 2 * (D + F) * b
    rope = 2 * tokens * hd * 4
    if model_cfg.activation_checkpointing:
        checkpoints = model_cfg.n_layers * tokens * D * b + rope
        one_layer = layer_saved + grads
    else:
        checkpoints = model_cfg.n_layers * layer_saved + rope
        one_layer = grads
    C = model_cfg.codebook_size
    rows = max(16, CE_CHUNK_ELEMENTS // C)
    loss = tokens * D * (4 + 2 * b) + micro_batch * visual_codes * D * b + rows * C * (b + 4 + 4)
    return {"checkpoints": checkpoints, "one_layer": one_layer, "loss": loss}


# ----------------------------------------------------------------------------------------------- the plan


def plan_recipe(cfg: PretrainConfig, recipe: str, gpu: ClusterGPU, *, text_tokens: int = DEFAULT_TEXT_TOKENS,
                target_size: int = DEFAULT_TARGET_SIZE, overhead_gib: float = DEFAULT_OVERHEAD_GIB) -> Plan:
    """Plan one resolved recipe against ``gpu`` (see the module docstring). Raises :class:`PlanError`."""
    if not cfg.ray.use_gpu:
        raise PlanError(f"{recipe}: ray.use_gpu is false; the planner plans GPU runs")
    precision = "bf16" if cfg.engine.precision == "auto" else cfg.engine.precision
    if precision != "bf16":
        raise PlanError(f"{recipe}: engine.precision={precision}; DeepSpeed's estimators assume 16-bit mixed "
                        "precision (bf16)")
    if cfg.engine.zero_stage not in (2, 3):
        raise PlanError(f"{recipe}: engine.zero_stage={cfg.engine.zero_stage}; DeepSpeed's estimators cover "
                        "ZeRO-2 and ZeRO-3 only")
    n = cfg.ray.num_workers
    per_node = min(gpu.gpus_per_node, n)
    if n % per_node:
        raise PlanError(f"{recipe}: ray.num_workers={n} is not a multiple of the {per_node} GPUs per node")
    if gpu.max_gpus is not None and n > gpu.max_gpus:
        raise PlanError(f"{recipe}: ray.num_workers={n} but the cluster ({gpu.source}) holds at most "
                        f"{gpu.max_gpus} GPUs")
    model_cfg = cfg.model.build()
    total, largest = model_counts(model_cfg)
    seq_len, frames, bucket, frame_tokens, codes = longest_sequence(cfg, text_tokens, target_size)
    states, cpu_states, table = model_state_bytes(cfg.engine.zero_stage, total, largest, n // per_node, per_node,
                                                  cfg.engine.offload_optimizer, cfg.engine.zero_init)
    acts = activation_bytes(model_cfg, cfg.data.micro_batch_size, seq_len, codes)
    buckets = (cfg.engine.reduce_bucket_size + cfg.engine.allgather_bucket_size) * 2
    overhead = int(overhead_gib * GIB)
    grand = states + sum(acts.values()) + buckets + overhead
    frac = grand / (gpu.memory_gib * GIB)
    verdict = ("does NOT fit" if frac > 1 else "tight" if frac > TIGHT_FRACTION else "fits") + \
        f" ({100 * frac:.0f} % of {gpu.memory_gib:g} GiB)"
    return Plan(recipe=recipe, preset=cfg.model.init_from or cfg.model.preset, total_params=total,
                largest_layer_params=largest, num_gpus=n, num_nodes=n // per_node, gpus_per_node=per_node,
                zero_stage=cfg.engine.zero_stage, precision=precision, offload_optimizer=cfg.engine.offload_optimizer,
                zero_init=cfg.engine.zero_init, activation_checkpointing=model_cfg.activation_checkpointing,
                micro_batch_size=cfg.data.micro_batch_size, seq_len=seq_len, text_tokens=text_tokens,
                latent_frames=frames, bucket=bucket, frame_tokens=frame_tokens, model_states=states,
                cpu_model_states_per_node=cpu_states, activations=acts, buckets=buckets, overhead=overhead,
                total=grand, gpu=gpu, verdict=verdict, deepspeed_table=table)


def _gib(x: int) -> str:
    return f"{x / GIB:.2f} GiB"


def table_rows(plans: list[Plan]) -> list[tuple[str, list[str]]]:
    """The printed table: ``(row label, one cell per plan)``; the table in docs/pretrain.md is this table."""

    def row(label, fn):
        return label, [fn(p) for p in plans]

    z = plans[0].zero_stage if len({p.zero_stage for p in plans}) == 1 else "2/3"
    return [
        row("model", lambda p: f"{p.preset}: {p.total_params / 1e9:.2f} B params, largest layer "
                               f"{p.largest_layer_params / 1e6:.1f} M"),
        row("GPUs", lambda p: f"{p.num_gpus} × {p.gpu.name}: {p.num_nodes} nodes × {p.gpus_per_node}"),
        row("engine", lambda p: f"ZeRO-{p.zero_stage}, {p.precision}, optimizer on "
                                f"{'CPU' if p.offload_optimizer else 'GPU'}, activation checkpointing "
                                f"{'on' if p.activation_checkpointing else 'off'}"),
        row("tokens per micro-batch", lambda p: f"{p.micro_batch_size} × {p.seq_len:,} ({p.text_tokens:,} text + "
                                                f"{p.latent_frames} × {p.frame_tokens:,} at {p.bucket[0]}×{p.bucket[1]})"),
        row(f"params + grads + optimizer states (DeepSpeed ZeRO-{z} estimator)", lambda p: _gib(p.model_states)),
        row("activation checkpoints (layers × B·L·D·2 B + RoPE tables)",
            lambda p: _gib(p.activations["checkpoints"])),
        row("one layer recomputed in backward + its gradients", lambda p: _gib(p.activations["one_layer"])),
        row("final norm + AR-DF loss (masked codes, one CE chunk)", lambda p: _gib(p.activations["loss"])),
        row("reduce + all-gather buckets", lambda p: _gib(p.buckets)),
        row("CUDA context, NCCL, allocator (allowance)", lambda p: _gib(p.overhead)),
        row("total per GPU", lambda p: _gib(p.total)),
        row("verdict", lambda p: p.verdict),
        row("CPU memory per node, model states (DeepSpeed)", lambda p: _gib(p.cpu_model_states_per_node)),
    ]


def render_text(plans: list[Plan]) -> str:
    """A fixed-width table, one column per recipe."""
    rows = [("per GPU", [Path(p.recipe).name for p in plans]), *table_rows(plans)]
    widths = [max(len(r[0]) for r in rows)] + [max(len(r[1][i]) for r in rows) for i in range(len(plans))]
    lines = []
    for k, (label, cells) in enumerate(rows):
        lines.append("  ".join([label.ljust(widths[0])] + [c.ljust(w) for c, w in zip(cells, widths[1:])]).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(plans: list[Plan]) -> str:
    """A Markdown table, one column per recipe (what docs/pretrain.md holds)."""
    head = "| per GPU | " + " | ".join(f"`{Path(p.recipe).name}`" for p in plans) + " |"
    sep = "|---|" + "---|" * len(plans)
    body = []
    for label, cells in table_rows(plans):
        if label in ("total per GPU", "verdict"):
            cells = [f"**{c}**" for c in cells]
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


# ----------------------------------------------------------------------------------------------- CLI


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """The planner's options (shared with ``workflows.pretrain --plan``)."""
    p.add_argument("--cluster", default=None,
                   help=f"Ray cluster launcher YAML whose GPU node type gives the GPU (default {DEFAULT_CLUSTER} "
                        "when it exists)")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help=f"memory of one GPU; overrides --cluster (default: the cluster's GPU, else "
                        f"{DEFAULT_GPU_MEMORY_GIB:g})")
    p.add_argument("--gpus-per-node", type=int, default=8, help="with --gpu-memory-gib: GPUs per node (default 8)")
    p.add_argument("--text-tokens", type=int, default=DEFAULT_TEXT_TOKENS,
                   help="longest prompt in tokens (default: the tokenizer job's --max-text-tokens, 1024)")
    p.add_argument("--target-size", type=int, default=DEFAULT_TARGET_SIZE,
                   help="bucket family of the shards (tokenizer job's --target-size; 352 = 256p, 528 = 384p)")
    p.add_argument("--overhead-gib", type=float, default=DEFAULT_OVERHEAD_GIB,
                   help="allowance for CUDA context, NCCL buffers and fragmentation (default 4)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (the one in docs/pretrain.md)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the plans as JSON")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.plan", description=__doc__.split("\n")[0],
                                epilog="Overrides (key.sub=value) apply to every --config, as in workflows.pretrain.")
    p.add_argument("--config", action="append", required=True,
                   help="pre-training recipe YAML; repeat for one column per recipe")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    add_plan_options(p)
    return p.parse_args(argv)


def resolve_gpu(args: argparse.Namespace) -> ClusterGPU:
    """``--gpu-memory-gib``, else ``--cluster`` (or the default cluster file when present), else 80 GiB."""
    if args.gpus_per_node < 1:
        raise PlanError(f"--gpus-per-node must be >= 1, got {args.gpus_per_node}")
    if args.gpu_memory_gib is not None:
        if args.gpu_memory_gib <= 0:
            raise PlanError(f"--gpu-memory-gib must be > 0, got {args.gpu_memory_gib}")
        return ClusterGPU(f"GPU ({args.gpu_memory_gib:g} GiB)", args.gpu_memory_gib, args.gpus_per_node,
                          source="--gpu-memory-gib")
    cluster = args.cluster
    if cluster is None:
        default = Path(__file__).resolve().parent.parent / DEFAULT_CLUSTER
        cluster = str(default) if default.exists() else None
    if cluster is None:
        return ClusterGPU(f"GPU ({DEFAULT_GPU_MEMORY_GIB:g} GiB)", DEFAULT_GPU_MEMORY_GIB, args.gpus_per_node,
                          source="default")
    return read_cluster_gpu(cluster)


def run(args: argparse.Namespace, configs: list[str], overrides: list[str]) -> list[Plan]:
    """Plan every recipe, print the table, write JSON when asked."""
    if args.text_tokens < 0 or args.target_size < 32 or args.overhead_gib < 0:
        raise PlanError("--text-tokens and --overhead-gib must be >= 0, --target-size >= 32")
    gpu = resolve_gpu(args)
    plans = [plan_recipe(load_pretrain_config(c, overrides), c, gpu, text_tokens=args.text_tokens,
                         target_size=args.target_size, overhead_gib=args.overhead_gib) for c in configs]
    print(render_markdown(plans) if args.markdown else render_text(plans))
    if args.json:
        Path(args.json).write_text(json.dumps([p.to_dict() for p in plans], indent=2) + "\n")
        print(f"wrote {args.json}")
    return plans


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args, args.config, args.overrides)
    except (ConfigError, PlanError, ValueError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    return 0


__all__ = ["GPU_TYPES", "ClusterGPU", "Plan", "PlanError", "activation_bytes", "layer_bytes_per_token", "longest_sequence", "model_counts",
           "model_state_bytes", "plan_recipe", "read_cluster_gpu", "render_markdown", "render_text", "table_rows"]

if __name__ == "__main__":
    sys.exit(main())
