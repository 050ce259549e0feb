"""Pre-training config, DeepSpeed config, LR schedule, optimizer groups, shard batching and CLI errors (no Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from pretrain_helpers import write_shards

from lumos.config import model_preset
from lumos.model import LumosModel
from workflows import pretrain
from workflows.config_io import ConfigError, dump_config
from workflows.training.engine import (
    LRSchedule,
    build_ds_config,
    cpu_bf16_pays,
    cpu_has_native_bf16,
    param_groups,
    precision,
    precision_warning,
)
from workflows.training.shard_data import (
    bucket_batches,
    check_shards,
    epoch_batches,
    read_shards,
    row_to_sample,
    sample_length,
)
from workflows.training.train_config import DataSection, OptimSection, PretrainConfig, load_pretrain_config
from workflows.training.train_loop import TrainState, micro_batches

CONFIGS = Path(__file__).resolve().parents[2] / "workflows" / "configs"
DEBUG = str(CONFIGS / "pretrain_debug.yaml")


def test_overrides_resolve_and_round_trip():
    cfg = load_pretrain_config(DEBUG, ["model.overrides.n_layers=3", "optim.lr=1e-4", "engine.zero_stage=3",
                                       "data.max_latent_frames=null"])
    assert cfg.model.build().n_layers == 3 and cfg.optim.lr == 1e-4 and cfg.engine.zero_stage == 3
    assert cfg.data.max_latent_frames is None
    assert PretrainConfig.from_dict(cfg.to_dict()) == cfg
    assert "n_layers: 3" in dump_config(cfg)


@pytest.mark.parametrize("override, key", [
    ("optim.lrr=1", "optim.lrr"),
    ("model.overrides.depth=4", "model.overrides.depth"),
    ("model.preset=huge", "huge"),
    ("engine.zero_stage=4", "engine.zero_stage"),
    ("data.stage=video", "data.stage"),
    ("data.micro_batch_size=two", "data.micro_batch_size"),
    ("ardf.mask_type=checkerboard", "ardf.mask_type"),
    ("ardf.mask_mix_type=checkerboard", "ardf.mask_mix_type"),
    ("ardf.mask_mix=1.5", "ardf.mask_mix"),
    ("fault.exit_at_step=3", "fault.marker"),
])
def test_bad_keys_and_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(DEBUG, [override])
    assert key in str(e.value) and "\n" not in str(e.value)


def test_a_recipe_on_a_base_states_only_what_differs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "seed: 3\noptim: {lr: 0.002, max_steps: 40}\nmodel: {preset: debug}\n"
        "stages:\n  - {name: a, overrides: {optim.max_steps: 5}}\n  - {name: b, overrides: {optim.max_steps: 6}}\n")
    (tmp_path / "sub" / "child.yaml").write_text(
        "base: ../base.yaml\noptim: {max_steps: 50}\nstages:\n  - {name: only, overrides: {optim.max_steps: 7}}\n")
    cfg = load_pretrain_config(str(tmp_path / "sub" / "child.yaml"), ["optim.lr=0.001"])
    assert (cfg.seed, cfg.optim.lr, cfg.optim.max_steps, cfg.model.preset) == (3, 0.001, 50, "debug")
    assert [s.name for s in cfg.stages] == ["only"]  # a list replaces the base's whole
    # the two-hour recipe is the goal recipe but for its corpora, its name and its stages
    goal, two = (load_pretrain_config(str(CONFIGS / f"pretrain_small_{n}.yaml")) for n in ("goal", "2h"))
    g, t = goal.to_dict(), two.to_dict()
    assert {k for k in t if g[k] != t[k]} == {"data", "checkpoint", "stages"}
    assert {k for k in t["data"] if g["data"][k] != t["data"][k]} == {"shards"}
    assert {k for k in t["checkpoint"] if g["checkpoint"][k] != t["checkpoint"][k]} == {"name"}


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", "config file not found: {dir}/missing.yaml (the base of {dir}/r.yaml)"),
    ("base: r.yaml\n", "makes a cycle"),
    ("base: 3\n", "base: in {dir}/r.yaml must be the path of another config file, got 3"),
])
def test_a_bad_base_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(str(tmp_path / "r.yaml"))
    assert message.format(dir=tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_compile_with_zero3_is_a_one_line_error_and_a_missing_compiler_is_named(monkeypatch):
    from workflows.training.engine import compile_blocks

    with pytest.raises(ConfigError) as e:
        load_pretrain_config(DEBUG, ["engine.compile=true", "engine.zero_stage=3"])
    assert "engine.compile" in str(e.value) and "\n" not in str(e.value)
    assert load_pretrain_config(DEBUG, ["engine.compile=true"]).engine.compile is True
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        compile_blocks(LumosModel(model_preset("debug")), on_gpu=False)


def test_cpu_peak_is_the_best_this_machine_has_shown(tmp_path, monkeypatch):
    """The MFU denominator on CPU never drops below an earlier measurement with as many threads (a start-up under
    load would otherwise report MFU above 1); a missing or unreadable cache is measured afresh and rewritten."""
    from workflows.training.run_metrics import cpu_name, cpu_peak_flops, device_peak_flops

    cache = tmp_path / "cache" / "peak.json"
    monkeypatch.setenv("LUMOS_PEAK_CACHE", str(cache))
    key = f"{cpu_name()} | 1 threads"
    first = cpu_peak_flops(1)
    assert first > 1e9 and json.loads(cache.read_text()) == {key: first}
    cache.write_text(json.dumps({key: first * 10, "another cpu | 1 threads": 5.0}))
    assert device_peak_flops(torch.device("cpu"), "fp32", 1) == first * 10
    cache.write_text(json.dumps({key: 1.0, "another cpu | 1 threads": 5.0}))
    now = cpu_peak_flops(1)
    assert now > 1e9 and json.loads(cache.read_text()) == {key: now, "another cpu | 1 threads": 5.0}
    cache.write_text("not json")
    assert cpu_peak_flops(1) > 1e9 and key in json.loads(cache.read_text())
    # a caller's own measurement (bench/train.py's 2-second one) counts like one taken here
    assert cpu_peak_flops(1, measured=1e15) == 1e15 and json.loads(cache.read_text())[key] == 1e15
    assert cpu_peak_flops(1, measured=1e9) == 1e15
    # runs that multiply in bf16 (engine.precision=amp_bf16) divide by a bf16 matmul peak, kept apart
    bf16 = device_peak_flops(torch.device("cpu"), "amp_bf16", 1)
    assert bf16 > 1e9 and json.loads(cache.read_text())[f"{key} | bfloat16"] == bf16
    assert json.loads(cache.read_text())[key] == 1e15


def test_cpu_peak_of_a_job_is_each_nodes_peak_with_all_its_threads(tmp_path, monkeypatch):
    """2 workers x 1 thread and 1 x 2 on one machine divide by the same peak: the node's first worker measures
    with all the node's threads, the others add nothing (summed over the gloo group)."""
    import torch.distributed as dist

    from workflows.training.run_metrics import cpu_name
    from workflows.training.train_loop import Worker, measure_peak

    cache = tmp_path / "peak.json"
    monkeypatch.setenv("LUMOS_PEAK_CACHE", str(cache))
    cache.write_text(json.dumps({f"{cpu_name()} | 1 threads": 1e15, f"{cpu_name()} | 2 threads": 3e15,
                                 f"{cpu_name()} | 4 threads": 5e15}))
    cfg = load_pretrain_config(DEBUG, ["ray.threads_per_worker=1", "engine.precision=fp32"])
    cpu = torch.device("cpu")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert measure_peak(cfg, Worker(0, 2, cpu, local_rank=0, local_world=2)) == 3e15
        assert measure_peak(cfg, Worker(1, 2, cpu, local_rank=1, local_world=2)) == 0.0
        assert measure_peak(cfg, Worker(0, 1, cpu)) == 1e15
        two_threads = load_pretrain_config(DEBUG, ["ray.threads_per_worker=2", "engine.precision=fp32"])
        assert measure_peak(two_threads, Worker(0, 1, cpu)) == 3e15
        assert measure_peak(two_threads, Worker(0, 2, cpu, local_rank=0, local_world=2)) == 5e15
    finally:
        dist.destroy_process_group()


def test_deepspeed_config_cpu_and_gpu():
    cfg = load_pretrain_config(DEBUG, ["optim.grad_accum=3", "engine.zero_stage=3"])
    cpu = build_ds_config(cfg, world_size=2, on_gpu=False)
    assert cpu["train_batch_size"] == cfg.data.micro_batch_size * 3 * 2
    assert cpu["gradient_clipping"] == 4.0 and cpu["zero_optimization"]["stage"] == 3
    assert cpu["bf16"]["enabled"] is False and "optimizer" not in cpu
    assert cpu["torch_autocast"]["enabled"] is False  # auto on CPU: fp32 (bf16 autocast pays only for wide models)
    fp32 = build_ds_config(load_pretrain_config(DEBUG, ["engine.precision=fp32"]), world_size=1, on_gpu=False)
    assert fp32["torch_autocast"]["enabled"] is False and fp32["bf16"]["enabled"] is False
    amp = build_ds_config(load_pretrain_config(DEBUG, ["engine.precision=amp_bf16"]), world_size=1, on_gpu=False)
    assert amp["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and amp["bf16"]["enabled"] is False
    gpu = build_ds_config(load_pretrain_config(str(CONFIGS / "pretrain_1b_48gpu.yaml")), world_size=48, on_gpu=True)
    assert gpu["bf16"]["enabled"] is True and gpu["zero_optimization"]["stage"] == 3
    assert gpu["train_batch_size"] == 2 * 2 * 48


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    def cpu(flags):  # one file per CPU: the answer is cached per path (read once per process)
        path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
        path.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\n")
        return cpu_has_native_bf16(str(path))

    assert cpu("fpu avx2 avx512f avx512_bf16 avx512_vnni") and cpu("avx512f amx_bf16 amx_tile")
    assert not cpu("fpu avx2 avx512f avx512bw avx512_vnni") and not cpu_has_native_bf16(str(tmp_path / "missing"))
    cfg = load_pretrain_config(DEBUG)
    assert precision(cfg, on_gpu=True) == "bf16" and precision(cfg, on_gpu=False) == "fp32"
    amp = load_pretrain_config(DEBUG, ["engine.precision=amp_bf16"])
    assert precision(amp, on_gpu=False) == "amp_bf16" and precision_warning(cfg, on_gpu=False) is None
    threads = amp.ray.threads_per_worker
    warning = precision_warning(amp, on_gpu=False)
    assert (warning is None) is cpu_bf16_pays(threads) and precision_warning(amp, on_gpu=True) is None
    if warning:
        assert "engine.precision=fp32" in warning
    for name in ("amp_bf16_if_faster", "amp_bf16_if_native"):  # the older name means the same
        faster = load_pretrain_config(DEBUG, [f"engine.precision={name}"])
        assert precision(faster, on_gpu=False) == ("amp_bf16" if cpu_bf16_pays(threads) else "fp32")
        assert precision(faster, on_gpu=True) == "bf16" and precision_warning(faster, on_gpu=False) is None


def test_bf16_autocast_pays_only_where_bf16_matmuls_are_clearly_faster(tmp_path, monkeypatch):
    """The flag is necessary, not sufficient: the measured peaks (the best this machine has shown, kept in the
    peak cache) decide — a Xeon with avx512_bf16 multiplies bf16 at half its fp32 rate."""
    from workflows.training.run_metrics import cpu_name

    flagged = tmp_path / "cpuinfo-bf16"
    flagged.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: avx512f avx512_bf16\n\n")
    plain = tmp_path / "cpuinfo-plain"
    plain.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: avx512f avx2\n\n")
    key = f"{cpu_name()} | 2 threads"

    def pays(cache: dict, cpuinfo) -> bool:
        path = tmp_path / f"peaks-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(cache))
        monkeypatch.setenv("LUMOS_PEAK_CACHE", str(path))
        cpu_bf16_pays.cache_clear()
        return cpu_bf16_pays(2, str(cpuinfo))

    try:
        assert not pays({key: 1e15}, flagged)  # fp32 has been seen far faster than bf16 can be measured now
        assert pays({key + " | bfloat16": 1e16}, flagged)  # bf16 seen far faster than fp32 measures
        assert not pays({key + " | bfloat16": 1e16}, plain)  # no flag: emulated, whatever a cache says
    finally:
        cpu_bf16_pays.cache_clear()


def test_lr_schedule_warmup_then_cosine_or_constant():
    cos = LRSchedule(OptimSection(lr=1.0, min_lr_ratio=0.1, warmup_steps=4, max_steps=14, schedule="cosine"))
    assert [cos(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cos(4) == pytest.approx(1.0) and cos(9) == pytest.approx(0.55) and cos(14) == pytest.approx(0.1)
    const = LRSchedule(OptimSection(lr=1.0, warmup_steps=2, max_steps=10))
    assert [const(s) for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_param_groups_decay_only_matrices():
    model = LumosModel(model_preset("debug"))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]}
    assert ids == {id(p) for p in model.parameters()}
    assert id(model.tok_embeddings.weight) in {id(p) for p in no_decay["params"]}
    assert id(model.lm_head.weight) in {id(p) for p in decay["params"]}
    assert all(p.dim() == 1 for p in no_decay["params"] if p is not model.tok_embeddings.weight)


def _row(i: int, frames: int, grid: int = 4, text: int = 10) -> dict:
    return {"clip_id": f"c{i}", "text_ids": list(range(300, 300 + text)), "grid_t": frames, "grid_h": grid,
            "grid_w": grid, "fps": 8.0, "video_tokens": [(i + k) % 240 for k in range(frames * grid * grid)]}


def test_row_to_sample_crops_and_image_stage():
    s = row_to_sample(_row(0, 5), DataSection(max_latent_frames=3))
    assert s["codes"].shape == (3, 4, 4) and s["fps"] == 8 and s["duration"] == 1  # 9 RGB frames at 8 fps
    assert s["codes"].flatten()[:3].tolist() == [0, 1, 2]
    img = row_to_sample(_row(0, 5), DataSection(stage="image"))
    assert img["codes"].shape == (1, 4, 4) and (img["duration"], img["fps"]) == (1, 1)
    with pytest.raises(ValueError, match="c0"):
        row_to_sample({**_row(0, 5), "grid_t": 4}, DataSection())


def test_bucketing_pads_little_and_splits_evenly():
    g = torch.Generator().manual_seed(0)
    rows = [_row(i, frames=int(torch.randint(1, 6, (1,), generator=g)), text=int(torch.randint(5, 60, (1,),
                                                                                                   generator=g)))
            for i in range(64)]
    samples = [row_to_sample(r, DataSection()) for r in rows]

    def padding(batches):
        return sum(len(b) * max(map(sample_length, b)) - sum(map(sample_length, b)) for b in batches)

    bucketed = list(bucket_batches(samples, 4, 32, torch.Generator().manual_seed(1)))
    plain = [samples[i:i + 4] for i in range(0, 64, 4)]
    assert len(bucketed) == 16 and sorted(s["codes"].sum().item() for b in bucketed for s in b) == sorted(
        s["codes"].sum().item() for s in samples)
    assert padding(bucketed) < 0.25 * padding(plain)
    assert len(list(bucket_batches(samples[:30], 4, 8, None))) == 7  # 30 // 4; the rest is dropped


def test_data_position_resume_sees_the_same_batches():
    rows = [_row(i, frames=1 + i % 3) for i in range(20)]
    data = DataSection(micro_batch_size=2, bucket_window=6)
    cfg = PretrainConfig(data=data, seed=3)
    worker = type("W", (), {"rank": 1, "world": 2})()
    full = micro_batches(rows, cfg, TrainState(), worker, 4)
    ref = [next(full) for _ in range(17)]  # crosses an epoch boundary (10 batches per epoch)
    resumed = micro_batches(rows, cfg, TrainState(epoch=0, batch_in_epoch=7), worker, 4)
    for want in ref[7:]:
        got = next(resumed)
        assert got[:2] == want[:2] and [s["codes"].tolist() for s in got[2]] == [s["codes"].tolist()
                                                                                 for s in want[2]]
    epoch0 = list(epoch_batches(rows, data, seed=3, epoch=0, rank=1))
    epoch1 = list(epoch_batches(rows, data, seed=3, epoch=1, rank=1))
    assert [b[0]["codes"].tolist() for b in epoch0] != [b[0]["codes"].tolist() for b in epoch1]


def test_missing_or_partial_shards_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        check_shards(str(tmp_path / "nope"))
    (tmp_path / "part-0.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="_manifest.json"):
        check_shards(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "_manifest.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="no Parquet"):
        check_shards(str(empty))


def test_cli_errors_are_one_line_and_start_nothing(tmp_path, capsys):
    assert pretrain.main(["--config", DEBUG, "optim.lrr=1"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown key: optim.lrr"
    assert pretrain.main(["--config", DEBUG, f"data.shards={tmp_path}", f"checkpoint.storage={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.shards=") and "_manifest.json" in err and "\n" not in err
    assert not os.path.exists(tmp_path / "pretrain-debug")
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--help"])
    assert e.value.code == 0 and "--config" in capsys.readouterr().out



@pytest.mark.ray
def test_global_shuffle_mixes_a_clips_first_corpus_the_same_way_every_time(ray_local, tmp_path):
    shards = write_shards(str(tmp_path), videos=16, images=8, size=16, frames=5, files=1)  # clips first

    def order(seed: int, **data) -> list[tuple[str, int]]:
        ds = read_shards(DataSection(shards=shards, **data), seed)
        return [(r["clip_id"], int(r["grid_t"])) for r in ds.iter_rows()]

    written = order(0, global_shuffle=False)
    assert [t for _, t in written] == [2] * 16 + [1] * 8
    mixed = order(0)
    assert sorted(mixed) == sorted(written) and mixed != written
    assert 1 in [t for _, t in mixed[:12]]  # stills reach the first half of the stream
    assert order(0, materialize=True) == mixed  # a relaunch of the run sees the same rows in the same order
    assert order(1) != mixed


def test_amp_bf16_runs_the_forward_under_bf16_autocast_with_fp32_weights(tmp_path, monkeypatch):
    """``engine.precision=amp_bf16``: DeepSpeed's engine runs the loss under ``torch.autocast(cpu, bf16)`` (linear
    layers multiply in bf16), while the weights, their gradients and the optimizer step stay fp32."""
    import torch.distributed as dist

    from lumos.model import LumosModel
    from workflows.training.engine import build_engine

    for k, v in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}.items():  # Ray Train sets these
        monkeypatch.setenv(k, v)
    seen = {}

    def loss_fn(m, batch):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        out = m.lm_head(batch["x"])
        seen["dtype"] = out.dtype
        return out.float().pow(2).mean(), {}

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        for prec, dtype in (("fp32", torch.float32), ("amp_bf16", torch.bfloat16)):
            cfg = load_pretrain_config(DEBUG, [f"engine.precision={prec}", "engine.zero_stage=0"])
            model = LumosModel(cfg.model.build())
            engine = build_engine(model, loss_fn, cfg, world_size=1, on_gpu=False)
            before = model.lm_head.weight.detach().clone()
            loss, _ = engine({"x": torch.randn(4, model.lm_head.in_features)})
            engine.backward(loss)
            engine.step()
            assert seen == {"autocast": prec == "amp_bf16", "dtype": dtype}, prec
            assert model.lm_head.weight.dtype == torch.float32 and not torch.equal(model.lm_head.weight, before)
    finally:
        dist.destroy_process_group()
