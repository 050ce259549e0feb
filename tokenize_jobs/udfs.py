"""Ray Data UDFs of the tokenization job: callable classes that load their state once per actor (STYLE B1.9).

* :class:`DecodeClips` — one input row (``source``, ``caption``, ``input_index``, ``skip``) → one output row per
  clip (frames as raw uint8 bytes + their shape) or one error row. A generator, so the clips of a long video
  stream out one at a time. Decoding runs in a child process under a timeout (:mod:`tokenize_jobs.worker`).
* :class:`TokenizeClips` — decoded clips → video tokens (the video tokenizer, on GPU when the actor has one) and
  text ids (``format_prompt`` of the caption, LUMOS_SPEC §4). Error rows pass through untouched.
* :class:`DecodeTokenizeClips` — both in one actor, for CPU-only tokenization: every actor decodes (its child
  process) and tokenizes in turn, so all CPUs decode, no tokenizer actor waits idle for a single decoder, and
  decoded frames never travel between processes.

Resources (CPUs, GPUs, pool sizes) are declared at the ``map_batches`` call site in :mod:`tokenize_jobs.video`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from lumos.buckets import choose_bucket
from tokenize_jobs.cli import one_line
from tokenize_jobs.decode import ClipSettings, InputError, VideoInfo, choose_strategy, plan_clips
from tokenize_jobs.shards import ERROR_SCHEMA, SHARD_SCHEMA, clip_id
from tokenize_jobs.worker import DecodeWorker
from tokenize_jobs.writer import TOKENIZED_SCHEMA

log = logging.getLogger(__name__)

DECODED_SCHEMA = pa.schema([
    *(SHARD_SCHEMA.field(name) for name in ("source", "caption")),
    ("input_index", pa.int64()),
    *(SHARD_SCHEMA.field(name) for name in ("clip_id", "clip_index", "source_clips", "start_s", "fps", "num_frames",
                                            "height", "width")),
    ("frames", pa.large_binary()),
    ("strategy", pa.string()),
    ("decode_s", pa.float64()),
    *(ERROR_SCHEMA.field(name) for name in ("stage", "error")),
])
"""Output of the decode stage: ``frames`` holds uint8 (num_frames, height, width, 3) bytes; error rows have a
non-null ``stage`` and empty frames."""


def _row(base: dict, **values) -> dict:
    row = dict.fromkeys(DECODED_SCHEMA.names)
    row.update(base)
    row.update(values)
    return row


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


class DecodeClips:
    """Decode stage UDF (``batch_format="pyarrow"``).

    Args:
        settings: :class:`~tokenize_jobs.decode.ClipSettings` as a dict.
        id_key: settings key hashed into every clip id (:func:`tokenize_jobs.shards.settings_key`).
    """

    def __init__(self, settings: dict, id_key: str, wait: bool = True):
        t0 = time.perf_counter()
        self.settings = ClipSettings(**settings)
        self.id_key = id_key
        self.worker = DecodeWorker(self.settings)
        if wait:
            self.worker.start()
            log.info("DecodeClips ready in %.1f s (decode child started)", time.perf_counter() - t0)
        else:  # the caller does more start-up work while the child imports its decoders
            self.worker.launch()

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for row in batch.to_pylist():
            base = {"source": row["source"], "caption": row["caption"], "input_index": row["input_index"]}
            skip = set(row.get("skip") or ())
            for out in self.decode_input(base, skip):
                yield _table([out])

    def decode_input(self, base: dict, skip: set[str]) -> Iterator[dict]:
        """Rows (clips or errors) of one input, skipping clip ids in ``skip``."""
        try:
            info = self.worker.open(base["source"])
            plans = plan_clips(info, self.settings)
        except InputError as e:
            yield _row(base, stage=e.stage, error=e.message)
            return
        s = self.settings
        bucket = choose_bucket(info.width, info.height, s.target_size, s.patch, s.max_aspect)
        fps = 1.0 if info.is_image else float(s.fps)
        pos, is_open = 0, True
        for plan in plans:
            cid = clip_id(base["source"], plan.clip_index, self.id_key)
            if cid in skip:
                continue
            meta = {"clip_id": cid, "clip_index": plan.clip_index, "source_clips": len(plans)}
            try:
                if not is_open:
                    self.worker.open(base["source"])
                    pos, is_open = 0, True
                strategy = self.strategy(info, plan.indices, pos)
                frames, decode_s = self.worker.read(plan, strategy, bucket)
                pos = max(plan.indices) + 1
            except InputError as e:
                is_open = False  # the child may have been restarted: reopen before the next clip
                yield _row(base, **meta, stage=e.stage, error=e.message)
                continue
            n, h, w, _ = frames.shape
            yield _row(base, **meta, start_s=plan.start_s, fps=fps, num_frames=n, height=h, width=w,
                       frames=frames.tobytes(), strategy=strategy, decode_s=decode_s)

    @staticmethod
    def strategy(info: VideoInfo, indices: list[int], pos: int) -> str:
        """The read strategy for a clip (PyAV and image readers only read sequentially)."""
        return choose_strategy(indices, info.keyframes, pos) if info.backend == "decord" else "sequential"

    def __del__(self):
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()


class TokenizeClips:
    """Tokenize stage UDF (``batch_format="pyarrow"``): frames → video tokens, caption → text ids.

    Args:
        tokenizer: video tokenizer URI (:func:`lumos.tokenizers.load_video_tokenizer`).
        layout: vocabulary layout name (``compact`` or ``chameleon``), for the prompt template and text ids.
        text_tokenizer: HF tokenizer JSON URI, or None for the built-in byte tokenizer (compact layout).
        device: ``"cuda"`` when the actor was given a GPU, else ``"cpu"``.
        threads: torch intra-op threads on CPU.
        max_text_tokens: longer prompts are truncated (0 = no limit); truncations are counted in the manifest.
    """

    def __init__(self, tokenizer: str, layout: str = "compact", text_tokenizer: str | None = None,
                 device: str = "cpu", threads: int = 1, max_text_tokens: int = 1024):
        t0 = time.perf_counter()
        import torch

        from lumos.tokenizers import load_text_tokenizer, load_video_tokenizer
        from lumos.vocab import build_layout

        if device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        self.tok = load_video_tokenizer(tokenizer, device=device)
        self.layout = build_layout(layout, self.tok.codebook_size)
        self.text = load_text_tokenizer(text_tokenizer, self.layout)
        self.max_text_tokens = max_text_tokens
        log.info("TokenizeClips ready in %.1f s (%s on %s)", time.perf_counter() - t0,
                 self.tok.identity.get("kind"), device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = [self.passthrough(r) for r in rows]
        groups = defaultdict(list)
        for i, r in enumerate(rows):
            if r["stage"] is None:
                groups[(r["num_frames"], r["height"], r["width"])].append(i)
        for shape, idx in groups.items():
            self.encode_group(rows, out, shape, idx)
        return pa.Table.from_pylist(out, schema=TOKENIZED_SCHEMA)

    @staticmethod
    def passthrough(r: dict) -> dict:
        keep = {k: r.get(k) for k in TOKENIZED_SCHEMA.names if k in r}
        return keep

    def encode_group(self, rows: list[dict], out: list[dict], shape: tuple[int, int, int], idx: list[int]) -> None:
        """Encode clips of one shape together; on failure retry one by one so only the bad clip errors."""
        n, h, w = shape
        video = np.stack([np.frombuffer(rows[i]["frames"], np.uint8).reshape(n, h, w, 3) for i in idx])  # (B,N,H,W,3)
        try:
            codes = self.tok.encode(video).numpy()  # (B, F, h, w)
        except Exception as e:  # noqa: BLE001 - isolate the failing clip below
            if len(idx) > 1:
                for i in idx:
                    self.encode_group(rows, out, shape, [i])
                return
            out[idx[0]].update(stage="tokenize", error=one_line(e))
            return
        for j, i in enumerate(idx):
            out[i].update(self.tokens_row(rows[i], codes[j]))

    def tokens_row(self, r: dict, codes: np.ndarray) -> dict:
        """Shard columns of one clip from its codes (F, h, w) and caption."""
        from lumos.sequence import format_prompt

        f, h, w = codes.shape
        frames = 1 if r["num_frames"] == 1 else r["num_frames"] - 1  # fps × duration, as upstream (spec §4)
        prompt = format_prompt(self.layout, r["caption"], width=r["width"], height=r["height"], frames=frames,
                               fps=int(round(r["fps"])))
        text_ids = self.text.encode(prompt)
        truncated = bool(self.max_text_tokens) and len(text_ids) > self.max_text_tokens
        if truncated:
            text_ids = text_ids[:self.max_text_tokens]
        return {"text_ids": text_ids, "video_tokens": codes.reshape(-1).astype(np.int32).tolist(),
                "grid_t": f, "grid_h": h, "grid_w": w, "text_truncated": truncated}


class DecodeTokenizeClips:
    """Fused UDF (``batch_format="pyarrow"``): input rows → tokenized rows, decoding and tokenizing in one actor.

    Args:
        settings, id_key: as :class:`DecodeClips`.
        batch_size: clips per tokenizer call (collected across the inputs of a block).
        **tokenizer: keyword arguments of :class:`TokenizeClips`.
    """

    def __init__(self, settings: dict, id_key: str, batch_size: int, **tokenizer):
        t0 = time.perf_counter()
        self.decode = DecodeClips(settings, id_key, wait=False)  # the child imports decord while torch loads here
        self.tokenize = TokenizeClips(**tokenizer)
        self.decode.worker.start()
        self.batch_size = batch_size
        log.info("DecodeTokenizeClips ready in %.1f s", time.perf_counter() - t0)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        pending: list[pa.Table] = []
        for clip in self.decode(batch):
            pending.append(clip)
            if len(pending) >= self.batch_size:
                yield self.tokenize(pa.concat_tables(pending))
                pending = []
        if pending:
            yield self.tokenize(pa.concat_tables(pending))
