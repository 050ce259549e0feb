"""The shapes world (procedural clips with exact ground truth) and metrics that read frames back."""

from lumos.shapes.metrics import detect_objects, geneval_scores, recover_scene, summarize, vbench_scores
from lumos.shapes.world import (
    COLORS,
    REGIONS,
    SHAPES,
    Scene,
    ShapeObject,
    caption,
    caption_split,
    render_clip,
    render_frame,
    sample_scene,
    scene_rng,
)

__all__ = [
    "COLORS", "REGIONS", "SHAPES", "Scene", "ShapeObject", "caption", "caption_split", "detect_objects",
    "geneval_scores", "recover_scene", "render_clip", "render_frame", "sample_scene", "scene_rng", "summarize",
    "vbench_scores",
]
