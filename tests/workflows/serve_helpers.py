"""Test helper for the Serve tests: a debug checkpoint, one Serve instance on a free loopback port, HTTP helpers.

The checkpoint is a random-init ``debug`` LumosModel (``init_std=0.3`` so that its samples vary) saved with
``lumos.checkpoint.save_checkpoint``, plus the committed debug video tokenizer (a seeded fresh one copied inside
the checkpoint while none is committed), as in ``tests/workflows/test_generate.py``.
"""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lumos.checkpoint import save_checkpoint
from lumos.config import model_preset
from lumos.model import LumosModel
from lumos.tokenizers import build_video_tokenizer, default_tokenizer_uri, save_video_tokenizer

SIZE = 32


def debug_checkpoint(root: Path) -> str:
    """Write a debug checkpoint under ``root/ckpt`` (reused if present); returns its path."""
    ckpt = root / "ckpt"
    if (ckpt / "model.safetensors").exists():
        return str(ckpt)
    try:
        tokenizer = default_tokenizer_uri("debug")
    except ValueError:
        save_video_tokenizer(str(ckpt / "tokenizer"), build_video_tokenizer("debug", seed=0))
        tokenizer = "tokenizer"  # relative: the copy inside the checkpoint
    torch.manual_seed(0)
    model = LumosModel(model_preset("debug", init_std=0.3))
    save_checkpoint(str(ckpt), model, model.cfg, extra={"video_tokenizer": tokenizer, "text_tokenizer": None,
                                                          "resolution": [SIZE, SIZE]})
    return str(ckpt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve() -> str:
    """Start Serve's HTTP proxy on a free 127.0.0.1 port (Ray must be initialised); returns ``http://host:port``.
    Once per test run (the ``serve_url`` fixture): Serve started again in this process after ``serve.shutdown()``
    once found the dead controller by its name and waited on it for ever (Ray 2.60, late in a full run)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def deploy(args: dict, name: str, route_prefix: str) -> None:
    """Build the app with ``workflows.serve:build_app(args)`` and run it (blocks until it is healthy)."""
    from ray import serve

    from workflows.serve import build_app

    serve.run(build_app(args), name=name, route_prefix=route_prefix)


def undeploy(*names: str) -> None:
    """Delete these apps (each module's fixture removes what it deployed; Serve itself stays up)."""
    from ray import serve

    for name in names:
        serve.delete(name)


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def read_events(response) -> list[tuple[str, dict, float]]:
    """Parse a streamed httpx response into (event, data, client arrival time.time())."""
    import time

    events, name, data = [], "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            events.append((name, json.loads(data), time.time()))
            name, data = "message", ""
    return events
