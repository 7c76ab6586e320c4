"""The bench's PNG plots: each row's paired difference from Pretrain in forget and retain, the attacks'
ROC curves, each forget identity's metric before and after unlearning, and one forget request as the
model saw it; the sequential bench's metrics by request."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import write_bytes_atomic  # noqa: E402
from ..data.images import read_rgb  # noqa: E402
from .differences import Estimate  # noqa: E402

COLOURS = {"original": "tab:gray", "1-SHUI": "tab:blue", "full-data": "tab:orange"}


def save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())


def paired(
    table: Mapping[tuple, Mapping[str, Estimate]],
    groups: Mapping[str, str],
    metric: str,
    path: Path,
    setting: str,
) -> Path:
    """Each row's paired difference from Pretrain in forget (x) and retain (y), with its 95 % intervals
    as bars: Pretrain at the origin, Retrain a star; down and to the left is forgetting at a cost. Every
    plot's title names its ``setting`` (the bench, N and the seeds)."""
    figure, axis = plt.subplots(figsize=(6.0, 4.6))
    axis.axhline(0, color="black", linewidth=0.6)
    axis.axvline(0, color="black", linewidth=0.6)
    axis.plot(0, 0, marker="o", color=COLOURS["original"], linestyle="none", label="Pretrain")
    for (label, *_), estimates in table.items():
        if "forget" not in estimates or "retain" not in estimates:
            continue
        forget, retain = estimates["forget"], estimates["retain"]
        axis.errorbar(
            forget.mean,
            retain.mean,
            xerr=_bar(forget),
            yerr=_bar(retain),
            marker="*" if label == "Retrain" else "o",
            markersize=11 if label == "Retrain" else 6,
            color=COLOURS[groups[label]],
            capsize=3,
            linestyle="none",
        )
        axis.annotate(
            label, (forget.mean, retain.mean), textcoords="offset points", xytext=(5, 5), fontsize=7
        )
    axis.set(
        xlabel=f"forget {metric}, row minus Pretrain",
        ylabel=f"retain {metric}, row minus Pretrain",
        title=f"Paired differences from Pretrain (95 % intervals over seeds)\n{setting}",
    )
    axis.legend(fontsize=7, loc="best")
    return save(figure, path)


def curves(
    points: Mapping[str, Sequence[tuple[float, Estimate, Estimate]]],
    target: Estimate,
    path: Path,
    setting: str,
) -> Path:
    """Each method's strength curve, ``points[method]`` = (strength, gap closed, retain drop) in the order
    of strength, with the 95 % intervals over seeds as bars: Pretrain at the origin, Retrain (the whole
    gap, at its own retain drop ``target``) a star, each method's operating point (strength 1) circled.
    Right is forgetting; up is its cost to the other people."""
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    axis.axhline(0, color="black", linewidth=0.6)
    axis.axvline(0, color="black", linewidth=0.6)
    axis.axhline(1, color="grey", linewidth=0.6, linestyle=":")
    axis.plot(0, 0, marker="o", color=COLOURS["original"], linestyle="none", label="Pretrain")
    axis.errorbar(100, target.mean, yerr=_bar(target), marker="*", markersize=11, color=COLOURS["original"],
                  linestyle="none", label="Retrain")  # fmt: skip
    for label, curve in points.items():
        gaps, drops = [gap for _, gap, _ in curve], [drop for _, _, drop in curve]
        line = axis.errorbar(
            [gap.mean for gap in gaps],
            [drop.mean for drop in drops],
            xerr=np.array([_bar(gap) for gap in gaps])[:, :, 0].T,
            yerr=np.array([_bar(drop) for drop in drops])[:, :, 0].T,
            marker=".",
            capsize=2,
            linewidth=1.2,
            label=label,
        )
        for strength, gap, drop in curve:
            if strength == 1:
                axis.plot(gap.mean, drop.mean, marker="o", markersize=10, fillstyle="none",
                          color=line[0].get_color(), linestyle="none")  # fmt: skip
    # Linear near Pretrain (within 10 % of the gap and 1 point of retain), logarithmic beyond: the strong
    # end of a curve does not squeeze the region that the ranking number reads.
    axis.set_xscale("symlog", linthresh=10)
    axis.set_yscale("symlog", linthresh=1)
    axis.set(
        xlabel="share of the memorisation gap closed, % (symlog)",
        ylabel="retain drop from Pretrain, points (symlog)",
        title=f"Strength curves (95 % intervals over seeds; circled: the VAL choice)\n{setting}",
    )
    axis.legend(fontsize=7, loc="best")
    return save(figure, path)


def _bar(value: Estimate) -> list[list[float]]:
    """Matplotlib's asymmetric error bar of an interval (none where there is no interval)."""
    if math.isnan(value.low):
        return [[0.0], [0.0]]
    return [[value.mean - value.low], [value.high - value.mean]]


def roc_curves(
    curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], seed: int, path: Path, setting: str
) -> Path:
    """One panel per attack (``curves[attack][row] = (fpr, tpr)``), at one seed, each row's AUC in its
    panel's legend (curves near the diagonal lie on top of each other; their AUCs still tell them apart)."""
    figure, axes = plt.subplots(1, len(curves), figsize=(5.0 * len(curves), 4.6), squeeze=False)
    for axis, (attack, rows) in zip(axes[0], curves.items(), strict=True):
        axis.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # a colour each for up to 20 rows
        for label, (fpr, tpr) in rows.items():
            auc = float(np.trapezoid(tpr, fpr))
            axis.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})", linewidth=1.2)
        axis.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=0.8, label="chance (AUC 0.5)")
        axis.set(title=attack, xlabel="FPR (TEST called member)", ylabel="TPR (forget called member)")
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Membership attacks on the forget set, seed {seed}; {setting}", fontsize=9)
    figure.tight_layout()
    return save(figure, path)


def forget_per_identity(rows: Sequence[Mapping], metric: str, path: Path, setting: str) -> Path:
    """Per row, each forget identity's metric before (Pretrain) against after unlearning, all seeds
    pooled; below the diagonal, the row forgot that person."""
    labels = list(dict.fromkeys(row["row"] for row in rows))
    columns = min(4, len(labels))
    lines = -(-len(labels) // columns)
    low = max(0.0, min(min(row["before"], row["after"]) for row in rows) - 5)  # one scale for all panels
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.2 * lines + 0.8), squeeze=False)
    for axis, label in zip(axes.flat, labels, strict=False):
        mine = [row for row in rows if row["row"] == label]
        axis.scatter([r["before"] for r in mine], [r["after"] for r in mine], s=10,
                     color=COLOURS[mine[0]["group"]], label="a person at a seed")  # fmt: skip
        axis.plot([low, 100], [low, 100], color="black", linestyle=":", linewidth=0.8, label="unchanged")
        axis.set(title=label, xlim=(low, 100), ylim=(low, 100), xlabel=f"before: Pretrain's {metric}",
                 ylabel=f"after: {label}'s {metric}")  # fmt: skip
    axes.flat[0].legend(fontsize=7, loc="lower right")
    for axis in list(axes.flat)[len(labels) :]:
        axis.axis("off")
    figure.suptitle(
        f"Each forgotten person's forget {metric}, before and after each row ({setting}, seeds pooled)\n"
        f"A person's {metric} is over their own few photos, so it sits higher than the table's forget "
        f"{metric}, which ranks all forgotten people's photos together.",
        fontsize=8,
    )
    figure.tight_layout()
    return save(figure, path)


def person_scores(
    shadows: Mapping[str, Sequence[float]],
    rows: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    groups: Mapping[str, str],
    path: Path,
    setting: str,
) -> Path:
    """The per-person attack's score of each forgotten person, its log likelihood ratio (x, symmetric log
    scale): under the shadow models with the person ``in`` and ``out`` (``shadows``), then under each row's
    model (``rows``: the forgotten people's, and TEST's in grey, the negatives it is told from)."""
    labels = [*(f"shadows, person {side}" for side in shadows), *rows]
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.4))
    jitter = np.random.default_rng(0)
    for y, (side, values) in enumerate(shadows.items()):
        colour = "tab:red" if side == "in" else "tab:green"
        axis.scatter(values, y + jitter.uniform(-0.2, 0.2, len(values)), s=6, alpha=0.5, color=colour)
    for y, (label, (forgotten, negatives)) in enumerate(rows.items(), start=len(shadows)):
        first = y == len(shadows)  # the legend's
        axis.scatter(negatives, y + jitter.uniform(-0.2, 0.2, len(negatives)), s=6, color="lightgray",
                     label="a TEST person" if first else None)  # fmt: skip
        axis.scatter(forgotten, y + jitter.uniform(-0.2, 0.2, len(forgotten)), s=10,
                     color=COLOURS[groups[label]], label="a forgotten person" if first else None)  # fmt: skip
    axis.set_xscale("symlog")
    xlabel = "log likelihood ratio, in against out (right: held as a member)"
    return rows_figure(figure, labels, xlabel, f"Per-person attack: each person's score ({setting})", path)


def relearning(
    table: Mapping[str, Mapping[str, Estimate]], groups: Mapping[str, str], path: Path, setting: str
) -> Path:
    """Per row (``table``: its gap closed and kept shares, by statistic), the share of the memorisation gap
    it closed (a bar) and the shares that stay closed after fine-tuning on the support and on retain photos
    (markers), each with its 95 % interval."""
    labels = list(table)
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.4))
    for y, label in enumerate(labels):
        closed = table[label].get("gap_closed")
        if closed is not None:
            axis.barh(y, closed.mean, xerr=_bar(closed), color=COLOURS[groups[label]], alpha=0.4, height=0.6,
                      error_kw={"ecolor": "gray", "lw": 0.8},
                      label="gap closed" if y == 0 else None)  # fmt: skip
        markers = (("kept_support", "o", -0.15), ("kept_retain", "s", 0.15))
        for key, marker, offset in markers:
            value = table[label][key]
            name = f"kept after relearning, {key.rpartition('_')[2]}" if y == 0 else None
            axis.errorbar(value.mean, y + offset, xerr=_bar(value), fmt=marker, color="black", markersize=4,
                          label=name)  # fmt: skip
    title = f"Relearning: the gap closed, and what stays closed ({setting})"
    return rows_figure(figure, labels, "share of the memorisation gap, %", title, path)


def rows_figure(figure, labels: Sequence[str], xlabel: str, title: str, path: Path) -> Path:
    """A figure of one line per row (``labels``, top down) finished and saved: 0 marked, the legend
    beside it."""
    (axis,) = figure.axes
    axis.axvline(0, color="black", linestyle=":", linewidth=0.8)
    axis.set(yticks=range(len(labels)), yticklabels=labels, ylim=(len(labels) - 0.5, -0.5), xlabel=xlabel)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return save(figure, path)


def forget_request(identity: str, portrait: Path, photos: Sequence[Path], path: Path) -> Path:
    """A forget request at a glance: the one portrait the person sends, beside (up to 7 of) the photos of
    them that the model was trained on and must forget."""
    photos = list(photos)[:7]
    figure, axes = plt.subplots(1, 1 + len(photos), figsize=(1.3 * (1 + len(photos)), 1.9), squeeze=False)
    for axis, file, title in zip(
        axes[0], [portrait, *photos], ["the request", *[""] * len(photos)], strict=True
    ):
        axis.imshow(read_rgb(file, file))
        axis.set_title(title, fontsize=8)
        axis.axis("off")
    figure.suptitle(
        f"identity {identity}: the portrait of the request, then the photos to forget", fontsize=8
    )
    return save(figure, path)


def by_request(
    table: Mapping[tuple[str, int], Mapping[str, tuple[float, float]]], metric: str, path: Path, setting: str
) -> Path:
    """ToW, retain and forget (everyone forgotten so far) of every row after each request k, mean with the
    standard deviation over seeds as error bars."""
    panels = {
        "tow": "ToW (100 = retrained)",
        "retain": f"retain {metric}",
        "forget": f"forget {metric} (all so far)",
    }
    labels = list(dict.fromkeys(label for label, _ in table))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels.items(), strict=True):
        for label in labels:
            points = sorted(
                (k, values[key]) for (name, k), values in table.items() if name == label and key in values
            )
            if points:
                ks, stats = zip(*points, strict=True)
                axis.errorbar(
                    ks, [m for m, _ in stats], yerr=[s for _, s in stats], label=label, capsize=3, marker="o"
                )
        axis.set_xlabel("request k")
        axis.set_ylabel(title)
        axis.set_xticks(sorted({k for _, k in table}))
    axes[0][-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"After each request (mean and standard deviation over seeds); {setting}", fontsize=9)
    figure.tight_layout()
    return save(figure, path)
