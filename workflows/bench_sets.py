"""GenEval and VBench sample sets from a checkpoint, prompts sharded across Ray workers (LUMOS_SPEC §10.1).

Launch recipes::

    # GenEval: 553 prompts x 4 images, one Ray task per shard, one GPU per task when the cluster has GPUs
    python -m workflows.bench_sets --checkpoint s3://bucket/ckpt --bench geneval \\
        --prompts geneval/prompts/evaluation_metadata.jsonl --out s3://bucket/bench/geneval --workers 8
    # VBench (T2V): all_dimension.txt (or a JSON {file name: long prompt}) x 5 videos
    python -m workflows.bench_sets --checkpoint ckpt --bench vbench --prompts VBench/prompts/all_dimension.txt \\
        --out runs/bench/vbench --workers 8 --steps 50 --cfg 15
    # VBench-I2V: the info JSON + the cropped image folder of the wanted aspect ratio
    python -m workflows.bench_sets --checkpoint ckpt --bench vbench_i2v \\
        --prompts VBench/vbench2_beta_i2v/vbench2_i2v_full_info.json --images VBench/vbench2_beta_i2v/data/crop/16-9 \\
        --out runs/bench/vbench_i2v
    ray job submit --working-dir . -- python -m workflows.bench_sets ...   # the same on a running cluster

Output layouts (what each benchmark's own scorer reads):

* ``geneval`` — ``<out>/<%05d prompt index>/metadata.jsonl`` (the prompt's metadata line) and
  ``samples/<%04d>.png``; score with GenEval's ``evaluation/evaluate_images.py <out> --outfile results.jsonl
  --model-path <detector dir>`` then ``evaluation/summary_scores.py results.jsonl``.
* ``vbench`` / ``vbench_i2v`` — ``<out>/<prompt>-<i>.mp4`` (``/`` in a name becomes ``_``); score with
  ``vbench evaluate --videos_path <out> --dimension ...`` (VBench-I2V: ``VBenchI2V(...).evaluate(videos_path=<out>,
  dimension_list=[...], resolution="16-9")``).

Prompts are cut into ``--workers`` contiguous shards, one Ray task each (``num_gpus=1`` when the cluster has GPUs);
a task loads the checkpoint once (:mod:`workflows.generation`) and writes its files. Sample j of prompt i is item
``i·samples + j`` of the one seed rule (seed ``seed + i·samples + j``) whatever the sharding, and files that already
exist are skipped, so a rerun with the same ``--samples`` resumes. Settings are a :class:`BenchSettings` (its
``sampler`` a :class:`lumos.sampler.SamplerConfig`: unset steps / guidance / temperature come from the checkpoint's
``sampling`` entry, else upstream's 50 steps and 16 image / 15 video): defaults ← ``--config`` YAML ← flags ←
dotted overrides (:mod:`workflows.config_io`). ``<out>/_bench_sets.json`` (settings and counts) is written last.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

from lumos import storage
from lumos.sampler import SamplerConfig
from tokenize_jobs.cli import OneLineParser, first_line
from workflows.config_io import ConfigError, build_dataclass, given_flags, load_config
from workflows.generation import UsageError, VideoSpec, item_seed, read_images

log = logging.getLogger("workflows.bench_sets")
BENCHES = {"geneval": 4, "vbench": 5, "vbench_i2v": 5}
"""Benchmark → default samples per prompt (GenEval 4 images, VBench 5 videos)."""
MODES = {"geneval": "t2i", "vbench": "t2v", "vbench_i2v": "i2v"}


@dataclass(kw_only=True)
class BenchSettings:
    """Everything a shard task needs (it reads nothing else)."""

    checkpoint: str
    bench: str
    out: str
    samples: int | None = None
    """Samples per prompt; ``None`` = the benchmark's (:data:`BENCHES`)."""
    seed: int = 0
    width: int | None = None
    """Pixels; ``None`` = the checkpoint's ``resolution`` entry, else 64 (also ``height``)."""
    height: int | None = None
    fps: int | None = None
    duration: int | None = None
    frames: int | None = None
    """Latent frames per video; ``None`` = the sampler's default for fps × duration (12 × 2 when unset)."""
    threads: int | None = None
    """Torch CPU threads per task."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        if self.bench not in BENCHES:
            raise ValueError(f"bench={self.bench!r} must be one of {sorted(BENCHES)}")
        self.samples = self.samples or BENCHES[self.bench]
        for name in ("samples", "fps", "duration", "frames", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name} must be >= 1, got {v}")


def read_prompts(bench: str, prompts: str, images: str | None) -> list[dict]:
    """Prompt records ``{"index", "prompt", "name", "metadata" (geneval), "image" (i2v)}`` from a benchmark file.

    Args:
        bench: ``geneval`` (JSONL metadata lines with ``prompt``), ``vbench`` (text, one prompt per line, or JSON:
            ``{file name: prompt}`` or a list of ``{"prompt_en"|"prompt": ...}``) or ``vbench_i2v`` (JSON list with
            ``prompt_en`` and ``image_name``; images under ``images``).
    """
    text = storage.read_text(prompts)
    out = []
    if bench == "geneval":
        for line in (x for x in text.splitlines() if x.strip()):
            meta = json.loads(line)
            if "prompt" not in meta:
                raise ValueError(f"--prompts {prompts}: a GenEval metadata line has no 'prompt'")
            out.append({"prompt": meta["prompt"], "name": f"{len(out):05d}", "metadata": meta})
    elif bench == "vbench" and not prompts.endswith(".json"):
        out = [{"prompt": p.strip(), "name": p.strip()} for p in text.splitlines() if p.strip()]
    else:
        data = json.loads(text)
        rows = [{"name": k, "prompt": v} for k, v in data.items()] if isinstance(data, dict) else [
            {"name": r.get("prompt_en") or r["prompt"], "prompt": r.get("prompt_en") or r["prompt"],
             "image": r.get("image_name")} for r in data]
        if bench == "vbench_i2v":
            if not images:
                raise ValueError("--bench vbench_i2v needs --images (the cropped image folder)")
            if any(not r.get("image") for r in rows):
                raise ValueError(f"--prompts {prompts}: every VBench-I2V entry needs 'image_name'")
            rows = [{**r, "image": storage.join(images, r["image"])} for r in rows]
            missing = next((r["image"] for r in rows if not storage.exists(r["image"])), None)
            if missing:
                raise ValueError(f"image {missing} does not exist")
        out = rows
    if not out:
        raise ValueError(f"--prompts {prompts}: no prompts")
    return [{**r, "index": i, "name": str(r["name"]).replace("/", "_")} for i, r in enumerate(out)]


def sample_paths(s: BenchSettings, rec: dict) -> list[str]:
    """Output files of one prompt record."""
    if s.bench == "geneval":
        return [storage.join(s.out, rec["name"], "samples", f"{j:04d}.png") for j in range(s.samples)]
    return [storage.join(s.out, f"{rec['name']}-{j}.mp4") for j in range(s.samples)]


def shards(records: list[dict], workers: int) -> list[list[dict]]:
    """Contiguous, near-equal shards (no empty ones)."""
    n = min(workers, len(records))
    bounds = [round(k * len(records) / n) for k in range(n + 1)]
    return [records[bounds[k]:bounds[k + 1]] for k in range(n)]


def _write_sample(s: BenchSettings, rec: dict, path: str, frames, fps: int) -> None:
    from lumos.media import write_video

    if s.bench == "geneval":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(frames[0]).save(buf, format="PNG")
        storage.write_bytes(path, buf.getvalue())
        storage.write_text(storage.join(s.out, rec["name"], "metadata.jsonl"), json.dumps(rec["metadata"]) + "\n")
    else:
        write_video(path, frames, fps=fps, format="mp4")


def generate_record(gen, s: BenchSettings, rec: dict, todo: list[int]) -> None:
    """Sample the missing samples ``todo`` of one prompt record as one batch and write them."""
    width, height = gen.size(s.width, s.height)
    mode = MODES[s.bench]
    spec = VideoSpec(mode, width, height) if mode == "t2i" else VideoSpec(
        mode, width, height, frames=s.frames, fps=s.fps, duration=s.duration)
    images = read_images([rec["image"]], width, height) if mode == "i2v" else None
    seeds = [item_seed(s.seed, rec["index"] * s.samples + j) for j in todo]
    out = gen.sample([rec["prompt"]] * len(todo), spec, s.sampler, seeds, images)
    paths = sample_paths(s, rec)
    for j, video in zip(todo, gen.decode(out.codes)):  # (N, H, W, 3) each
        _write_sample(s, rec, paths[j], video, out.plan.fps)


def run_shard(settings: dict, records: list[dict]) -> dict:
    """One Ray task: load the checkpoint once, write every missing sample of ``records``; returns counts."""
    import torch

    from workflows.generation import load_generator

    s = build_dataclass(BenchSettings, settings)
    if s.threads:
        torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    gen = None
    written = skipped = 0
    for rec in records:
        todo = [j for j, p in enumerate(sample_paths(s, rec)) if not storage.exists(p)]
        skipped += s.samples - len(todo)
        if todo:
            gen = gen or load_generator(s.checkpoint)
            generate_record(gen, s, rec, todo)
            written += len(todo)
    return {"prompts": len(records), "written": written, "skipped": skipped, "seconds": time.perf_counter() - t0}


def run(s: BenchSettings, records: list[dict], workers: int, cpus: float) -> dict:
    """Launch one Ray task per shard and wait; returns the summary (also written to ``_bench_sets.json``)."""
    import ray
    from tqdm.auto import tqdm

    from tokenize_jobs.ray_runtime import start_ray

    # By module name: when this file runs as __main__, the function then still pickles by reference.
    from workflows.bench_sets import run_shard as shard_fn

    start_ray(log_to_driver=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(shard_fn)
    pending = [task.remote(asdict(s), shard) for shard in shards(records, workers)]
    results = []
    with tqdm(total=len(records), desc=f"{s.bench} prompts", unit="prompt", mininterval=2.0) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(done[0]))
            bar.update(results[-1]["prompts"])
    summary = {"settings": asdict(s), "workers": len(results), "gpus_per_worker": gpus,
               "prompts": len(records), "written": sum(r["written"] for r in results),
               "skipped": sum(r["skipped"] for r in results), "shards": results}
    storage.write_text(storage.join(s.out, "_bench_sets.json"), json.dumps(summary, indent=1))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m workflows.bench_sets", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory URI (local or s3://)")
    p.add_argument("--bench", required=True, choices=sorted(BENCHES), help="geneval, vbench or vbench_i2v")
    p.add_argument("--prompts", required=True, help="the benchmark's prompt file (see above)")
    p.add_argument("--images", default=None, help="vbench_i2v: folder of the cropped input images")
    p.add_argument("--out", required=True, help="output folder URI")
    p.add_argument("--config", default=None, help="YAML file with BenchSettings keys (seed, ..., sampler: {...})")
    p.add_argument("--samples", type=int, default=None, help="samples per prompt (default 4 geneval, 5 vbench)")
    p.add_argument("--workers", type=int, default=1, help="shards = Ray tasks (one GPU each when present)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="logical CPUs per task (default 1)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts (smoke runs)")
    p.add_argument("--steps", type=int, default=None,
                   help="unmasking steps per latent frame (default: the checkpoint's sampling.steps, else 50)")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance (default: the checkpoint's sampling.cfg_scale, else 16 image / 15 video, upstream)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the checkpoint's resolution)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--fps", type=int, default=None, help="video fps token (default 12)")
    p.add_argument("--duration", type=int, default=None, help="video seconds token (default 2)")
    p.add_argument("--frames", type=int, default=None, help="latent frames per video")
    p.add_argument("--history-ratio", type=float, default=None, help="history mask ratio (default 0.7)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per task")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="BenchSettings overrides after the flags, e.g. sampler.temperature=0.9")
    return p


FLAG_KEYS = {"checkpoint": "checkpoint", "bench": "bench", "out": "out", "samples": "samples", "seed": "seed",
             "width": "width", "height": "height", "fps": "fps", "duration": "duration", "frames": "frames",
             "threads": "threads", "steps": "sampler.steps", "cfg": "sampler.cfg_scale",
             "history_ratio": "sampler.history_ratio"}
"""Each settings flag → its :class:`BenchSettings` key (a flag left out leaves the config file's value)."""


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Defaults ← ``--config`` ← the flags given ← the dotted overrides (raises :class:`UsageError`)."""
    for name in ("workers", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be >= 1, got {v}")
    if args.cpus_per_worker <= 0:
        raise UsageError(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker}")
    try:
        s = load_config(BenchSettings, args.config, args.overrides, given_flags(args, FLAG_KEYS))
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if not storage.exists(storage.join(s.checkpoint, "config.json")):
        raise UsageError(f"--checkpoint {s.checkpoint}: no config.json")
    return s


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        s = settings_from_args(args)
        try:
            records = read_prompts(s.bench, args.prompts, args.images)[: args.limit]
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--prompts {args.prompts}: {first_line(e)}") from None
        summary = run(s, records, args.workers, args.cpus_per_worker)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"{s.bench}: {summary['prompts']} prompts on {summary['workers']} workers "
          f"({summary['gpus_per_worker']} GPU each): {summary['written']} samples written, "
          f"{summary['skipped']} already there -> {s.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
