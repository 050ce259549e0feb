"""Pieces of evaluation (``python -m workflows.eval``, ``workflows.ablate``): the held-out prompt sets and
references, and report pieces (figures, results-doc sections, spread over seeds)."""
