"""tokenize_jobs.ray_runtime: one Ray start-up helper, one retry policy (no Ray is started: ray.init is replaced)."""

from __future__ import annotations

import pytest

from tokenize_jobs import ray_runtime


@pytest.fixture
def fake_ray(monkeypatch):
    """``ray.init`` records its options and fails while ``failures`` has entries; no sleeping between attempts."""
    import ray

    calls, failures = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if failures:
            raise Exception(failures.pop(0))  # Ray's start-up timeouts are bare Exceptions

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_runtime.time, "sleep", lambda s: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls, failures


def test_a_failed_start_is_retried_then_reported_in_one_line(fake_ray):
    calls, failures = fake_ray
    failures += ["raylet did not start in 30 s\ndetails"] * (ray_runtime.START_TRIES - 1)
    ray_runtime.start_ray(log_to_driver=True)
    assert len(calls) == ray_runtime.START_TRIES and calls[-1] == {"log_to_driver": True}

    calls.clear()
    failures += ["raylet did not start in 30 s\ndetails"] * ray_runtime.START_TRIES
    with pytest.raises(RuntimeError, match=r"^could not start or join Ray: raylet did not start in 30 s$"):
        ray_runtime.start_ray()
    assert len(calls) == ray_runtime.START_TRIES


def test_local_options_apply_only_to_a_local_start(fake_ray, monkeypatch):
    calls, _ = fake_ray
    local = {"include_dashboard": False, "object_store_memory": 1}
    ray_runtime.start_ray(env_vars={"DS_ACCELERATOR": "cpu"}, local=local)
    ray_runtime.start_ray(address="10.0.0.1:6379", local=local)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    ray_runtime.start_ray(local=local)
    assert calls == [{"runtime_env": {"env_vars": {"DS_ACCELERATOR": "cpu"}}, **local},
                     {"address": "10.0.0.1:6379"}, {}]


def test_an_initialised_ray_is_reused(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init called again"))
    assert ray_runtime.start_ray() is ray


def test_deepspeed_env(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/x")
    assert ray_runtime.deepspeed_env() == {"TORCH_EXTENSIONS_DIR": "/x"}
    assert ray_runtime.deepspeed_env(cpu=True) == {"TORCH_EXTENSIONS_DIR": "/x", "DS_ACCELERATOR": "cpu"}
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert ray_runtime.deepspeed_env(cpu=True)["DS_ACCELERATOR"] == "cuda"
