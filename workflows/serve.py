"""The HTTP sampler on Ray Serve: text-to-image, text-to-video, image-to-video (DESIGN §4.6; LUMOS_SPEC §8).

Launch recipes::

    # local Ray, 127.0.0.1:8000, blocks until Ctrl-C; the playground page is http://127.0.0.1:8000/
    python -m workflows.serve --checkpoint runs/demo/final
    # a config file (workflows/configs/serve.yaml's `args` shape) plus dotted overrides, bearer-token auth
    LUMOS_API_TOKEN=secret python -m workflows.serve --checkpoint s3://bucket/ckpt --config my_serve.yaml \\
        limits.max_frames=4 batching.max_batch_size=8
    # the same app through the Serve CLI or a KubeRay RayService (import path + args)
    serve run workflows/configs/serve.yaml
    serve run workflows.serve:build_app checkpoint=runs/demo/final
    # on a cluster (detached job; bind all interfaces of the head node)
    ray job submit --no-wait --working-dir . -- python -m workflows.serve --checkpoint s3://... --host 0.0.0.0

    curl -s localhost:8000/healthz
    curl -s -X POST localhost:8000/v1/generate -d '{"prompt": "a red circle", "mode": "t2i"}' -o img.png

The app: a FastAPI ingress (auth, validation before any work, a bounded number of requests in flight, timeouts)
in front of a sampler deployment that loads the checkpoint once per replica (a GPU each when the cluster has
GPUs), batches compatible requests with ``@serve.batch`` (per-row seeds: a batched request equals the same
request alone) and autoscales on ongoing requests. Details: ``workflows/serving/``; API: docs/serve.md.
Bad arguments exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from tokenize_jobs.cli import OneLineParser
from workflows.serving.config import ConfigError, ServeConfig, serve_config_from_args

log = logging.getLogger("workflows.serve")


def build_app(args: dict | None = None):
    """Serve application builder (``import_path: workflows.serve:build_app``).

    Args:
        args: ``{"checkpoint": URI, "config": optional YAML file, ...}``: any :class:`ServeConfig` key
            (nested mappings for ``limits``, ``defaults``, ``batching``, ``scaling``) on top of the file.

    Returns:
        the bound ingress deployment (a ``serve.Application``).

    Raises:
        ValueError: a bad key/value or an unreadable checkpoint (one line).
    """
    from workflows.serving.deployments import build_application

    return build_application(serve_config_from_args(args))


app = build_app
"""Alias: ``workflows.serve:app`` names the same builder (DESIGN §4.2)."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m workflows.serve", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint directory URI (local or s3://); required unless in --config")
    p.add_argument("--config", help="YAML file with ServeConfig keys (checkpoint, limits, defaults, batching, ...)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--token", help="bearer token for /v1/* (prefer $LUMOS_API_TOKEN: flags show up in `ps`)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="ServeConfig overrides, e.g. limits.max_frames=4")
    return p


def _dotted(items: list[str]) -> dict:
    """``["a.b=1", ...]`` → ``{"a": {"b": 1}}`` (values parsed as YAML scalars)."""
    import yaml

    tree: dict = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        *parents, leaf = key.strip().split(".")
        node = tree
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(raw) if raw != "" else ""
    return tree


def config_from_cli(args: argparse.Namespace) -> ServeConfig:
    """File ← flags ← dotted overrides; ``token`` falls back to $LUMOS_API_TOKEN (raises ConfigError)."""
    from workflows.config_io import merge

    flags = {k: getattr(args, k) for k in ("checkpoint", "host", "port", "token") if getattr(args, k) is not None}
    tree = merge(flags, _dotted(args.overrides))
    if args.config:
        tree["config"] = args.config
    cfg = serve_config_from_args(tree)
    cfg.token = cfg.resolved_token()
    return cfg


def start(cfg: ServeConfig):
    """Start (or join) Ray, start Serve's HTTP proxy on cfg.host:cfg.port and deploy the app; returns its handle."""
    from ray import serve

    from tokenize_jobs.ray_runtime import start_ray
    from workflows.serving.deployments import build_application

    start_ray(local={"include_dashboard": False})
    application = build_application(cfg)  # after ray.init: GPUs are looked up in the cluster, not on this node
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    return serve.run(application, name=cfg.app_name, route_prefix=cfg.route_prefix)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_cli(args)
        from workflows.serving.engine import model_info

        model_info(cfg.checkpoint)
    except (ConfigError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    from ray import serve

    signal.signal(signal.SIGTERM, _interrupt)  # `ray job stop` / kill: leave like Ctrl-C
    try:
        start(cfg)
        prefix = cfg.route_prefix.rstrip("/")
        log.info("serving %s at http://%s:%d%s/ (auth %s); Ctrl-C stops", cfg.checkpoint, cfg.host, cfg.port,
                 prefix, "on" if cfg.token else "off")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # also during start-up: never leave a half-deployed app behind
        log.info("stopping the %s app", cfg.app_name)
        serve.delete(cfg.app_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
