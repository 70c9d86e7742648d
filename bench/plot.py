"""PNG charts of bench results (matplotlib, from the `bench` extra:
`pip install -e '.[bench]'`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

MISSING = "--plot needs matplotlib: pip install -e '.[bench]'"


def check_plot_target(option: str, path: Path | None) -> None:
    """Refuse before a run, not after it: a bench of minutes must not end in an error
    about its chart (its results lost with it)."""
    if path is None:
        return
    if not path.resolve().parent.is_dir():
        raise SystemExit(f"{option}: {path.parent} is not a directory")
    if option == "--plot" and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(MISSING)


def line_chart(
    path: Path, xs: Sequence[float], ys: Sequence[float], *, title: str, xlabel: str,
    ylabel: str,
) -> Path:  # fmt: skip
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(MISSING) from None
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
