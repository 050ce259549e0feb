"""Ray Serve sampler over HTTP on 127.0.0.1 (DESIGN §4.6): t2i/t2v/i2v media, tokens equal to a direct sampler
run with the same seed, batched rows keep their own seeds, streaming sends frames before the last one exists,
16 parallel clients, /healthz and /v1/models, and the ``python -m workflows.serve`` CLI joining a running cluster.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from child_signals import default_sigint
from serve_helpers import SIZE, debug_checkpoint, deploy, png_b64, read_events, undeploy

from lumos.buckets import resize_center_crop
from lumos.flops import num_params
from lumos.media import read_image, read_video_frames
from lumos.sampler import SamplerConfig, encode_prompt, generate, plan_video
from workflows.generation import load_generator

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
STEPS = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return debug_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(serve_url, checkpoint):
    """One app: batches of up to 16 (gathered for 0.25 s), 32x32 by default, 3 steps, guidance 3."""
    deploy({"checkpoint": checkpoint, "sampler": {"steps": STEPS, "cfg_scale": 3.0},
            "limits": {"max_frames": 4, "max_steps": 64},
            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.25}}, name="lumos", route_prefix="/")
    with httpx.Client(base_url=serve_url, timeout=120) as client:
        yield client
    undeploy("lumos")


@pytest.fixture(scope="module")
def bundle(checkpoint):
    return load_generator(checkpoint, "cpu")


def direct_codes(bundle, prompt: str, mode: str, frames: int, seed: int, steps: int = STEPS,
                 given=None) -> np.ndarray:
    """What the sampler gives for one prompt run alone with ``torch.Generator().manual_seed(seed)``."""
    plan = plan_video(mode, (SIZE // 8, SIZE // 8), frames=frames, given=0 if given is None else 1)
    ids = encode_prompt(bundle.text_tokenizer, bundle.layout, prompt, plan, bundle.spatial)
    res = generate(bundle.model, [ids], plan, SamplerConfig(steps=steps, cfg_scale=3.0), given_codes=given,
                   generator=[torch.Generator().manual_seed(seed)])
    return res.codes[0].numpy()


def test_healthz_and_models(server, checkpoint):
    assert server.get("/healthz").json()["status"] == "ok"
    body = server.get("/v1/models").json()
    model = body["data"][0]
    assert model["checkpoint"] == checkpoint and model["preset"] == "debug"
    from lumos.config import model_preset

    assert model["params"] == num_params(model_preset("debug"))
    assert model["resolution"] == [SIZE, SIZE] and model["size_unit"] == 8
    assert body["limits"]["max_frames"] == 4 and body["auth"] is False
    assert set(body["modes"]) == {"t2i", "t2v", "i2v"} and "tokens" in body["formats"]


def test_t2i_png_and_t2v_gif_mp4(server):
    r = server.post("/v1/generate", json={"prompt": "a blue square", "mode": "t2i", "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-lumos-seed"] == "3" and r.headers["x-lumos-frames"] == "1"
    assert read_image(r.content).shape == (SIZE, SIZE, 3)
    r = server.post("/v1/generate", json={"prompt": "a red circle moving right", "num_frames": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert read_video_frames(r.content).shape == (5, SIZE, SIZE, 3)
    r = server.post("/v1/generate", json={"prompt": "a red circle", "num_frames": 3, "width": 48, "format": "mp4"})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert read_video_frames(r.content).shape == (9, SIZE, 48, 3)


def test_tokens_equal_a_direct_run_with_the_same_seed(server, bundle):
    r = server.post("/v1/generate", json={"prompt": "two green triangles", "num_frames": 2, "seed": 11,
                                          "format": "tokens"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["shape"] == [2, 4, 4] and body["seed"] == 11
    assert np.array_equal(np.array(body["codes"]), direct_codes(bundle, "two green triangles", "t2v", 2, 11))


def test_i2v_keeps_the_image_as_frame_zero(server, bundle, clip_small):
    first = read_video_frames(str(clip_small), max_frames=1)[0]  # real footage, 176x144
    request = {"prompt": "a man talking", "mode": "i2v", "image": png_b64(first), "num_frames": 2, "seed": 5}
    r = server.post("/v1/generate", json=request)
    assert r.status_code == 200 and read_video_frames(r.content).shape == (5, SIZE, SIZE, 3)
    r = server.post("/v1/generate", json={**request, "format": "tokens",
                                          "image": "data:image/png;base64," + request["image"]})
    codes = np.array(r.json()["codes"])
    given = bundle.video_tokenizer.encode(np.array(resize_center_crop(first, (SIZE, SIZE))[None])).long()  # (1, h, w)
    assert np.array_equal(codes[0], given[0].numpy())
    assert np.array_equal(codes, direct_codes(bundle, "a man talking", "i2v", 2, 5, given=given))


def test_sixteen_parallel_clients_are_batched_and_keep_their_seeds(server, bundle):
    def one(i: int) -> httpx.Response:
        return server.post("/v1/generate", json={"prompt": f"shape number {i % 4}", "mode": "t2i", "seed": 100 + i,
                                                 "format": "tokens"})

    with cf.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    rows = [int(r.headers["x-lumos-batch-rows"]) for r in responses]
    assert max(rows) > 1, f"no request was batched: {rows}"
    batched = [i for i, n in enumerate(rows) if n > 1]
    for i in batched[:3]:  # a batched row equals the same request alone
        expected = direct_codes(bundle, f"shape number {i % 4}", "t2i", 1, 100 + i)
        assert np.array_equal(np.array(responses[i].json()["codes"]), expected)
    assert server.get("/healthz").json()["in_flight"] == 0


def test_stream_sends_frames_before_the_last_is_generated(server):
    request = {"prompt": "a yellow star moving up", "num_frames": 4, "steps": 48, "seed": 2}
    with server.stream("POST", "/v1/generate/stream", json=request) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
    frames = [(data, at) for name, data, at in events if name == "frame"]
    assert [d["latent_frame"] for d, _ in frames] == [0, 1, 2, 3]
    assert [len(d["images"]) for d, _ in frames] == [1, 4, 4, 4]
    assert frames[0][1] < frames[-1][0]["committed_at"], "the first frame arrived only after the last was made"
    name, done, _ = events[-1]
    assert name == "done" and done["frames"] == 13 and done["seed"] == 2
    assert read_video_frames(base64.b64decode(done["gif"])).shape == (13, SIZE, SIZE, 3)
    streamed = np.concatenate([read_image(base64.b64decode(p)) for d, _ in frames for p in d["images"]], axis=1)
    strip = server.post("/v1/generate", json={**request, "format": "png"})  # all frames side by side, lossless
    assert np.array_equal(read_image(strip.content), streamed)


def test_stream_flag_on_generate(server):
    with server.stream("POST", "/v1/generate", json={"prompt": "a dot", "mode": "t2i", "stream": True,
                                                     "format": "png"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
    assert [e[0] for e in events] == ["frame", "done"]
    assert read_image(base64.b64decode(events[-1][1]["media"])).shape == (SIZE, SIZE, 3)


@pytest.mark.slow
def test_cli_joins_the_cluster_and_stops_on_ctrl_c(server, checkpoint, ray_local):
    """``python -m workflows.serve`` under RAY_ADDRESS (as in ``ray job submit``) deploys, serves, and leaves."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
           "PYTHONPATH": str(REPO)}
    port = server.base_url.port  # Serve's proxy is already up in this cluster: the app joins it
    proc = subprocess.Popen([sys.executable, "-m", "workflows.serve", "--checkpoint", checkpoint, "--port",
                             str(port), "app_name=cli", "route_prefix=/cli", "sampler.steps=2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_sigint)
    try:
        from ray import serve

        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            app = serve.status().applications.get("cli")
            if app is not None and app.status == "RUNNING":
                break
            time.sleep(1)
        assert server.get("/cli/healthz").json()["status"] == "ok"
        r = server.post("/cli/v1/generate", json={"prompt": "a dot", "mode": "t2i"})
        assert r.status_code == 200 and read_image(r.content).shape == (SIZE, SIZE, 3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert server.get("/cli/healthz").status_code == 404
    assert json.loads(server.get("/cli/healthz").text)["error"]
