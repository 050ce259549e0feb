"""Checks a pre-training run makes on the driver before any Ray worker starts (issue 17).

* :func:`verify_shards` — the token shards hold each clip once and agree with their ``_manifest.json`` (clip
  count, file list): two tokenization jobs writing into one directory, or files copied in by hand, are refused
  instead of being trained on silently.
* :func:`claim_run` — one live run per ``checkpoint.storage`` + ``checkpoint.name`` (:mod:`lumos.claims`).
* :func:`check_resume` — relaunching a run that has a checkpoint resumes it; the new config is compared with the
  saved one. Changes that cannot resume (model shape, vocabulary, data, the data split and the optimizer state
  layout) are one ``ValueError`` line naming the keys, and nothing in the run is written; changes that can
  (learning rate, steps, checkpoint/metrics cadence, ...) are logged.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pyarrow.fs as pafs

from lumos import storage
from lumos.claims import Claim, acquire
from tokenize_jobs.shards import ShardManifest

log = logging.getLogger("workflows.pretrain")

RESUME_FILE = "_resume.json"
"""What a run was started with, for the resume check: ``{"config", "model", "data"}``."""

NOT_RESUMABLE = (
    "seed", "data.shards", "data.stage", "data.video_first_frame_as_image", "data.max_latent_frames",
    "data.micro_batch_size", "data.bucket_window", "data.shuffle", "data.video_tokenizer", "data.text_tokenizer",
    "ray.num_workers", "ray.use_gpu", "engine.zero_stage", "engine.precision", "optim.name", "engine.offload_optimizer",
)
"""Config keys (besides the resolved model) whose change a checkpoint cannot follow: the weights' shape and
vocabulary, which rows the data position counts (data, split over workers, batching), the DeepSpeed state layout."""
IGNORED = ("model.preset", "model.overrides", "model.init_from", "checkpoint.storage", "checkpoint.name")
"""Compared through the resolved model (``model.*``) or identical by definition (the run's place)."""


# ---- shards ----------------------------------------------------------------------------------------------------
def verify_shards(uri: str, manifest: ShardManifest) -> int:
    """Refuse shards with duplicate clip ids or disagreeing with their manifest; returns the number of rows.

    Raises:
        ValueError: one line naming what is wrong.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from workflows.training.shard_data import shard_files

    files = shard_files(uri)
    names = sorted(storage.relative(uri, f) for f in files)
    listed = manifest.shards
    if listed is not None:
        extra, missing = sorted(set(names) - set(listed)), sorted(set(listed) - set(names))
        if extra or missing:
            what = (f"{len(extra)} Parquet file(s) not in its {'_manifest.json'} (e.g. {extra[0]})" if extra
                    else f"{len(missing)} file(s) listed in _manifest.json missing (e.g. {missing[0]})")
            raise ValueError(f"data.shards={uri}: {what}; was another job writing into it? re-tokenize into a new "
                             "directory")
    ids = []
    rows = 0
    for f in files:
        fs, path = storage.resolve(f)
        with fs.open_input_file(path) as fh:
            col = pq.read_table(fh, columns=["clip_id"]).column("clip_id")
        rows += len(col)
        ids.append(col)
    expected = manifest.clips_written
    if expected is not None and expected != rows:
        raise ValueError(f"data.shards={uri}: {rows} rows in the shard files but _manifest.json counts {expected} "
                         "clips; re-tokenize into a new directory")
    if ids:
        column = pa.chunked_array([c for col in ids for c in col.chunks], pa.string())
        distinct = pc.count_distinct(column, mode="all").as_py()
        if distinct != rows:
            counted = pc.value_counts(column)
            dup = next(v["values"] for v in counted.to_pylist() if v["counts"] > 1)
            raise ValueError(f"data.shards={uri}: {rows - distinct} duplicate clip ids among {rows} rows (e.g. "
                             f"{dup}); was it written by two tokenization jobs at once? re-tokenize into a new "
                             "directory")
    return rows


def data_fingerprint(uri: str, manifest: ShardManifest) -> str:
    """Identity of a shard dataset's contents (file list, clip count, tokenization settings key)."""
    blob = json.dumps({"shards": sorted(manifest.shards or []), "clips": manifest.clips_written,
                       "id_key": manifest.settings.get("id_key"),
                       "tokenizer": manifest.doc.get("tokenizer")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- run claim and resume ---------------------------------------------------------------------------------------
def claim_run(run_uri: str) -> Claim:
    """Claim ``<storage>/<name>`` for this run (raises :class:`lumos.claims.ClaimError`, one line)."""
    return acquire(run_uri, "workflows.pretrain", what="run (checkpoint.storage + checkpoint.name)")


def has_checkpoint(run_uri: str) -> bool:
    """Whether the run holds a Ray Train checkpoint (``checkpoint_*`` directory) to resume from."""
    fs, path = storage.resolve(run_uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return any(i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") for i in infos)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "overrides":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def run_record(cfg, manifest: ShardManifest) -> dict:
    """The ``_resume.json`` document of a run: its config, resolved model and data identity."""
    from workflows.training.train_config import RUNTIME_MODEL_FIELDS

    model = {k: v for k, v in cfg.model.build().to_dict().items() if k not in RUNTIME_MODEL_FIELDS}
    return {"config": cfg.to_dict(), "model": model, "data": data_fingerprint(cfg.data.shards, manifest)}


def _saved_record(run_uri: str) -> dict | None:
    """The saved record: ``_resume.json``, else (runs from before it existed) the ``train_config.yaml``."""
    uri = storage.join(run_uri, RESUME_FILE)
    if storage.exists(uri):
        return json.loads(storage.read_text(uri))
    yaml_uri = storage.join(run_uri, "train_config.yaml")
    if not storage.exists(yaml_uri):
        return None
    import yaml

    from workflows.training.train_config import RUNTIME_MODEL_FIELDS, PretrainConfig

    config = yaml.safe_load(storage.read_text(yaml_uri)) or {}
    record = {"config": config, "model": None, "data": None}
    try:
        old = PretrainConfig.from_dict(config)
        record["model"] = {k: v for k, v in old.model.build().to_dict().items() if k not in RUNTIME_MODEL_FIELDS}
    except Exception:  # an old init_from gone: compare the recipe keys instead
        pass
    return record


def resume_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """``(changes that cannot resume, changes that can)`` as ``key (old -> new)`` strings."""
    blocking, fine = [], []
    if old.get("model") is not None:
        for key in sorted(old["model"]):  # a field added to ModelConfig since the run started has its default
            a, b = old["model"].get(key), new["model"].get(key)
            if a != b and not (isinstance(a, list) and isinstance(b, tuple) and list(b) == a):
                blocking.append(f"model.{key} ({a!r} -> {b!r})")
    if old.get("data") is not None and old["data"] != new["data"]:
        blocking.append("data (the shards' contents changed)")
    a_cfg, b_cfg = _flat(old.get("config") or {}), _flat(new["config"])
    for key in sorted(set(a_cfg) | set(b_cfg)):
        a, b = a_cfg.get(key), b_cfg.get(key)
        if a == b or (isinstance(a, list | tuple) and isinstance(b, list | tuple) and list(a) == list(b)):
            continue
        if key not in a_cfg:  # a key added to the config since the run started
            fine.append(f"{key} (new key: {b!r})")
            continue
        if key.startswith(IGNORED):
            if old.get("model") is None and key.startswith("model."):
                blocking.append(f"{key} ({a!r} -> {b!r})")
            continue
        (blocking if key in NOT_RESUMABLE else fine).append(f"{key} ({a!r} -> {b!r})")
    return blocking, fine


def check_resume(cfg, run_uri: str, manifest: ShardManifest) -> dict:
    """Compare a relaunch with the saved run; returns this run's record (to write once the run starts).

    Raises:
        ValueError: a change the checkpoint cannot follow (one line naming the keys).
    """
    record = run_record(cfg, manifest)
    if not has_checkpoint(run_uri):
        return record
    saved = _saved_record(run_uri)
    if saved is None:
        return record
    blocking, fine = resume_changes(saved, json.loads(json.dumps(record, default=list)))
    if blocking:
        raise ValueError(f"cannot resume run {run_uri}: changed {', '.join(blocking)}; these change the model "
                         "shape, vocabulary or data the checkpoint was trained with: relaunch with the saved "
                         f"values ({storage.join(run_uri, 'train_config.yaml')}) or use a new checkpoint.name")
    if fine:
        log.info("resuming run %s with changed %s (resumable)", run_uri, ", ".join(fine))
    else:
        log.info("resuming run %s with the same config", run_uri)
    return record


def write_record(run_uri: str, record: dict) -> None:
    storage.write_text(storage.join(run_uri, RESUME_FILE), json.dumps(record, indent=2, sort_keys=True,
                                                                      default=list) + "\n")


__all__ = ["NOT_RESUMABLE", "RESUME_FILE", "check_resume", "claim_run", "data_fingerprint", "has_checkpoint",
           "resume_changes", "run_record", "verify_shards", "write_record"]
