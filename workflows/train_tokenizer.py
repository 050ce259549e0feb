"""Train our discrete video tokenizer (causal conv + FSQ, LUMOS_SPEC §3.1) with Ray Train on N workers (DDP).

Launch recipes::

    # CPU, local Ray, 2 workers, seconds (the CI smoke recipe)
    python -m workflows.train_tokenizer --config workflows/configs/tokenizer_debug.yaml --out /tmp/tok_debug
    # the committed lumos/assets/tokenizer_small (64×64 shapes clips, ~10 min on 2 CPU cores)
    python -m workflows.train_tokenizer --config workflows/configs/tokenizer_small.yaml out=lumos/assets/tokenizer_small
    # add real clips (a manifest like tokenize_jobs' input, or a directory of videos), output to S3
    python -m workflows.train_tokenizer --config workflows/configs/tokenizer_small.yaml \\
        data.manifest=s3://bucket/raw/corpus/manifest.jsonl data.real_fraction=0.5 out=s3://bucket/tok
    # on a GPU cluster
    ray job submit --working-dir . -- python -m workflows.train_tokenizer \\
        --config workflows/configs/tokenizer_cluster.yaml out=s3://bucket/checkpoints/video_tokenizer

Shapes-world clips are rendered on the fly from ``data.seed`` (each worker draws its own stream); real clips are
decoded once per worker (each worker takes every N-th file) and sampled as random windows. Loss = L1 + MSE.
Held-out quality (PSNR on ``heldout``-split shapes clips) is reported every ``eval_every`` steps. Rank 0 writes
``config.json`` + ``model.safetensors`` (+ ``train_config.yaml``) to ``out`` (local or s3://) at the end; the
directory is loadable with ``lumos.tokenizers.load_video_tokenizer``. ``ray.num_workers=0`` trains in-process
without Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from lumos import storage
from lumos.tokenizers.causal_conv import ConvTokenizerConfig, tokenizer_preset
from lumos.tokenizers.train import (
    build_optimizer,
    evaluate,
    fit_clip,
    lr_at,
    real_clips_batch,
    shapes_clips,
    train_step,
)
from lumos.tokenizers.video import ConvVideoTokenizer, build_video_tokenizer, save_video_tokenizer
from tokenize_jobs.cli import first_line
from workflows.config_io import ConfigError, build_dataclass, dump_config, load_config, to_dict

log = logging.getLogger("workflows.train_tokenizer")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".gif")


@dataclass(kw_only=True)
class DataConfig:
    size: int = 32
    """Frame height = width of training clips (a multiple of 8)."""
    num_frames: int = 5
    """Frames per training clip (1 + 4k keeps every latent group full)."""
    fps: float = 8.0
    """Shapes-world rendering rate."""
    max_objects: int = 3
    seed: int = 0
    manifest: str | None = None
    """Optional manifest (JSONL/CSV with a ``path`` column) of real videos to mix in."""
    real_dir: str | None = None
    """Optional directory of real videos to mix in."""
    real_fraction: float = 0.5
    """Share of each batch taken from real clips when a manifest or directory is given."""
    max_real_clips: int = 64
    """Real files decoded per worker (memory bound)."""
    max_real_frames: int = 120
    heldout_clips: int = 16

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size must be a positive multiple of 8, got {self.size}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {self.real_fraction}")


@dataclass(kw_only=True)
class OptimConfig:
    steps: int = 200
    batch_size: int = 4
    """Clips per worker per step."""
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    mse_weight: float = 1.0
    fg_weight: float = 0.0
    """Extra loss weight on pixels that differ from their frame's median colour (small objects on a plain
    background; see ``lumos.tokenizers.train.foreground_weights``)."""

    def __post_init__(self) -> None:
        if self.fg_weight < 0 or self.mse_weight < 0:
            raise ValueError(f"fg_weight and mse_weight must be >= 0, got {self.fg_weight}, {self.mse_weight}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(kw_only=True)
class RayConfig:
    num_workers: int = 2
    """Ray Train workers (0 = train in this process without Ray)."""
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    threads_per_worker: int = 1
    """torch intra-op threads per worker (CPU)."""
    address: str | None = None
    storage_path: str | None = None
    """Ray Train run storage (nothing large is written there; default: a temp dir)."""


@dataclass(kw_only=True)
class TrainTokenizerConfig:
    model: ConvTokenizerConfig = field(default_factory=lambda: tokenizer_preset("debug"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    out: str = "runs/tokenizer"
    """Output directory URI (local or s3://)."""
    seed: int = 0
    """Weight initialisation seed."""
    log_every: int = 25
    eval_every: int = 100


def list_real_videos(cfg: DataConfig) -> list[str]:
    """URIs of real videos from ``data.manifest`` and/or ``data.real_dir``."""
    uris = []
    if cfg.manifest:
        base = cfg.manifest.rsplit("/", 1)[0] if "/" in cfg.manifest else "."
        for line in storage.read_text(cfg.manifest).splitlines():
            if line.strip():
                path = json.loads(line)["path"]
                uris.append(path if storage.is_s3(path) or os.path.isabs(path) else storage.join(base, path))
    if cfg.real_dir:
        uris += [u for u in storage.list_files(cfg.real_dir) if u.lower().endswith(VIDEO_SUFFIXES)]
    return uris


def load_real_clips(uris: list[str], cfg: DataConfig) -> list[np.ndarray]:
    """Decode and fit clips (skipping unreadable files with a warning)."""
    from lumos.media import read_video_frames

    clips = []
    for uri in uris[: cfg.max_real_clips]:
        try:
            clips.append(fit_clip(read_video_frames(uri, max_frames=cfg.max_real_frames), cfg.size))
        except (ValueError, OSError) as e:
            log.warning("skipping real clip %s: %s", uri, e)
    return clips


class Batches:
    """Training batches for one worker: shapes clips, plus real windows when available."""

    def __init__(self, cfg: DataConfig, rank: int, world: int):
        self.cfg = cfg
        self.rng = np.random.default_rng([cfg.seed, rank])
        uris = list_real_videos(cfg)[rank::world]
        self.real = load_real_clips(uris, cfg) if uris and cfg.real_fraction > 0 else []

    def next(self, batch_size: int) -> torch.Tensor:
        c = self.cfg
        n_real = int(round(batch_size * c.real_fraction)) if self.real else 0
        parts = [shapes_clips(self.rng, batch_size - n_real, c.num_frames, c.size, c.fps)] if n_real < batch_size else []
        if n_real:
            parts.append(real_clips_batch(self.rng, self.real, n_real, c.num_frames))
        return torch.from_numpy(np.concatenate(parts))


def heldout_clips(cfg: DataConfig) -> np.ndarray:
    """The fixed held-out set: ``heldout``-split shapes clips from a seed no worker trains on."""
    return shapes_clips(np.random.default_rng([cfg.seed, 1_000_003]), cfg.heldout_clips, cfg.num_frames, cfg.size,
                        cfg.fps, split="heldout")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def run_worker(cfg: TrainTokenizerConfig, rank: int, world: int, report, wrap=lambda m: m) -> dict:
    """The training loop of one worker; ``report(metrics)`` is called on every rank at the same steps.

    Returns:
        the final metrics (rank 0 also wrote the tokenizer to ``cfg.out``).
    """
    tok = build_video_tokenizer(cfg.model, seed=cfg.seed)
    model = wrap(tok.model.train())
    opt = build_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay)
    batches, held = Batches(cfg.data, rank, world), heldout_clips(cfg.data)
    initial = evaluate(_unwrap(model), held)
    metrics: dict = {"step": 0, "heldout_psnr": initial["psnr"]}
    start = time.time()
    bar = tqdm(range(cfg.optim.steps), desc="train_tokenizer", disable=rank != 0, mininterval=5.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.optim.steps, cfg.optim.lr, cfg.optim.warmup_steps)
        m = train_step(model, opt, batches.next(cfg.optim.batch_size), cfg.optim.mse_weight,
                       cfg.optim.fg_weight)
        bar.set_postfix(loss=f"{m['loss']:.4f}")
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.optim.steps:
            metrics["heldout_psnr"] = evaluate(_unwrap(model), held)["psnr"]
        if done % cfg.log_every == 0 or done == cfg.optim.steps:
            metrics.update(step=done, loss=m["loss"], l1=m["l1"], mse=m["mse"], seconds=time.time() - start)
            if done < cfg.optim.steps:
                report(dict(metrics))
    metrics["initial_heldout_psnr"] = initial["psnr"]
    if rank == 0:
        save_final(cfg, ConvVideoTokenizer(cfg.model, _unwrap(model)), metrics)
    report(dict(metrics))
    return metrics


def save_final(cfg: TrainTokenizerConfig, tok: ConvVideoTokenizer, metrics: dict) -> None:
    """Write the tokenizer + the resolved training config to ``cfg.out``."""
    tok.model.eval()
    summary = {k: metrics[k] for k in ("step", "loss", "heldout_psnr", "initial_heldout_psnr") if k in metrics}
    summary["train_seconds"] = round(metrics.get("seconds", 0.0), 1)
    summary["data"] = {"size": cfg.data.size, "num_frames": cfg.data.num_frames, "seed": cfg.data.seed}
    save_video_tokenizer(cfg.out, tok, metrics=summary)
    storage.write_text(storage.join(cfg.out, "train_config.yaml"), dump_config(cfg))


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry: everything comes in through ``config`` (``{"cfg": TrainTokenizerConfig as dict}``)."""
    import ray.train
    import ray.train.torch

    cfg = build_dataclass(TrainTokenizerConfig, config["cfg"])
    torch.set_num_threads(cfg.ray.threads_per_worker)
    ctx = ray.train.get_context()
    run_worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.report,
               wrap=ray.train.torch.prepare_model)


def absolute_paths(cfg: TrainTokenizerConfig) -> TrainTokenizerConfig:
    """Local paths → absolute (Ray workers do not share the driver's working directory)."""
    cfg.out, cfg.data.manifest = storage.absolute(cfg.out), storage.absolute(cfg.data.manifest)
    cfg.data.real_dir = storage.absolute(cfg.data.real_dir)
    return cfg


def check_inputs(cfg: TrainTokenizerConfig) -> None:
    """Fail before any work on missing real-clip sources."""
    if cfg.data.manifest and not storage.exists(cfg.data.manifest):
        raise ValueError(f"data.manifest not found: {cfg.data.manifest}")
    if cfg.data.real_dir and not list_real_videos(DataConfig(real_dir=cfg.data.real_dir)):
        raise ValueError(f"data.real_dir has no videos: {cfg.data.real_dir}")


def run_ray(cfg: TrainTokenizerConfig) -> dict:
    """Run the TorchTrainer; returns the last reported metrics."""
    import ray
    import ray.train

    from tokenize_jobs.ray_runtime import start_ray
    from workflows.pretrain import trainer_class

    # Import the worker function by module name: when this file runs as __main__, cloudpickle would otherwise
    # ship it (and the config dataclasses) by value, without the module globals it needs.
    from workflows.train_tokenizer import train_loop_per_worker

    start_ray(address=cfg.ray.address, include_dashboard=False, log_to_driver=True)
    resources = {"CPU": cfg.ray.cpus_per_worker} | ({"GPU": 1} if cfg.ray.use_gpu else {})
    scaling = ray.train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                      resources_per_worker=resources)
    run = ray.train.RunConfig(name=f"train_tokenizer_{int(time.time())}",
                              storage_path=cfg.ray.storage_path or tempfile.mkdtemp(prefix="lumos-tok-ray-"))
    trainer = trainer_class()(train_loop_per_worker, train_loop_config={"cfg": to_dict(cfg)}, scaling_config=scaling,
                              run_config=run)
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors in TrainingFailedError
        raise RuntimeError(f"training failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}") from e
    return dict(result.metrics or {})


def train_tokenizer(cfg: TrainTokenizerConfig) -> dict:
    """Validate, train (Ray or in-process) and write ``cfg.out``; returns the final metrics."""
    cfg = absolute_paths(cfg)
    check_inputs(cfg)
    if cfg.ray.num_workers == 0:
        torch.set_num_threads(cfg.ray.threads_per_worker)
        return run_worker(cfg, 0, 1, report=lambda m: None)
    return run_ray(cfg)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.train_tokenizer", description=__doc__.split("\n")[0],
                                epilog="Overrides are dotted keys, e.g. optim.steps=500 data.size=64 "
                                       "model.channels=64 ray.num_workers=0 out=s3://bucket/tok")
    p.add_argument("--config", required=True, help="YAML recipe, e.g. workflows/configs/tokenizer_debug.yaml")
    p.add_argument("--out", help="output directory URI (same as the out= override)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        cfg = load_config(TrainTokenizerConfig, args.config, args.overrides + ([f"out={args.out}"] if args.out else []))
        metrics = train_tokenizer(cfg)
    except (ConfigError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    log.info("wrote tokenizer to %s: held-out PSNR %.2f dB (from %.2f dB) after %s steps", cfg.out,
             metrics.get("heldout_psnr", float("nan")), metrics.get("initial_heldout_psnr", float("nan")),
             metrics.get("step"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
