"""The paper's ablations at small scale on the shapes world: MM-RoPE variants, AR-DF training masks, and
inference-time history masking (LUMOS_SPEC §5.3, §7.2, §8.2, §10.5).

Launch recipes::

    python -m workflows.ablate --study rope --preset debug --steps 60 --out runs/ablate
    python -m workflows.ablate --study mask --preset small --steps 300 --out runs/ablate --results-doc docs/results.md
    python -m workflows.ablate --study history --checkpoint runs/pretrain-small/final --out runs/ablate
    python -m workflows.ablate --study rope --shards /data/shards --val-shards /data/val_shards --tokenizer TOK

Studies (every variant: same shards, same number of steps and batch size, same initial weights, same data order,
same seeds — for ``rope`` even the same AR-DF masks):

* ``rope`` trains ``ModelConfig.rope_variant`` = mm, 1d, 3d, mrope, mm_noscale, mm_nodist and plots validation-loss
  curves (the paper reports RoPE ablations as validation-loss curves).
* ``mask`` trains ``ARDFConfig.mask_type`` = tube, random, diffusion_forcing; validation uses the same fixed tube
  masks (ratio ``--val-ratio``) for all variants and reports the loss per latent-frame index (the frame-wise loss
  imbalance), beside the training per-frame loss under each variant's own masks; then scores t2i/t2v/i2v with
  ``workflows.eval``.
* ``history`` samples one model (``--checkpoint``, or a tube model trained here) with history ratio 0.7 and 0 and
  scores t2v/i2v with both.

Why not ``workflows.pretrain``: the pre-training workflow (Ray Train + DeepSpeed) is for scale; an ablation needs
many short runs with identical budgets, so it runs a plain single-process loop over the same pieces —
:func:`lumos.ardf.make_batch`, :func:`lumos.loss.ardf_loss`, the recipe's AdamW groups and LR schedule
(:mod:`workflows.engine`) — on the same token shards. Without ``--shards`` the data are made the product way into
``--data``: ``tokenize_jobs.synth`` (train videos, train stills, held-out validation videos; stills whose still
caption is held out are dropped, see :mod:`workflows.eval_sets`) → ``tokenize_jobs.video`` (Ray Data).

The model is the ``--preset`` (debug ≈ 0.1 M, small ≈ 5 M parameters) with its visual vocabulary sized to the
shards' tokenizer (so the debug model also runs on shards of the 1,000-code small tokenizer).

Output under ``<out>/<study>/``: ``results.json``, ``results.md``, PNG plots and one checkpoint per variant;
``--results-doc`` also writes the summary into a Markdown file (between ``<!-- ablate:<study> -->`` markers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lumos import storage
from lumos.sampler import SamplerConfig
from tokenize_jobs.cli import OneLineParser, first_line
from tokenize_jobs.shards import ShardManifest
from workflows.config_io import ConfigError, given_flags, load_config
from workflows.eval import EvalSettings, evaluate_suite, save_figure, update_doc_section
from workflows.generation import GenerationBundle, UsageError

log = logging.getLogger("workflows.ablate")
STUDIES = {"rope": ("mm", "1d", "3d", "mrope", "mm_noscale", "mm_nodist"),
           "mask": ("tube", "random", "diffusion_forcing"),
           "history": ("0.7", "0.0")}
DEFAULT_LR = {"debug": 3e-3, "small": 2e-3}


@dataclass(kw_only=True)
class AblationConfig:
    """One study's budget and settings (identical for all of its variants)."""

    study: str
    preset: str = "debug"
    steps: int = 200
    """Optimizer steps per variant."""
    batch: int = 4
    lr: float | None = None
    """Peak LR; ``None`` = the preset's pre-training recipe value."""
    warmup: int = 20
    eval_every: int = 20
    """Validation-loss interval (steps)."""
    val_ratio: float = 0.7
    """Fixed tube mask ratio of the validation batches."""
    max_latent_frames: int | None = None
    seed: int = 0
    eval_num: int = 12
    """Held-out prompts per suite for the scores."""
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=8, cfg_scale=3.0))
    """Sampler settings of the scores (``--eval-steps``, ``--cfg``; the history study sets ``history_ratio`` per
    variant); unset ones come from the checkpoint, else ``workflows.eval``'s fallbacks."""
    variants: list[str] = field(default_factory=list)
    """Subset of the study's variants (empty = all)."""

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise ValueError(f"--study must be one of {sorted(STUDIES)}, got {self.study!r}")
        if self.preset not in DEFAULT_LR:
            raise ValueError(f"--preset must be one of {sorted(DEFAULT_LR)}, got {self.preset!r}")
        for name in ("steps", "batch", "eval_every", "eval_num"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_ratio <= 1.0:
            raise ValueError(f"--val-ratio must be in (0, 1], got {self.val_ratio}")
        bad = [v for v in self.variants if v not in STUDIES[self.study]]
        if bad:
            raise ValueError(f"--variants: {bad[0]!r} is not a {self.study} variant {STUDIES[self.study]}")
        self.variants = self.variants or list(STUDIES[self.study])
        self.lr = self.lr or DEFAULT_LR[self.preset]
        self.warmup = min(self.warmup, self.steps // 4)


# ---------------------------------------------------------------------------------------------------------------
# Data: synth → tokenize job → samples
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class AblationData:
    """Training and validation samples (``lumos.ardf`` sample dicts) and their geometry."""

    train: list[dict]
    val: list[dict]
    tokenizer: str
    size: int
    fps: int
    duration: int
    latent_frames: int
    codebook_size: int = 0
    """Codes of the tokenizer (the model's visual vocabulary follows it, whatever the preset's default)."""


def combine_manifests(data_dir: str, parts: list[str], out_name: str, drop_heldout_stills: bool) -> str:
    """Concatenate synth manifests (paths made relative to ``data_dir``) into ``data_dir/out_name``."""
    from workflows.eval_sets import is_heldout_prompt

    rows = []
    for part in parts:
        for line in storage.read_text(storage.join(data_dir, part, "manifest.jsonl")).splitlines():
            row = json.loads(line)
            if drop_heldout_stills and row["path"].endswith(".png") and is_heldout_prompt(row["caption"]):
                continue
            rows.append({**row, "path": f"{part}/{row['path']}"})
    uri = storage.join(data_dir, out_name)
    storage.write_text(uri, "".join(json.dumps(r) + "\n" for r in rows))
    return uri


def prepare_data(data_dir: str, tokenizer: str, *, videos: int, images: int, val_videos: int, size: int = 64,
                 fps: int = 8, seconds: float = 2.0, seed: int = 0) -> tuple[str, str]:
    """Make (or reuse) train and validation token shards under ``data_dir`` with the product jobs.

    Returns:
        (train shards URI, validation shards URI).
    """
    from tokenize_jobs import synth, video

    geo = ["--size", str(size), "--fps", str(fps), "--seconds", str(seconds)]
    parts = {"train_videos": ["--videos", str(videos), "--seed", str(seed)],
             "train_stills": ["--videos", str(images), "--seed", str(seed + 1), "--format", "png"],
             "val_videos": ["--videos", str(val_videos), "--seed", str(seed + 2), "--split", "heldout"]}
    for name, args in parts.items():
        if int(args[1]) and not storage.exists(storage.join(data_dir, name, "manifest.jsonl")):
            if synth.main(["--out", storage.join(data_dir, name), *args, *geo]) != 0:
                raise RuntimeError(f"tokenize_jobs.synth failed for {name}")
    train = combine_manifests(data_dir, [p for p in ("train_videos", "train_stills") if int(parts[p][1])],
                              "train.jsonl", drop_heldout_stills=True)
    val = combine_manifests(data_dir, ["val_videos"], "val.jsonl", drop_heldout_stills=True)
    out = []
    for manifest, name in ((train, "shards"), (val, "val_shards")):
        uri = storage.join(data_dir, name)
        if not ShardManifest.finished(uri):
            rc = video.main(["--manifest", manifest, "--out", uri, "--tokenizer", tokenizer, "--fps", str(fps),
                             "--seconds", str(seconds), "--target-size", str(size), "--patch", "16"])
            if rc != 0:
                raise RuntimeError(f"tokenize_jobs.video failed for {manifest}")
        out.append(uri)
    return out[0], out[1]


def load_samples(shards: str, max_latent_frames: int | None) -> tuple[list[dict], dict]:
    """All rows of a shard directory as AR-DF samples, plus the first row's geometry (height, fps, grid_t)."""
    import pyarrow.parquet as pq

    from workflows.run_guard import verify_shards
    from workflows.shard_data import check_shards, row_to_sample, shard_files
    from workflows.train_config import DataSection

    verify_shards(shards, check_shards(shards))  # duplicate clip ids / counts that disagree: one line
    data = DataSection(shards=shards, stage="joint", max_latent_frames=max_latent_frames)
    samples, geo = [], {}
    for f in shard_files(shards):
        fs, path = storage.resolve(f)
        with fs.open_input_file(path) as fh:
            table = pq.read_table(fh, columns=["clip_id", "text_ids", "video_tokens", "grid_t", "grid_h", "grid_w",
                                               "fps", "height", "width"])
        for row in table.to_pylist():
            samples.append(row_to_sample(row, data))
            if row["grid_t"] > 1 and not geo:
                geo = {"size": int(row["height"]), "fps": samples[-1]["fps"], "duration": samples[-1]["duration"],
                       "latent_frames": int(samples[-1]["codes"].shape[0])}
    if not samples:
        raise ValueError(f"{shards}: no rows")
    return samples, geo


def load_data(cfg: AblationConfig, shards: str, val_shards: str, tokenizer: str | None) -> AblationData:
    train, geo = load_samples(shards, cfg.max_latent_frames)
    val, vgeo = load_samples(val_shards, cfg.max_latent_frames)
    val = [s for s in val if s["codes"].shape[0] > 1]
    if not val or not (geo or vgeo):
        raise ValueError(f"--val-shards {val_shards}: needs video clips (more than one latent frame)")
    tok = tokenizer or ShardManifest.read(shards).tokenizer_uri
    if not tok:
        raise ValueError("the shards name no video tokenizer: pass --tokenizer")
    tok = storage.absolute(tok)  # checkpoints refer to it
    from lumos.tokenizers import load_video_tokenizer

    codes = load_video_tokenizer(tok).codebook_size
    top = max(int(s["codes"].max()) for s in train + val)
    if top >= codes:
        raise ValueError(f"the shards hold code {top} but tokenizer {tok} has {codes} codes")
    return AblationData(train, val, tok, **(geo or vgeo), codebook_size=codes)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------

def epoch_batches(samples: list[dict], batch: int, generator) -> list[list[dict]]:
    """One epoch of batches: shuffled, grouped by latent frame count (no image/video padding), batch order
    shuffled. Incomplete groups are dropped."""
    import torch

    order = torch.randperm(len(samples), generator=generator).tolist()
    groups: dict[int, list[dict]] = {}
    for i in order:
        groups.setdefault(int(samples[i]["codes"].shape[0]), []).append(samples[i])
    out = [g[k:k + batch] for g in groups.values() for k in range(0, len(g) - batch + 1, batch)]
    return [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]


def batch_stream(samples: list[dict], batch: int, seed: int):
    """Endless stream of batches; identical for every variant with the same seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    while True:
        batches = epoch_batches(samples, batch, g)
        if not batches:
            raise ValueError(f"too few clips for --batch {batch}")
        yield from batches


def validation_batches(val: list[dict], layout, batch: int, ratio: float, seed: int) -> list[dict]:
    """Fixed validation batches: text kept, the same tube pattern ratio for every sample and variant."""
    import torch

    from lumos.ardf import IGNORE_INDEX
    from lumos.masking import tube_mask
    from lumos.sequence import build_sequence, collate_sequences

    g = torch.Generator().manual_seed(seed + 12345)
    out = []
    for s in range(0, len(val), batch):
        seqs, masked = [], []
        for sample in val[s:s + batch]:
            seq = build_sequence(layout, sample["text_ids"], sample["codes"], duration=sample["duration"],
                                 fps=sample["fps"])
            pos = torch.nonzero(seq.visual).squeeze(1).view(sample["codes"].shape[0], -1)  # (F, N)
            idx = pos[tube_mask(pos.shape[0], pos.shape[1], ratio, g)]
            ids, labels = seq.ids.clone(), torch.full_like(seq.ids, IGNORE_INDEX)
            code = seq.ids[idx] >= layout.visual_offset
            labels[idx[code]] = seq.ids[idx[code]]
            ids[idx] = layout.mask
            seqs.append(seq)
            masked.append((ids, labels))
        b = collate_sequences(seqs, pad_id=layout.pad)
        b["labels"] = torch.full_like(b["ids"], IGNORE_INDEX)
        for i, (ids, labels) in enumerate(masked):
            b["ids"][i, :ids.numel()], b["labels"][i, :labels.numel()] = ids, labels
        out.append(b)
    return out


def validate(model, batches: list[dict]) -> tuple[float, list[float]]:
    """(token-mean validation loss, mean loss per latent frame index)."""
    import torch

    from lumos.loss import ardf_loss

    sums, counts = None, None
    model.eval()
    with torch.no_grad():
        for b in batches:
            _, m = ardf_loss(model, b)
            s, c = m["frame_loss_sum"], m["frame_tokens"]
            sums = s if sums is None else _add(sums, s)
            counts = c if counts is None else _add(counts, c)
    model.train()
    return float(sums.sum() / counts.sum()), (sums / counts.clamp(min=1)).tolist()


def _add(a, b):
    n = max(a.numel(), b.numel())
    out = a.new_zeros(n)
    out[:a.numel()] += a
    out[:b.numel()] += b
    return out


def train_variant(cfg: AblationConfig, data: AblationData, model_cfg, ardf_cfg, val_batches: list[dict],
                  name: str, progress: bool = True):
    """Train one variant from the shared initial weights; returns (model, result dict)."""
    import torch
    from tqdm.auto import tqdm

    from lumos.ardf import make_batch
    from lumos.loss import ardf_loss
    from lumos.model import LumosModel
    from workflows.engine import LRSchedule, param_groups
    from workflows.train_config import OptimSection

    torch.manual_seed(cfg.seed)  # same initial weights for every variant (same parameter shapes)
    model = LumosModel(model_cfg)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=cfg.lr, betas=(0.9, 0.95))
    sched = LRSchedule(OptimSection(lr=cfg.lr, schedule="cosine", warmup_steps=cfg.warmup, max_steps=cfg.steps,
                                    min_lr_ratio=0.1))
    stream = batch_stream(data.train, cfg.batch, cfg.seed)
    curve, window, frame_sum, frame_cnt = [], [], None, None
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc=f"{cfg.study}:{name}", disable=not progress, mininterval=2.0):
        samples = next(stream)
        batch = make_batch(samples, model_cfg.layout, ardf_cfg,
                           torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * sched(step)
        loss, m = ardf_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
        opt.step()
        window.append(m["loss"])
        if step >= cfg.steps // 2 and samples[0]["codes"].shape[0] > 1:  # per-frame train loss: videos, 2nd half
            frame_sum = m["frame_loss_sum"] if frame_sum is None else _add(frame_sum, m["frame_loss_sum"])
            frame_cnt = m["frame_tokens"] if frame_cnt is None else _add(frame_cnt, m["frame_tokens"])
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val_loss, val_frames = validate(model, val_batches)
            curve.append({"step": step + 1, "train_loss": float(np.mean(window)), "val_loss": val_loss,
                          "val_frame_loss": val_frames})
            window = []
    seconds = time.perf_counter() - t0
    train_frames = [] if frame_sum is None else (frame_sum / frame_cnt.clamp(min=1)).tolist()
    model.eval()
    return model, {"curve": curve, "val_loss": curve[-1]["val_loss"], "best_val_loss": min(c["val_loss"] for c in curve),
                   "val_frame_loss": curve[-1]["val_frame_loss"], "train_frame_loss": train_frames,
                   "seconds": seconds, "s_per_step": seconds / cfg.steps}


def variant_configs(cfg: AblationConfig, variant: str, codebook_size: int | None = None):
    """(ModelConfig, ARDFConfig) of a variant; ``codebook_size`` overrides the preset's (the data's tokenizer)."""
    from lumos.config import ARDFConfig, model_preset

    rope = variant if cfg.study == "rope" else "mm"
    mask = variant if cfg.study == "mask" else "tube"
    extra = {"codebook_size": codebook_size} if codebook_size else {}
    return model_preset(cfg.preset, rope_variant=rope, **extra), ARDFConfig(mask_type=mask)


# ---------------------------------------------------------------------------------------------------------------
# Scoring with workflows.eval
# ---------------------------------------------------------------------------------------------------------------

def bundle_for(model, model_cfg, data: AblationData) -> GenerationBundle:
    """A :class:`workflows.generation.GenerationBundle` around an in-memory model."""
    import torch

    from lumos.tokenizers import load_text_tokenizer, load_video_tokenizer

    return GenerationBundle(model, model_cfg, {"resolution": [data.size, data.size]},
                            load_video_tokenizer(data.tokenizer), load_text_tokenizer(None, model_cfg.layout),
                            torch.device("cpu"))


def eval_settings(cfg: AblationConfig, data: AblationData) -> EvalSettings:
    return EvalSettings(num=cfg.eval_num, seed=cfg.seed, size=data.size, fps=data.fps, duration=data.duration,
                        frames=data.latent_frames, batch=min(8, cfg.eval_num), references=False, sampler=cfg.sampler)


def score(bundle, settings: EvalSettings, suites: tuple[str, ...], history_ratio: float | None = None,
          progress: bool = True) -> dict[str, dict]:
    return {s: evaluate_suite(bundle, s, settings, history_ratio, progress)["scores"] for s in suites}


# ---------------------------------------------------------------------------------------------------------------
# Studies
# ---------------------------------------------------------------------------------------------------------------

def save_variant(out: str, name: str, model, model_cfg, data: AblationData, cfg: AblationConfig) -> str:
    """A DESIGN §4.5 checkpoint of a trained variant under ``out/name`` (loadable by workflows.eval)."""
    from lumos.checkpoint import save_checkpoint

    return save_checkpoint(storage.join(out, name), model, model_cfg,
                           extra={"video_tokenizer": data.tokenizer, "text_tokenizer": None,
                                  "resolution": [data.size, data.size],
                                  "ablation": {"study": cfg.study, "variant": name}})


def run_training_study(cfg: AblationConfig, data: AblationData, out: str, progress: bool) -> dict:
    """``rope`` / ``mask``: train every variant; mask also scores each with workflows.eval."""
    variants = {}
    val_batches = None
    for v in cfg.variants:
        model_cfg, ardf_cfg = variant_configs(cfg, v, data.codebook_size)
        if val_batches is None:
            val_batches = validation_batches(data.val, model_cfg.layout, cfg.batch, cfg.val_ratio, cfg.seed)
        model, res = train_variant(cfg, data, model_cfg, ardf_cfg, val_batches, v, progress)
        if cfg.study == "mask":
            res["eval"] = score(bundle_for(model, model_cfg, data), eval_settings(cfg, data), ("t2i", "t2v", "i2v"),
                                progress=progress)
        save_variant(out, v, model, model_cfg, data, cfg)
        variants[v] = res
        log.info("%s %s: val loss %.4f (%.2f s/step)", cfg.study, v, res["val_loss"], res["s_per_step"])
    return variants


def run_history_study(cfg: AblationConfig, data: AblationData | None, checkpoint: str | None, out: str,
                      progress: bool) -> tuple[dict, dict]:
    """Score one model with history ratio 0.7 and 0; returns (variants, model info)."""
    if checkpoint:
        from workflows.generation import load_generator

        bundle = load_generator(checkpoint, "cpu")
        train_cfg = {"checkpoint": checkpoint}
        size = int((bundle.meta.get("resolution") or [64])[0])
        settings = EvalSettings(num=cfg.eval_num, seed=cfg.seed, size=size, batch=min(8, cfg.eval_num),
                                references=False, sampler=cfg.sampler)
    else:
        model_cfg, ardf_cfg = variant_configs(cfg, "tube", data.codebook_size)
        val_batches = validation_batches(data.val, model_cfg.layout, cfg.batch, cfg.val_ratio, cfg.seed)
        model, res = train_variant(cfg, data, model_cfg, ardf_cfg, val_batches, "tube", progress)
        bundle, settings = bundle_for(model, model_cfg, data), eval_settings(cfg, data)
        train_cfg = {"trained": "tube", "val_loss": res["val_loss"], "seconds": res["seconds"],
                     "checkpoint": save_variant(out, "tube", model, model_cfg, data, cfg)}
    variants = {v: {"eval": score(bundle, settings, ("t2v", "i2v"), float(v), progress)} for v in cfg.variants}
    return variants, train_cfg


def run_study(cfg: AblationConfig, out: str, data: AblationData | None, checkpoint: str | None = None,
              progress: bool = True, results_doc: str | None = None) -> dict:
    """Run a study and write ``results.json``, ``results.md`` and the plots under ``<out>/<study>``."""
    root = storage.join(out, cfg.study)
    t0 = time.perf_counter()
    extra = {}
    if cfg.study == "history":
        variants, extra = run_history_study(cfg, data, checkpoint, root, progress)
    else:
        variants = run_training_study(cfg, data, root, progress)
    report = {"study": cfg.study, "config": asdict(cfg), "variants": variants, "model": extra,
              "data": None if data is None else {"train_clips": len(data.train), "val_clips": len(data.val),
                                                 "tokenizer": data.tokenizer, "size": data.size, "fps": data.fps,
                                                 "latent_frames": data.latent_frames},
              "seconds": time.perf_counter() - t0}
    report["plots"] = plot_study(report, root)
    storage.write_text(storage.join(root, "results.json"), json.dumps(report, indent=1))
    md = study_markdown(report)
    storage.write_text(storage.join(root, "results.md"), md)
    if results_doc:
        update_doc_section(results_doc, f"ablate:{cfg.study}", md, {p: storage.join(root, p) for p in report["plots"]})
    return report


# ---------------------------------------------------------------------------------------------------------------
# Plots and Markdown
# ---------------------------------------------------------------------------------------------------------------

def _curves(ax, variants: dict, key: str, title: str) -> None:
    for name, res in variants.items():
        steps = [c["step"] for c in res["curve"]]
        ax.plot(steps, [c[key] for c in res["curve"]], marker="o", ms=3, label=name)
    ax.set(xlabel="step", ylabel=key.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _frames(ax, variants: dict, key: str, title: str) -> None:
    for name, res in variants.items():
        if res.get(key):
            ax.plot(range(len(res[key])), res[key], marker="o", label=name)
            ax.set_xticks(range(len(res[key])))
    ax.set(xlabel="latent frame index", ylabel="cross-entropy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_study(report: dict, root: str) -> list[str]:
    """Draw the study's PNG plots under ``root``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study, variants = report["study"], report["variants"]
    names = []
    if study in ("rope", "mask"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        _curves(axes[0], variants, "val_loss", f"{study}: validation loss (fixed tube masks)")
        _curves(axes[1], variants, "train_loss", f"{study}: training loss (own masks)")
        names.append(save_figure(fig, storage.join(root, f"{study}_loss.png")))
    if study == "mask":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        _frames(axes[0], variants, "train_frame_loss", "training loss per frame (each variant's own masks)")
        _frames(axes[1], variants, "val_frame_loss", "validation loss per frame (same tube masks)")
        names.append(save_figure(fig, storage.join(root, "mask_frame_loss.png")))
    if study == "history" or study == "mask":
        keys = [(s, m) for s in ("t2v", "i2v") for m in ("motion_direction", "subject_consistency",
                                                         "background_stability")]
        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.8 / max(1, len(variants))
        for k, (name, res) in enumerate(variants.items()):
            vals = [res["eval"][s].get(m, np.nan) for s, m in keys]
            ax.bar(np.arange(len(keys)) + k * width, vals, width, label=f"{study} {name}")
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"{s}\n{m.replace('_', ' ')}" for s, m in keys],
                      fontsize=8)
        ax.set(ylim=(0, 1.05), ylabel="score", title=f"{study}: shapes-world scores")
        ax.legend(fontsize=8)
        names.append(save_figure(fig, storage.join(root, f"{study}_scores.png")))
    return names


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"


def study_markdown(report: dict) -> str:
    """The study's results as Markdown: setting, one table, the plots."""
    cfg, study, variants = report["config"], report["study"], report["variants"]
    data = report.get("data") or {}
    model = report.get("model") or {}
    if study == "history" and model.get("checkpoint"):  # nothing trained: the settings are the sampler's
        setting = (f"Checkpoint `{model['checkpoint']}` sampled with and without inference-time history masking, "
                   f"{cfg['eval_num']} held-out prompts per suite, {cfg['sampler']['steps']} steps per frame, CFG "
                   f"{cfg['sampler']['cfg_scale']:g}, seed {cfg['seed']}. Wall time {report['seconds']:.0f} s.\n")
    else:
        setting = (f"Preset `{cfg['preset']}`, {cfg['steps']} steps × batch {cfg['batch']} per variant, LR "
                   f"{cfg['lr']:g}, seed {cfg['seed']}; data: {data.get('train_clips', '–')} training clips, "
                   f"{data.get('val_clips', '–')} held-out validation clips ({data.get('size', '–')} px, "
                   f"{data.get('latent_frames', '–')} latent frames); validation masks: tube, ratio "
                   f"{cfg['val_ratio']}. Wall time {report['seconds']:.0f} s.\n")
    lines = [f"## Ablation: {study}\n", setting]
    if study == "rope":
        lines.append("| rope variant | final val loss | best val loss | final train loss | s/step |\n|---|---|---|---|---|")
        for name, r in variants.items():
            lines.append(f"| {name} | {_fmt(r['val_loss'])} | {_fmt(r['best_val_loss'])} | "
                         f"{_fmt(r['curve'][-1]['train_loss'])} | {r['s_per_step']:.2f} |")
    elif study == "mask":
        lines.append("| mask | val loss | val loss per frame | train loss per frame (own masks) | t2i overall | "
                     "t2v motion | i2v motion | i2v subject | i2v background |\n|---|---|---|---|---|---|---|---|---|")
        for name, r in variants.items():
            e = r["eval"]
            per = lambda xs: " / ".join(f"{x:.2f}" for x in xs) or "–"  # noqa: E731
            lines.append(f"| {name} | {_fmt(r['val_loss'])} | {per(r['val_frame_loss'])} | "
                         f"{per(r['train_frame_loss'])} | {_fmt(e['t2i'].get('overall'))} | "
                         f"{_fmt(e['t2v'].get('motion_direction'))} | {_fmt(e['i2v'].get('motion_direction'))} | "
                         f"{_fmt(e['i2v'].get('subject_consistency'))} | {_fmt(e['i2v'].get('background_stability'))} |")
    else:
        if not model.get("checkpoint"):
            lines.append(f"Model: `{json.dumps(model)}`.\n")
        lines.append("| history ratio | t2v motion | t2v subject | t2v background | i2v motion | i2v subject | "
                     "i2v background |\n|---|---|---|---|---|---|---|")
        for name, r in variants.items():
            cells = [_fmt(r["eval"][s].get(m)) for s in ("t2v", "i2v")
                     for m in ("motion_direction", "subject_consistency", "background_stability")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
    p.add_argument("--config", default=None, help="YAML file with AblationConfig keys (steps, ..., sampler: {...})")
    p.add_argument("--preset", choices=sorted(DEFAULT_LR), help=f"model preset (default {d.preset})")
    p.add_argument("--steps", type=int, help=f"optimizer steps per variant (default {d.steps})")
    p.add_argument("--out", default="runs/ablate", help="output directory (default runs/ablate)")
    p.add_argument("--shards", default=None, help="training token shards (default: made under --data)")
    p.add_argument("--val-shards", default=None, help="validation token shards of held-out clips")
    p.add_argument("--data", default=None, help="where to make/reuse shards (default runs/ablate-data/<preset>)")
    p.add_argument("--tokenizer", default=None, help="video tokenizer URI (default: the committed small tokenizer)")
    p.add_argument("--videos", type=int, default=256, help="training videos to synthesize (default 256)")
    p.add_argument("--images", type=int, default=128, help="training stills to synthesize (default 128)")
    p.add_argument("--val-videos", type=int, default=32, help="held-out validation videos (default 32)")
    p.add_argument("--size", type=int, default=None, help="clip side in pixels (default 64; debug 32)")
    p.add_argument("--batch", type=int, help=f"clips per step (default {d.batch})")
    p.add_argument("--lr", type=float, default=None, help="peak LR (default: the preset recipe's)")
    p.add_argument("--eval-every", type=int, help=f"validation interval in steps (default {d.eval_every})")
    p.add_argument("--val-ratio", type=float, help=f"validation tube mask ratio (default {d.val_ratio})")
    p.add_argument("--max-latent-frames", type=int, default=None, help="temporal crop of training clips")
    p.add_argument("--eval-num", type=int, help=f"held-out prompts per suite for scores (default {d.eval_num})")
    p.add_argument("--eval-steps", type=int, help=f"sampler steps per frame for scores (default {d.sampler.steps})")
    p.add_argument("--cfg", type=float, help=f"guidance scale for scores (default {d.sampler.cfg_scale})")
    p.add_argument("--variants", default=None, help="comma-separated subset of the study's variants")
    p.add_argument("--checkpoint", default=None, help="history study: score this checkpoint instead of training")
    p.add_argument("--seed", type=int, help=f"data, training and sampling seed (default {d.seed})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: best on a busy CPU)")
    p.add_argument("--results-doc", default=None, help="also write the summary into this Markdown file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="AblationConfig overrides after the flags, e.g. sampler.temperature=0.9")
    return p


FLAG_KEYS = {"study": "study", "preset": "preset", "steps": "steps", "batch": "batch", "lr": "lr",
             "eval_every": "eval_every", "val_ratio": "val_ratio", "max_latent_frames": "max_latent_frames",
             "seed": "seed", "eval_num": "eval_num", "eval_steps": "sampler.steps", "cfg": "sampler.cfg_scale"}
"""Each config flag → its :class:`AblationConfig` key (a flag left out leaves the config file's value)."""


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    """Defaults ← ``--config`` ← the flags given ← the dotted overrides (raises :class:`UsageError`)."""
    flags = given_flags(args, FLAG_KEYS)
    if args.variants is not None:
        flags["variants"] = [v for v in args.variants.split(",") if v]
    try:
        return load_config(AblationConfig, args.config, args.overrides, flags)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def resolve_data(args: argparse.Namespace, cfg: AblationConfig) -> AblationData | None:
    """Shards from the flags, or made under ``--data`` (None for a history study on a checkpoint)."""
    if cfg.study == "history" and args.checkpoint:
        return None
    if bool(args.shards) != bool(args.val_shards):
        raise UsageError("--shards and --val-shards go together")
    shards, val = args.shards, args.val_shards
    tok = args.tokenizer
    if not shards:
        from lumos.tokenizers import default_tokenizer_uri

        tok = tok or default_tokenizer_uri("small")  # the committed one; every preset's vocab is sized to it
        size = args.size or (32 if cfg.preset == "debug" else 64)
        data_dir = args.data or f"runs/ablate-data/{cfg.preset}-{size}"
        shards, val = prepare_data(data_dir, tok, videos=args.videos, images=args.images,
                                   val_videos=args.val_videos, size=size, seed=cfg.seed)
        _shutdown_own_ray()
    try:
        return load_data(cfg, shards, val, tok)
    except (ValueError, OSError) as e:
        raise UsageError(str(e).splitlines()[0]) from None


def _shutdown_own_ray() -> None:
    """The tokenize job started a local Ray in this process; training does not need it."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        if args.checkpoint and cfg.study != "history":
            raise UsageError("--checkpoint is only used by --study history")
        import torch

        torch.set_num_threads(args.threads)
        data = resolve_data(args, cfg)
        report = run_study(cfg, args.out, data, args.checkpoint, not args.quiet, args.results_doc)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a job or Ray start-up failed: one line, not a traceback
        log.debug("ablation failed", exc_info=True)
        print(f"{parser.prog}: error: {first_line(e, with_type=True)}",
              file=sys.stderr)
        return 1
    print(study_markdown(report))
    log.info("wrote %s", storage.join(args.out, cfg.study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
