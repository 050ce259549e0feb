"""Ray Serve deployments of the HTTP sampler (DESIGN §4.6): a FastAPI ingress and a batched sampler.

``Ingress`` (``@serve.ingress``, CPU only) authenticates, counts requests in flight (503 + Retry-After beyond
``limits.max_queued``), validates every request before any work (:mod:`workflows.serving.api`), calls the sampler
through a deployment handle with the request's deadline (504 beyond), and encodes GIF/MP4/PNG off the event loop.
``Sampler`` loads the checkpoint once per replica (GPU when the cluster has one) and gathers requests with
``@serve.batch``; batches that arrive while the sampler is busy are merged (:mod:`workflows.serving.coalesce`),
and compatible jobs run as the rows of one sampler call with per-row seeds (:mod:`workflows.serving.engine`). Streams (``"stream": true`` or ``/v1/generate/stream``) run one job each and
send server-sent events: a ``frame`` event per committed latent frame, then ``done`` with the GIF (or ``error``).

Routes (each handler has its own name; STYLE A7): ``GET /`` playground page, ``GET /healthz`` (never needs a
token), ``GET /v1/models``, ``POST /v1/generate``, ``POST /v1/generate/stream``, ``GET /docs`` and
``GET /openapi.json`` (both need the token when auth is on).

References: the Anyscale Stable Diffusion Serve template (ingress + model deployment, ``@serve.batch``).
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Request`` annotations of the
# handler methods (string annotations on a Serve ingress class turn ``request`` into a query parameter).
import asyncio
import base64
import hmac
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from workflows.serving import api
from workflows.serving.api import RequestError
from workflows.serving.coalesce import Coalescer
from workflows.serving.config import ServeConfig, serve_config_from_args
from workflows.serving.engine import TIMEOUT_MESSAGE, ModelInfo, SamplerEngine, model_info
from workflows.serving.jobs import Job, JobResult

log = logging.getLogger("workflows.serve")
PLAYGROUND = Path(__file__).resolve().parents[1] / "static" / "playground.html"

# /docs and /openapi.json are routes of the ingress (below), so that they sit behind the token like /v1/*.
app = FastAPI(title="Lumos sampler", version="1", docs_url=None, openapi_url=None, redoc_url=None,
              description="AR-DF text-to-image, text-to-video and image-to-video sampling (DESIGN §4.6).")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return _error(exc.status, exc.message, exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _error(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


@app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, f"internal error: {type(exc).__name__}")


MAX_CONCURRENT_BATCHES = 8
"""``@serve.batch`` batches allowed in flight; the :class:`Coalescer` merges them into full sampler calls."""
_TIMEOUT = TIMEOUT_MESSAGE
REPLICA_LOST = "sampler replica lost (its node or process died); retry the request"


# Helpers used by the deployments are defined above them: Serve pickles the classes when they are decorated.
async def _wrap(response):
    return await response


def done_event(result: JobResult, fmt: str, job: Job) -> dict:
    """The final SSE payload: the GIF always, plus the requested format when it is not GIF."""
    gif = api.encode_result(result, "gif", job)
    event = {"seed": job.seed, "frames": int(result.frames.shape[0]), "width": job.width, "height": job.height,
             "rows": result.rows, "seconds": round(result.seconds, 3), "format": fmt,
             "gif": base64.b64encode(gif).decode("ascii")}
    if fmt == "tokens":
        event["codes"] = result.codes.tolist()
    elif fmt != "gif":
        event["media"] = base64.b64encode(api.encode_result(result, fmt, job)).decode("ascii")
        event["content_type"] = api.CONTENT_TYPES[fmt]
    return event


@serve.deployment
class Sampler:
    """Loads the checkpoint once; batched generation (``generate_batch``) and streamed generation (``stream``)."""

    def __init__(self, config: dict):
        cfg = serve_config_from_args(config)
        self.engine = SamplerEngine.load(cfg.checkpoint, cfg.tokenizer, cfg.device, cfg.sampler)
        self.generate_batch.set_max_batch_size(cfg.batching.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(cfg.batching.batch_wait_timeout_s)
        self.coalescer = Coalescer(self.engine.run, cfg.batching.max_batch_size)
        log.info("sampler replica ready: %s on %s", cfg.checkpoint, self.engine.device)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05, max_concurrent_batches=MAX_CONCURRENT_BATCHES)
    async def generate_batch(self, jobs: list[Job]) -> list[JobResult]:
        """Gathered jobs → one sampler call, merged with other batches waiting while the sampler is busy."""
        return await self.coalescer.submit(jobs)

    async def stream(self, job: Job):
        """Yield ``frame`` events as latent frames are committed, then ``{"event": "result", "result": ...}``.

        The generation runs in one worker thread; a cancelled stream (client gone) stops it after the current
        frame.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(event: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            late = (lambda: stop.is_set() or time.time() > job.deadline) if job.deadline else stop.is_set
            try:
                result = self.engine.stream(job, emit, should_stop=late)
            except Exception as e:  # always end the stream with a result
                log.exception("stream failed")
                result = JobResult(error=f"sampler failed: {type(e).__name__}", status=500)
            emit({"event": "result", "result": result})

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                event = await queue.get()
                yield event
                if event["event"] == "result":
                    break
            await worker
        finally:
            stop.set()


@serve.deployment
@serve.ingress(app)
class Ingress:
    """The HTTP front (see the module docstring)."""

    def __init__(self, sampler, config: dict, info: dict):
        self.sampler = sampler
        self.cfg: ServeConfig = serve_config_from_args(config)
        self.info = ModelInfo(**info)
        self.token = self.cfg.resolved_token()
        self.in_flight = 0
        self.page = PLAYGROUND.read_text(encoding="utf-8")

    # ---- plumbing -------------------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                               {"WWW-Authenticate": "Bearer"})

    def _acquire(self) -> None:
        limit = self.cfg.limits.max_queued
        if self.in_flight >= limit:
            raise RequestError(503, f"server busy: {self.in_flight} requests in flight (limits.max_queued={limit})",
                               {"Retry-After": str(self.cfg.limits.retry_after_s)})
        self.in_flight += 1

    def _release(self) -> None:
        self.in_flight -= 1

    def _replica_lost(self) -> RequestError:
        """503 + Retry-After for a request whose sampler replica died under it: Serve replaces the replica and
        routes new requests to the live ones, so a retry is answered (not a 500: the request was fine)."""
        return RequestError(503, REPLICA_LOST, {"Retry-After": str(self.cfg.limits.retry_after_s)})

    async def _read_job(self, request: Request) -> tuple[api.GenerateRequest, Job]:
        limit = self.cfg.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body is larger than limits.max_body_bytes={limit}")
        body = await request.body()
        if len(body) > limit:
            raise RequestError(413, f"body is larger than limits.max_body_bytes={limit}")
        req = api.parse_request(body)
        job = await asyncio.to_thread(api.build_job, req, self.cfg, self.info)  # image decoding off the loop
        return req, job

    def _remaining(self, job: Job) -> float:
        return max(0.0, job.deadline - time.time())

    # ---- routes ---------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_schema(self, request: Request) -> JSONResponse:
        self._authorize(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def api_docs(self, request: Request) -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        self._authorize(request)
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="Lumos sampler")

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "in_flight": self.in_flight}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        info = asdict(self.info)
        model = {"id": Path(self.info.checkpoint.rstrip("/")).name or self.info.checkpoint, **info}
        return {"data": [model], "limits": api.advertised_limits(self.cfg, self.info),
                "defaults": asdict(self.cfg.defaults), "sampler": asdict(self.cfg.sampler.with_defaults(self.info.sampling)),
                "batching": asdict(self.cfg.batching), "formats": list(api.FORMATS),
                "modes": ["t2i", "t2v", "i2v"], "auth": self.token is not None}

    @app.post("/v1/generate")
    async def generate(self, request: Request) -> Response:
        return await self._generate(request, stream=False)

    @app.post("/v1/generate/stream")
    async def generate_stream(self, request: Request) -> Response:
        return await self._generate(request, stream=True)

    async def _generate(self, request: Request, stream: bool) -> Response:
        self._authorize(request)
        self._acquire()
        handed_over = False
        try:
            req, job = await self._read_job(request)
            if stream or req.stream:
                handed_over = True  # the event generator releases the slot when the stream ends
                return StreamingResponse(self._events(req, job), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Lumos-Seed": str(job.seed)})
            return await self._run(req, job)
        finally:
            if not handed_over:
                self._release()

    async def _run(self, req: api.GenerateRequest, job: Job) -> Response:
        response = self.sampler.generate_batch.remote(job)
        try:
            result: JobResult = await asyncio.wait_for(_wrap(response), timeout=self._remaining(job))
        except asyncio.TimeoutError:
            response.cancel()
            raise RequestError(504, _TIMEOUT) from None
        except RayActorError:  # the replica died with the request (its node or process is gone)
            raise self._replica_lost() from None
        if result.status != 200:
            raise RequestError(result.status, result.error or "sampler error")
        fmt = api.output_format(req)
        body = await asyncio.to_thread(api.encode_result, result, fmt, job)
        return Response(body, media_type=api.CONTENT_TYPES[fmt], headers=api.result_headers(result, job))

    async def _events(self, req: api.GenerateRequest, job: Job):
        """Server-sent events of one streamed generation (frame…, then done or error)."""
        events = self.sampler.options(stream=True).stream.remote(job)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.__anext__(), timeout=self._remaining(job))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    yield api.sse("error", {"error": _TIMEOUT, "status": 504})
                    return
                kind = event.pop("event")
                if kind == "frame":
                    yield api.sse("frame", event)
                    continue
                result: JobResult = event["result"]
                if result.status != 200:
                    yield api.sse("error", {"error": result.error, "status": result.status})
                else:
                    yield api.sse("done", await asyncio.to_thread(done_event, result, api.output_format(req), job))
                return
        except RayActorError:  # the replica died mid-stream: retryable, as in _run
            yield api.sse("error", {"error": REPLICA_LOST, "status": 503,
                                    "retry_after": self.cfg.limits.retry_after_s})
        except Exception as e:  # the stream has started: report in-band, one line
            log.exception("stream failed")
            yield api.sse("error", {"error": f"internal error: {type(e).__name__}", "status": 500})
        finally:
            events.cancel()
            self._release()


def sampler_gpus(requested: float | None) -> float:
    """GPUs per sampler replica: ``requested``, else 1 when the Ray cluster (or this machine) has a GPU."""
    if requested is not None:
        return float(requested)
    import ray

    if ray.is_initialized():
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def build_application(cfg: ServeConfig):
    """The Serve application graph (ingress → sampler) for ``cfg``; reads only the checkpoint's config.json.

    Raises:
        ValueError: the checkpoint's config.json cannot be read (one line).
    """
    info = model_info(cfg.checkpoint)
    config = asdict(cfg)
    sampler_config = {**config, "token": None}  # the sampler never sees the token
    batch = cfg.batching.max_batch_size
    sampler = Sampler.options(
        ray_actor_options={"num_cpus": cfg.scaling.num_cpus, "num_gpus": sampler_gpus(cfg.scaling.num_gpus)},
        autoscaling_config={"min_replicas": cfg.scaling.min_replicas, "max_replicas": cfg.scaling.max_replicas,
                            "initial_replicas": max(1, cfg.scaling.min_replicas),
                            "target_ongoing_requests": cfg.scaling.target_ongoing_requests},
        max_ongoing_requests=max(batch * MAX_CONCURRENT_BATCHES, 4),  # the ingress bounds what is in flight
    ).bind(sampler_config)
    return Ingress.options(
        num_replicas=cfg.scaling.ingress_replicas,
        max_ongoing_requests=cfg.limits.max_queued + 32,  # beyond max_queued the ingress itself answers 503
        ray_actor_options={"num_cpus": 0},
    ).bind(sampler, config, asdict(info))


__all__ = ["Ingress", "Sampler", "app", "build_application", "done_event", "sampler_gpus"]
