"""Fixtures shared by the Serve tests."""

from __future__ import annotations

import pytest
from serve_helpers import start_serve


@pytest.fixture(scope="session")
def serve_url(ray_local) -> str:
    """Serve's HTTP proxy on a free loopback port, started once for the run in ``ray_local``; each module deploys
    its apps with ``serve_helpers.deploy`` and deletes them with ``undeploy``."""
    from ray import serve

    yield start_serve()
    serve.shutdown()
