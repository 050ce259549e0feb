"""Shapes-world benchmarks of a checkpoint: GenEval-like T2I, VBench-like T2V and I2V (DESIGN §4.2).

Launch recipes::

    python -m workflows.eval --checkpoint runs/pretrain-small/final --suite all --out runs/eval/small
    python -m workflows.eval --checkpoint s3://bucket/ckpt --suite t2i --num 48 --steps 16 --cfg 3 --seed 0
    python -m workflows.eval --checkpoint ckpt --suite i2v --history-ratio 0   # no inference-time history mask

Prompts are the held-out sets of :mod:`workflows.eval_sets` (seeded, disjoint from training captions). Each
prompt is generated with the AR-DF sampler (:mod:`lumos.sampler`; I2V starts from the world's render of the
scene's first frame, tokenized by the checkpoint's video tokenizer), decoded, read back by
:mod:`lumos.shapes.metrics` and scored against the scene:

* ``t2i`` — per-category GenEval-like scores (single object, two objects, counting, colours, position, colour
  attribution); ``overall`` = mean of the six category means, as GenEval's overall.
* ``t2v`` / ``i2v`` — VBench-like: motion-direction accuracy, subject consistency, background stability.

Beside the model, four references go through the same scoring path: ``ground_truth`` (the world's render: the
metric's ceiling, ≈ 1), ``tokenizer`` (the render encoded and decoded by the video tokenizer: what a perfect model
could reach through this tokenizer), ``chance`` (valid media that ignore the prompt, see
:func:`workflows.eval_sets.chance_scenes`) and ``noise`` (seeded colour noise and scattered blobs in the world's
colours, :func:`workflows.eval_sets.noise_videos`: it must score near ``chance``, or the metric credits clutter).
Output under ``--out``: ``eval.json``, ``eval.md`` and one contact sheet PNG per suite (ground truth left,
generation right); the Markdown tables are also printed. Bad arguments exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from lumos import storage
from tokenize_jobs.cli import OneLineParser
from workflows.eval_sets import SUITES, EvalItem, clip_frames, first_frames, prompt_set, reference_videos
from workflows.generate import UsageError

if TYPE_CHECKING:
    from workflows.generate import GenerationBundle

log = logging.getLogger("workflows.eval")
T2I_CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
VIDEO_METRICS = ("motion_direction", "subject_consistency", "background_stability")
REFERENCE_KINDS = ("ground_truth", "tokenizer", "chance", "noise")
SHEET_ITEMS = {"t2i": 16, "t2v": 8, "i2v": 8}


@dataclass(kw_only=True)
class EvalSettings:
    """What to generate and how (defaults suit small CPU-trained checkpoints, not upstream's 50 steps / CFG 15)."""

    num: int = 24
    """Prompts per suite."""
    steps: int | None = None
    """Unmasking steps per latent frame; ``None`` = the checkpoint's ``sampling.steps``, else 16."""
    cfg: float | None = None
    """Guidance scale; ``None`` = the checkpoint's ``sampling.cfg_scale``, else 3."""
    seed: int = 0
    """Prompt-set seed and sampling seed (item i samples with seed·1000003 + i, whatever the batch)."""
    size: int | None = None
    """Frame side in pixels; ``None`` = the checkpoint's ``resolution`` (square) or 64."""
    fps: int = 8
    duration: int = 2
    """fps / seconds of the videos (the sequence tokens; the shapes corpus default is 8 fps × 2 s)."""
    frames: int | None = None
    """Latent frames per video; ``None`` = 1 + ceil((fps·duration − 1)/4)."""
    batch: int = 8
    """Prompts sampled together."""
    history_ratio: float = 0.7
    """Inference-time history masking of committed frames (0 = off)."""
    temperature: float | None = None
    """Logit temperature; ``None`` = the checkpoint's ``sampling.temperature``, else 1."""
    top_k: int | None = None
    upstream_tau_decay: bool = False
    """Upstream's exact Gumbel tau schedule (``SamplerConfig.upstream_tau_decay``)."""
    references: bool = True
    """Also score the ground-truth / tokenizer / chance / noise references."""

    def __post_init__(self) -> None:
        for name in ("num", "steps", "fps", "duration", "batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.frames is not None and self.frames < 2:
            raise ValueError(f"--frames must be >= 2 (I2V needs a frame to generate), got {self.frames}")
        if self.size is not None and (self.size < 8 or self.size % 8):
            raise ValueError(f"--size must be a positive multiple of 8, got {self.size}")
        if not 0.0 <= self.history_ratio < 1.0:
            raise ValueError(f"--history-ratio must be in [0, 1), got {self.history_ratio}")
        if (self.cfg is not None and not np.isfinite(self.cfg)) or (self.temperature or 1.0) <= 0:
            raise ValueError(f"--cfg must be finite and --temperature > 0, got {self.cfg}, {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {self.top_k}")

    def resolved(self, meta: dict) -> EvalSettings:
        """A copy with the unset sampler knobs taken from a checkpoint's ``sampling`` entry, else the built-in
        defaults (16 steps, CFG 3, temperature 1)."""
        from workflows.generate import checkpoint_default

        return dataclasses.replace(
            self, steps=self.steps or checkpoint_default(meta, "steps", 16),
            cfg=self.cfg if self.cfg is not None else checkpoint_default(meta, "cfg_scale", 3.0),
            temperature=self.temperature or checkpoint_default(meta, "temperature", 1.0))

    def sampler(self, suite: str, history_ratio: float | None = None):
        """The :class:`lumos.sampler.SamplerConfig` of a suite."""
        from lumos.sampler import SamplerConfig

        ratio = self.history_ratio if history_ratio is None else history_ratio
        s = self.resolved({})
        return SamplerConfig(steps=s.steps, cfg_scale=s.cfg, temperature=s.temperature, top_k=self.top_k,
                             upstream_tau_decay=self.upstream_tau_decay,
                             history_ratio=ratio if suite != "t2i" else 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------

def score_media(suite: str, videos: np.ndarray, items: list[EvalItem]) -> list[dict[str, float]]:
    """Per-item scores of generated (or reference) media.

    Args:
        suite: ``t2i`` (scores the first frame with ``geneval_scores``) or ``t2v``/``i2v`` (``vbench_scores``).
        videos: uint8 [B, N, H, W, 3] (N = 1 for images).
        items: the B items the media were made for.

    Returns:
        B score dicts.
    """
    from lumos.shapes.metrics import geneval_scores, vbench_scores

    if len(videos) != len(items):
        raise ValueError(f"got {len(videos)} videos for {len(items)} items")
    if suite == "t2i":
        return [geneval_scores(v[0], it.scene) for v, it in zip(videos, items)]
    return [vbench_scores(v, it.scene) for v, it in zip(videos, items)]


def aggregate(suite: str, rows: list[dict[str, float]]) -> dict[str, float]:
    """Suite scores from per-item rows: t2i — the six category means (over the items that have the category)
    and ``overall`` = their mean; t2v/i2v — the mean of each VBench-like metric."""
    keys = T2I_CATEGORIES if suite == "t2i" else VIDEO_METRICS
    out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys if any(k in r for r in rows)}
    if suite == "t2i":
        out["overall"] = float(np.mean([out[k] for k in T2I_CATEGORIES if k in out]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------

def eval_geometry(bundle: GenerationBundle, settings: EvalSettings) -> tuple[int, tuple[int, int]]:
    """(frame side in pixels, latent grid (h, w)) for a checkpoint."""
    from workflows.generate import latent_grid

    size = settings.size
    if size is None:
        res = bundle.meta.get("resolution") or [64, 64]
        size = int(res[0]) if int(res[0]) == int(res[1]) else 64
    return size, latent_grid(bundle, size, size)


def suite_plan(suite: str, grid: tuple[int, int], settings: EvalSettings):
    """The :class:`lumos.sampler.VideoPlan` of a suite."""
    from lumos.sampler import plan_video

    if suite == "t2i":
        return plan_video("t2i", grid)
    return plan_video(suite, grid, frames=settings.frames, fps=settings.fps, duration=settings.duration,
                      given=1 if suite == "i2v" else 0)


def generate_batch(bundle: GenerationBundle, suite: str, items: list[EvalItem], settings: EvalSettings,
                   history_ratio: float | None = None):
    """Sample one batch of items and decode it.

    Returns:
        (codes int64 [B, F, h, w], videos uint8 [B, N, H, W, 3]).
    """
    import torch

    from lumos.sampler import encode_prompt, generate

    size, grid = eval_geometry(bundle, settings)
    plan = suite_plan(suite, grid, settings)
    prompts = [encode_prompt(bundle.text_tokenizer, bundle.layout, it.prompt, plan, bundle.spatial) for it in items]
    gens = [torch.Generator(bundle.device).manual_seed(settings.seed * 1_000_003 + it.index) for it in items]
    given = None
    if suite == "i2v":
        with torch.inference_mode():
            given = bundle.video_tokenizer.encode(first_frames(items, size)[:, None]).long()  # (B, 1, h, w)
    res = generate(bundle.model, prompts, plan, settings.sampler(suite, history_ratio), given_codes=given,
                   generator=gens)
    with torch.inference_mode():
        videos = bundle.video_tokenizer.decode(res.codes).numpy()  # (B, N, H, W, 3)
    return res.codes, videos


def generate_suite(bundle: GenerationBundle, suite: str, items: list[EvalItem], settings: EvalSettings,
                   history_ratio: float | None = None, progress: bool = True) -> np.ndarray:
    """All items of a suite in batches of ``settings.batch``: uint8 [num, N, H, W, 3]."""
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(items), desc=f"eval {suite}", unit="prompt", disable=not progress, mininterval=2.0) as bar:
        for s in range(0, len(items), settings.batch):
            out.append(generate_batch(bundle, suite, items[s:s + settings.batch], settings, history_ratio)[1])
            bar.update(len(out[-1]))
    return np.concatenate(out)


def references(bundle: GenerationBundle, suite: str, items: list[EvalItem], settings: EvalSettings,
               size: int, num_frames: int) -> dict[str, np.ndarray]:
    """Reference media by kind (see the module docstring), uint8 [B, N, H, W, 3] each."""
    import torch

    gt = reference_videos(items, "ground_truth", size, settings.fps, num_frames)
    with torch.inference_mode():
        recon = bundle.video_tokenizer.decode(bundle.video_tokenizer.encode(gt)).numpy()
    chance = reference_videos(items, "chance", size, settings.fps, num_frames, seed=settings.seed)
    noise = reference_videos(items, "noise", size, settings.fps, num_frames, seed=settings.seed)
    return {"ground_truth": gt, "tokenizer": recon, "chance": chance, "noise": noise}


def evaluate_suite(bundle: GenerationBundle, suite: str, settings: EvalSettings, history_ratio: float | None = None,
                   progress: bool = True) -> dict:
    """Generate and score one suite.

    Returns:
        ``{"n", "scores", "references" (by kind, when enabled), "items" (index, prompt, num_objects, scores),
        "seconds", "videos" (uint8 [num, N, H, W, 3], not JSON), "reference_videos"}``.
    """
    t0 = time.perf_counter()
    size, grid = eval_geometry(bundle, settings)
    plan = suite_plan(suite, grid, settings)
    items = prompt_set(suite, settings.num, settings.seed, seconds=float(settings.duration))
    videos = generate_suite(bundle, suite, items, settings, history_ratio, progress)
    rows = score_media(suite, videos, items)
    result = {"n": len(items), "scores": aggregate(suite, rows), "ci95": bootstrap_ci(suite, rows),
              "items": [{"index": it.index, "prompt": it.prompt, "num_objects": it.num_objects, "scores": r}
                        for it, r in zip(items, rows)],
              "videos": videos, "reference_videos": {}}
    if settings.references:
        refs = references(bundle, suite, items, settings, size, clip_frames(plan.num_frames))
        result["references"] = {k: aggregate(suite, score_media(suite, v, items)) for k, v in refs.items()}
        result["reference_videos"] = refs
    result["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------

def contact_sheet(suite: str, videos: np.ndarray, truth: np.ndarray | None, scale: int = 2):
    """A PIL image: per item, the reference (left) and the generation (right); videos show every 4th frame
    (one per latent frame). Items go in a grid (t2i) or one per row (videos)."""
    from PIL import Image

    def strip(v: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> (H, n·W + gaps, 3)
        frames = v[::4]
        gap = np.full((v.shape[1], 2, 3), 255, np.uint8)
        return np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)

    n = min(len(videos), SHEET_ITEMS[suite])
    cells = []
    for i in range(n):
        parts = [strip(videos[i])] if truth is None else [strip(truth[i]), np.full((videos.shape[2], 6, 3), 128,
                                                                                   np.uint8), strip(videos[i])]
        cells.append(np.pad(np.concatenate(parts, axis=1), ((3, 3), (3, 3), (0, 0)), constant_values=255))
    cols = 4 if suite == "t2i" else 1
    while len(cells) % cols:
        cells.append(np.full_like(cells[0], 255))
    rows = [np.concatenate(cells[r:r + cols], axis=1) for r in range(0, len(cells), cols)]
    sheet = np.concatenate(rows, axis=0)
    return Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)


def bootstrap_ci(suite: str, rows: list[dict[str, float]], resamples: int = 1000,
                 seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of :func:`aggregate`'s scores, resampling the prompts."""
    if not rows:
        return {}
    rng = np.random.default_rng(seed)
    draws = [aggregate(suite, [rows[i] for i in rng.integers(0, len(rows), len(rows))]) for _ in range(resamples)]
    out = {}
    for key in aggregate(suite, rows):
        vals = np.array([d.get(key, np.nan) for d in draws], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[key] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
    return out


def suite_table(suite: str, res: dict) -> str:
    """Markdown table: one row per metric, columns model (with its 95 % interval) + references."""
    refs = res.get("references", {})
    kinds = [k for k in REFERENCE_KINDS if k in refs]
    ci = res.get("ci95", {})
    head = "| metric | model [95 % CI] |" + "".join(f" {k} |" for k in kinds) + "\n|---|---|" + "---|" * len(kinds) + "\n"
    lines = []
    for key, value in res["scores"].items():
        cells = [f"{refs[k].get(key, float('nan')):.3f}" for k in kinds]
        interval = f" [{ci[key][0]:.2f}, {ci[key][1]:.2f}]" if key in ci else ""
        lines.append(f"| {key} | **{value:.3f}**{interval} |" + "".join(f" {c} |" for c in cells))
    return head + "\n".join(lines) + "\n"


def markdown_report(report: dict) -> str:
    """The whole evaluation as Markdown (settings line, one table and contact sheet per suite)."""
    s = report["settings"]
    out = [f"# Shapes-world evaluation of `{report['checkpoint']}`\n",
           f"{s['num']} held-out prompts per suite, seed {s['seed']}, {s['steps']} steps/frame, CFG {s['cfg']}, "
           f"history ratio {s['history_ratio']}, {report['size']}×{report['size']} px, "
           f"{report['latent_frames']} latent frames at {s['fps']} fps.\n"]
    for suite, res in report["suites"].items():
        out.append(f"## {suite} ({res['n']} prompts, {res['seconds']:.0f} s)\n")
        out.append(suite_table(suite, res))
        if res.get("sheet"):
            out.append(f"\n![{suite} contact sheet]({res['sheet']}) — left: ground truth, right: generated; "
                       f"first prompt: \"{res['items'][0]['prompt']}\"\n")
    return "\n".join(out)


def write_report(out: str, report: dict, suites: dict[str, dict]) -> dict:
    """Write ``eval.json``, ``eval.md`` and the contact sheets under ``out``; returns the JSON-able report."""
    for suite, res in suites.items():
        truth = res["reference_videos"].get("ground_truth")
        buf = io.BytesIO()
        contact_sheet(suite, res["videos"], truth).save(buf, format="PNG", optimize=True)
        name = f"{suite}_sheet.png"
        storage.write_bytes(storage.join(out, name), buf.getvalue())
        report["suites"][suite] = {k: v for k, v in res.items() if k not in ("videos", "reference_videos")}
        report["suites"][suite]["sheet"] = name
    storage.write_text(storage.join(out, "eval.json"), json.dumps(report, indent=1))
    storage.write_text(storage.join(out, "eval.md"), markdown_report(report))
    return report


def save_figure(fig, uri: str) -> str:
    """Save a matplotlib figure as PNG to a URI (local or s3://), close it; returns the file name."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    storage.write_bytes(uri, buf.getvalue())
    return uri.rstrip("/").rsplit("/", 1)[-1]


def update_doc_section(doc: str, key: str, markdown: str, images: dict[str, str]) -> None:
    """Put ``markdown`` between ``<!-- key begin -->`` / ``<!-- key end -->`` in the local file ``doc`` (appended
    when absent); ``images`` (link name → URI) are copied to ``<doc dir>/img/<key>_<name>`` and relinked."""
    from pathlib import Path

    path = Path(doc)
    tag = key.replace(":", "_")
    for name, uri in images.items():
        target = path.parent / "img" / f"{tag}_{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(uri))
        markdown = markdown.replace(f"]({name})", f"](img/{target.name})")
    begin, end = f"<!-- {key} begin -->", f"<!-- {key} end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def evaluate(bundle: GenerationBundle, suites: list[str], settings: EvalSettings, out: str | None,
             checkpoint: str = "", progress: bool = True) -> dict:
    """Run the suites; write the report under ``out`` (if given); return the JSON-able report."""
    t0 = time.perf_counter()
    settings = settings.resolved(bundle.meta)
    size, grid = eval_geometry(bundle, settings)
    results = {suite: evaluate_suite(bundle, suite, settings, progress=progress) for suite in suites}
    report = {"checkpoint": checkpoint, "settings": asdict(settings), "size": size, "grid": list(grid),
              "latent_frames": suite_plan("t2v", grid, settings).num_frames, "suites": {},
              "seconds": time.perf_counter() - t0}
    if out is not None:
        return write_report(out, report, results)
    report["suites"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("videos", "reference_videos")}
                        for k, v in results.items()}
    return report


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = EvalSettings()
    p = OneLineParser(prog="python -m workflows.eval", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory URI (local or s3://)")
    p.add_argument("--suite", required=True, choices=[*SUITES, "all"], help="t2i, t2v, i2v or all")
    p.add_argument("--out", default="runs/eval", help="output directory URI (default runs/eval)")
    p.add_argument("--num", type=int, default=d.num, help=f"held-out prompts per suite (default {d.num})")
    p.add_argument("--steps", type=int, default=None,
                   help="unmasking steps per latent frame (default: the checkpoint's sampling.steps, else 16)")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance scale (default: the checkpoint's sampling.cfg_scale, else 3)")
    p.add_argument("--seed", type=int, default=d.seed, help="prompt-set and sampling seed (default 0)")
    p.add_argument("--size", type=int, default=None, help="frame side in pixels (default: checkpoint's or 64)")
    p.add_argument("--fps", type=int, default=d.fps, help=f"video fps token (default {d.fps})")
    p.add_argument("--duration", type=int, default=d.duration, help=f"video seconds token (default {d.duration})")
    p.add_argument("--frames", type=int, default=None, help="latent frames per video (default from fps, duration)")
    p.add_argument("--batch", type=int, default=d.batch, help=f"prompts per sampler batch (default {d.batch})")
    p.add_argument("--history-ratio", type=float, default=d.history_ratio, help="history mask ratio (0.7; 0 = off)")
    p.add_argument("--temperature", type=float, default=None,
                   help="logit temperature (default: the checkpoint's sampling.temperature, else 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the top-k codes only")
    p.add_argument("--upstream-tau-decay", action="store_true",
                   help="upstream's exact Gumbel tau: decayed before each step's confidence, never reset")
    p.add_argument("--no-references", action="store_true", help="skip the ground-truth/tokenizer/chance/noise rows")
    p.add_argument("--tokenizer", default=None, help="video tokenizer URI (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--results-doc", default=None, help="also write the tables into this Markdown file")
    p.add_argument("--results-section", default="eval",
                   help="name of the section of --results-doc to (re)write (default eval); one per checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    try:
        return EvalSettings(num=args.num, steps=args.steps, cfg=args.cfg, seed=args.seed, size=args.size,
                            fps=args.fps, duration=args.duration, frames=args.frames, batch=args.batch,
                            history_ratio=args.history_ratio, temperature=args.temperature, top_k=args.top_k,
                            upstream_tau_decay=args.upstream_tau_decay, references=not args.no_references)
    except ValueError as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        settings = settings_from_args(args)
        import torch

        from workflows.generate import load_generator

        if args.threads:
            torch.set_num_threads(args.threads)
        bundle = load_generator(args.checkpoint, args.device, args.tokenizer)
        eval_geometry(bundle, settings)
        suites = list(SUITES) if args.suite == "all" else [args.suite]
        report = evaluate(bundle, suites, settings, args.out, args.checkpoint, progress=not args.quiet)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    md = markdown_report(report)
    if args.results_doc:
        md_doc = md.replace("# Shapes-world evaluation", "## Shapes-world evaluation").replace("\n## ", "\n### ")
        update_doc_section(args.results_doc, args.results_section, md_doc,
                           {f"{s}_sheet.png": storage.join(args.out, f"{s}_sheet.png") for s in suites})
    print(md)
    log.info("wrote %s (eval.json, eval.md, contact sheets)", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
