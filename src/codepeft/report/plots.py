"""The report's figures as inline SVG strings (matplotlib, Agg backend, text kept as text).

- ``cost_figure``: the primary metric against trainable parameters, peak memory and total time,
  one point per arm, the Pareto front (cheapest for its score) joined and ringed.
- ``bars_figure``: each arm's mean with its confidence interval (over seeds when there are
  several, else a bootstrap over test problems).
- ``curves_figure``: training and validation loss by step of every train arm.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

from codepeft.study.stats import pareto_front

COSTS = (
    ("trainable_params", "trainable parameters", "symlog"),
    ("peak_memory_mb", "peak memory (MiB)", "linear"),
    ("total_seconds", "total time, train + generate (s)", "log"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def to_svg(fig: Any, salt: str) -> str:
    """The figure as an ``<svg>`` element; ``salt`` keeps element ids unique among several inline SVGs."""
    import matplotlib

    plt = _pyplot()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    # A readable width that still shrinks on small screens.
    return re.sub(r"<svg ", '<svg class="plot" role="img" ', svg, count=1)


def _arm_colors(arms: Sequence[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {arm: cmap(i % 10) for i, arm in enumerate(dict.fromkeys(arms))}


def _value(entry: dict[str, Any], metric: str) -> float:
    value = entry["metrics"].get(metric, {}).get("mean")
    return float(value) if isinstance(value, int | float) else math.nan


def cost_figure(entries: list[dict[str, Any]], metric: str, title: str) -> str | None:
    """Metric vs each cost for one data set (and model); ``None`` when no arm has a score."""
    points = [e for e in entries if not math.isnan(_value(e, metric))]
    if not points:
        return None
    plt = _pyplot()
    colors = _arm_colors([e["arm"] for e in points])
    fig, axes = plt.subplots(1, len(COSTS), figsize=(4.2 * len(COSTS), 3.6), constrained_layout=True)
    for axis, (column, label, scale) in zip(axes, COSTS, strict=True):
        xy = [(float(e["costs"].get(column)) if isinstance(e["costs"].get(column), int | float) else math.nan,
               _value(e, metric)) for e in points]
        for (x, y), entry in zip(xy, points, strict=True):
            if math.isnan(x):
                continue
            axis.scatter([x], [y], color=colors[entry["arm"]], s=46, zorder=3, label=entry["arm"])
            axis.annotate(entry["arm"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sorted((xy[i] for i in pareto_front(xy)), key=lambda p: p[0])
        if front:
            axis.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.35", linewidth=1,
                      linestyle="--", zorder=2, label="Pareto front")
            axis.scatter([p[0] for p in front], [p[1] for p in front], s=150, facecolors="none",
                         edgecolors="0.2", linewidths=1.2, zorder=4)
        if scale == "symlog":
            axis.set_xscale("symlog", linthresh=1)
        elif scale == "log" and all(x > 0 for x, _ in xy if not math.isnan(x)):
            axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(metric)
        axis.grid(True, alpha=0.3)
    axes[0].set_title(title, loc="left", fontsize=10)
    return to_svg(fig, f"cost-{title}-{metric}")


def bars_figure(entries: list[dict[str, Any]], metrics: Sequence[str], title: str) -> str | None:
    """Each arm's mean and 95% interval, one panel per metric."""
    metrics = [m for m in metrics if any(not math.isnan(_value(e, m)) for e in entries)]
    if not metrics:
        return None
    plt = _pyplot()
    arms = [e["arm"] for e in entries]
    colors = _arm_colors(arms)
    width = max(3.6, 0.75 * len(entries) + 1.4)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 3.4), constrained_layout=True,
                             squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        rows = [e for e in entries if not math.isnan(_value(e, metric))]
        means = [_value(e, metric) for e in rows]
        lower, upper = [], []
        for entry, mean in zip(rows, means, strict=True):
            low, high = interval(entry["metrics"][metric])
            lower.append(max(mean - low, 0.0) if low is not None else 0.0)
            upper.append(max(high - mean, 0.0) if high is not None else 0.0)
        positions = list(range(len(rows)))
        axis.bar(positions, means, color=[colors[e["arm"]] for e in rows], yerr=[lower, upper], capsize=4,
                 error_kw={"elinewidth": 1})
        axis.set_xticks(positions, [e["arm"] for e in rows], rotation=20, ha="right")
        axis.set_ylabel(metric)
        axis.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_title(title, loc="left", fontsize=10)
    return to_svg(fig, f"bars-{title}")


def interval(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """The interval to show: over seeds when there are several, else the bootstrap over problems."""
    low, high = (result.get("seed_ci") or [None, None])
    if low is None or high is None:
        low, high = (result.get("bootstrap_ci") or [None, None])
    return low, high


def curves_figure(curves: dict[str, list[dict[str, Any]]], title: str) -> str | None:
    """Training loss (solid) and validation loss (dashed, dots) by step, one colour per run."""
    curves = {name: log for name, log in curves.items() if log}
    if not curves:
        return None
    plt = _pyplot()
    colors = _arm_colors(list(curves))
    fig, axis = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    for name, log in curves.items():
        train = [(r["step"], r["loss"]) for r in log if isinstance(r.get("loss"), int | float) and "step" in r]
        val = [(r["step"], r["val_loss"]) for r in log if isinstance(r.get("val_loss"), int | float) and "step" in r]
        if train:
            axis.plot(*zip(*train, strict=True), color=colors[name], marker=".", label=f"{name} train")
        if val:
            axis.plot(*zip(*val, strict=True), color=colors[name], linestyle="--", marker="o", markersize=3,
                      label=f"{name} validation")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title, loc="left", fontsize=10)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    return to_svg(fig, f"curves-{title}")
