"""Pre-training curricula: stages run one after another by one command (LUMOS_SPEC §9.1: images, then images +
videos).

A recipe with a ``stages`` list is a curriculum::

    stages:
      - name: image
        overrides: {data.stage: image, optim.max_steps: 1500}
      - name: joint
        overrides: {data.stage: joint, data.shards: /data/shards-video, optim.max_steps: 1000}

Stage ``k`` is the recipe with the stage's dotted overrides applied, run as its own Ray Train run named
``<checkpoint.name>-<stage name>`` under ``checkpoint.storage``; every stage after the first starts from the
previous stage's consolidated weights (``model.init_from`` = its ``final/``). Running the command again resumes
where it stopped: finished stages (``final/`` at the stage's ``optim.max_steps``) are skipped and a stage that was
interrupted resumes from its latest checkpoint (Ray Train's restore takes precedence over ``init_from``). Every
stage's config is built and validated when the recipe loads, so a bad stage list is one ``ConfigError`` line
before Ray starts.
"""

from __future__ import annotations

import copy
import json
import logging

from lumos import storage
from workflows.config_io import ConfigError, build_dataclass, merge
from workflows.training.train_config import PretrainConfig, StageSection

log = logging.getLogger("workflows.training.curriculum")
FORBIDDEN = ("stages", "checkpoint.name", "checkpoint.storage", "model.init_from")
"""Keys a stage may not override: the curriculum decides them."""


def stage_run_name(cfg: PretrainConfig, stage: StageSection) -> str:
    return f"{cfg.checkpoint.name}-{stage.name}"


def _dotted_tree(overrides: dict, key: str) -> dict:
    tree: dict = {}
    for dotted, value in overrides.items():
        if any(dotted == f or dotted.startswith(f + ".") for f in FORBIDDEN):
            raise ConfigError(f"{key}.overrides.{dotted}: set by the curriculum, not by a stage")
        node = tree
        *parents, last = str(dotted).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


def stage_configs(cfg: PretrainConfig) -> list[PretrainConfig]:
    """The resolved config of every stage (validated), in order; ``model.init_from`` of stage k > 0 is the
    ``final/`` of stage k − 1."""
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stages: stage names must be unique, got {names}")
    base = cfg.to_dict()
    base["stages"] = []
    out, previous = [], cfg.model.init_from
    for i, stage in enumerate(cfg.stages):
        key = f"stages[{i}]"
        tree = merge(copy.deepcopy(base), _dotted_tree(stage.overrides, key))
        tree["checkpoint"]["name"] = stage_run_name(cfg, stage)
        tree["model"]["init_from"] = previous
        try:
            stage_cfg = build_dataclass(PretrainConfig, tree)
        except ConfigError as e:
            raise ConfigError(f"{key} ({stage.name}): {e}") from None
        out.append(stage_cfg)
        previous = storage.join(storage.absolute(cfg.checkpoint.storage), stage_cfg.checkpoint.name, "final")
    return out


def stage_finished(stage_cfg: PretrainConfig) -> bool:
    """Whether a stage's run already published ``final/`` at its last step."""
    state = storage.join(storage.absolute(stage_cfg.checkpoint.storage), stage_cfg.checkpoint.name, "final",
                         "train_state.json")
    if not storage.exists(state):
        return False
    return int(json.loads(storage.read_text(state)).get("step", 0)) >= stage_cfg.optim.max_steps


def run_curriculum(cfg: PretrainConfig, run_stage) -> list:
    """Run every unfinished stage in order with ``run_stage(stage_cfg)`` (``workflows.pretrain.run_pretraining``);
    returns the results of the stages run now (finished stages are skipped)."""
    results = []
    configs = stage_configs(cfg)
    for i, (stage, stage_cfg) in enumerate(zip(cfg.stages, configs)):
        if stage_finished(stage_cfg):
            log.info("stage %d/%d %s: already finished, skipped", i + 1, len(configs), stage.name)
            continue
        log.info("stage %d/%d %s: run %s, %d steps%s", i + 1, len(configs), stage.name, stage_cfg.checkpoint.name,
                 stage_cfg.optim.max_steps, f", from {stage_cfg.model.init_from}" if stage_cfg.model.init_from else "")
        results.append(run_stage(stage_cfg))
    return results


__all__ = ["FORBIDDEN", "run_curriculum", "stage_configs", "stage_finished", "stage_run_name"]
