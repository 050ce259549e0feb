"""bench/goal_gpu.py's batch stream: worker processes build the training loop's batches, in step order."""

from __future__ import annotations

import importlib.util
import multiprocessing
from pathlib import Path

import pytest
import torch
from test_pretrain_config import _row

from lumos.ardf import make_batch
from lumos.config import ARDFConfig, model_preset
from workflows.training.shard_data import batch_tokens, epoch_batches, row_to_sample, sample_batches
from workflows.training.train_config import DataSection, PretrainConfig
from workflows.training.train_loop import TrainState, Worker, batch_generator, micro_batches

BENCH = Path(__file__).resolve().parents[2] / "bench" / "goal_gpu.py"


def _goal_gpu():
    spec = importlib.util.spec_from_file_location("goal_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_batches_equal_epoch_batches():
    rows = [_row(i, frames=1 + i % 3) for i in range(24)]
    data = DataSection(micro_batch_size=3, bucket_window=7)
    samples = [row_to_sample(r, data) for r in rows]
    for epoch in (0, 1):
        want = list(epoch_batches(rows, data, seed=5, epoch=epoch, rank=0))
        got = list(sample_batches(samples, data, seed=5, epoch=epoch, rank=0))
        assert [[s["codes"].tolist() for s in b] for b in got] == [[s["codes"].tolist() for s in b] for b in want]


def test_worker_processes_yield_the_training_loops_batches_in_step_order():
    goal_gpu = _goal_gpu()
    layout = model_preset("debug").layout
    cfg = PretrainConfig(data=DataSection(micro_batch_size=2, bucket_window=6), seed=3,
                         ardf=ARDFConfig(min_mask_ratio=0.3, text_drop_prob=0.5))
    rows = [_row(i, frames=1 + i % 3) for i in range(13)]  # 6 batches an epoch: 14 steps cross two epochs
    samples = [row_to_sample(r, cfg.data) for r in rows]
    rank0 = Worker(rank=0, world=1, device=torch.device("cpu"))
    loop = micro_batches(rows, cfg, TrainState(), rank0, 4)  # what workflows.pretrain trains on
    want = [(make_batch(b, layout, cfg.ardf, batch_generator(cfg.seed, 0, e, i)), batch_tokens(b))
            for e, i, b in (next(loop) for _ in range(14))]
    for workers in (0, 2):
        before = set(multiprocessing.active_children())
        stream = goal_gpu.StepBatches(cfg, samples, layout, workers, pin=False)
        try:
            got = [next(stream) for _ in range(14)]
            assert len(set(multiprocessing.active_children()) - before) == workers
        finally:
            stream.close()
        assert set(multiprocessing.active_children()) <= before and next(stream, None) is None  # close stops them
        assert len(got) == 14
        for (batch, tokens), (ref, ref_tokens) in zip(got, want):
            assert batch.keys() == ref.keys() and tokens == ref_tokens
            for key in ref:
                assert torch.equal(batch[key], ref[key]), (workers, key)


def test_too_few_samples_for_one_micro_batch_is_an_error_not_a_hang():
    goal_gpu = _goal_gpu()
    cfg = PretrainConfig(data=DataSection(micro_batch_size=8, bucket_window=8, shards="/data/tiny"))
    samples = [row_to_sample(_row(i, frames=1), cfg.data) for i in range(5)]
    stream = goal_gpu.StepBatches(cfg, samples, model_preset("debug").layout, 0, pin=False)
    with pytest.raises(ValueError, match="too few clips for ray.num_workers=1 × data.micro_batch_size=8"):
        next(stream)
