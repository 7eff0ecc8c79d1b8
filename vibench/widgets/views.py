"""The Workbench's plots: matplotlib figures rendered to PNG into ``ipywidgets.Image``.

Each view keeps one Figure (object-oriented API, never pyplot: views are drawn from a background
thread) and updates its artists in place; ``update`` returns quickly enough to run a few times a
second. PNG images work in JupyterLab, the classic Notebook, VS Code and Voila alike, and need no
front-end extension. Each view keeps the numbers it last drew in ``data`` (tests read them).
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["TraceView", "MarginalsView", "PairView", "CompareView", "render_png"]

MAX_POINTS = 1500  # points per drawn curve: more than a plot's width in pixels is wasted work
DPI = 72
_PLAIN = ticker.FuncFormatter(lambda value, _: f"{value:g}")  # log axes without mathtext: 3x cheaper to draw


def render_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg, no pyplot)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, pil_kwargs={"compress_level": 1})  # fast zlib: 2x quicker, 10% larger
    return buffer.getvalue()


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple:
    """At most ``max_points`` evenly spaced points of a curve (the last point always kept)."""
    if len(x) <= max_points:
        return x, y
    index = np.unique(np.linspace(0, len(x) - 1, max_points).astype(int))
    return x[index], y[index]


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average of ``y`` over ``window`` points (shorter at the start); NaNs skipped."""
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0), dtype=np.float64)])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, len(y) + 1)
    begin = np.maximum(end - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums[end] - sums[begin]) / (counts[end] - counts[begin])


class _View:
    """One Figure with fixed margins (constrained layout doubled the cost of a redraw)."""

    def __init__(self, width: float, height: float, rows: int = 1, cols: int = 1, margins: Optional[dict] = None,
                 **kwargs):
        self.fig = Figure(figsize=(width, height), dpi=DPI)
        self.axes = self.fig.subplots(rows, cols, squeeze=False, **kwargs)
        self.fig.subplots_adjust(**{"left": 0.1, "right": 0.98, "top": 0.93, "bottom": 0.14, **(margins or {})})
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="auto", max_width="100%"))
        self.data: dict = {}
        self.renders = 0

    def draw(self) -> None:
        self.image.value = render_png(self.fig)
        self.renders += 1


class TraceView(_View):
    """The ELBO per step (raw, thinned, and a moving average) over the gradient norm (log scale).
    ``log_steps`` puts the step axis on a log scale."""

    def __init__(self, log_steps: bool = False):
        super().__init__(7.0, 4.2, rows=2, cols=1, sharex=True, height_ratios=[2, 1],
                         margins={"left": 0.12, "top": 0.97, "bottom": 0.11, "hspace": 0.06})
        self.log_steps = None
        top, bottom = self.axes[0, 0], self.axes[1, 0]
        (self._raw,) = top.plot([], [], color="C0", alpha=0.3, linewidth=0.7, label="ELBO per step")
        (self._smooth,) = top.plot([], [], color="C0", linewidth=1.6, label="moving average")
        (self._grad,) = bottom.plot([], [], color="C1", linewidth=0.8)
        top.set_ylabel("ELBO")
        top.legend(loc="lower right", fontsize="small")
        bottom.set_ylabel("gradient norm")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_formatter(_PLAIN)
        bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
        bottom.set_xlabel("step")
        self.set_log_steps(log_steps)
        self.draw()

    def set_log_steps(self, log_steps: bool) -> None:
        if log_steps != self.log_steps:
            self.log_steps = log_steps
            bottom = self.axes[1, 0]
            bottom.set_xscale("log" if log_steps else "linear")
            if log_steps:
                bottom.xaxis.set_major_formatter(_PLAIN)
                bottom.xaxis.set_minor_formatter(ticker.NullFormatter())

    def update(self, trace) -> None:
        """Redraw from a :class:`vibench.Trace` (NumPy arrays of one length)."""
        n = len(trace.elbo)
        top, bottom = self.axes[0, 0], self.axes[1, 0]
        steps = np.arange(1, n + 1)
        elbo = np.where(np.asarray(trace.rejected, bool), np.nan, np.asarray(trace.elbo, np.float64))
        average = smooth(elbo, max(10, n // 50)) if n else elbo
        self._raw.set_data(*thin(steps, elbo))
        self._smooth.set_data(*thin(steps, average))
        grad = np.asarray(trace.grad_norm, np.float64)
        self._grad.set_data(*thin(steps, np.where(grad > 0, grad, np.nan)))
        if n:
            bottom.set_xlim(1, max(n, 2))
            # Limits from the recent range: the first steps' ELBO is often orders of magnitude below
            # the rest and would flatten the part of the curve that matters.
            recent, raw_recent = average[n // 5:], elbo[n // 5:]
            recent, raw_recent = recent[np.isfinite(recent)], raw_recent[np.isfinite(raw_recent)]
            if recent.size:
                low = min(np.percentile(raw_recent, 2) if raw_recent.size else recent.min(), recent.min())
                high = max(np.percentile(raw_recent, 99.5) if raw_recent.size else recent.max(), recent.max())
                pad = 0.05 * (high - low) + 1e-6 * max(abs(high), 1.0)
                top.set_ylim(low - pad, high + pad)
            finite = grad[np.isfinite(grad) & (grad > 0)]
            if finite.size:
                bottom.set_ylim(finite.min() / 1.5, finite.max() * 1.5)
        self.data = {"steps": n, "elbo": float(average[-1]) if n else float("nan")}
        self.draw()


class MarginalsView(_View):
    """Histograms of the guide's draws for chosen scalar parameters, over reference draws if any."""

    def __init__(self, max_panels: int = 4):
        super().__init__(7.0, 2.0, rows=1, cols=max_panels, margins={"left": 0.02, "bottom": 0.12, "top": 0.88, "wspace": 0.08})
        self.max_panels = max_panels
        self._guide, self._reference = [], []
        for ax in self.axes[0]:
            self._reference.append(ax.stairs([0.0], [0.0, 1.0], fill=True, color="0.8", label="reference"))
            self._guide.append(ax.stairs([0.0], [0.0, 1.0], color="C0", linewidth=1.5, label="guide"))
            ax.set_yticks([])
            ax.tick_params(labelsize="small")
        self.axes[0, 0].legend(fontsize="x-small", loc="upper left")
        self.draw()

    def update(self, draws: dict, labels: Sequence[str], reference: Optional[dict] = None) -> None:
        """``draws``/``reference``: ``{label: (S,)}`` (:func:`vibench.reference.scalar_draws`)."""
        labels = list(labels)[: self.max_panels]
        self.data = {}
        for i, ax in enumerate(self.axes[0]):
            ax.set_visible(i < len(labels))
            if i >= len(labels):
                continue
            label = labels[i]
            values = np.asarray(draws[label], np.float64)
            ref = None if reference is None or label not in reference else np.asarray(reference[label], np.float64)
            pooled = values if ref is None else np.concatenate([values, ref])
            low, high = np.percentile(pooled, [0.5, 99.5])
            if high <= low:  # a point guide
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, 41)
            guide_density = np.histogram(values, edges, density=True)[0]
            self._guide[i].set_data(guide_density, edges)
            ref_density = np.histogram(ref, edges, density=True)[0] if ref is not None else np.zeros(40)
            self._reference[i].set_data(ref_density, edges)
            ax.set_xlim(low, high)
            ax.set_ylim(0, 1.08 * max(guide_density.max(), ref_density.max(), 1e-12))
            ax.set_title(label, fontsize="small")
            self.data[label] = (float(values.mean()), float(values.std()))
        self.draw()


class PairView(_View):
    """Contours of the guide's draws for two scalar parameters, over reference points if any."""

    def __init__(self):
        super().__init__(4.2, 3.6, margins={"left": 0.17, "bottom": 0.14, "top": 0.97})
        ax = self.axes[0, 0]
        self._points = ax.scatter([], [], s=3, color="0.55", alpha=0.5, linewidths=0, label="reference")
        (self._point,) = ax.plot([], [], marker="x", color="C0", markersize=10, linestyle="")
        self._contours = None
        self._pair = None
        self.draw()

    def update(self, draws: dict, x: str, y: str, reference: Optional[dict] = None) -> None:
        ax = self.axes[0, 0]
        gx, gy = np.asarray(draws[x], np.float64), np.asarray(draws[y], np.float64)
        has_reference = reference is not None and x in reference and y in reference
        if has_reference:
            rx, ry = np.asarray(reference[x], np.float64), np.asarray(reference[y], np.float64)
            if self._pair != (x, y):
                keep = slice(None, None, max(1, len(rx) // 1500))
                self._points.set_offsets(np.column_stack([rx[keep], ry[keep]]))
            all_x, all_y = np.concatenate([gx, rx]), np.concatenate([gy, ry])
        else:
            self._points.set_offsets(np.empty((0, 2)))
            all_x, all_y = gx, gy
        self._pair = (x, y)
        xr, yr = _widen(np.percentile(all_x, [0.5, 99.5])), _widen(np.percentile(all_y, [0.5, 99.5]))
        if self._contours is not None:
            self._contours.remove()
            self._contours = None
        if np.ptp(gx) > 0 and np.ptp(gy) > 0:
            counts, xe, ye = np.histogram2d(gx, gy, bins=32, range=[xr, yr])
            counts = _blur(counts)
            levels = _mass_levels(counts, (0.9, 0.6, 0.3))
            if len(levels) >= 2:
                self._contours = ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), counts.T, levels=levels,
                                            colors="C0", linewidths=1.2)
            self._point.set_data([], [])
        else:  # a point guide
            self._point.set_data(gx[:1], gy[:1])
        ax.set_xlim(*xr)
        ax.set_ylim(*yr)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        self.data = {"x": x, "y": y, "guide_mean": (float(gx.mean()), float(gy.mean()))}
        self.draw()


class CompareView(_View):
    """Moving-average ELBO traces of finished runs, overlaid and labelled by their configs."""

    def __init__(self):
        super().__init__(7.0, 3.0, margins={"left": 0.12, "bottom": 0.15, "top": 0.97})
        self.draw()

    def update(self, runs: Sequence) -> None:
        ax = self.axes[0, 0]
        ax.clear()
        lows, highs = [], []
        for i, run in enumerate(runs):
            trace = run.fit.trace
            elbo = np.where(np.asarray(trace.rejected, bool), np.nan, np.asarray(trace.elbo, np.float64))
            n = len(elbo)
            average = smooth(elbo, max(10, n // 50))
            ax.plot(*thin(np.arange(1, n + 1), average), color=f"C{i % 10}", linewidth=1.2, label=f"#{i + 1} {run.label}")
            tail = average[n // 5:]
            tail = tail[np.isfinite(tail)]
            if tail.size:
                lows.append(tail.min())
                highs.append(tail.max())
        if lows:
            pad = 0.05 * (max(highs) - min(lows)) + 1e-3
            ax.set_ylim(min(lows) - pad, max(highs) + pad)
            ax.legend(fontsize="x-small", loc="lower right")
        ax.set_xlabel("step")
        ax.set_ylabel("ELBO (moving average)")
        self.data = {"runs": len(runs)}
        self.draw()


def _widen(interval) -> tuple:
    low, high = float(interval[0]), float(interval[1])
    pad = 0.08 * (high - low) if high > low else 0.5
    return low - pad, high + pad


def _blur(counts: np.ndarray) -> np.ndarray:
    """A 1-2-1 smoothing in each direction: contours of raw histogram counts are ragged."""
    kernel = np.array([0.25, 0.5, 0.25])
    counts = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 0, counts)
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, counts)


def _mass_levels(counts: np.ndarray, masses: Sequence[float]) -> list:
    """Density levels whose upper sets hold the given fractions of the mass (increasing)."""
    flat = np.sort(counts.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cumulative = np.cumsum(flat) / total
    levels = sorted({float(flat[min(np.searchsorted(cumulative, m), len(flat) - 1)]) for m in masses})
    return [level for level in levels if level > 0]
