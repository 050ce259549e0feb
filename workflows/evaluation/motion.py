"""Why motion fails: what became of each prompted object of a generated clip, counted by its prompted motion.

``motion_direction`` credits an object only when it is found in the first frame with its colour and shape, is still
there in the last frame, and has moved the prompted way; :func:`lumos.shapes.metrics.motion_outcomes` names which of
these failed (``missing``, ``wrong_shape``, ``lost``, ``not_moving``, ``moving``, ``wrong_direction``). The eval keeps
``[prompted motion, outcome]`` per object with every t2v / i2v item and a table of the shares per prompted motion,
so that a user sees whether a model fails by drawing the wrong objects (a t2i problem), by losing them, or by moving
them wrongly — and, among the last, whether objects meant to stay still drift.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def item_outcomes(videos: np.ndarray, items: list) -> list[list[list[str]]]:
    """Per item, ``[prompted motion, outcome]`` of each gt object (the scene's order) of its generated clip."""
    from lumos.shapes.metrics import motion_outcomes

    return [[[o.motion, got] for o, got in zip(it.scene.objects, motion_outcomes(v, it.scene))]
            for v, it in zip(videos, items)]


def breakdown(outcomes: list[list[list[str]]]) -> dict[str, dict[str, int]]:
    """``{prompted motion: {outcome: objects}}`` over items' outcomes (as :func:`item_outcomes` gives them), plus
    ``all``; motions and outcomes in the world's / the metric's order."""
    from lumos.shapes.metrics import MOTION_OUTCOMES
    from lumos.shapes.world import MOTIONS

    pairs = [tuple(p) for item in outcomes for p in item]
    by = {m: Counter(got for want, got in pairs if want == m) for m in MOTIONS}
    by["all"] = Counter(got for _, got in pairs)
    return {m: {o: c[o] for o in MOTION_OUTCOMES if c[o]} for m, c in by.items() if c}


def breakdown_table(counts: dict[str, dict[str, int]]) -> str:
    """Markdown: one row per prompted motion (objects, then the share of each outcome that occurs)."""
    from lumos.shapes.metrics import MOTION_OUTCOMES

    cols = [o for o in MOTION_OUTCOMES if any(o in c for c in counts.values())]
    lines = ["| prompted motion | objects | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for motion, c in counts.items():
        n = sum(c.values())
        lines.append(f"| {motion} | {n} | " + " | ".join(f"{c.get(o, 0) / n:.2f}" for o in cols) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["breakdown", "breakdown_table", "item_outcomes"]
