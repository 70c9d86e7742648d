"""The PNG chart of a time-warp run over simulated time (matplotlib, `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.plot import MISSING

BUCKETS = (">=90d", "<90d", "<30d", "expired")
OPEN_STATES = ("due", "triggered", "csr-received", "signed", "delivered")


def chart(path: Path, samples: list[dict[str, Any]]) -> Path:
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(MISSING) from None
    days = [s["day"] for s in samples]
    figure, axes = plt.subplots(4, 1, figsize=(8, 10), dpi=100, sharex=True)
    axes[0].plot(days, [s["connected"] for s in samples], linewidth=1)
    axes[0].set_ylabel("stations connected")
    axes[1].stackplot(
        days, *[[s["to_expiry"].get(b, 0) for s in samples] for b in BUCKETS], labels=BUCKETS
    )
    axes[1].set_ylabel("certificates by\ndays to expiry")
    axes[1].legend(loc="upper left", fontsize=7, ncol=4)
    for label, states in (("in flight", OPEN_STATES), ("completed", ("confirmed",)),
                          ("failed", ("failed",))):  # fmt: skip
        axes[2].plot(days, [sum(s["renewals"].get(k, 0) for k in states) for s in samples],
                     label=label, linewidth=1)  # fmt: skip
    axes[2].set_ylabel("renewals")
    axes[2].legend(loc="upper left", fontsize=7)
    codes = sorted({code for s in samples for code in s["alerts"]})
    for code in codes:
        axes[3].plot(days, [s["alerts"].get(code, 0) for s in samples], label=code, linewidth=1)
    axes[3].set_ylabel("alerts raised")
    if codes:
        axes[3].legend(loc="upper left", fontsize=7)
    axes[3].set_xlabel("simulated day")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"time-warp fleet simulation: {samples[0]['stations'] if samples else 0} "
                    "stations")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
