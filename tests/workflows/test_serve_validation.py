"""Bad input to the HTTP sampler: every malformed request gets a 4xx JSON ``{"error": ...}`` before any work and
the server keeps serving; bearer-token auth; 503 + Retry-After beyond ``limits.max_queued``; 504 past the
request deadline; the shipped ``serve run`` config; the CLI's one-line argument errors.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from serve_helpers import SIZE, debug_checkpoint, deploy, png_b64, read_events, undeploy

from lumos.media import read_image
from workflows.serving.config import ServeConfig, serve_config_from_args

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"prompt": "a red circle", "mode": "t2i", "steps": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return debug_checkpoint(tmp_path_factory.mktemp("serve_validation"))


@pytest.fixture(scope="module")
def base_url(serve_url, checkpoint):
    """Two apps: ``/`` with a token and tight limits, ``/slow`` (no token) admitting one request at a time."""
    deploy({"checkpoint": checkpoint, "token": TOKEN, "sampler": {"cfg_scale": 3.0},
            "limits": {"max_prompt_chars": 200, "max_frames": 3, "max_steps": 8, "max_image_pixels": 256 * 256,
                       "max_body_bytes": 64 * 1024, "max_side": 64}}, name="lumos", route_prefix="/")
    deploy({"checkpoint": checkpoint, "sampler": {"cfg_scale": 3.0, "steps": 2},
            "limits": {"max_queued": 1, "request_timeout_s": 120.0, "max_frames": 8, "max_steps": 1000},
            "batching": {"max_batch_size": 1}}, name="slow", route_prefix="/slow")
    yield serve_url
    undeploy("lumos", "slow")


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD = [  # (name, body: dict or raw bytes, status, words in the error)
    ("bad json", b'{"prompt": "a", ', 400, "json"),
    ("not an object", b"[1, 2]", 422, "object"),
    ("prompt not a string", {"prompt": 5}, 422, "prompt"),
    ("steps as string", {**GOOD, "steps": "3"}, 422, "steps"),
    ("steps as bool", {**GOOD, "steps": True}, 422, "steps"),
    ("seed as float", {**GOOD, "seed": 1.5}, 422, "seed"),
    ("cfg as string", {**GOOD, "cfg_scale": "high"}, 422, "cfg_scale"),
    ("stream as string", {**GOOD, "stream": "yes"}, 422, "stream"),
    ("missing prompt", {"mode": "t2i"}, 422, "prompt"),
    ("empty prompt", {**GOOD, "prompt": "   "}, 422, "prompt"),
    ("huge prompt", {**GOOD, "prompt": "x" * 5000}, 422, "prompt"),
    ("too many frames", {"prompt": "a", "mode": "t2v", "num_frames": 9}, 422, "num_frames"),
    ("zero frames", {"prompt": "a", "mode": "t2v", "num_frames": 0}, 422, "num_frames"),
    ("t2i with frames", {**GOOD, "num_frames": 3}, 422, "t2i"),
    ("negative steps", {**GOOD, "steps": -4}, 422, "steps"),
    ("too many steps", {**GOOD, "steps": 9}, 422, "steps"),
    ("cfg out of range", {**GOOD, "cfg_scale": 99.0}, 422, "cfg_scale"),
    ("cfg infinite", b'{"prompt": "a", "mode": "t2i", "cfg_scale": Infinity}', 422, "cfg_scale"),
    ("timeout NaN", b'{"prompt": "a", "mode": "t2i", "timeout_s": NaN}', 422, "timeout_s"),
    ("timeout above the limit", {**GOOD, "timeout_s": 1e6}, 422, "timeout_s"),
    ("negative seed", {**GOOD, "seed": -1}, 422, "seed"),
    ("unknown mode", {**GOOD, "mode": "t2a"}, 422, "mode"),
    ("unknown format", {**GOOD, "format": "webm"}, 422, "format"),
    ("t2i as mp4", {**GOOD, "format": "mp4"}, 422, "t2i"),
    ("unknown field", {**GOOD, "temperature": 0.5}, 422, "temperature"),
    ("width not a multiple", {**GOOD, "width": 36}, 422, "width"),
    ("width zero", {**GOOD, "width": 0}, 422, "width"),
    ("height too large", {**GOOD, "height": 512}, 422, "height"),
    ("i2v without image", {"prompt": "a", "mode": "i2v", "num_frames": 2}, 422, "image"),
    ("image with t2v", {"prompt": "a", "mode": "t2v", "image": _b64(b"x")}, 422, "image"),
    ("i2v with one frame", {"prompt": "a", "mode": "i2v", "num_frames": 1,
                            "image": png_b64(np.zeros((8, 8, 3), np.uint8))}, 422, "num_frames"),
    ("bad base64", {"prompt": "a", "mode": "i2v", "num_frames": 2, "image": "not base64 !!"}, 400, "base64"),
    ("non-image bytes", {"prompt": "a", "mode": "i2v", "num_frames": 2,
                         "image": _b64(b"GIF89a but not really an image at all")}, 400, "image"),
    ("image too many pixels", {"prompt": "a", "mode": "i2v", "num_frames": 2,
                               "image": png_b64(np.zeros((300, 300, 3), np.uint8))}, 413, "pixels"),
    ("body too large", {**GOOD, "prompt": "y" * 70_000}, 413, "body"),
]


@pytest.mark.parametrize("name,body,status,word", BAD, ids=[b[0] for b in BAD])
def test_malformed_requests_get_4xx_json(client, name, body, status, word):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.post("/v1/generate", headers={**AUTH, "Content-Type": "application/json"}, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error, str) and "\n" not in error and word.lower() in error.lower(), error


def test_server_stays_healthy_after_bad_input(client):
    for _name, body, _status, _word in BAD:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        assert 400 <= client.post("/v1/generate/stream", headers=AUTH, **kwargs).status_code < 500
    assert client.get("/healthz").json() == {"status": "ok", "in_flight": 0}
    r = client.post("/v1/generate", headers=AUTH, json=GOOD)
    assert r.status_code == 200 and read_image(r.content).shape == (SIZE, SIZE, 3)


def test_unknown_route_and_method_are_json(client):
    r = client.get("/v1/nothing-here", headers=AUTH)
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/generate", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()


def test_bearer_token(client):
    assert client.get("/healthz").status_code == 200  # health stays open
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = client.post("/v1/generate", headers=headers, json=GOOD)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "token" in r.json()["error"]
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers=AUTH).json()
    assert models["auth"] is True and TOKEN not in str(models)
    assert client.post("/v1/generate", headers=AUTH, json=GOOD).status_code == 200


def test_busy_server_answers_503_with_retry_after(client):
    """``/slow`` admits one request at a time: while a stream runs, the next request is refused at once."""
    long_job = {"prompt": "a slow video", "num_frames": 8, "steps": 400}  # seconds (stopped when closed)
    with client.stream("POST", "/slow/v1/generate/stream", json=long_job) as stream:
        lines = stream.iter_lines()  # keep the iterator referenced: dropping it would close the stream
        assert next(line for line in lines if line.startswith("event:")) == "event: frame"
        assert client.get("/slow/healthz").json()["in_flight"] == 1
        r = client.post("/slow/v1/generate", json={"prompt": "b", "mode": "t2i"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
    # closing the stream frees the slot (and stops the generation after the current frame)
    for _ in range(100):
        if client.get("/slow/healthz").json()["in_flight"] == 0:
            break
        threading.Event().wait(0.1)
    assert client.post("/slow/v1/generate", json={"prompt": "b", "mode": "t2i"}).status_code == 200


def test_deadline_gives_504_and_the_stream_an_error_event(client):
    too_long = {"prompt": "too long", "num_frames": 8, "steps": 200, "timeout_s": 1.0}  # needs seconds
    r = client.post("/slow/v1/generate", json=too_long)
    assert r.status_code == 504 and "timed out" in r.json()["error"]
    with client.stream("POST", "/slow/v1/generate/stream", json=too_long) as stream:
        events = read_events(stream)
    assert events[-1][0] == "error" and events[-1][1]["status"] == 504
    for _ in range(100):  # the abandoned generations stop after their current frame
        r = client.post("/slow/v1/generate", json={"prompt": "b", "mode": "t2i"})
        if r.status_code == 200:
            break
        threading.Event().wait(0.2)
    assert r.status_code == 200


def test_shipped_serve_run_config_builds(checkpoint):
    """workflows/configs/serve.yaml is a valid ``serve run`` file whose args build the app."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    raw = yaml.safe_load((REPO / "workflows/configs/serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"
    (app,) = raw["applications"]
    assert set(app) <= set(ServeApplicationSchema.model_fields)
    assert app["import_path"] == "workflows.serve:build_app"
    cfg = serve_config_from_args(app["args"])
    assert isinstance(cfg, ServeConfig) and cfg.batching.max_batch_size > 1
    from workflows.serve import build_app

    built = build_app({**app["args"], "checkpoint": checkpoint})
    assert type(built).__name__ == "Application"


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="unknown key: limits.max_franes"):
        serve_config_from_args({"checkpoint": "x", "limits": {"max_franes": 3}})
    with pytest.raises(ValueError, match="max_batch_size"):
        serve_config_from_args({"checkpoint": "x", "batching": {"max_batch_size": 0}})
    with pytest.raises(ValueError, match=r"^sampler: steps=0 must be >= 1$"):  # the sampler's own check
        serve_config_from_args({"checkpoint": "x", "sampler": {"steps": 0}})
    with pytest.raises(ValueError, match=r"^unknown key: defaults.steps$"):  # steps are a sampler setting
        serve_config_from_args({"checkpoint": "x", "defaults": {"steps": 2}})
    with pytest.raises(ValueError, match="checkpoint is required"):
        serve_config_from_args({})
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        from workflows.serve import build_app

        build_app({"checkpoint": "/nonexistent/ckpt"})


@pytest.mark.parametrize("argv,message", [
    ([], "checkpoint is required"),
    (["--checkpoint", "/nonexistent/ckpt"], "cannot read checkpoint"),
    (["--checkpoint", "x", "limits.nope=1"], "unknown key: limits.nope"),
    (["--checkpoint", "x", "--port", "http"], "invalid int value"),
])
def test_cli_bad_arguments_exit_2_with_one_line(argv, message):
    r = subprocess.run([sys.executable, "-m", "workflows.serve", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and message in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "workflows.serve", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--checkpoint" in r.stdout and "serve run" in r.stdout


def test_coalescer_merges_batches_that_wait_for_a_busy_sampler():
    import asyncio
    import time

    from workflows.serving.coalesce import Coalescer

    def run(jobs):
        time.sleep(0.2)
        return [j * 10 for j in jobs]

    async def scenario(max_rows):
        co = Coalescer(run, max_rows)
        first = asyncio.ensure_future(co.submit([1]))
        await asyncio.sleep(0.05)  # the sampler is busy with [1]: these four batches wait and merge
        rest = [asyncio.ensure_future(co.submit(b)) for b in ([2], [3, 4], [5], [6])]
        gone = asyncio.ensure_future(co.submit([7]))
        await asyncio.sleep(0)
        gone.cancel()  # a caller that went away is dropped before the next call
        results = [await first] + [await r for r in rest]
        return results, co.calls

    results, calls = asyncio.run(scenario(16))
    assert results == [[10], [20], [30, 40], [50], [60]] and calls == [1, 5]
    results, calls = asyncio.run(scenario(2))
    assert results == [[10], [20], [30, 40], [50], [60]] and calls == [1, 2, 2, 1]
