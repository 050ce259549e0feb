"""workflows.plan: the 48-GPU recipes' memory per GPU from DeepSpeed's estimators (meta-device model, no GPU, no Ray),
the table in docs/pretrain.md is the planner's output, and bad input is one line."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from workflows import plan as planner
from workflows.training.train_config import load_pretrain_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = ["workflows/configs/pretrain_1b_48gpu.yaml", "workflows/configs/pretrain_3b_48gpu.yaml"]
GIB = 2**30


def default_args(**kw) -> argparse.Namespace:
    return planner.parse_args(["--config", RECIPES[0], *[f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]])


@pytest.fixture(scope="module")
def plans() -> list[planner.Plan]:
    gpu = planner.resolve_gpu(default_args())
    return [planner.plan_recipe(load_pretrain_config(str(REPO / r)), r, gpu) for r in RECIPES]


def readme_table() -> list[list[str]]:
    text = (REPO / "docs" / "pretrain.md").read_text()
    m = re.search(r"<!-- plan-table: (.*?) -->\n(.*?)\n<!-- /plan-table -->", text, re.S)
    assert m, "docs/pretrain.md has no <!-- plan-table --> block"
    assert m.group(1).split() == ["python", "-m", "workflows.plan", "--markdown",
                                  *[a for r in RECIPES for a in ("--config", r)]]
    rows = [line for line in m.group(2).splitlines() if line.startswith("|")]
    assert re.fullmatch(r"\|(-+\|)+", rows[1]), rows[1]
    return [[c.strip().strip("*").strip("`") for c in line.strip("|").split("|")] for line in [rows[0], *rows[2:]]]


def test_readme_table_is_the_planners_output(plans):
    table = readme_table()
    assert table[0] == ["per GPU", *[Path(r).name for r in RECIPES]]
    expected = [[label, *cells] for label, cells in planner.table_rows(plans)]
    assert table[1:] == expected
    labels = [r[0] for r in table]
    for needed in ("params + grads + optimizer states (DeepSpeed ZeRO-3 estimator)", "total per GPU", "verdict"):
        assert needed in labels


def test_plans_for_both_recipes(plans):
    p1, p3 = plans
    for p in plans:
        assert (p.num_gpus, p.num_nodes, p.gpus_per_node, p.zero_stage) == (48, 6, 8, 3)
        assert p.gpu.memory_gib == 40.0 and "A100" in p.gpu.name  # p4d.24xlarge in cluster/aws-48gpu.yaml
        assert p.total == p.model_states + sum(p.activations.values()) + p.buckets + p.overhead
        assert p.verdict.startswith("fits") and p.total < 40 * GIB
        # the longest sequence: 1,024 text tokens + 7 latent frames of the 256p bucket with the most tokens
        assert p.latent_frames == 7 and p.text_tokens == 1024
        assert p.seq_len > p.latent_frames * p.frame_tokens + p.text_tokens
    assert p1.total_params == 1_352_738_816 and p3.total_params == 3_413_291_008
    assert p3.total > p1.total and p3.model_states > p1.model_states


def test_model_counts_match_the_library(plans):
    from lumos.flops import num_params

    for p, r in zip(plans, RECIPES):
        cfg = load_pretrain_config(str(REPO / r)).model.build()
        assert p.total_params == num_params(cfg)
        assert p.largest_layer_params == cfg.vocab_size * cfg.dim  # embedding / lm_head


def test_model_states_equal_deepspeeds_functions(plans, capsys):
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs,
        estimate_zero3_model_states_mem_needs_all_cold,
    )
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs,
        estimate_zero2_model_states_mem_needs_all_cold,
    )

    for p in plans:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(p.total_params, p.largest_layer_params, num_gpus_per_node=8,
                                                            num_nodes=6, cpu_offload=False, cpu_offload_params=False,
                                                            zero_init=True)
        assert (p.model_states, p.cpu_model_states_per_node) == (int(gpu), int(cpu))
        capsys.readouterr()
        estimate_zero3_model_states_mem_needs_all_cold(p.total_params, p.largest_layer_params, num_gpus_per_node=8,
                                                       num_nodes=6)
        printed = capsys.readouterr().out
        assert printed == p.deepspeed_table
        row = next(ln for ln in printed.splitlines()
                   if "offload_param=none" in ln and "offload_optimizer=none" in ln and "zero_init=1" in ln)
        assert f"{p.model_states / GIB:6.2f}GB" in row
        assert f"{p.model_states / GIB:.2f} GiB" in dict(planner.table_rows([p]))[
            "params + grads + optimizer states (DeepSpeed ZeRO-3 estimator)"][0]

    # ZeRO-2 (and optimizer offload) go to the ZeRO-2 twin
    gpu_ = planner.resolve_gpu(default_args())
    for over in (["engine.zero_stage=2"], ["engine.zero_stage=2", "engine.offload_optimizer=true"]):
        p2 = planner.plan_recipe(load_pretrain_config(str(REPO / RECIPES[0]), over), RECIPES[0], gpu_)
        offload = "engine.offload_optimizer=true" in over
        cpu, gpu = estimate_zero2_model_states_mem_needs(p2.total_params, num_gpus_per_node=8, num_nodes=6,
                                                         cpu_offload=offload)
        assert (p2.model_states, p2.cpu_model_states_per_node) == (int(gpu), int(cpu))
        capsys.readouterr()
        estimate_zero2_model_states_mem_needs_all_cold(p2.total_params, num_gpus_per_node=8, num_nodes=6)
        assert capsys.readouterr().out == p2.deepspeed_table
        assert f"{p2.model_states / GIB:6.2f}GB" in p2.deepspeed_table


def test_layer_formula_matches_saved_tensors():
    """The per-layer activation formula against what a real bf16 decoder layer saves for its backward."""
    from lumos.config import model_preset
    from lumos.model import LumosModel
    from lumos.model.attention import AttentionPlan

    torch.manual_seed(0)
    cfg = model_preset("small", n_kv_heads=2)
    model = LumosModel(cfg).to(torch.bfloat16).train()
    B, L = 2, 640
    frame_ids = torch.full((B, L), -1, dtype=torch.long)
    frame_ids[:, 64:320], frame_ids[:, 320:576] = 0, 1
    cos, sin = model.rope(torch.arange(L).expand(B, L), torch.zeros(B, L, 3, dtype=torch.long), frame_ids >= 0,
                          torch.full((B,), 64))
    x = torch.randn(B, L, cfg.dim, dtype=torch.bfloat16, requires_grad=True)
    skip = {p.data_ptr() for p in model.parameters()} | {x.data_ptr(), cos.data_ptr(), sin.data_ptr()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in skip:
            st = t.untyped_storage()
            saved[st.data_ptr()] = max(saved.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        # the frame pieces: the path of the sequences a cluster run plans for (> DENSE_MAX_KEYS keys, flash-attn)
        model.layers[0](x, cos, sin, AttentionPlan.build(frame_ids, 0, dense_max_keys=0))
    measured = sum(saved.values())
    assert measured == pytest.approx(B * L * planner.layer_bytes_per_token(cfg), rel=0.05)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert planner.main(["--config", RECIPES[1], "--gpu-memory-gib", "24", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pretrain_3b_48gpu.yaml" in text and re.search(r"verdict\s+fits \(\d+ % of 24 GiB\)", text)
    [data] = json.loads(out.read_text())
    assert data["gpu"]["memory_gib"] == 24.0 and data["total_gib"] == round(data["total"] / GIB, 3)
    assert data["activations"]["checkpoints"] > 0 and "offload_optimizer=none" in data["deepspeed_table"]
    assert planner.main(["--config", RECIPES[1], "--gpu-memory-gib", "16"]) == 0
    assert re.search(r"verdict\s+does NOT fit \(\d+ % of 16 GiB\)", capsys.readouterr().out)


def test_pretrain_plan_flag_delegates(capsys):
    from workflows import pretrain

    assert pretrain.main(["--config", RECIPES[0], "--plan", "data.micro_batch_size=1"]) == 0
    out = capsys.readouterr().out
    assert "total per GPU" in out and "1 × " in out


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        planner.main(["--help"])
    assert e.value.code == 0
    assert "--gpu-memory-gib" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--config", RECIPES[0], "engine.zero_stage=1"], "ZeRO-2 and ZeRO-3"),
    (["--config", RECIPES[0], "engine.zero_stage=9"], "engine.zero_stage"),
    (["--config", RECIPES[0], "engine.precision=fp32"], "16-bit"),
    (["--config", RECIPES[0], "data.max_latent_frames=null"], "data.max_latent_frames"),
    (["--config", RECIPES[0], "ray.num_workers=96"], "at most 48 GPUs"),
    (["--config", RECIPES[0], "ray.num_workers=12"], "multiple of the 8 GPUs per node"),
    (["--config", "workflows/configs/pretrain_debug.yaml"], "ray.use_gpu"),
    (["--config", "workflows/configs/nope.yaml"], "nope.yaml"),
    (["--config", RECIPES[0], "--gpu-memory-gib", "0"], "--gpu-memory-gib"),
    (["--config", RECIPES[0], "--cluster", "cluster/kuberay/rayjob-pretrain.yaml"], "--gpu-memory-gib"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert planner.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err


def test_cluster_gpu_type(tmp_path):
    gpu = planner.read_cluster_gpu(REPO / "cluster/aws-48gpu.yaml")
    assert (gpu.memory_gib, gpu.gpus_per_node, gpu.max_gpus) == (40.0, 8, 48)
    swapped = (REPO / "cluster/aws-48gpu.yaml").read_text().replace("InstanceType: p4d.24xlarge",
                                                                     "InstanceType: p5.48xlarge")
    (tmp_path / "c.yaml").write_text(swapped)
    assert planner.read_cluster_gpu(tmp_path / "c.yaml").memory_gib == 80.0
    (tmp_path / "x.yaml").write_text(swapped.replace("InstanceType: p5.48xlarge", "InstanceType: x9.huge"))
    with pytest.raises(planner.PlanError, match="--gpu-memory-gib"):
        planner.read_cluster_gpu(tmp_path / "x.yaml")
