"""PNG charts of bench results (matplotlib, from the `bench` extra:
`pip install -e '.[bench]'`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def line_chart(
    path: Path, xs: Sequence[float], ys: Sequence[float], *, title: str, xlabel: str,
    ylabel: str,
) -> Path:  # fmt: skip
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot(xs, ys, linewidth=1.5)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
