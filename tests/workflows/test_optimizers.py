"""``optim.name: muon``: Muon on the decoder's matrices and AdamW on the rest as one optimizer, under DeepSpeed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pretrain_helpers import debug_overrides, shared_shards

from lumos.config import model_preset
from lumos.model import LumosModel
from workflows.config_io import ConfigError
from workflows.training.engine import LRSchedule, build_optimizer, muon_adamw, muon_ns_dtype
from workflows.training.optimizers import BatchedMuon, MuonAdamW, newton_schulz
from workflows.training.train_config import PretrainConfig, load_pretrain_config

DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")


def _model(seed: int = 0) -> LumosModel:
    torch.manual_seed(seed)
    return LumosModel(model_preset("debug"))


def _cfg(**optim) -> PretrainConfig:
    return PretrainConfig.from_dict({"optim": {"name": "muon", "lr": 1e-2, **optim}, "engine": {"zero_stage": 0}})


def _step(model: LumosModel, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt.zero_grad()
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in model.parameters())
    loss.backward()
    opt.step()


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = _model()
    opt = build_optimizer(model, _cfg(), on_gpu=False)
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if n.startswith("layers.") and p.ndim == 2}
    assert adamw == set(names.values()) - muon
    assert {"tok_embeddings.weight", "lm_head.weight", "norm.weight"} <= adamw
    decayed = {names[id(p)] for g in opt.adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {"lm_head.weight"}  # embeddings, norms and biases are not decayed
    assert opt.muon.param_groups[0]["weight_decay"] == 0.1


def test_one_lr_schedule_drives_both_and_every_parameter_moves():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    cfg = _cfg(warmup_steps=4, max_steps=10, schedule="cosine")
    opt = build_optimizer(model, cfg, on_gpu=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(cfg.optim))
    _step(model, opt, 0)
    sched.step()
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == pytest.approx([1e-2 * 2 / 4] * 3)
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_muon_update_is_orthogonalised_and_rms_matched():
    # one step from zero momentum: the update of an n x m matrix is lr * 0.2 * sqrt(max(n, m)) * O, O with
    # singular values near 1 (Newton-Schulz), i.e. an RMS of about 0.2 * lr whatever the gradient's scale
    model = _model()
    w = model.layers[0].feed_forward.w1.weight
    opt = build_optimizer(model, _cfg(weight_decay=0.0), on_gpu=False)
    start = w.detach().clone()
    opt.zero_grad()
    w.grad = torch.randn_like(w) * 1e3
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    opt.step()
    update = (start - w.detach()) / (1e-2 * 0.2 * max(w.shape) ** 0.5)
    s = torch.linalg.svdvals(update)
    assert 0.5 < s.min() and s.max() < 1.6
    assert (start - w.detach()).pow(2).mean().sqrt() == pytest.approx(0.2 * 1e-2, rel=0.35)


def test_state_round_trips_and_resumes_the_same_trajectory():
    a, b = _model(), _model()
    opt_a = build_optimizer(a, _cfg(), on_gpu=False)
    for s in range(3):
        _step(a, opt_a, s)
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, _cfg(), on_gpu=False)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert opt_b.param_groups[0] is opt_b.muon.param_groups[0]  # the LR schedule still reaches the inner groups
    for s in range(3, 5):
        _step(a, opt_a, s)
        _step(b, opt_b, s)
    for (n, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), n
    with pytest.raises(ValueError, match="another optim.name"):
        opt_b.load_state_dict(torch.optim.AdamW(a.parameters()).state_dict())


def _muon_adamw(model: LumosModel, ns_dtype: torch.dtype | None) -> MuonAdamW:
    """The optimizer ``build_optimizer`` makes, with the Newton-Schulz dtype (``None``: torch.optim.Muon) chosen."""
    return muon_adamw(model, _cfg(), on_gpu=False, ns_dtype=ns_dtype)


def test_batched_muon_in_bf16_is_torch_muon_to_the_bit():
    # the debug model has several matrices of each shape, square, tall and wide: one batched iteration per shape
    (ref, ours), opts = (_model(), _model()), []
    for model, ns_dtype in ((ref, None), (ours, torch.bfloat16)):
        opts.append(_muon_adamw(model, ns_dtype))
        for s in range(3):
            _step(model, opts[-1], s)
    assert isinstance(opts[1].muon, BatchedMuon) and type(opts[0].muon) is torch.optim.Muon
    for (n, a), b in zip(ref.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    # the same state: torch.optim.Muon's checkpoint resumes in the batched one, on the same trajectory
    resumed = _model(1)
    resumed.load_state_dict(ref.state_dict())
    opt = _muon_adamw(resumed, torch.bfloat16)
    opt.load_state_dict(copy.deepcopy(opts[0].state_dict()))
    for s in range(3, 5):
        _step(ref, opts[0], s)
        _step(resumed, opt, s)
    for (n, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_newton_schulz_in_fp32_orthogonalises_like_bf16():
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 24, 40, generator=g) * torch.tensor([1e-3, 1.0, 1e3]).view(3, 1, 1)
    coeffs = torch.optim._muon.DEFAULT_A, torch.optim._muon.DEFAULT_B, torch.optim._muon.DEFAULT_C
    fp32 = newton_schulz(stack, coeffs, 5, torch.float32)
    bf16 = newton_schulz(stack, coeffs, 5, torch.bfloat16)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    for m in fp32:  # singular values pushed into about [0.7, 1.2] whatever the scale (Muon's S' ~ U(0.5, 1.5))
        s = torch.linalg.svdvals(m)
        assert 0.5 < s.min() and s.max() < 1.3
    assert (fp32 - bf16.float()).abs().max() < 0.05  # bf16 rounding apart, the same matrices
    for i in range(3):  # each matrix of the stack as if alone: torch's own per-matrix iteration, in bf16
        alone = torch.optim._muon._zeropower_via_newtonschulz(stack[i], coeffs, 5, torch.optim._muon.EPS)
        assert torch.equal(alone, bf16[i])


def test_muon_ns_dtype_resolves_per_device():
    assert muon_ns_dtype(_cfg(muon_ns_dtype="fp32"), on_gpu=True) == "fp32"
    assert muon_ns_dtype(_cfg(muon_ns_dtype="bf16"), on_gpu=False) == "bf16"
    assert muon_ns_dtype(_cfg(), on_gpu=True) == "bf16"  # auto
    from workflows.training.engine import cpu_bf16_pays
    cfg = _cfg()
    assert muon_ns_dtype(cfg, on_gpu=False) == ("bf16" if cpu_bf16_pays(cfg.ray.threads_per_worker) else "fp32")
    assert build_optimizer(_model(), _cfg(muon_ns_dtype="fp32"), on_gpu=False).muon.ns_dtype == torch.float32


@pytest.mark.parametrize("override, message", [
    ({"optim": {"name": "lion"}}, "optim.name='lion'"),
    ({"optim": {"name": "muon"}, "engine": {"zero_stage": 2}}, "engine.zero_stage=0"),
    ({"optim": {"name": "muon"}, "engine": {"zero_stage": 0, "precision": "bf16"}}, "engine.precision=amp_bf16"),
    ({"optim": {"name": "muon"}, "engine": {"zero_stage": 0}, "ray": {"use_gpu": True}}, "fp32 weights"),
    ({"optim": {"name": "muon", "muon_momentum": 1.0}, "engine": {"zero_stage": 0}}, "optim.muon_momentum"),
    ({"optim": {"name": "muon", "muon_ns_dtype": "fp16"}, "engine": {"zero_stage": 0}}, "optim.muon_ns_dtype"),
])
def test_bad_optimizer_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")) as err:
        PretrainConfig.from_dict(override)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


@pytest.mark.ray
@pytest.mark.slow
def test_muon_trains_under_ray_train_and_deepspeed_and_resumes(ray_local, shards, tmp_path):
    from workflows.pretrain import run_pretraining
    from workflows.training.run_metrics import read_metrics

    def cfg(steps):
        return load_pretrain_config(DEBUG, debug_overrides(shards, str(tmp_path), "muon", **{
            "optim.name": "muon", "engine.zero_stage": 0, "optim.max_steps": steps, "optim.lr": 1e-2,
            "checkpoint.every_steps": 4, "checkpoint.keep": 1}))

    first = run_pretraining(cfg(8))
    losses = [r["loss"] for r in read_metrics(first.run_uri)]
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3, losses
    resumed = run_pretraining(cfg(12))  # same run name: resumes from step 8 with the optimizer's state
    records = read_metrics(resumed.run_uri)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert "  name: muon\n" in (Path(resumed.final) / "train_config.yaml").read_text()
