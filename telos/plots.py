"""PNG plots of a run's metrics and of summaries (headless: matplotlib's Agg canvas, no pyplot).

Figures are built with ``matplotlib.figure.Figure`` directly rather than ``pyplot`` so plotting
never touches a GUI backend or pyplot's global figure list (safe in servers and threads).

A plot is a view of results that are already written (metrics.jsonl, results.json): every
plotting function here is wrapped in :func:`never_raises`, so a plot that cannot be drawn costs
one ``warning:`` line, never the run or the evaluation that produced the numbers.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def never_raises(default: Any = None) -> Callable[[F], F]:
    """Decorator for report steps: an exception becomes one ``warning:`` line on stderr and
    the function returns ``default`` (a fresh copy when it is a list)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 — see the module docstring
                print(
                    f"warning: {fn.__name__} failed, no plot written ({type(e).__name__}: {e})",
                    file=sys.stderr,
                )
                return list(default) if isinstance(default, list) else default

        return inner  # type: ignore[return-value]

    return wrap


def save_figure(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, through a private temporary file and a rename
    (``telos.cache.atomic_path``: never half a PNG)."""
    from telos.cache import atomic_path

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def new_figure(figsize=(7.0, 4.2)):
    """A figure on the Agg canvas, not pyplot: no global state, safe in worker threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "plot"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(metrics: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(metrics):
        v = row.get(key)
        if _is_number(v):
            step = row.get("step", i)
            xs.append(step if _is_number(step) else i)
            ys.append(float(v))
    order = sorted(range(len(xs)), key=xs.__getitem__)
    return [xs[i] for i in order], [ys[i] for i in order]


def smooth(ys: Sequence[float], weight: float | None = None) -> list[float]:
    """Debiased exponential moving average (TensorBoard-style). ``weight`` defaults to a value
    that averages over ~5 % of the points."""
    n = len(ys)
    if n == 0:
        return []
    if weight is None:
        weight = max(0.0, 1.0 - 1.0 / max(1.0, n / 20))
    out, avg, norm = [], 0.0, 0.0
    for y in ys:
        avg = weight * avg + (1 - weight) * y
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


@never_raises(default=[])
def plot_metrics(metrics: Sequence[dict], out_dir: Path, groups: dict[str, list[str]]) -> list[Path]:
    """One PNG per group, ``out_dir/<group>.png``, with every key of the group against ``step``.

    Keys absent from ``metrics`` are skipped; a group without any data gets no file. Each series
    is drawn as raw points plus a smoothed line when there are enough points.
    """
    out_dir = Path(out_dir)
    written = []
    for group, keys in groups.items():
        series = [(k, *_series(metrics, k)) for k in keys]
        series = [(k, xs, ys) for k, xs, ys in series if xs]
        if not series:
            continue
        fig = new_figure()
        ax = fig.add_subplot()
        for i, (key, xs, ys) in enumerate(series):
            color = f"C{i % 10}"
            if len(xs) >= 8:
                ax.scatter(xs, ys, s=8, alpha=0.3, color=color, linewidths=0)
                ax.plot(xs, smooth(ys), color=color, linewidth=1.8, label=key)
            else:
                ax.plot(xs, ys, color=color, linewidth=1.5, marker="o", markersize=4, label=key)
        ax.set_title(group)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(series) > 1 or series[0][0] != group:
            ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        written.append(save_figure(fig, out_dir / f"{_safe_name(group)}.png"))
    return written


@never_raises()
def bar_chart(values: dict[str, float], path: Path, title: str, ylabel: str) -> Path:
    """A labelled bar chart (e.g. success rate per task) written to ``path`` as PNG."""
    path = Path(path)
    names = list(values)
    heights = [float(values[n]) for n in names]
    fig = new_figure(figsize=(max(5.0, 0.6 * len(names) + 2.0), 4.2))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), heights, color="C0")
    ax.bar_label(bars, labels=[f"{h:.3g}" for h in heights], fontsize="small", padding=2)
    ax.set_xticks(range(len(names)))
    rotate = len(names) > 6 or any(len(n) > 10 for n in names)
    ax.set_xticklabels(names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.12)
    fig.tight_layout()
    return save_figure(fig, path)


@never_raises()
def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """One line per named (xs, ys) series, written to ``path`` as PNG."""
    path = Path(path)
    fig = new_figure()
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
