"""Pieces of the Ray Serve sampler (``python -m workflows.serve``): config, HTTP contract, engine, deployments."""
