"""The Ray Train worker: ``train_loop_per_worker(config)`` with AR-DF steps on a DeepSpeed engine.

Each worker rebuilds :class:`PretrainConfig` from ``config["cfg"]`` (it reads no globals), builds the model
(:class:`lumos.model.LumosModel`; fine-tuning loads the ``model.init_from`` weights into it unless the run resumes
from its own checkpoint, :mod:`workflows.training.finetune`), wraps it with :func:`workflows.training.engine.build_engine`, streams
its shard of the token dataset (:mod:`workflows.training.shard_data`), and runs optimizer steps of ``grad_accum``
micro-batches, each an AR-DF batch (:func:`lumos.ardf.make_batch`, LUMOS_SPEC §7) scored by
:func:`lumos.loss.ardf_loss`.

Checkpoints (DESIGN §4.5): every rank writes its DeepSpeed state under ``ds/``; rank 0 also writes the
consolidated ``model.safetensors`` + ``config.json`` (with a copy of the video tokenizer under ``tokenizer/``),
``train_config.yaml`` and ``train_state.json``; then all ranks call ``ray.train.report`` with the directory and
Ray merges the per-rank files. A restarted or relaunched run resumes from ``ray.train.get_checkpoint()`` at the
saved step and data position (epoch, micro-batches taken); the AR-DF mask generator of each micro-batch is seeded
by (seed, rank, epoch, index), so the resumed run sees the very batches the first one would have.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs
import torch

from lumos import storage
from workflows.config_io import dump_config
from workflows.training.engine import (
    build_engine,
    compile_blocks,
    gathered_params,
    model_init_context,
    precision,
    precision_warning,
)
from workflows.training.run_metrics import MetricsWriter, WindowStats, device_peak_flops, download_tree
from workflows.training.shard_data import batch_tokens, epoch_batches, sample_batches
from workflows.training.train_config import PretrainConfig

log = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
TEXT_TOKENIZER_FILE = "text_tokenizer.json"


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    batch_in_epoch: int = 0
    """Micro-batches this worker has taken from the current epoch (same on every worker)."""
    tokens_seen: int = 0
    """Real (unpadded) tokens trained on, all workers."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Worker:
    """Runtime facts of this training worker."""

    rank: int
    world: int
    device: torch.device
    local_rank: int = 0
    """Rank among the workers on this node."""
    local_world: int = 1
    """Workers on this node."""

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


def setup_worker(cfg: PretrainConfig) -> Worker:
    """Rank, world size and device from Ray Train; thread count; identical model init on every rank."""
    import ray.train

    ctx = ray.train.get_context()
    if cfg.ray.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
        torch.set_num_threads(cfg.ray.threads_per_worker)
    torch.manual_seed(cfg.seed)
    return Worker(ctx.get_world_rank(), ctx.get_world_size(), device, ctx.get_local_rank(),
                  ctx.get_local_world_size())


def loss_function(cfg: PretrainConfig, code_counts: list[int] | None):
    """``(model, batch) -> (loss, metrics)``: :func:`lumos.loss.ardf_loss`, with per-code weights from the shards'
    code histogram when ``ardf.loss_weighting`` is ``code_frequency``."""
    from lumos.loss import ardf_loss, code_frequency_weights

    if cfg.ardf.loss_weighting == "none":
        return ardf_loss
    if code_counts is None:
        raise ValueError(f"ardf.loss_weighting={cfg.ardf.loss_weighting!r} needs the shards' code histogram")
    weights = code_frequency_weights(code_counts, cfg.ardf.loss_weight_power, cfg.ardf.loss_weight_max)
    return functools.partial(ardf_loss, code_weights=weights)


def build_model_engine(cfg: PretrainConfig, w: Worker, init_from: str | None = None,
                       code_counts: list[int] | None = None):
    """The LumosModel wrapped in its DeepSpeed engine (model built partitioned under ZeRO-3 on GPU), with the
    weights of the ``init_from`` checkpoint loaded before ``deepspeed.initialize`` when given."""
    from lumos.model import LumosModel
    from workflows.training.engine import build_ds_config
    from workflows.training.finetune import load_init_weights

    model_cfg = cfg.model.build()
    with model_init_context(cfg, build_ds_config(cfg, w.world, w.on_gpu), w.on_gpu):
        model = LumosModel(model_cfg)
    if init_from:
        load_init_weights(model, init_from, w.rank)
        if w.rank == 0:
            log.info("initialised the model from %s", init_from)
    model.to(w.device)
    if cfg.engine.compile:
        compile_blocks(model, w.on_gpu)
    engine = build_engine(model, loss_function(cfg, code_counts), cfg, w.world, w.on_gpu)
    warning = precision_warning(cfg, w.on_gpu)
    if warning and w.local_rank == 0:
        log.warning(warning)
    return model_cfg, model, engine


def micro_batches(shard, cfg: PretrainConfig, state: TrainState, w: Worker, temporal_compression: int,
                  *, samples_made: bool = False) -> Iterator[tuple[int, int, list[dict]]]:
    """Endless ``(epoch, index, samples)`` stream starting at the saved data position. ``samples_made``: ``shard``
    holds samples already made by ``row_to_sample`` (a list in memory), not rows."""
    epoch, skip = state.epoch, state.batch_in_epoch
    while True:
        n = 0
        epoch_iter = (sample_batches(shard, cfg.data, seed=cfg.seed, epoch=epoch, rank=w.rank) if samples_made else
                      epoch_batches(shard, cfg.data, seed=cfg.seed, epoch=epoch, rank=w.rank,
                                    temporal_compression=temporal_compression))
        for i, samples in enumerate(epoch_iter):
            n += 1
            if i >= skip:
                yield epoch, i, samples
        if n == 0:
            raise ValueError(f"data.shards={cfg.data.shards}: too few clips for ray.num_workers={w.world} × "
                             f"data.micro_batch_size={cfg.data.micro_batch_size}")
        epoch, skip = epoch + 1, 0


def batch_generator(seed: int, rank: int, epoch: int, index: int) -> torch.Generator:
    """The AR-DF mask/text-drop generator of one micro-batch (reproducible after a resume)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + epoch * 100_003 + index) % 2**63)


def train_step(engine, batches: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict]:
    """One optimizer step over ``grad_accum`` micro-batches.

    Args:
        engine: the DeepSpeed engine (``engine(batch) -> (loss, metrics)``).
        batches: AR-DF batches from :func:`lumos.ardf.make_batch` (CPU tensors).
        device: where the engine lives.

    Returns:
        The loss metrics of each micro-batch.
    """
    out = []
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss, metrics = engine(batch)
        engine.backward(loss)
        engine.step()
        out.append(metrics)
    return out


def fetch_checkpoint(ckpt, rank: int) -> str:
    """A local directory with what this rank needs to resume: all of a local checkpoint in place, or — for
    remote storage — everything except other ranks' ZeRO shards and the consolidated weights/tokenizer."""
    fs, root = ckpt.filesystem, ckpt.path.rstrip("/")
    if isinstance(fs, pafs.LocalFileSystem):
        return root
    local = tempfile.mkdtemp(prefix="lumos-resume-")
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = info.path[len(root):].lstrip("/")
        other = re.search(r"zero_pp_rank_(\d+)_", rel)
        if info.type != pafs.FileType.File or rel == "model.safetensors" or rel.startswith("tokenizer/"):
            continue
        if other and int(other.group(1)) != rank:
            continue
        os.makedirs(os.path.dirname(os.path.join(local, rel)), exist_ok=True)
        pafs.copy_files(info.path, os.path.join(local, rel), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
    return local


def restore(engine, w: Worker) -> TrainState | None:
    """Load the latest Ray Train checkpoint into ``engine``; ``None`` on a fresh run."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    local = fetch_checkpoint(ckpt, w.rank)
    path, _ = engine.load_checkpoint(os.path.join(local, "ds"))
    if path is None:
        raise RuntimeError(f"checkpoint {ckpt.path}: no DeepSpeed state under ds/")
    with open(os.path.join(local, STATE_FILE)) as f:
        state = TrainState(**json.load(f))
    if w.rank == 0:
        log.info("resumed from %s at step %d (epoch %d, micro-batch %d)", ckpt.path, state.step, state.epoch,
                 state.batch_in_epoch)
    return state


def write_consolidated(out_dir: str, model, model_cfg, cfg: PretrainConfig, state: TrainState,
                       tokenizer_uri: str | None) -> None:
    """Rank 0: ``model.safetensors`` + ``config.json`` (lumos.checkpoint), the tokenizer copy, the resolved
    training config and the train state."""
    from lumos.checkpoint import save_checkpoint as save_model

    extra = {"text_tokenizer": cfg.data.text_tokenizer, "train": state.to_dict(), "video_tokenizer": None}
    if cfg.sampling.to_meta():
        extra["sampling"] = cfg.sampling.to_meta()
    if cfg.data.text_tokenizer:  # a copy inside the checkpoint, so it loads anywhere
        storage.write_text(os.path.join(out_dir, TEXT_TOKENIZER_FILE), storage.read_text(cfg.data.text_tokenizer))
        extra.update(text_tokenizer=TEXT_TOKENIZER_FILE, text_tokenizer_source=cfg.data.text_tokenizer)
    if cfg.model.init_from:
        extra["init_from"] = cfg.model.init_from
    if tokenizer_uri:
        download_tree(tokenizer_uri, os.path.join(out_dir, "tokenizer"))
        extra["video_tokenizer"] = "tokenizer"
        extra["video_tokenizer_source"] = tokenizer_uri
    save_model(out_dir, model, model_cfg, extra=extra)
    with open(os.path.join(out_dir, "train_config.yaml"), "w") as f:
        f.write(dump_config(cfg))
    with open(os.path.join(out_dir, STATE_FILE), "w") as f:
        json.dump(state.to_dict(), f)


def save_checkpoint(engine, model, model_cfg, cfg: PretrainConfig, state: TrainState, w: Worker,
                    tokenizer_uri: str | None, metrics: dict) -> None:
    """Every rank: DeepSpeed state → temp dir (+ rank 0's consolidated files) → ``ray.train.report``."""
    import ray.train

    tmp = tempfile.mkdtemp(prefix="lumos-ckpt-")
    engine.save_checkpoint(os.path.join(tmp, "ds"), tag=f"step{state.step:08d}", client_state=state.to_dict())
    with gathered_params(engine):
        if w.rank == 0:
            write_consolidated(tmp, model, model_cfg, cfg, state, tokenizer_uri)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                     checkpoint_dir_name=f"checkpoint_{state.step:08d}")
    shutil.rmtree(tmp, ignore_errors=True)


def maybe_fail(cfg: PretrainConfig, state: TrainState, w: Worker) -> None:
    """Fault injection: the configured rank exits hard once at ``fault.exit_at_step`` (guarded by a marker)."""
    f = cfg.fault
    if f.exit_at_step == state.step and w.rank == f.exit_rank and not os.path.exists(f.marker):
        with open(f.marker, "w") as fh:
            fh.write(f"rank {w.rank} exited at step {state.step}\n")
        log.warning("fault injection: rank %d exits at step %d", w.rank, state.step)
        os._exit(1)


def log_window(stats: WindowStats, w: Worker, state: TrainState, engine, peak_total: float,
               writer: MetricsWriter | None, prec: str = "fp32") -> dict:
    """All-reduce the window's sums and let rank 0 write one metrics record (``prec``: the engine's resolved
    precision, which the MFU's peak is for)."""
    import torch.distributed as dist

    packed = stats.packed().to(w.device)
    dist.all_reduce(packed)
    summary = stats.summary(packed.cpu(), w.world)
    flops = summary.pop("flops")
    summary.update(step=state.step, lr=engine.get_lr()[0], epoch=state.epoch,
                   mfu=flops / summary["window_s"] / peak_total if peak_total > 0 else float("nan"),
                   peak_flops=peak_total, precision=prec)
    if writer is not None:
        writer.log(state.step, summary)
    stats.reset()
    return summary


def all_reduce_sum(value: float, w: Worker) -> float:
    """Sum of a number over all workers."""
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=w.device)
    dist.all_reduce(t)
    return float(t)


def measure_peak(cfg: PretrainConfig, w: Worker) -> float:
    """The job's peak FLOP/s, the MFU denominator: the sum of the GPUs' peaks; on CPU the sum over nodes of each
    node's matmul peak with all its workers' threads (``threads_per_worker × local workers``, measured by the
    node's first worker while the others wait), so that 2 workers × 1 thread and 1 × 2 on one machine divide by
    the same peak, as ``bench/train.py`` does."""
    import torch.distributed as dist

    dist.barrier()
    if w.on_gpu:
        mine = device_peak_flops(w.device, precision(cfg, True))
    else:
        mine = (device_peak_flops(w.device, precision(cfg, False), cfg.ray.threads_per_worker * w.local_world)
                if w.local_rank == 0 else 0.0)
    return all_reduce_sum(mine, w)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. ``config = {"cfg": PretrainConfig.to_dict(), "tokenizer": uri or None,
    "code_counts": the shards' code histogram or None}``."""
    import ray.train
    from tqdm import tqdm

    from lumos.ardf import make_batch
    from lumos.flops import flops_per_token

    cfg = PretrainConfig.from_dict(config["cfg"])
    tokenizer_uri = config.get("tokenizer")
    w = setup_worker(cfg)
    # a relaunch of a run that has a checkpoint resumes it: its state takes precedence over model.init_from
    init_from = cfg.model.init_from if ray.train.get_checkpoint() is None else None
    model_cfg, model, engine = build_model_engine(cfg, w, init_from, config.get("code_counts"))
    layout = model_cfg.layout
    state = restore(engine, w)
    resumed = state is not None
    state = state or TrainState()
    run_uri = storage.join(cfg.checkpoint.storage, cfg.checkpoint.name)
    writer = (MetricsWriter(run_uri, state.step if resumed else None, cfg.metrics.tensorboard)
              if w.rank == 0 else None)
    peak_total, prec = measure_peak(cfg, w), precision(cfg, w.on_gpu)
    shard = ray.train.get_dataset_shard("train")
    stream = micro_batches(shard, cfg, state, w, model_cfg.temporal_compression)
    stats = WindowStats()
    bar = tqdm(total=cfg.optim.max_steps, initial=state.step, desc="pretrain",
               disable=w.rank != 0 or not cfg.metrics.progress,
               mininterval=2.0, ascii=True)
    last, pending_tokens = {}, 0
    while state.step < cfg.optim.max_steps:
        batches, tokens, t_data = [], [], time.perf_counter()
        for _ in range(cfg.optim.grad_accum):
            epoch, index, samples = next(stream)
            batches.append(make_batch(samples, layout, cfg.ardf, batch_generator(cfg.seed, w.rank, epoch, index)))
            tokens.append(batch_tokens(samples))
            state.epoch, state.batch_in_epoch = epoch, index + 1
        stats.data_s += time.perf_counter() - t_data
        for m, b, t in zip(train_step(engine, batches, w.device), batches, tokens):
            seq_len = t / b["ids"].shape[0]
            stats.add(m["loss"], t, m["frame_loss_sum"], m["frame_tokens"], t * flops_per_token(model_cfg, seq_len))
        state.step += 1
        pending_tokens += sum(tokens)
        bar.update(1)
        if state.step % cfg.metrics.every_steps == 0 or state.step == cfg.optim.max_steps:
            last = log_window(stats, w, state, engine, peak_total, writer, prec)
            bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
        if state.step % cfg.checkpoint.every_steps == 0 or state.step == cfg.optim.max_steps:
            if writer is not None:
                writer.sync()
            state.tokens_seen += int(all_reduce_sum(pending_tokens, w))
            pending_tokens = 0
            metrics = {k: v for k, v in last.items() if isinstance(v, int | float)}
            save_checkpoint(engine, model, model_cfg, cfg, state, w, tokenizer_uri, {**metrics, "step": state.step})
        maybe_fail(cfg, state, w)
    bar.close()
    if writer is not None:
        writer.close()


__all__ = ["STATE_FILE", "TrainState", "batch_generator", "fetch_checkpoint", "micro_batches", "restore",
           "save_checkpoint", "train_loop_per_worker", "train_step", "write_consolidated"]
