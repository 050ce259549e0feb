"""Pre-training Lumos-1 on Ray Train + DeepSpeed (DESIGN §4.2; LUMOS_SPEC §7 AR-DF, §9 recipe).

Launch recipes::

    # laptop / CI: local Ray, 2 CPU workers, debug model, seconds
    python -m workflows.pretrain --config workflows/configs/pretrain_debug.yaml data.shards=/tmp/shards
    # CPU demo (minutes)
    python -m workflows.pretrain --config workflows/configs/pretrain_small.yaml data.shards=s3://bucket/shards
    # 48 GPUs (6 nodes × 8), ZeRO-3 + bf16, on a running cluster
    ray job submit --working-dir . -- python -m workflows.pretrain \\
        --config workflows/configs/pretrain_1b_48gpu.yaml data.shards=s3://bucket/shards-256p
    # fine-tune: start from a checkpoint's weights, its config.json gives the model (workflows.training.finetune)
    python -m workflows.pretrain --config workflows/configs/pretrain_1b_48gpu.yaml \\
        model.init_from=s3://bucket/ckpt/lumos1-1b-256p data.shards=s3://bucket/shards/mine

Running the same command again (same ``checkpoint.storage`` + ``checkpoint.name``) resumes from the latest
checkpoint at the same step and data position; a changed config that the checkpoint cannot follow (model shape,
vocabulary, data) is refused in one line before Ray starts, resumable changes (LR, steps) are logged. One run at a
time per storage + name (a claim file, ``_claim.json``); shards with duplicate clips are refused.
A lost worker restarts the worker group from the last checkpoint
(``ray.max_failures``). At the end the consolidated weights are copied to ``<storage>/<name>/final`` — the path to
give ``workflows.generate`` / ``workflows.serve`` — and loss plots are drawn into ``<storage>/<name>/metrics``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

from lumos import storage
from tokenize_jobs.shards import ShardManifest
from workflows.config_io import ConfigError, dump_config
from workflows.training.finetune import prepare_init
from workflows.training.run_guard import check_resume, claim_run, verify_shards, write_record
from workflows.training.run_metrics import plot_metrics, read_metrics
from workflows.training.shard_data import check_shards, code_histogram, read_shards
from workflows.training.train_config import PretrainConfig, load_pretrain_config
from workflows.training.train_loop import train_loop_per_worker

log = logging.getLogger("workflows.pretrain")
FINAL_FILES = ("config.json", "model.safetensors", "train_config.yaml", "train_state.json", "text_tokenizer.json")


@dataclass
class PretrainResult:
    """What a finished run produced."""

    run_uri: str
    final: str
    """Consolidated checkpoint for generate/serve: ``<run>/final``."""
    checkpoint: str
    """The latest Ray Train checkpoint (also holds the DeepSpeed state)."""
    metrics: dict
    plots: list[str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.pretrain", description=__doc__.split("\n")[0],
                                epilog="Overrides are dotted keys, e.g. optim.lr=3e-4 model.preset=small "
                                       "data.shards=s3://bucket/shards ray.num_workers=4")
    p.add_argument("--config", required=True, help="YAML recipe (local or s3://), e.g. "
                                                   "workflows/configs/pretrain_debug.yaml")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and DeepSpeed config, "
                                                               "then exit")
    p.add_argument("--plan", action="store_true", help="print the planned memory per GPU (DeepSpeed's estimators + "
                                                       "activations; python -m workflows.plan has more options), "
                                                       "then exit")
    return p.parse_args(argv)


def absolute_paths(cfg: PretrainConfig) -> PretrainConfig:
    """Make local paths absolute, since Ray workers do not share the driver's working directory."""
    cfg.checkpoint.storage = storage.absolute(cfg.checkpoint.storage)
    cfg.data.shards = storage.absolute(cfg.data.shards)
    cfg.data.video_tokenizer = storage.absolute(cfg.data.video_tokenizer)
    cfg.data.text_tokenizer = storage.absolute(cfg.data.text_tokenizer)
    if cfg.fault.marker:
        cfg.fault.marker = storage.absolute(cfg.fault.marker)
    return cfg


def resolve_tokenizer(cfg: PretrainConfig, manifest: ShardManifest) -> str | None:
    """The video tokenizer URI to record in checkpoints; checks its codebook matches the model's."""
    uri = cfg.data.video_tokenizer or manifest.tokenizer_uri
    if uri is None:
        log.warning("no video tokenizer named in data.video_tokenizer or the shard manifest: checkpoints "
                    "will not be self-contained")
        return None
    uri = storage.absolute(uri)
    meta_uri = storage.join(uri, "config.json")
    if storage.exists(meta_uri):
        codes = json.loads(storage.read_text(meta_uri)).get("codebook_size")
        want = cfg.model.build().codebook_size
        if codes is not None and int(codes) != want:
            raise ValueError(f"video tokenizer {uri} has {codes} codes but the model expects {want} "
                             "(set model.overrides.codebook_size)")
    elif not storage.exists(storage.join(uri, "encoder.jit")):
        raise ValueError(f"data.video_tokenizer={uri}: not a tokenizer directory")
    return uri


def init_ray(cfg: PretrainConfig) -> None:
    """Join ``ray.address`` or start a local Ray (unless this process already did)."""
    from tokenize_jobs.ray_runtime import deepspeed_env, start_ray

    start_ray(address=cfg.ray.address, include_dashboard=False, env_vars=deepspeed_env(cpu=not cfg.ray.use_gpu),
              log_to_driver=True)


def trainer_class():
    """``TorchTrainer`` without Ray Train's detached PlacementGroupCleaner.

    The cleaner asks the State API whether the controller is alive and removes the worker group's placement
    group when the answer is "not found". With more than one Ray instance on a host (CI machines, laptops running
    several sessions) the State API client may query another instance, get "not found" and kill a healthy run
    (seen here: a restarted worker group destroyed mid-step). Placement groups of a non-detached controller are
    released with the job anyway, so nothing leaks without it.
    """
    from ray.train.torch import TorchTrainer

    class LumosTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks()
                    if type(cb).__name__ != "PlacementGroupCleanerCallback"]

    return LumosTrainer


def loss_code_counts(cfg: PretrainConfig) -> list[int] | None:
    """The shards' code histogram when the loss weights codes by frequency (read once, on the driver)."""
    if cfg.ardf.loss_weighting == "none":
        return None
    counts = code_histogram(cfg.data.shards, cfg.model.build().codebook_size)
    log.info("ardf.loss_weighting=%s: code histogram of %d tokens, %d codes used", cfg.ardf.loss_weighting,
             int(counts.sum()), int((counts > 0).sum()))
    return counts.tolist()


def build_trainer(cfg: PretrainConfig, tokenizer: str | None):
    """The TorchTrainer: scaling, run storage (local or S3), checkpoint retention, failure policy, data."""
    import ray.data
    import ray.train

    fs, path = storage.resolve(cfg.checkpoint.storage)
    run_config = ray.train.RunConfig(
        name=cfg.checkpoint.name,
        storage_path=path,
        storage_filesystem=fs if storage.is_s3(cfg.checkpoint.storage) else None,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
        failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
    )
    resources = {"CPU": cfg.ray.cpus_per_worker} | ({"GPU": 1} if cfg.ray.use_gpu else {})
    scaling = ray.train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                      resources_per_worker=resources)
    # Ray Data's per-operator bars for the split would interleave with the rank-0 step bar in the log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    # preserve_order makes the equal split deterministic, so a resumed run gets the same rows per worker.
    ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = True
    data_config = ray.train.DataConfig(execution_options=ingest, enable_shard_locality=False)
    return trainer_class()(train_loop_per_worker, train_loop_config={"cfg": cfg.to_dict(), "tokenizer": tokenizer,
                                                                "code_counts": loss_code_counts(cfg)},
                        scaling_config=scaling, run_config=run_config, datasets={"train": read_shards(cfg.data, cfg.seed)},
                        dataset_config=data_config)


def publish_final(checkpoint, run_uri: str) -> str:
    """Copy the consolidated files of the latest checkpoint to ``<run>/final`` (no DeepSpeed state)."""
    import pyarrow.fs as pafs

    final = storage.join(run_uri, "final")
    dst_fs, dst = storage.resolve(final)
    src_fs, src = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if dst_fs.get_file_info(dst).type != pafs.FileType.NotFound:
        dst_fs.delete_dir(dst)
    dst_fs.create_dir(dst, recursive=True)
    for name in FINAL_FILES:
        if src_fs.get_file_info(f"{src}/{name}").type == pafs.FileType.File:
            pafs.copy_files(f"{src}/{name}", f"{dst}/{name}", source_filesystem=src_fs, destination_filesystem=dst_fs)
    tok = f"{src}/tokenizer"
    for info in src_fs.get_file_info(pafs.FileSelector(tok, allow_not_found=True, recursive=True)):
        if info.type == pafs.FileType.File:
            target = f"{dst}/tokenizer/{info.path[len(tok):].lstrip('/')}"
            dst_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(info.path, target, source_filesystem=src_fs, destination_filesystem=dst_fs)
    return final


def run_pretraining(cfg: PretrainConfig) -> PretrainResult:
    """Validate inputs, run the TorchTrainer to ``optim.max_steps``, publish ``final/`` and the plots.

    Raises:
        ValueError: missing/partial shards, duplicate clips, a tokenizer that does not match the model, a resume
            with a changed model/vocabulary/data.
        RuntimeError: training failed after ``ray.max_failures`` restarts; another run holds the run name
            (``lumos.claims.ClaimError``).
    """
    cfg = absolute_paths(cfg)
    manifest = check_shards(cfg.data.shards)
    if cfg.data.text_tokenizer is None and not cfg.model.init_from:
        cfg.data.text_tokenizer = manifest.text_tokenizer
    verify_shards(cfg.data.shards, manifest)
    cfg = prepare_init(cfg, manifest)  # model.init_from: checkpoint config, weights header, shards' vocabulary
    tokenizer = resolve_tokenizer(cfg, manifest)
    run_uri = storage.join(cfg.checkpoint.storage, cfg.checkpoint.name)
    claim = claim_run(run_uri)
    try:
        return _run_claimed(cfg, manifest, tokenizer, run_uri)
    finally:
        claim.release()


def _run_claimed(cfg: PretrainConfig, manifest: ShardManifest, tokenizer: str | None, run_uri: str) -> PretrainResult:
    record = check_resume(cfg, run_uri, manifest)  # before anything in the run is written
    storage.write_text(storage.join(run_uri, "train_config.yaml"), dump_config(cfg))
    write_record(run_uri, record)
    init_ray(cfg)
    log.info("run %s: %d workers, model %s, ZeRO-%d", run_uri, cfg.ray.num_workers,
             cfg.model.init_from or cfg.model.preset,
             cfg.engine.zero_stage)
    try:
        result = build_trainer(cfg, tokenizer).fit()
    except Exception as e:  # Ray wraps worker errors in TrainingFailedError
        raise RuntimeError(f"training failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}") from e
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_uri} finished without a checkpoint")
    final = publish_final(result.checkpoint, run_uri)
    plots = plot_metrics(run_uri) if cfg.metrics.plots else []
    metrics = (read_metrics(run_uri) or [{}])[-1]
    return PretrainResult(run_uri, final, f"{'s3://' if storage.is_s3(run_uri) else ''}{result.checkpoint.path}",
                          metrics, plots)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.plan:
        from workflows import plan

        return plan.main(["--config", args.config, *args.overrides])
    try:
        cfg = load_pretrain_config(args.config, args.overrides)
        if args.print_config:
            from workflows.training.engine import build_ds_config

            print(dump_config(cfg))
            print(json.dumps(build_ds_config(cfg, cfg.ray.num_workers, cfg.ray.use_gpu), indent=2))
            return 0
        if cfg.stages:
            from workflows.training.curriculum import run_curriculum

            done = run_curriculum(cfg, run_pretraining)
            if not done:
                print("every stage of the curriculum is already finished")
                return 0
            res = done[-1]
        else:
            res = run_pretraining(cfg)
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    print(f"final checkpoint (for workflows.generate / workflows.serve): {res.final}")
    print(f"latest training checkpoint (resume state): {res.checkpoint}")
    print(f"metrics: {storage.join(res.run_uri, 'metrics')} (loss {res.metrics.get('loss', float('nan')):.4f} "
          f"at step {res.metrics.get('step')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
