"""Issue 17 on a running Serve app (real Ray processes): requests past their deadline stop the sampler within one
step, so the next request is served; /docs and /openapi.json need the token; /v1/models advertises the limits
that are enforced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import SIZE, debug_checkpoint, deploy, undeploy

from workflows.serving.api import GenerateRequest, RequestError, advertised_limits, output_size
from workflows.serving.config import serve_config_from_args
from workflows.serving.engine import model_info

TOKEN = "reliability-token-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return debug_checkpoint(tmp_path_factory.mktemp("serve_reliability"))


@pytest.fixture(scope="module")
def base_url(serve_url, checkpoint):
    """``/`` with a token; ``/open`` without, one request per sampler call, steps nearly unbounded."""
    deploy({"checkpoint": checkpoint, "token": TOKEN, "sampler": {"cfg_scale": 3.0}}, name="guarded",
           route_prefix="/")
    deploy({"checkpoint": checkpoint, "sampler": {"cfg_scale": 3.0, "steps": 2},
            "limits": {"max_steps": 10_000_000, "max_token_steps": 10**12, "request_timeout_s": 600.0},
            "batching": {"max_batch_size": 1}}, name="open", route_prefix="/open")
    yield serve_url
    undeploy("guarded", "open")


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=180) as c:
        yield c


def test_requests_past_their_deadline_free_the_sampler(client):
    """Each of these requests would take hours (one frame of 10 million steps); they time out after 1 s and the
    sampler drops them within one step, so the next small request is answered."""
    hopeless = {"prompt": "forever", "num_frames": 2, "steps": 10_000_000, "timeout_s": 1.0}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/open/v1/generate", json=hopeless), range(4)))
    assert [r.status_code for r in answers] == [504] * 4
    assert all("timed out" in r.json()["error"] for r in answers)
    r = client.post("/open/v1/generate", json={"prompt": "a red circle", "mode": "t2i"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_docs_and_openapi_need_the_token(client):
    for path in ("/docs", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 401 and "token" in r.json()["error"], path
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert "/v1/generate" in schema["paths"] and "/openapi.json" not in schema["paths"]
    docs = client.get("/docs", headers=AUTH)
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()
    assert client.get("/open/openapi.json").status_code == 200  # auth off: open, under the route prefix


def test_models_advertises_the_limits_that_are_enforced(client, checkpoint):
    limits = client.get("/v1/models", headers=AUTH).json()["limits"]
    info = model_info(checkpoint)
    cfg = serve_config_from_args({"checkpoint": checkpoint})
    assert limits == advertised_limits(cfg, info)
    top, unit = limits["max_side"], limits["size_unit"]
    assert output_size(GenerateRequest(prompt="a", width=top, height=SIZE), cfg, info) == (top, SIZE)
    with pytest.raises(RequestError):
        output_size(GenerateRequest(prompt="a", width=top + unit, height=SIZE), cfg, info)
    r = client.post("/v1/generate", headers=AUTH, json={"prompt": "a", "mode": "t2i", "width": top + unit})
    assert r.status_code == 422 and f"[{unit}, {top}]" in r.json()["error"]
