"""PNG figures: training curves, confusion matrix, per-class F1 (matplotlib, Agg backend).

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, never through pyplot:
nothing global changes (a notebook keeps its own backend) and no display is needed.

Figures have a fixed size in inches at ``DPI`` (no tight bounding box), so a figure's pixel size
is known in advance: :func:`confusion_size` and :func:`f1_size` give it for a class count. Both
grow with the number of classes so that 20 class names stay readable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 100
CURVES_SIZE = (10.0, 4.0)  # inches
ANNOTATE_MAX = 12  # confusion cells carry their value up to this many classes
LABEL_CHARS = 24  # longer class names are shortened on the axes


def confusion_size(n_classes: int) -> tuple[float, float]:
    """(width, height) in inches of the confusion-matrix figure for ``n_classes``."""
    side = max(5.0, 2.8 + 0.42 * n_classes)
    return side + 1.4, side  # the extra width holds the colour bar


def f1_size(n_classes: int) -> tuple[float, float]:
    """(width, height) in inches of the per-class F1 chart (one horizontal bar per class)."""
    return 8.0, max(2.5, 1.3 + 0.32 * n_classes)


def pixels(size: tuple[float, float]) -> tuple[int, int]:
    """(height, width) in pixels of a figure of ``size`` inches, as an image array's shape."""
    return round(size[1] * DPI), round(size[0] * DPI)


def row_shares(cm) -> np.ndarray:
    """(C, C) share of each true class (row) predicted as each class; NaN rows for no examples.

    Example
    -------
    >>> row_shares(np.array([[3, 1], [0, 0]])).tolist()
    [[0.75, 0.25], [nan, nan]]
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, cm / support, np.nan)


def training_curves(history: list[dict], *, out: str | Path) -> Path:
    """Train loss and validation macro-F1 per epoch, side by side; returns the PNG's path.

    Example
    -------
    >>> training_curves(metrics["history"], out="model/training_curves.png")   # doctest: +SKIP
    """
    epochs = [h["epoch"] for h in history]
    fig = _figure(CURVES_SIZE)
    ax_loss, ax_f1 = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", color="tab:blue")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="mean loss per batch")
    f1 = [h["val_macro_f1"] for h in history]
    ax_f1.plot(epochs, f1, marker="o", color="tab:green")
    best = int(np.argmax(f1)) if f1 else 0
    if f1:
        ax_f1.plot(epochs[best], f1[best], marker="*", markersize=16, color="tab:orange",
                   label=f"best: epoch {epochs[best]}, {f1[best]:.4f}", linestyle="none")
        ax_f1.legend(loc="lower right")
    ax_f1.set(title="validation macro-F1", xlabel="epoch", ylabel="macro-F1")
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, out)


def confusion_matrix(cm, labels: list[str], *, out: str | Path, title: str = "confusion matrix") -> Path:
    """Heat map of ``cm`` (rows true, columns predicted) normalised per true class.

    Cells show the share of each true class predicted as each class; up to ANNOTATE_MAX classes
    the share is written in the cell. Rows with no examples stay empty (grey).

    Example
    -------
    >>> cm, labels = report["confusion_matrix"], report["labels"]             # doctest: +SKIP
    >>> confusion_matrix(cm, labels, out="eval.confusion.png")               # doctest: +SKIP
    """
    from matplotlib import colormaps

    cm = np.asarray(cm, dtype=np.float64)
    n = len(labels)
    share = row_shares(cm)
    fig = _figure(confusion_size(n), layout="tight")  # constrained clips the y label here
    ax = fig.subplots()
    cmap = colormaps["Blues"].with_extremes(bad="#e5e5e5")  # grey: a class with no examples
    image = ax.imshow(share, cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    names = [_short(label) for label in labels]
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true", labelpad=8)
    ax.set_title(f"{title}, normalised per true class (n = {int(cm.sum())})")
    if n <= ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                if not np.isnan(share[i, j]):
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=9,
                            color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, out)


def f1_bars(per_class: dict, *, out: str | Path, macro_f1: float | None = None) -> Path:
    """Horizontal F1 bar per class (support in the label), in the report's class order.

    Example
    -------
    >>> f1_bars(report["per_class"], macro_f1=report["macro_f1"], out="eval.f1.png")   # doctest: +SKIP
    """
    labels = list(per_class)
    f1 = [per_class[k]["f1"] for k in labels]
    fig = _figure(f1_size(len(labels)))
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, f1, color="tab:blue", height=0.7)
    ax.set_yticks(y, [f"{_short(k)} (n={per_class[k]['support']})" for k in labels])
    ax.invert_yaxis()  # first class on top, as in the tables
    for yi, v in zip(y, f1):
        inside = v >= 0.2  # the value in white inside the bar's end, else just after it
        ax.text(v - 0.01 if inside else v + 0.01, yi, f"{v:.3f}", va="center", fontsize=9,
                ha="right" if inside else "left", color="white" if inside else "black")
    title = "F1 per class"
    if macro_f1 is not None:
        # Behind the bars (zorder < 1): visible between them, never over the values.
        ax.axvline(macro_f1, color="tab:orange", linestyle="--", linewidth=1.5, zorder=0.5)
        title += f" (dashed: macro-F1 {macro_f1:.4f})"
    ax.set(xlim=(0, 1.0), xlabel="F1", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _figure(size: tuple[float, float], *, layout: str = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)  # the Agg backend, for this figure only
    return fig


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out
