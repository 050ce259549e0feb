"""Every shipped YAML recipe in workflows/configs parses and validates against the config class that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "workflows" / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))


def _pretrain(path: Path) -> None:
    from workflows.training.train_config import load_pretrain_config

    cfg = load_pretrain_config(str(path))
    cfg.model.build()


def _tokenizer(path: Path) -> None:
    from workflows.config_io import load_config
    from workflows.train_tokenizer import TrainTokenizerConfig

    load_config(TrainTokenizerConfig, str(path))


def _serve(path: Path) -> None:
    from workflows.serving.config import serve_config_from_args

    apps = yaml.safe_load(path.read_text())["applications"]
    assert apps, f"{path.name}: no applications"
    for app in apps:
        serve_config_from_args(app.get("args"))


VALIDATORS = {"pretrain_": _pretrain, "tokenizer_": _tokenizer, "serve": _serve}


def test_configs_exist():
    names = {p.name for p in FILES}
    assert {"pretrain_debug.yaml", "pretrain_small.yaml", "pretrain_1b_48gpu.yaml", "pretrain_3b_48gpu.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_config_file_parses_and_validates(path):
    tree = yaml.safe_load(path.read_text())
    assert isinstance(tree, dict) and tree, f"{path.name} must hold a non-empty mapping"
    validate = next((fn for prefix, fn in VALIDATORS.items() if path.name.startswith(prefix)), None)
    assert validate is not None, f"no validator for {path.name}: register its config class in VALIDATORS"
    validate(path)


def test_48gpu_recipes_are_zero3_bf16_on_48_gpus():
    from workflows.training.engine import build_ds_config
    from workflows.training.train_config import load_pretrain_config

    for name, preset in (("pretrain_1b_48gpu.yaml", "1b"), ("pretrain_3b_48gpu.yaml", "3b")):
        cfg = load_pretrain_config(str(CONFIGS / name))
        ds = build_ds_config(cfg, cfg.ray.num_workers, cfg.ray.use_gpu)
        assert (cfg.model.preset, cfg.ray.num_workers, cfg.ray.use_gpu) == (preset, 48, True)
        assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"]
        assert cfg.model.build().activation_checkpointing
