"""Pictures of training: loss curves, one run or several on shared axes."""

from __future__ import annotations

from pathlib import Path

from copersona.model.trained import CurvePoint


def plot_curve(curve: list[CurvePoint], path: Path, *, title: str) -> None:
    """Training loss per step (and its running mean) with the validation loss at each evaluation."""
    plot_curves({"": curve}, path, title=title)


def plot_curves(curves: dict[str, list[CurvePoint]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, validation_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, curve in curves.items():
        label = f"{name} " if name else ""
        steps = [p.step for p in curve if p.train_loss is not None]
        losses = [p.train_loss for p in curve if p.train_loss is not None]
        if steps:
            window = max(1, len(losses) // 10)
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            if len(curves) == 1:
                train_ax.plot(steps, losses, color="#c0c0c0", linewidth=0.8, label="per step")
            train_ax.plot(steps, smooth, linewidth=1.5, label=f"{label}running mean ({window} steps)")
        points = [(p.step, p.validation_loss) for p in curve if p.validation_loss is not None]
        if points:
            validation_ax.plot(*zip(*points), marker="o", label=name or "validation")
    train_ax.set(title="training loss", xlabel="step", ylabel="cross-entropy per target token")
    validation_ax.set(title="validation loss", xlabel="step", ylabel="cross-entropy per target token")
    for ax in (train_ax, validation_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
