"""The tokenization job: videos + captions → Parquet token shards, on Ray Data (DESIGN §4.1, §4.3, §4.4).

Launch recipes::

    # local Ray (starts one on this machine), local files
    python -m tokenize_jobs.video --manifest data/manifest.jsonl --out runs/shards
    # a running cluster, S3 through the standard AWS environment
    ray job submit --working-dir . -- python -m tokenize_jobs.video \\
        --manifest s3://bucket/raw/manifest.jsonl --out s3://bucket/shards/v1 --tokenizer s3://bucket/tok
    # from Python: one TokenizeJobConfig field per flag (tokenize_jobs.job_config)
    run_job(TokenizeJobConfig(manifest="data/manifest.jsonl", out="runs/shards", fps=8))

Pipeline: manifest (driver: validate, resolve paths, drop inputs already done in ``--out``) → ``map_batches(
DecodeClips)`` on an autoscaling pool of CPU actors (decord in a child process per actor, per-step timeout) →
``map_batches(TokenizeClips)`` on an autoscaling actor pool, one GPU per actor when the cluster has GPUs →
``write_datasink(ShardSink)`` (shards + ``_errors/``) → ``_manifest.json``, written last. When the tokenizer runs on
CPUs (``--stages auto`` without GPUs, or ``fused``) decoding and tokenizing share one actor pool
(``DecodeTokenizeClips``): every CPU then decodes instead of one tokenizer actor per CPU mostly waiting for frames.
Rerunning with the same ``--out`` resumes: finished inputs are skipped, partially written ones continue with the
clips still missing; ``--retry-errors`` also retries the inputs and clips that failed (their error rows are
replaced by what the retry gives). One job at a time writes into an ``--out``: the job claims it
(``_claim.json``, :mod:`lumos.claims`) before touching anything, a second job is refused in one line, and the claim
of a killed job is taken over. Ctrl-C stops the job with one line and exit status 130; rerunning resumes.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import uuid
from dataclasses import asdict

import pyarrow as pa

from lumos import storage
from lumos.claims import ClaimError, acquire
from tokenize_jobs.cli import OneLineParser, first_line
from tokenize_jobs.decode import CLIP_POLICIES
from tokenize_jobs.job_config import LAYOUTS, STAGES, TokenizeJobConfig, defaults
from tokenize_jobs.manifest import Manifest, read_manifest
from tokenize_jobs.shards import (
    ERRORS_DIR,
    FORMAT,
    MANIFEST,
    DoneState,
    prepare_output,
    scan_outputs,
    settings_key,
    write_manifest,
    write_table,
)

log = logging.getLogger("tokenize_jobs.video")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per :class:`TokenizeJobConfig` field (same name), defaults taken from it."""
    p = OneLineParser(prog="python -m tokenize_jobs.video", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", required=True, help="JSONL/CSV/Parquet manifest URI (columns path, caption, ...)")
    p.add_argument("--out", required=True, help="output directory URI (local path or s3://)")
    p.add_argument("--tokenizer", help="video tokenizer directory URI (default: the committed 'small' tokenizer)")
    p.add_argument("--layout", choices=LAYOUTS, help="vocabulary layout")
    p.add_argument("--text-tokenizer", help="HF tokenizer JSON URI (required for chameleon)")
    p.add_argument("--fps", type=int, help="clip sampling rate (frames per second)")
    p.add_argument("--seconds", type=float, help="clip length; frames = fps*seconds+1 → 1+4k")
    p.add_argument("--clip-policy", choices=CLIP_POLICIES, help="which clips of a video")
    p.add_argument("--max-clips", type=int, help="with --clip-policy all: clips per video (0 = all)")
    p.add_argument("--target-size", type=int, help="bucket family (352 → 448x256, 528 → 672x384)")
    p.add_argument("--patch", type=int, help="bucket sides are multiples of this (pixels)")
    p.add_argument("--max-resolution", type=int, help="reject inputs whose longer side is larger")
    p.add_argument("--timeout", type=float, help="seconds per decode step (open a file, read a clip)")
    p.add_argument("--max-text-tokens", type=int, help="truncate longer prompts (0 = no limit)")
    p.add_argument("--batch-size", type=int, help="clips per tokenizer call")
    p.add_argument("--stages", choices=STAGES,
                   help="split: a CPU decode pool feeding a tokenizer pool; fused: one pool of actors that decode and "
                        "tokenize (sized by --decode-concurrency/--decode-cpus); auto: split when the tokenizer gets "
                        "GPUs, else fused")
    p.add_argument("--decode-concurrency",
                   help="decode actor pool MIN,MAX (auto: the CPUs the tokenizer pool leaves, or all CPUs when fused; "
                        "on an autoscaling cluster give MAX explicitly, auto only sees the resources present at start)")
    p.add_argument("--tokenize-concurrency",
                   help="tokenizer actor pool MIN,MAX (auto: the number of GPUs, or the CPUs decoding leaves); "
                        "split stages only")
    p.add_argument("--decode-cpus", type=float, help="CPUs per decode (or fused) actor")
    p.add_argument("--tokenize-cpus", type=float, help="CPUs per tokenizer actor (split stages)")
    p.add_argument("--num-gpus", help="GPUs per tokenizer actor: auto (1 if the cluster has GPUs), 0, 1")
    p.add_argument("--rows-per-file", type=int, help="clips per shard file")
    p.add_argument("--retry-errors", action="store_true",
                   help="rerun: also retry inputs and clips that failed before (e.g. a file that was missing)")
    p.set_defaults(**defaults())
    return p


def parse_args(argv: list[str] | None = None) -> TokenizeJobConfig:
    """The command line as a job config; a bad value exits with one line (status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return TokenizeJobConfig(**vars(args))
    except ValueError as e:
        parser.error(first_line(e))


def tokenizer_info(uri: str, layout_name: str, patch: int, text_tokenizer: str | None = None) -> dict:
    """Identity and geometry of the video tokenizer (loaded once on the driver), checked against the patch; the
    text tokenizer is opened here too, so a bad JSON fails before any Ray work."""
    from lumos.tokenizers import load_text_tokenizer, load_video_tokenizer
    from lumos.vocab import build_layout

    tok = load_video_tokenizer(uri)
    layout = build_layout(layout_name, tok.codebook_size)
    load_text_tokenizer(text_tokenizer, layout)
    unit = tok.spatial_compression * layout.grid_unit
    if patch % unit:
        raise ValueError(f"--patch {patch} must be a multiple of {unit} (tokenizer spatial compression "
                         f"{tok.spatial_compression} x layout grid unit {layout.grid_unit})")
    return {"uri": uri, "identity": tok.identity, "codebook_size": tok.codebook_size,
            "temporal_compression": tok.temporal_compression, "spatial_compression": tok.spatial_compression,
            "layout": layout.to_dict()}


def init_ray():
    """Connect to the cluster (``RAY_ADDRESS``/``ray job submit``) or start a local one; reuse an existing one."""
    from tokenize_jobs.ray_runtime import start_ray

    return start_ray(log_to_driver=True)


def pool_sizes(cfg: TokenizeJobConfig, cpus: float, gpus: int) -> dict:
    """Actor pool bounds and per-actor resources from the options and the cluster's resources at start.

    ``auto`` maxima let each pool grow into the CPUs the other pool's minimum leaves free (on GPU clusters the
    tokenizer pool is sized by the GPUs and decoding gets the remaining CPUs); the minima always fit together, so
    neither stage waits for the other to finish before it can start. Fused stages have one pool, of up to one actor
    per ``--decode-cpus`` CPUs.
    """
    d_lo, d_hi = cfg.decode_concurrency
    t_lo, t_hi = cfg.tokenize_concurrency
    d_cpu, t_cpu = cfg.decode_cpus, cfg.tokenize_cpus
    use_gpu = gpus > 0 if cfg.num_gpus == "auto" else cfg.num_gpus == "1"
    # pools with an auto MAX start at it (what the cluster has now), so no actor starts late; others at MIN
    if cfg.stages == "fused" or (cfg.stages == "auto" and not use_gpu):
        if use_gpu:
            log.warning("--stages fused tokenizes on the CPUs of the decode actors; --num-gpus is ignored")
        hi = d_hi or max(d_lo, int(cpus // d_cpu))
        return {"stages": "fused", "decode": (d_lo, hi, hi if d_hi is None else d_lo), "tokenize": None,
                "num_gpus": 0, "device": "cpu"}
    t_auto, d_auto = t_hi is None, d_hi is None
    if t_auto:
        t_hi = max(t_lo, gpus) if use_gpu else max(t_lo, int((cpus - d_lo * d_cpu) // t_cpu))
    if d_auto:
        d_hi = max(d_lo, int((cpus - (t_hi if use_gpu else t_lo) * t_cpu) // d_cpu))
    if d_lo * d_cpu + t_lo * t_cpu > cpus:
        log.warning("decode and tokenizer pools need %.1f CPUs at their minimum sizes but the cluster has %.1f now: "
                    "the tokenizer may wait for decoding to finish (or for the autoscaler)",
                    d_lo * d_cpu + t_lo * t_cpu, cpus)
    return {"stages": "split", "decode": (d_lo, d_hi, d_hi if d_auto else d_lo),
            "tokenize": (t_lo, t_hi, t_hi if t_auto and use_gpu else t_lo), "num_gpus": 1 if use_gpu else 0,
            "device": "cuda" if use_gpu else "cpu"}


def pending_inputs(inputs: pa.Table, done: DoneState) -> tuple[pa.Table, int]:
    """Inputs still to process, with a ``skip`` list of clip ids already written; and the number skipped."""
    keep, skips = [], []
    for i, src in enumerate(inputs.column("source").to_pylist()):
        if done.is_done(src):
            continue
        keep.append(i)
        skips.append(done.skip_ids(src))
    table = inputs.select(["source", "caption", "input_index"]).take(pa.array(keep, pa.int64()))
    table = table.append_column("skip", pa.array(skips, pa.list_(pa.string())))
    return table, inputs.num_rows - len(keep)


def input_blocks(table: pa.Table, parallelism: int) -> list[pa.Table]:
    """Split the inputs into blocks small enough to spread over the decode pool: ≤ 16 inputs each, and at least 16
    blocks per actor, so that actors finish together (an actor holds up to two blocks in flight)."""
    n = table.num_rows
    size = max(1, min(16, math.ceil(n / max(1, 16 * parallelism))))
    return [table.slice(i, size) for i in range(0, n, size)] or [table]


def write_manifest_errors(out: str, errors: pa.Table, done: DoneState, run_id: str) -> int:
    """Write this manifest's validation errors not already recorded; returns how many were written."""
    from tokenize_jobs.shards import ERROR_SCHEMA

    rows = [r for r in errors.to_pylist() if (r["source"], r["stage"], r["error"]) not in done.error_keys]
    if rows:
        table = pa.Table.from_pylist(rows, schema=ERROR_SCHEMA)
        write_table(table, storage.join(out, ERRORS_DIR, f"err-part-{run_id}-manifest.parquet"))
    return len(rows)


def actor_pool(ray, sizes: tuple[int, int, int]):
    """Ray Data's actor pool strategy from ``(min, max, initial)`` of :func:`pool_sizes`."""
    lo, hi, initial = sizes
    return ray.data.ActorPoolStrategy(min_size=lo, max_size=hi, initial_size=initial)


def build_dataset(ray, todo: pa.Table, cfg: TokenizeJobConfig, tok: dict, id_key: str, pools: dict):
    """The Ray Data pipeline: inputs → decode actors → tokenizer actors, or inputs → fused actors (not executed)."""
    from tokenize_jobs.udfs import DecodeClips, DecodeTokenizeClips, TokenizeClips

    decode_kwargs = {"settings": asdict(cfg.clip_settings), "id_key": id_key}
    tokenize_kwargs = {"tokenizer": tok["uri"], "layout": cfg.layout, "text_tokenizer": cfg.text_tokenizer,
                       "device": pools["device"], "max_text_tokens": cfg.max_text_tokens}
    ds = ray.data.from_arrow(input_blocks(todo, pools["decode"][1]))
    decode_pool = actor_pool(ray, pools["decode"])
    if pools["stages"] == "fused":
        # one call per block of inputs (its clips are tokenized batch_size at a time as they are decoded)
        return ds.map_batches(DecodeTokenizeClips, batch_size=None, batch_format="pyarrow", num_cpus=cfg.decode_cpus,
                              fn_constructor_kwargs={**decode_kwargs, "batch_size": cfg.batch_size,
                                                     **tokenize_kwargs, "threads": cfg.decode_cpus},
                              compute=decode_pool)
    ds = ds.map_batches(DecodeClips, batch_size=1, batch_format="pyarrow", num_cpus=cfg.decode_cpus,
                        fn_constructor_kwargs=decode_kwargs, compute=decode_pool)
    return ds.map_batches(
        TokenizeClips, batch_size=cfg.batch_size, batch_format="pyarrow", num_cpus=cfg.tokenize_cpus,
        num_gpus=pools["num_gpus"], fn_constructor_kwargs={**tokenize_kwargs, "threads": cfg.tokenize_cpus},
        compute=actor_pool(ray, pools["tokenize"]))


def job_settings(cfg: TokenizeJobConfig, tok: dict) -> dict:
    """What the shards were made with (``_settings.json``; the ``id_key`` hashes everything that changes rows)."""
    clip = cfg.clip_settings
    return {"clip": asdict(clip), "frames_per_clip": clip.frames_per_clip, "layout": cfg.layout,
            "text_tokenizer": cfg.text_tokenizer, "max_text_tokens": cfg.max_text_tokens,
            "tokenizer": {"uri": tok["uri"], "sha256": tok["identity"].get("sha256")},
            "id_key": settings_key(clip.key(), tok["identity"], cfg.layout, cfg.text_tokenizer)}


def final_manifest(cfg: TokenizeJobConfig, tok: dict, settings: dict, manifest: Manifest, stats: dict,
                   run: dict, final: DoneState) -> dict:
    """The ``_manifest.json`` document, with counts over everything in ``--out`` (all runs: ``final``)."""
    sources = set(manifest.inputs.column("source").to_pylist())
    return {
        "format": FORMAT, "settings": settings, "tokenizer": tok, "layout": cfg.layout,
        "manifest": cfg.manifest,
        "counts": {"inputs": manifest.num_rows, "clips_written": final.num_clips, "errors": final.num_errors,
                   "inputs_with_clips": sum(1 for s in final.clips if final.clips[s]),
                   "unaccounted_inputs": len(sources - final.accounted_sources())},
        **final.part_names(cfg.out),
        "last_run": dict(run, **stats),
    }


class JobError(ValueError):
    """The job cannot start (bad manifest, tokenizer, settings or output directory); one line."""


def check_out_dir(out: str) -> None:
    """``--out`` must be a directory or not exist yet (raises ``JobError``, one line)."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(out)
    parts = path.rstrip("/").split("/")
    for i in range(len(parts), 1, -1):  # the first existing entry on the way up must be a directory
        try:
            kind = fs.get_file_info("/".join(parts[:i])).type
        except OSError:  # e.g. "Not a directory": a file further up
            continue
        if kind == pafs.FileType.Directory:
            return
        if kind == pafs.FileType.File:
            raise JobError(f"--out {out}: {'/'.join(parts[:i])} is a file, not a directory")
        if storage.is_s3(out):
            return  # S3 "directories" need not exist


def setup(cfg: TokenizeJobConfig):
    """Validate the manifest, load the tokenizer identity and claim ``--out``, before any Ray work.

    Returns:
        ``(manifest, tokenizer info, settings, claim)``; the caller releases the claim.
    """
    from lumos.tokenizers import default_tokenizer_uri

    try:
        manifest = read_manifest(cfg.manifest)
        if cfg.layout == "chameleon" and not cfg.text_tokenizer:
            raise ValueError("--layout chameleon needs --text-tokenizer (the merged Chameleon tokenizer JSON)")
        tok = tokenizer_info(cfg.tokenizer or default_tokenizer_uri("small"), cfg.layout, cfg.patch,
                             cfg.text_tokenizer)
        settings = job_settings(cfg, tok)
    except (ValueError, FileNotFoundError) as e:
        raise JobError(first_line(e)) from e
    check_out_dir(cfg.out)
    try:
        claim = acquire(cfg.out, "tokenize_jobs.video", what="--out")
    except (ClaimError, OSError) as e:
        raise JobError(first_line(e)) from e
    try:
        prepare_output(cfg.out, settings)
    except (ValueError, OSError) as e:
        claim.release()
        raise JobError(first_line(e)) from e
    except BaseException:
        claim.release()
        raise
    return manifest, tok, settings, claim


def retry_errors(out: str, done: DoneState, sources: set[str]) -> int:
    """Remove the error rows of ``sources`` that failed as a whole or per clip (not manifest errors), so that
    :func:`pending_inputs` schedules them again; returns how many rows were removed.

    Each error file holding such rows is deleted before its remaining rows are written back under a new name:
    an interruption in between loses only error rows, whose inputs the next run then processes again.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tokenize_jobs.shards import ERROR_SCHEMA

    retry = {s for s in sources if s in done.failed or done.clip_errors.get(s)}
    if not retry:
        return 0
    removed = 0
    for i, uri in enumerate(done.error_files):
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs).cast(ERROR_SCHEMA)
        drop = pc.and_(pc.is_in(table.column("source"), pa.array(sorted(retry), pa.string())),
                       pc.not_equal(table.column("stage"), "manifest"))
        drop = pc.fill_null(drop, False)
        n = int(pc.sum(pc.cast(drop, pa.int64())).as_py() or 0)
        if not n:
            continue
        keep = table.filter(pc.invert(drop))
        fs.delete_file(path)
        if keep.num_rows:
            name = f"err-part-retry-{uuid.uuid4().hex[:8]}-{i:05d}.parquet"
            write_table(keep, storage.join(out, ERRORS_DIR, name))
        removed += n
    log.info("--retry-errors: %d error rows of %d inputs removed; retrying them", removed, len(retry))
    return removed


def run_job(cfg: TokenizeJobConfig) -> dict:
    """Run the job (see the module docstring); returns the ``_manifest.json`` document.

    Raises:
        JobError: the job cannot start, or another job is writing into ``--out`` (nothing in ``--out`` is
            touched except ``_settings.json``).
    """
    t0 = time.time()
    manifest, tok, settings, claim = setup(cfg)
    try:
        return _run_claimed(cfg, manifest, tok, settings, t0)
    finally:
        claim.release()


def _run_claimed(cfg: TokenizeJobConfig, manifest: Manifest, tok: dict, settings: dict, t0: float) -> dict:
    from tokenize_jobs.reconcile import reconcile_outputs
    from tokenize_jobs.writer import ShardSink, merge_stats

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    done = scan_outputs(cfg.out)
    retried = 0
    if cfg.retry_errors:
        retried = retry_errors(cfg.out, done, set(manifest.inputs.column("source").to_pylist()))
        if retried:
            done = scan_outputs(cfg.out)
    todo, skipped = pending_inputs(manifest.inputs, done)
    new_manifest_errors = write_manifest_errors(cfg.out, manifest.errors, done, run_id)
    ray = init_ray()
    res = ray.cluster_resources()
    pools = pool_sizes(cfg, res.get("CPU", 1), int(res.get("GPU", 0)))
    extras = manifest.inputs.select(manifest.extra_columns) if manifest.extra_columns else None
    sink = ShardSink(cfg.out, run_id, ray.put(extras) if extras is not None else None, cfg.rows_per_file)
    t_exec = time.time()
    if todo.num_rows:
        # Writes take no CPU slot: the actor pools may hold every CPU (2-core machines), and a write task waiting
        # for a CPU that only finished actors release would stall the stream.
        build_dataset(ray, todo, cfg, tok, settings["id_key"], pools).write_datasink(
            sink, ray_remote_args={"num_cpus": 0})
    stats = merge_stats(sink.results)
    execute_s = time.time() - t_exec
    final, reconciled = reconcile_outputs(cfg.out)
    wall = time.time() - t0
    run = {"run_id": run_id, "inputs_processed": todo.num_rows, "inputs_skipped": skipped,
           "error_rows_retried": retried, "reconciled": reconciled.as_dict(),
           "manifest_errors_written": new_manifest_errors, "wall_s": round(wall, 3),
           "execute_s": round(execute_s, 3),
           "clips_per_s": round(stats["clips"] / wall, 3) if wall > 0 else 0.0, "pools": pools}
    doc = final_manifest(cfg, tok, settings, manifest, stats, run, final)
    write_manifest(cfg.out, doc)
    log.info("wrote %s", storage.join(cfg.out, MANIFEST))
    return doc


def summary_line(doc: dict, out: str) -> str:
    c, r = doc["counts"], doc["last_run"]
    return (f"tokenize: {c['inputs']} inputs, {c['clips_written']} clips, {c['errors']} errors "
            f"({r['clips']} clips, {r['errors']} errors this run; {r['inputs_skipped']} inputs already done), "
            f"{r['clips_per_s']:.2f} clips/s, {r['wall_s']:.1f} s -> {out}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    try:
        doc = run_job(cfg)
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {cfg.out} is unfinished (no _manifest.json); rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(summary_line(doc, cfg.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
