"""Report pieces shared by ``workflows.eval`` and ``workflows.ablate``: PNG figures to any URI, Markdown sections
kept up to date inside a results document, and the spread of a measurement over seeds (mean ± std, drawn as error
bars with the single seeds as dots)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from lumos import storage


def save_figure(fig, uri: str) -> str:
    """Save a matplotlib figure as PNG to a URI (local or s3://), close it; returns the file name."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    storage.write_bytes(uri, buf.getvalue())
    return uri.rstrip("/").rsplit("/", 1)[-1]


def update_doc_section(doc: str, key: str, markdown: str, images: dict[str, str]) -> None:
    """Put ``markdown`` between ``<!-- key begin -->`` / ``<!-- key end -->`` in the local file ``doc`` (appended
    when absent); ``images`` (link name → URI) are copied to ``<doc dir>/img/<key>_<name>`` and relinked."""
    from pathlib import Path

    path = Path(doc)
    tag = key.replace(":", "_")
    for name, uri in images.items():
        target = path.parent / "img" / f"{tag}_{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(uri))
        markdown = markdown.replace(f"]({name})", f"](img/{target.name})")
    begin, end = f"<!-- {key} begin -->", f"<!-- {key} end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def spread(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n", "values"}`` of the finite values (sample std, ddof 1; 0 for one value; mean and std
    None when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    std = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return {"mean": float(np.mean(xs)), "std": std, "n": len(xs), "values": list(values)}


def fmt_spread(s: dict, digits: int = 3) -> str:
    """``0.512 ± 0.031`` (``–`` when nothing was measured)."""
    if not s or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def spread_bars(ax, groups: list[str], series: dict[str, list[dict]], ylabel: str, title: str,
                bars: bool = True) -> None:
    """Grouped bars (``bars=False``: markers, the axis fitted to the values) of means with ±std error bars and
    every seed as a dot: ``series`` maps a name to one :func:`spread` per group."""
    width = 0.8 / max(1, len(series))
    for k, (name, spreads) in enumerate(series.items()):
        x = np.arange(len(groups)) + k * width
        means = [np.nan if s["mean"] is None else s["mean"] for s in spreads]
        err = [s["std"] or 0.0 for s in spreads]
        if bars:
            ax.bar(x, means, width, yerr=err, capsize=3, label=name, alpha=0.8)
        else:
            ax.errorbar(x, means, yerr=err, fmt="o", capsize=4, ms=7, label=name)
        for xi, s in zip(x, spreads):
            pts = [v for v in s["values"] if v is not None]
            ax.plot([xi] * len(pts), pts, "k.", ms=4)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def spread_lines(ax, series: dict[str, list[list[float]]], xs: list | None, xlabel: str, ylabel: str,
                 title: str) -> None:
    """One line per name (the mean over seeds) with a band of ±std; ``series`` maps a name to one list per seed
    (cut to the shortest)."""
    for name, runs in series.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        arr = np.array([r[:n] for r in runs], dtype=float)
        mean, std = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
        x = np.asarray(xs[:n] if xs is not None else range(n))
        ax.plot(x, mean, marker="o", ms=3, label=f"{name} (n={len(runs)})")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


__all__ = ["fmt_spread", "save_figure", "spread", "spread_bars", "spread_lines", "update_doc_section"]
