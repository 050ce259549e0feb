"""The paper's ablations on the shapes world, trained by the pre-training recipe itself (LUMOS_SPEC §5.3, §7.2,
§8.2, §10.5).

Launch recipes::

    python -m workflows.ablate --study rope --seeds 0,1,2 --out runs/ablate --results-doc docs/results.md
    python -m workflows.ablate --study mask --variants tube,random --train optim.max_steps=600
    python -m workflows.ablate --study history --checkpoint small --seeds 0,1,2 --frames 7
    python -m workflows.ablate --study rope --recipe workflows/configs/pretrain_ablate_debug.yaml --shards S --val-shards V

Every variant of a training study is trained with every seed of ``--seeds`` by ``workflows.pretrain`` itself
(Ray Train + DeepSpeed, the recipe's curriculum, data stream, loss weighting and optimizer; one run per variant and
seed under ``<out>/<study>/runs/<variant>-s<seed>``; a finished run is not trained again, an interrupted one
resumes). The runs of one study differ only in the studied knob and the seed:

* ``rope`` sets ``model.overrides.rope_variant`` = mm, 1d, 3d, mrope, mm_noscale, mm_nodist;
* ``mask`` sets ``ardf.mask_type`` = tube, random, diffusion_forcing;
* ``history`` trains nothing: it samples one checkpoint (``--checkpoint``) with inference-time history masking
  0.7 and 0, and 0.7 with the I2V given frames committed masked too (``0.7_mask_given``; upstream commits them
  unmasked, our default), each with every seed of ``--seeds`` as the prompt-set and sampling seed.

Each trained run is measured on held-out clips with the same fixed tube masks (ratio ``val_ratio``; text kept) for
every variant: validation loss and its value per latent frame; its own training loss per latent frame (the last
stage's second half, under the variant's own masks, from the run's metrics) — the frame-wise loss imbalance as the
paper frames it; and the eval suites (:mod:`workflows.eval`, ``eval_num`` held-out prompts, the same prompts for
every run). Tables give mean ± std over the seeds; plots show the spread (bands, error bars, one dot per seed).

Data: ``--shards`` / ``--val-shards``, or made the product way under ``--data``: train shards by
:mod:`tokenize_jobs.shapes` (stills and clips of the training split, in the recipe's text format), validation
shards of held-out captions by :mod:`tokenize_jobs.synth` (``--split heldout``) + :mod:`tokenize_jobs.video`.

Output under ``<out>/<study>/``: ``results.json``, ``results.md``, PNG plots and the runs; ``--results-doc``
also writes the summary into a Markdown file (between ``<!-- ablate:<study> -->`` markers, or the
``--results-section`` given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lumos import storage
from lumos.sampler import SamplerConfig
from tokenize_jobs.cli import OneLineParser, first_line
from tokenize_jobs.shards import ShardManifest
from workflows.config_io import ConfigError, build_dataclass, given_flags, load_config
from workflows.evaluation.reports import (
    fmt_spread,
    save_figure,
    spread,
    spread_bars,
    spread_lines,
    update_doc_section,
)
from workflows.generation import UsageError

log = logging.getLogger("workflows.ablate")
CONFIGS = Path(__file__).resolve().parent / "configs"
STUDIES = {"rope": ("mm", "1d", "3d", "mrope", "mm_noscale", "mm_nodist"),
           "mask": ("tube", "random", "diffusion_forcing"),
           "history": ("0.7", "0.0", "0.7_mask_given")}
KNOBS = {"rope": "model.overrides.rope_variant", "mask": "ardf.mask_type"}
"""The one recipe key each training study varies."""
SUITES = {"rope": ("t2i", "t2v", "i2v"), "mask": ("t2i", "t2v", "i2v"), "history": ("t2v", "i2v")}
SCORES = (("t2i", "overall"), ("t2v", "motion_direction"), ("i2v", "motion_direction"),
          ("i2v", "subject_consistency"), ("t2v", "subject_consistency"))
"""The scores a study's tables and plots show (``(suite, metric)``)."""
VAL_MASK_SEED = 12345
"""Seed of the fixed validation masks (the same for every variant and training seed)."""


@dataclass(kw_only=True)
class AblationConfig:
    """One study: the recipe every run trains with, the seeds, and how runs are measured."""

    study: str
    recipe: str = str(CONFIGS / "pretrain_ablate.yaml")
    """The ``workflows.pretrain`` recipe (YAML; may be a curriculum) every run of a training study uses."""
    train: list[str] = field(default_factory=list)
    """Dotted overrides of the recipe for every run (e.g. ``optim.max_steps=600``); the knob and seed come last."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds (``history``: prompt-set and sampling seeds)."""
    variants: list[str] = field(default_factory=list)
    """Subset of the study's variants (empty = all)."""
    val_ratio: float = 0.7
    """Tube mask ratio of the fixed validation masks."""
    val_batch: int = 8
    eval_num: int = 48
    """Held-out prompts per suite."""
    frames: int | None = None
    """Latent frames of the eval videos (``None``: the checkpoint's clips; the history study wants ≥ 7)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Sampler settings of the scores; unset ones come from the checkpoint (its recipe's ``sampling``)."""
    stills: int = 8000
    clips: int = 2000
    val_clips: int = 48
    size: int = 64
    seconds: float = 2.0
    text_tokenizer: str | None = "lumos/assets/text_words.json"
    """Made data (no ``--shards``): stills and clips of the shapes job, held-out validation clips, frame side, clip
    duration at 8 fps (2 s: 17 frames, 5 latent frames; 3 s: 25 frames, 7), the text tokenizer of both (``None``:
    bytes)."""

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise ValueError(f"--study must be one of {sorted(STUDIES)}, got {self.study!r}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        for name in ("val_batch", "eval_num", "val_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct and not empty, got {self.seeds}")
        if not 0.0 < self.val_ratio <= 1.0:
            raise ValueError(f"val_ratio must be in (0, 1], got {self.val_ratio}")
        if self.frames is not None and self.frames < 2:
            raise ValueError(f"--frames must be >= 2, got {self.frames}")
        bad = [v for v in self.variants if v not in STUDIES[self.study]]
        if bad:
            raise ValueError(f"--variants: {bad[0]!r} is not a {self.study} variant {STUDIES[self.study]}")
        self.variants = self.variants or list(STUDIES[self.study])


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

def make_data(cfg: AblationConfig, data_dir: str, tokenizer: str | None = None, seed: int = 0) -> tuple[str, str]:
    """Make (or reuse) train and validation shards under ``data_dir`` with the product jobs; returns their URIs."""
    from tokenize_jobs import video
    from tokenize_jobs.job_config import TokenizeJobConfig
    from tokenize_jobs.shapes import ShapesJobConfig, run_job
    from tokenize_jobs.synth import SynthConfig, write_corpus

    train, val = storage.join(data_dir, "shards"), storage.join(data_dir, "val_shards")
    if not ShardManifest.finished(train):
        run_job(ShapesJobConfig(out=train, stills=cfg.stills, clips=cfg.clips, seed=seed, size=cfg.size,
                                seconds=cfg.seconds, tokenizer=tokenizer, text_tokenizer=cfg.text_tokenizer))
    if not ShardManifest.finished(val):
        clips = storage.join(data_dir, "val_clips")
        manifest = storage.join(clips, "manifest.jsonl")
        if not storage.exists(manifest):
            write_corpus(SynthConfig(out=clips, videos=cfg.val_clips, seed=seed + 2, split="heldout", size=cfg.size,
                                     seconds=cfg.seconds))
        doc = video.run_job(TokenizeJobConfig(manifest=manifest, out=val, fps=8, seconds=cfg.seconds,
                                              target_size=cfg.size, patch=16,
                                              tokenizer=tokenizer or ShardManifest.read(train).tokenizer_uri,
                                              text_tokenizer=cfg.text_tokenizer))
        if doc["counts"]["errors"]:
            raise RuntimeError(f"the validation clips' tokenization wrote {doc['counts']['errors']} error rows "
                               f"(see {val}/_errors)")
    return train, val


def load_samples(shards: str, max_latent_frames: int | None) -> list[dict]:
    """All rows of a shard directory as AR-DF samples (checked like pre-training checks its shards)."""
    import pyarrow.parquet as pq

    from workflows.training.run_guard import verify_shards
    from workflows.training.shard_data import check_shards, row_to_sample, shard_files
    from workflows.training.train_config import DataSection

    verify_shards(shards, check_shards(shards))  # duplicate clip ids / counts that disagree: one line
    data = DataSection(shards=shards, stage="joint", max_latent_frames=max_latent_frames)
    samples = []
    for f in shard_files(shards):
        fs, path = storage.resolve(f)
        with fs.open_input_file(path) as fh:
            table = pq.read_table(fh, columns=["clip_id", "text_ids", "video_tokens", "grid_t", "grid_h", "grid_w",
                                               "fps", "height", "width"])
        samples.extend(row_to_sample(row, data) for row in table.to_pylist())
    if not samples:
        raise ValueError(f"{shards}: no rows")
    return samples


def validation_loss(model, layout, samples: list[dict], ratio: float, batch: int) -> tuple[float, list[float]]:
    """(token-mean loss, mean loss per latent frame) of ``model`` on ``samples`` under fixed tube masks of
    ``ratio`` with the text kept (:func:`lumos.ardf.make_batch` with ``fixed_tube_ratio``)."""
    import torch

    from lumos.ardf import make_batch
    from lumos.config import ARDFConfig
    from lumos.loss import ardf_loss

    sums = torch.zeros(64, dtype=torch.float64)
    counts = torch.zeros(64, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for k in range(0, len(samples), batch):
            b = make_batch(samples[k:k + batch], layout, ARDFConfig(),
                           torch.Generator().manual_seed(VAL_MASK_SEED + k), fixed_tube_ratio=ratio)
            _, m = ardf_loss(model, b)
            n = m["frame_loss_sum"].numel()
            sums[:n] += m["frame_loss_sum"].double()
            counts[:n] += m["frame_tokens"].double()
    last = int(torch.nonzero(counts).max()) + 1
    return float(sums.sum() / counts.sum()), (sums[:last] / counts[:last].clamp(min=1)).tolist()


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------

def run_config(cfg: AblationConfig, variant: str, seed: int, root: str, shards: str | None):
    """The ``PretrainConfig`` of one run: the recipe ← ``--shards`` ← ``train`` overrides ← the knob and the seed."""
    from workflows.training.train_config import load_pretrain_config

    overrides = [*([f"data.shards={shards}"] if shards else []), *cfg.train, f"{KNOBS[cfg.study]}={variant}",
                 f"seed={seed}", f"checkpoint.storage={storage.join(root, 'runs')}",
                 f"checkpoint.name={variant}-s{seed}"]
    return load_pretrain_config(cfg.recipe, overrides)


def run_stages(pcfg) -> list:
    """The config of every run a recipe makes (one per curriculum stage, or the recipe itself)."""
    from workflows.training.curriculum import stage_configs

    return stage_configs(pcfg) if pcfg.stages else [pcfg]


def train_run(pcfg) -> list[str]:
    """Train one run by the pre-training workflow (finished stages are skipped); returns its runs' URIs."""
    from workflows.pretrain import run_pretraining
    from workflows.training.curriculum import run_curriculum, stage_finished

    if pcfg.stages:
        run_curriculum(pcfg, run_pretraining)
    elif not stage_finished(pcfg):
        run_pretraining(pcfg)
    return [storage.join(storage.absolute(s.checkpoint.storage), s.checkpoint.name) for s in run_stages(pcfg)]


def training_record(run_uris: list[str]) -> dict:
    """The loss curve over all stages (steps counted across them) and the last stage's training loss per latent
    frame (mean over its second half, under the run's own masks)."""
    from workflows.training.run_metrics import read_metrics

    curve, offset = [], 0
    for uri in run_uris:
        records = read_metrics(uri)
        curve += [{"step": offset + r["step"], "loss": r["loss"]} for r in records]
        offset += records[-1]["step"] if records else 0
    last = read_metrics(run_uris[-1])
    half = [r["frame_loss"] for r in last[len(last) // 2:] if r.get("frame_loss")]
    n = max((len(f) for f in half), default=0)
    frames = [float(np.nanmean([f[i] for f in half if len(f) > i])) for i in range(n)]
    return {"curve": curve, "train_frame_loss": frames}


def training_seconds(run_uris: list[str]) -> float:
    """Seconds the run spent training, summed over its stages' metric windows (start-up and evaluation left out)."""
    from workflows.training.run_metrics import read_metrics

    return float(sum(r.get("window_s", 0.0) for uri in run_uris for r in read_metrics(uri)))


def eval_settings(cfg: AblationConfig, seed: int):
    from workflows.eval import EvalSettings

    return EvalSettings(num=cfg.eval_num, seed=seed, frames=cfg.frames, batch=min(8, cfg.eval_num),
                        references=False, sampler=cfg.sampler)


def scores(bundle, settings, suites, progress: bool) -> dict[str, dict]:
    from workflows.eval import evaluate_suite

    settings = settings.resolved(bundle.meta)
    return {s: evaluate_suite(bundle, s, settings, progress=progress)["scores"] for s in suites}


def measure_run(cfg: AblationConfig, run_uris: list[str], val: list[dict], val_shards: str, progress: bool) -> dict:
    """Validation loss (fixed tube masks), training curve and per-frame loss, and the eval scores of one run.

    Kept in ``<last run>/ablate_measure.json`` with the settings it was measured with: a resumed study measures
    again only runs trained since, or when the settings changed."""
    from workflows.generation import load_generator

    final = storage.join(run_uris[-1], "final")
    key = {"val_shards": val_shards, "val_ratio": cfg.val_ratio, "val_batch": cfg.val_batch, "eval_num": cfg.eval_num,
           "frames": cfg.frames, "sampler": asdict(cfg.sampler), "suites": list(SUITES[cfg.study]),
           "trained": storage.read_text(storage.join(final, "train_state.json"))}
    cache = storage.join(run_uris[-1], "ablate_measure.json")
    if storage.exists(cache):
        kept = json.loads(storage.read_text(cache))
        if kept.get("key") == key:
            return kept["result"]
    bundle = load_generator(final, "cpu")
    val_loss, val_frames = validation_loss(bundle.model, bundle.layout, val, cfg.val_ratio, cfg.val_batch)
    result = {"checkpoint": final, "val_loss": val_loss, "val_frame_loss": val_frames, **training_record(run_uris),
              "eval": scores(bundle, eval_settings(cfg, 0), SUITES[cfg.study], progress)}
    storage.write_text(cache, json.dumps({"key": key, "result": result}))
    return result


def validation_samples(val_shards: str) -> list[dict]:
    """The validation shards' clips (more than one latent frame) as AR-DF samples."""
    val = [s for s in load_samples(val_shards, None) if s["codes"].shape[0] > 1]
    if not val:
        raise ValueError(f"--val-shards {val_shards}: needs video clips (more than one latent frame)")
    return val


def run_parallel(cfg: AblationConfig, root: str, shards: str | None, val_shards: str, parallel: int,
                 threads: int) -> None:
    """Train and measure every run of the study, ``parallel`` at a time, each in its own process
    (``python -m workflows.ablate --study S --run-one SPEC``) that joins this process's Ray, so Ray places the runs' training
    workers (on 2 cores, two runs of one thread each: +24-26 % tokens/s in all over one run of two threads,
    bench/README.md). Each run's torch threads (scoring, and its workers' ``ray.threads_per_worker``) are
    ``threads // parallel``; its log is ``<out>/<study>/logs/<variant>-s<seed>.log`` (a temporary directory when
    ``--out`` is in S3). Finished runs return at once; a failed run stops the study with its log's name."""
    import os
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import ray

    logs = Path(root if not storage.is_s3(root) else tempfile.mkdtemp(prefix="lumos-ablate-")) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    per = max(1, threads // parallel)
    pairs = [(v, s) for v in cfg.variants for s in cfg.seeds]
    eta = RunClock(len(pairs))

    def launch(variant: str, seed: int) -> None:
        spec = {"cfg": asdict(cfg), "variant": variant, "seed": seed, "root": root, "shards": shards,
                "val_shards": val_shards, "threads": per}
        name = f"{variant}-s{seed}"
        (logs / f"{name}.json").write_text(json.dumps(spec))
        with open(logs / f"{name}.log", "w") as out:
            rc = subprocess.run([sys.executable, "-m", "workflows.ablate", "--study", cfg.study, "--run-one",
                                 str(logs / f"{name}.json")],
                                env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc:
            raise RuntimeError(f"{cfg.study} run {name} failed (exit {rc}); see {logs / f'{name}.log'}")

    with ThreadPoolExecutor(parallel) as pool:
        futures = {pool.submit(launch, v, s): (v, s) for v, s in pairs}
        for fut in as_completed(futures):
            if fut.exception() is not None:
                for other in futures:  # runs not started yet are not started; running ones finish (resumable)
                    other.cancel()
                fut.result()
            v, s = futures[fut]
            log.info("%s %s seed %d: trained and measured (%s)", cfg.study, v, s, eta.tick())


def run_one(spec_path: str) -> int:
    """``--run-one SPEC``: the process of one run of :func:`run_parallel`. Trains and measures it (the result is kept
    where :func:`measure_run` keeps it) with the spec's ``threads`` torch threads, here and in its training workers."""
    import torch

    from workflows.pretrain import init_ray

    spec = json.loads(Path(spec_path).read_text())
    cfg = build_dataclass(AblationConfig, spec["cfg"])
    cfg.train = [*cfg.train, f"ray.threads_per_worker={spec['threads']}", QUIET_TRAIN]
    torch.set_num_threads(spec["threads"])
    pcfg = run_config(cfg, spec["variant"], spec["seed"], spec["root"], spec["shards"])
    init_ray(pcfg)
    res = measure_run(cfg, train_run(pcfg), validation_samples(spec["val_shards"]), spec["val_shards"],
                      progress=False)
    log.info("%s %s seed %d: val loss %.4f", cfg.study, spec["variant"], spec["seed"], res["val_loss"])
    return 0


def history_run(cfg: AblationConfig, bundle, variant: str, seed: int, progress: bool) -> dict:
    """One sampling seed of a history variant: ``<ratio>`` or ``<ratio>_mask_given``."""
    ratio, _, given = variant.partition("_")
    settings = eval_settings(cfg, seed)
    sampler = dataclasses.replace(settings.sampler, history_ratio=float(ratio), mask_given_frames=bool(given))
    return {"eval": scores(bundle, dataclasses.replace(settings, sampler=sampler), SUITES["history"], progress)}


def summarize(runs: dict[int, dict]) -> dict:
    """Mean ± std over the seeds of every measurement of a variant's runs."""
    rs = list(runs.values())
    out = {f"{s}.{m}": spread([r["eval"].get(s, {}).get(m) for r in rs]) for s, m in SCORES
           if any(s in r["eval"] for r in rs)}
    if "val_loss" in rs[0]:
        out["val_loss"] = spread([r["val_loss"] for r in rs])
        for key in ("val_frame_loss", "train_frame_loss"):
            n = min(len(r[key]) for r in rs)
            out[key] = [spread([r[key][i] for r in rs]) for i in range(n)]
    return out


class RunClock:
    """Progress of a study's runs for its log lines: ``run 3/18, 10.2 min; about 2 h 33 min left``. The estimate
    averages the runs that trained or measured in this invocation (a reused run takes well under a second)."""

    REUSED_S = 1.0

    def __init__(self, total: int):
        self.total, self.done, self.worked = total, 0, []
        self.t = time.perf_counter()

    def tick(self) -> str:
        now = time.perf_counter()
        took, self.t = now - self.t, now
        self.done += 1
        worked = took >= self.REUSED_S
        if worked:
            self.worked.append(took)
        text = f"run {self.done}/{self.total}, " + (f"{took / 60:.1f} min" if worked else "reused")
        left = self.total - self.done
        if left and self.worked:
            minutes = round(left * sum(self.worked) / len(self.worked) / 60)
            text += f"; about {f'{minutes // 60} h {minutes % 60} min' if minutes >= 60 else f'{minutes} min'} left"
        return text


def run_study(cfg: AblationConfig, out: str, shards: str | None = None, val_shards: str | None = None,
              checkpoint: str | None = None, progress: bool = True, results_doc: str | None = None,
              results_section: str | None = None, parallel: int = 1, threads: int = 2) -> dict:
    """Run (or resume) a study; write ``results.json``, ``results.md`` and the plots under ``<out>/<study>``;
    with ``results_doc``, also its section ``results_section`` (default ``ablate:<study>``). ``parallel`` > 1
    trains and measures that many runs at once (:func:`run_parallel`; ``threads``: the CPU threads they share)."""
    root = storage.absolute(storage.join(out, cfg.study))
    t0 = time.perf_counter()
    variants: dict[str, dict] = {}
    train_s = 0.0
    if cfg.study == "history":
        from workflows.generation import load_generator

        bundle = load_generator(checkpoint, "cpu")
        for v in cfg.variants:
            variants[v] = {"runs": {s: history_run(cfg, bundle, v, s, progress) for s in cfg.seeds}}
    else:
        val = validation_samples(val_shards)
        if parallel > 1:
            run_parallel(cfg, root, shards, val_shards, parallel, threads)
        eta = RunClock(len(cfg.variants) * len(cfg.seeds))
        for v in cfg.variants:
            runs = {}
            for s in cfg.seeds:
                uris = train_run(run_config(cfg, v, s, root, shards))
                runs[s] = measure_run(cfg, uris, val, val_shards, progress)
                train_s += training_seconds(uris)
                log.info("%s %s seed %d: val loss %.4f (%s)", cfg.study, v, s, runs[s]["val_loss"], eta.tick())
            variants[v] = {"runs": runs}
    for res in variants.values():
        res["summary"] = summarize(res["runs"])
    report = {"study": cfg.study, "config": asdict(cfg), "variants": variants, "checkpoint": checkpoint,
              "shards": shards, "val_shards": val_shards, "seconds": time.perf_counter() - t0,
              "train_seconds": train_s, "parallel": parallel}
    report["plots"] = plot_study(report, root)
    storage.write_text(storage.join(root, "results.json"), json.dumps(report, indent=1))
    md = study_markdown(report)
    storage.write_text(storage.join(root, "results.md"), md)
    if results_doc:
        section = results_section or f"ablate:{cfg.study}"
        update_doc_section(results_doc, section, study_markdown(report, section.removeprefix("ablate:")),
                           {p: storage.join(root, p) for p in report["plots"]})
    return report


# ---------------------------------------------------------------------------------------------------------------
# Plots and Markdown
# ---------------------------------------------------------------------------------------------------------------

def _score_keys(report: dict) -> list[str]:
    first = next(iter(report["variants"].values()))["summary"]
    return [f"{s}.{m}" for s, m in SCORES if f"{s}.{m}" in first]


def plot_study(report: dict, root: str) -> list[str]:
    """Draw the study's PNG plots under ``root``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study, variants = report["study"], report["variants"]
    names = []
    if study != "history":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, res in variants.items():
            runs = list(res["runs"].values())
            steps = [c["step"] for c in runs[0]["curve"]]
            spread_lines(axes[0], {name: [[c["loss"] for c in r["curve"]] for r in runs]}, steps, "step",
                         "training loss", f"{study}: training loss (own masks), mean ± std over seeds")
        spread_bars(axes[1], ["validation loss"], {n: [r["summary"]["val_loss"]] for n, r in variants.items()},
                    "cross-entropy", f"{study}: validation loss (fixed tube masks)", bars=False)
        names.append(save_figure(fig, storage.join(root, f"{study}_loss.png")))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, title in ((axes[0], "train_frame_loss", "training loss per frame (each variant's own masks)"),
                               (axes[1], "val_frame_loss", "validation loss per frame (same tube masks)")):
            spread_lines(ax, {n: [r[key] for r in res["runs"].values()] for n, res in variants.items()}, None,
                         "latent frame index", "cross-entropy", title)
        names.append(save_figure(fig, storage.join(root, f"{study}_frame_loss.png")))
    keys = _score_keys(report)
    fig, ax = plt.subplots(figsize=(11, 4))
    spread_bars(ax, [k.replace(".", "\n").replace("_", " ") for k in keys],
                {f"{study} {n}": [r["summary"][k] for k in keys] for n, r in variants.items()}, "score",
                f"{study}: shapes-world scores, mean ± std over seeds")
    ax.set_ylim(0, 1.05)
    names.append(save_figure(fig, storage.join(root, f"{study}_scores.png")))
    return names


def _frames(spreads: list[dict]) -> str:
    return " / ".join(f"{s['mean']:.2f}" for s in spreads if s["mean"] is not None) or "–"


def study_markdown(report: dict, title: str | None = None) -> str:
    """The study's results as Markdown under the heading "Ablation: ``title``" (default the study's): setting, one
    table of mean ± std over the seeds, the plots."""
    cfg, study, variants = report["config"], report["study"], report["variants"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    sampler = cfg["sampler"]
    if study == "history":
        setting = (f"Checkpoint `{report['checkpoint']}` sampled with each variant, {cfg['eval_num']} held-out prompts "
                   f"per suite and seed, seeds {seeds} (prompt set and sampling), "
                   f"{cfg['frames'] or 'the checkpoint’s'} latent frames, sampler steps {sampler['steps'] or 'recorded'}, "
                   f"CFG {sampler['cfg_scale'] or 'recorded'}. Wall time {report['seconds']:.0f} s.\n")
    else:
        train = [t for t in cfg["train"] if t != QUIET_TRAIN]
        at_once = f" with {report['parallel']} runs at a time" if report.get("parallel", 1) > 1 else ""
        setting = (f"Recipe `{Path(cfg['recipe']).name}`{' with ' + ', '.join(train) if train else ''}, "
                   f"trained by `workflows.pretrain` with seeds {seeds} per variant (only `{KNOBS[study]}` and the seed "
                   f"differ); validation: fixed tube masks of ratio {cfg['val_ratio']} on held-out clips; scores: "
                   f"{cfg['eval_num']} held-out prompts per suite. Mean ± std over the seeds. Training time "
                   f"{report.get('train_seconds', 0.0) / 60:.0f} min summed over the runs' metric windows; this "
                   f"invocation's wall time {report['seconds']:.0f} s{at_once} (runs trained before were reused).\n")
    keys = _score_keys(report)
    head = ["variant", *(["val loss", "val loss per frame", "train loss per frame (own masks)"]
                         if study != "history" else []), *[k.replace(".", " ").replace("_", " ") for k in keys]]
    lines = [f"## Ablation: {title or study}\n", setting, "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in variants.items():
        s = res["summary"]
        cells = [name]
        if study != "history":
            cells += [fmt_spread(s["val_loss"]), _frames(s["val_frame_loss"]), _frames(s["train_frame_loss"])]
        cells += [fmt_spread(s[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"![{p}]({p})" for p in report.get("plots", []))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = AblationConfig(study="rope")
    p = OneLineParser(prog="python -m workflows.ablate", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, choices=sorted(STUDIES), help="rope, mask or history")
    p.add_argument("--config", default=None, help="YAML file with AblationConfig keys (seeds, ..., sampler: {...})")
    p.add_argument("--recipe", default=None, help=f"pre-training recipe of every run (default {Path(d.recipe).name})")
    p.add_argument("--train", action="append", default=None, metavar="KEY=VALUE",
                   help="recipe override for every run, repeatable (e.g. --train optim.max_steps=600)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--variants", default=None, help="comma-separated subset of the study's variants")
    p.add_argument("--out", default="runs/ablate", help="output directory (default runs/ablate)")
    p.add_argument("--shards", default=None, help="training token shards (default: made under --data)")
    p.add_argument("--val-shards", default=None, help="validation token shards of held-out clips")
    p.add_argument("--data", default="runs/ablate-data", help="where to make/reuse shards (default runs/ablate-data)")
    p.add_argument("--tokenizer", default=None, help="video tokenizer of made data (default: the committed small one)")
    p.add_argument("--val-ratio", type=float, help=f"validation tube mask ratio (default {d.val_ratio})")
    p.add_argument("--eval-num", type=int, help=f"held-out prompts per suite (default {d.eval_num})")
    p.add_argument("--eval-steps", type=int, help="sampler steps per frame (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--frames", type=int, help="latent frames of the eval videos (default: the checkpoint's clips)")
    p.add_argument("--checkpoint", default=None, help="history study: the checkpoint to sample (path or name)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of measuring and scoring (default 2)")
    p.add_argument("--parallel", type=int, default=1,
                   help="training studies: runs trained and measured at once, each in its own process on the same "
                        "Ray, sharing --threads (default 1; 2 on 2 cores: +24-26 %% tokens/s in all)")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--results-doc", default=None, help="also write the summary into this Markdown file")
    p.add_argument("--results-section", default=None,
                   help="name of the section of --results-doc to (re)write (default ablate:<study>), e.g. to keep "
                        "a longer-budget study beside the default one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="AblationConfig overrides after the flags, e.g. sampler.temperature=0.9 stills=4000")
    return p


QUIET_TRAIN = "metrics.progress=false"
"""What ``--quiet`` adds to ``--train`` (not a recipe change: left out of the study's write-up)."""

FLAG_KEYS = {"study": "study", "recipe": "recipe", "train": "train", "val_ratio": "val_ratio",
             "eval_num": "eval_num", "frames": "frames", "eval_steps": "sampler.steps", "cfg": "sampler.cfg_scale"}
"""Each config flag → its :class:`AblationConfig` key (a flag left out leaves the config file's value)."""


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    """Defaults ← ``--config`` ← the flags given ← the dotted overrides (raises :class:`UsageError`)."""
    flags = given_flags(args, FLAG_KEYS)
    if args.variants is not None:
        flags["variants"] = [v for v in args.variants.split(",") if v]
    if args.seeds is not None:
        flags["seeds"] = _int_list(args.seeds, "--seeds")
    try:
        cfg = load_config(AblationConfig, args.config, args.overrides, flags)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if cfg.study == "history" and not args.checkpoint:
        raise UsageError("--study history needs --checkpoint (a path or a committed name such as small)")
    if args.checkpoint and cfg.study != "history":
        raise UsageError("--checkpoint is only used by --study history")
    if args.results_section and not args.results_doc:
        raise UsageError("--results-section names a section of --results-doc: give --results-doc too")
    if bool(args.shards) != bool(args.val_shards):
        raise UsageError("--shards and --val-shards go together")
    if args.quiet:  # the training workers' progress bars too
        cfg.train = [*cfg.train, QUIET_TRAIN]
    if cfg.study != "history":
        try:
            run_config(cfg, cfg.variants[0], cfg.seeds[0], "/tmp/check", args.shards)  # a bad recipe: now, one line
        except ConfigError as e:
            raise UsageError(f"--recipe {cfg.recipe}: {e}") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run_one:
        return run_one(args.run_one)
    try:
        cfg = config_from_args(args)
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        if args.parallel < 1:
            raise UsageError(f"--parallel must be >= 1, got {args.parallel}")
        if args.parallel > 1 and cfg.study == "history":
            raise UsageError("--parallel is for the training studies (rope, mask); history trains nothing")
        import torch

        torch.set_num_threads(args.threads)
        shards, val = args.shards, args.val_shards
        for uri in (shards, val) if shards else ():
            if not ShardManifest.finished(uri):
                raise UsageError(f"{uri}: no _manifest.json (not a finished tokenization output)")
        if cfg.study != "history":
            from workflows.pretrain import init_ray

            init_ray(run_config(cfg, cfg.variants[0], cfg.seeds[0], args.out, shards))  # one Ray for jobs and runs
            if not shards:
                shards, val = make_data(cfg, args.data, args.tokenizer)
        report = run_study(cfg, args.out, shards, val, args.checkpoint, not args.quiet, args.results_doc,
                           args.results_section, args.parallel, args.threads)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a job, a run or Ray start-up failed: one line, not a traceback
        log.debug("ablation failed", exc_info=True)
        print(f"{parser.prog}: error: {first_line(e, with_type=True)}", file=sys.stderr)
        return 1
    print(study_markdown(report))
    log.info("wrote %s", storage.join(args.out, cfg.study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
