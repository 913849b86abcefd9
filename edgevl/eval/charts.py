"""The report's charts: quality against model size and against speed, one point per model (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit is touched

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

#: label, size in bytes, seconds per image, quality
Point = tuple[str, int, float, float]


def quality_chart(path: Path, title: str, quality_name: str, points: list[Point], best: float | None = None) -> Path:
    """Two scatter plots side by side: quality vs size (MB) and quality vs seconds per image.

    With `best` (the best possible quality) the quality axis runs from 0 to it, so that small differences between
    models are not blown up into large-looking gaps.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (by_size, by_speed) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    sizes_mb = [point[1] / 1e6 for point in points]
    seconds = [point[2] for point in points]
    for axes, xs, label in ((by_size, sizes_mb, "model size (MB)"), (by_speed, seconds, "seconds per image")):
        for x, point in zip(xs, points):
            axes.scatter(x, point[3], s=40)
            axes.annotate(point[0], (x, point[3]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        values = [x for x in xs if x > 0]
        if values and max(values) > 10 * min(values):  # sizes from 15 MB to 5 GB: a log axis shows them all
            axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    by_size.set_ylabel(quality_name)
    if best is not None:
        by_size.set_ylim(0, best * 1.05)
    figure.suptitle(f"{title}: {quality_name} (higher is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
