"""`finsentry drift --plot F.png`: PSI per measure per hour, with the threshold."""

from __future__ import annotations

from pathlib import Path

from finsentry.drift.measure import MEASURES, DriftRow


def plot_rows(rows: list[DriftRow], path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    hours = [r.hour for r in rows]
    for measure in MEASURES:
        top.plot(hours, [r.psi_by_measure()[measure] for r in rows], marker="o", label=measure)
    top.axhline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
    top.set_ylabel("PSI vs training data")
    top.set_title("Drift per hour (population stability index)")
    top.legend(fontsize=8, ncols=3)
    labels = sorted({k for r in rows for k in r.sentiment_mix})
    bottom_ = [0.0] * len(rows)
    for label in labels:
        share = [r.sentiment_mix.get(label, 0.0) for r in rows]
        bottom.bar(hours, share, bottom=bottom_, width=1 / 30, label=label)
        bottom_ = [a + b for a, b in zip(bottom_, share, strict=True)]
    bottom.set_ylabel("predicted sentiment mix")
    bottom.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
