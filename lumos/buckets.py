"""Multi-aspect resolution buckets (LUMOS_SPEC §4, "Resolutions are multi-aspect buckets").

Upstream (``data/item_processor.py``, after Lumina-mGPT) trains on a fixed family of frame sizes per target
resolution: candidate (W, H) are multiples of a patch (32 px upstream) with ``(W/p)·(H/p) <= (target // p)²``
and aspect ratio at most 4; each video takes the bucket that keeps the largest fraction of its area (the closest
aspect ratio), is box-downsampled by halving while it is at least twice the bucket size, bicubic-resized so that
it covers the bucket, and CENTER-cropped (deterministic for video). ``target=352`` gives the 256p family (default
448×256), ``528`` the 384p one (672×384), ``656`` gives 768×480.

The patch is a parameter so that tiny CPU sizes work (``target=64, patch=16`` gives 64×64, 80×48, ...). Used by the
tokenization job and by generation/serving for image-to-video inputs. numpy + Pillow (upstream resizes with
Pillow too); no torch, so the decode processes that use it start fast.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def bucket_sizes(target: int, patch: int = 32, max_aspect: float = 4.0) -> list[tuple[int, int]]:
    """Candidate bucket sizes for a target resolution.

    Args:
        target: target size in pixels (352 → 256p family, 528 → 384p family).
        patch: every side is a multiple of ``patch`` pixels.
        max_aspect: largest allowed long-side / short-side ratio.

    Returns:
        ``[(W, H), ...]`` in pixels, walking from the widest to the tallest bucket; for each patch width the
        tallest height that fits the patch budget (plus the intermediate heights upstream also lists).
    """
    if patch <= 0:
        raise ValueError(f"patch must be a positive number of pixels, got {patch}")
    if target < patch:
        raise ValueError(f"target must be at least one patch ({patch} px), got {target}")
    if max_aspect < 1.0:
        raise ValueError(f"max_aspect must be >= 1, got {max_aspect}")
    budget = (target // patch) ** 2
    sizes = []
    wp, hp = budget, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_aspect:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= budget:
            hp += 1
        else:
            wp -= 1
    return sizes


def area_kept(width: int, height: int, bucket: tuple[int, int]) -> float:
    """Fraction of a ``width``×``height`` frame that survives resize-to-cover + centre crop into ``bucket``."""
    sw, sh = bucket[0] / width, bucket[1] / height
    return min(sw, sh) / max(sw, sh)


def choose_bucket(width: int, height: int, target: int, patch: int = 32,
                  max_aspect: float = 4.0) -> tuple[int, int]:
    """The bucket (W, H) for a frame of ``width``×``height``: the one that keeps the most area (closest aspect).

    Ties go to the larger bucket, as upstream (sorted descending).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    sizes = bucket_sizes(target, patch, max_aspect)
    return max(sizes, key=lambda s: (area_kept(width, height, s), s))


def halving_factor(width: int, height: int, bucket: tuple[int, int]) -> int:
    """2^m for the m halvings upstream applies while the frame is at least twice the bucket in both sides."""
    f = 1
    while width // f >= 2 * bucket[0] and height // f >= 2 * bucket[1]:
        f *= 2
    return f


def cover_size(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int]:
    """Size (W, H) after halving + bicubic resize: the smallest scaled frame that covers ``bucket``."""
    f = halving_factor(width, height, bucket)
    width, height = width // f, height // f
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale))


def resize_frame(frame: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """Halve (box filter) while at least twice the bucket, bicubic-resize to cover it, centre-crop — upstream's
    Pillow recipe (the halvings done as one box reduction).

    Args:
        frame: uint8 (H, W, 3).
        bucket: (W, H) of the output.

    Returns:
        uint8 (bucket H, bucket W, 3).
    """
    img = Image.fromarray(np.ascontiguousarray(frame))
    f = halving_factor(img.width, img.height, bucket)
    if f > 1:
        # m box halvings = one f×f box average (f = 2^m) of the centred multiple-of-f region; reduce() is ~4x faster
        # than m BOX resizes.
        dx, dy = img.width % f, img.height % f
        img = img.crop((dx // 2, dy // 2, dx // 2 + img.width - dx, dy // 2 + img.height - dy)).reduce(f)
    bw, bh = bucket
    size = cover_size(img.width, img.height, bucket)
    if size != img.size:
        img = img.resize(size, resample=Image.BICUBIC)
    left, top = (size[0] - bw) // 2, (size[1] - bh) // 2
    return np.asarray(img.crop((left, top, left + bw, top + bh)))


def resize_center_crop(frames: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """Resize frames to cover ``bucket`` and centre-crop them to it (:func:`resize_frame` on every frame).

    Args:
        frames: uint8 (N, H, W, 3) or (H, W, 3) RGB.
        bucket: (W, H) of the output.

    Returns:
        uint8 (N, bucket H, bucket W, 3) (or (bucket H, bucket W, 3) for a single frame).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) or (H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.ndim == 3:
        return resize_frame(frames, bucket)
    bw, bh = bucket
    out = np.empty((frames.shape[0], bh, bw, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = resize_frame(frame, bucket)
    return out


def fit_to_bucket(frames: np.ndarray, target: int, patch: int = 32, max_aspect: float = 4.0) -> np.ndarray:
    """Choose the bucket for ``frames`` and resize + centre-crop into it (e.g. an i2v input image).

    Args:
        frames: uint8 (N, H, W, 3) or (H, W, 3).

    Returns:
        uint8 frames of the chosen bucket size, same rank as the input.
    """
    h, w = np.asarray(frames).shape[-3:-1]
    return resize_center_crop(frames, choose_bucket(w, h, target, patch, max_aspect))
