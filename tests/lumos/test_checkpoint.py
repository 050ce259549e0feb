"""Checkpoint save/load round trip, locally and on S3 (moto), and clear mismatch errors (DESIGN §4.5)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_st
from safetensors.torch import save as save_st

from lumos import storage
from lumos.checkpoint import load_checkpoint, save_checkpoint
from lumos.config import model_preset
from lumos.model import LumosModel
from lumos.sequence import build_sequence


def _roundtrip(uri):
    cfg = model_preset("debug", rope_variant="mm_nodist")
    model = LumosModel(cfg).eval()
    save_checkpoint(uri, model, cfg, extra={"video_tokenizer": "tok/", "step": 7})
    loaded, cfg2, meta = load_checkpoint(uri)
    assert cfg2 == cfg
    assert meta["video_tokenizer"] == "tok/" and meta["step"] == 7 and meta["layout"] == cfg.layout.to_dict()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    seq = build_sequence(cfg.layout, [300], torch.randint(0, 240, (2, 2, 2)), duration=1, fps=2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_sequences([seq]), loaded.forward_sequences([seq]), atol=0, rtol=0)
    assert not loaded.training


def test_checkpoint_roundtrip_local(tmp_path):
    _roundtrip(str(tmp_path / "ckpt"))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert set(config) >= {"model", "layout", "video_tokenizer"}


def test_checkpoint_roundtrip_s3(s3_bucket):
    uri = f"{s3_bucket}/runs/a/ckpt"
    _roundtrip(uri)
    assert storage.exists(f"{uri}/model.safetensors")


def test_checkpoint_bf16_weights_load_as_float32(tmp_path):
    cfg = model_preset("debug")
    save_checkpoint(str(tmp_path), LumosModel(cfg), cfg, dtype=torch.bfloat16)
    raw = load_st((tmp_path / "model.safetensors").read_bytes())
    assert raw["lm_head.weight"].dtype == torch.bfloat16
    model, _, _ = load_checkpoint(str(tmp_path))
    assert model.lm_head.weight.dtype == torch.float32


def test_checkpoint_mismatch_names_the_tensor(tmp_path):
    cfg = model_preset("debug")
    save_checkpoint(str(tmp_path), LumosModel(cfg), cfg)
    path = tmp_path / "model.safetensors"
    state = load_st(path.read_bytes())
    state["layers.1.feed_forward.w1.weight"] = torch.zeros(3, 3)
    path.write_bytes(save_st(state))
    with pytest.raises(ValueError, match=r"layers\.1\.feed_forward\.w1\.weight.*shape"):
        load_checkpoint(str(tmp_path))
    del state["layers.1.feed_forward.w1.weight"]
    path.write_bytes(save_st(state))
    with pytest.raises(ValueError, match=r"lacks tensor 'layers\.1\.feed_forward\.w1\.weight'"):
        load_checkpoint(str(tmp_path))


def test_checkpoint_rejects_reserved_extra_and_missing_dir(tmp_path):
    cfg = model_preset("debug")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(str(tmp_path), LumosModel(cfg), cfg, extra={"model": {}})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "nothing"))


def test_storage_absolute_makes_local_paths_absolute_and_keeps_s3(tmp_path, monkeypatch):
    from lumos import storage

    monkeypatch.chdir(tmp_path)
    assert storage.absolute("runs/shards") == str(tmp_path / "runs" / "shards")
    assert storage.absolute("file://" + str(tmp_path / "x")) == str(tmp_path / "x")
    assert storage.absolute("s3://bucket/key") == "s3://bucket/key"
    assert storage.absolute(None) is None and storage.absolute("") == ""


def test_resolve_ref_keeps_absolute_refs_and_puts_relative_ones_in_the_checkpoint():
    from lumos.checkpoint import resolve_ref

    assert resolve_ref("s3://b/ckpt", "tokenizer") == "s3://b/ckpt/tokenizer"
    assert resolve_ref("/runs/final", "tokenizer") == "/runs/final/tokenizer"
    for ref in ("/abs/tok", "s3://b/tok", "file:///abs/tok"):
        assert resolve_ref("/runs/final", ref) == ref
