"""The Workbench's plots: matplotlib figures rendered to PNG into ``ipywidgets.Image``.

Each view keeps one Figure (object-oriented API, never pyplot: views are drawn from a background
thread) and updates its artists in place; ``update`` returns quickly enough to run a few times a
second. PNG images show wherever ipywidgets do and need no front-end extension. Each view keeps the numbers it last drew in ``data`` (tests read them).
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["TraceView", "MarginalsView", "PairView", "CompareView", "render_png", "forest_figure", "FOREST_ROWS"]

MAX_LEGEND = 12  # the most runs the Compare view names in its legend
MAX_POINTS = 1500  # points per drawn curve: more than a plot's width in pixels is wasted work
DPI = 72
_PLAIN = ticker.FuncFormatter(lambda value, _: f"{value:g}")  # log axes without mathtext: 3x cheaper to draw


def render_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg, no pyplot)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, pil_kwargs={"compress_level": 1})  # fast zlib: 2x quicker, 10% larger
    return buffer.getvalue()


class PrefixSums:
    """Running sums of a growing trace's accepted values, so that its moving average at a few
    points costs O(points) per update, not O(steps): only the steps added since the last update
    are summed. A trace that is not an extension of the last one (a new run) starts over."""

    def __init__(self):
        self.sums = np.zeros(1)
        self.counts = np.zeros(1, np.int64)
        self._first = self._last = None

    def extend(self, values: np.ndarray, rejected: np.ndarray) -> None:
        n, done = len(values), len(self.sums) - 1
        first = float(values[0]) if n else None
        # A new run: shorter, or differing at the first step or at the last step summed so far.
        if n < done or first != self._first or (done and float(values[done - 1]) != self._last):
            self.sums, self.counts, done, self._first = np.zeros(1), np.zeros(1, np.int64), 0, first
        if n > done:
            new = np.asarray(values[done:n], np.float64)
            accepted = ~np.asarray(rejected[done:n], bool) & np.isfinite(new)
            self.sums = np.concatenate([self.sums, self.sums[-1] + np.cumsum(np.where(accepted, new, 0.0))])
            self.counts = np.concatenate([self.counts, self.counts[-1] + np.cumsum(accepted)])
            self._last = float(values[n - 1])

    def moving_average(self, max_points: int = MAX_POINTS) -> tuple:
        """``(steps, average)``: the trailing mean over the last fiftieth of the trace (at least 10
        steps, rejected steps left out) at no more than ``max_points`` steps."""
        n = len(self.sums) - 1
        end = _thin_index(n, max_points) + 1
        begin = np.maximum(end - max(10, n // 50), 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return end.astype(np.float64), (self.sums[end] - self.sums[begin]) / (self.counts[end] - self.counts[begin])


def moving_average(values: np.ndarray, rejected: np.ndarray, max_points: int = MAX_POINTS) -> tuple:
    """``(steps, average)`` of a whole trace; see :meth:`PrefixSums.moving_average`."""
    sums = PrefixSums()
    sums.extend(values, rejected)
    return sums.moving_average(max_points)


def _thin_index(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """At most ``max_points`` evenly spaced indices of ``range(n)``, the last one included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).astype(np.int64))


class _View:
    """One Figure with fixed margins (constrained layout doubled the cost of a redraw).

    Views draw by blitting: everything but the artists marked animated (axes, ticks, labels, static
    data) is drawn once and kept as a bitmap, and an update draws only the animated artists over
    it, 3-4x cheaper than a full draw. Axis limits move in steps (:meth:`_keep_or_move`) so that
    most updates need no full redraw.
    """

    def __init__(self, width: float, height: float, rows: int = 1, cols: int = 1, margins: Optional[dict] = None,
                 **kwargs):
        self.fig = Figure(figsize=(width, height), dpi=DPI)
        self.axes = self.fig.subplots(rows, cols, squeeze=False, **kwargs)
        self.fig.subplots_adjust(**{"left": 0.1, "right": 0.98, "top": 0.93, "bottom": 0.14, **(margins or {})})
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="auto", max_width="100%"))
        self.data: dict = {}
        self.renders = self.full_draws = 0
        self._canvas = FigureCanvasAgg(self.fig)
        self._background = None
        self._animated: list = []

    def draw(self) -> None:
        """Show the figure: a full draw when something static changed, else a blit."""
        if self._background is None:
            self._canvas.draw()  # everything but the animated artists
            self._background = self._canvas.copy_from_bbox(self.fig.bbox)
            self.full_draws += 1
        else:
            self._canvas.restore_region(self._background)
        for artist in self._animated:
            if artist.axes is not None and artist.axes.get_visible() and artist.get_visible():
                artist.axes.draw_artist(artist)
        self.image.value = _encode(self._canvas)
        self.renders += 1

    def invalidate(self) -> None:
        """Something static changed: the next :meth:`draw` redraws everything."""
        self._background = None

    def _keep_or_move(self, ax, which: str, wanted: tuple, log: bool = False, exact: bool = False,
                      pad: float = 0.15) -> None:
        """Keep ``ax``'s limits while they hold ``wanted`` and it fills a third of them; else move
        them (``pad`` of the span added each side) and :meth:`invalidate`. With ``exact`` the
        limits are set to ``wanted`` whenever they differ."""
        get, set_ = (ax.get_xlim, ax.set_xlim) if which == "x" else (ax.get_ylim, ax.set_ylim)
        to, back = (np.log10, lambda v: 10.0 ** v) if log else ((lambda v: v), (lambda v: v))
        low, high = to(np.asarray(wanted, np.float64))
        current_low, current_high = to(np.asarray(get(), np.float64))
        if exact:
            if (current_low, current_high) == (low, high):
                return
            set_(*back(np.array([low, high])))
        else:
            span = max(high - low, 1e-9 * max(abs(high), 1.0))
            if current_low <= low and high <= current_high and current_high - current_low <= 3.0 * span:
                return
            set_(*back(np.array([low - pad * span, high + pad * span])))
        self.invalidate()


class TraceView(_View):
    """The ELBO per step (raw, thinned, and a moving average) over the gradient norm (log scale).
    ``log_steps`` puts the step axis on a log scale. The step axis ends at the next of 1, 1.5, 2,
    3, 4, 5, 6, 8 x 10^k steps, so it moves only now and then."""

    def __init__(self, log_steps: bool = False):
        super().__init__(7.0, 4.2, rows=2, cols=1, sharex=True, height_ratios=[2, 1],
                         margins={"left": 0.12, "top": 0.97, "bottom": 0.11, "hspace": 0.06})
        self.log_steps = None
        self._sums = PrefixSums()
        top, bottom = self.axes[0, 0], self.axes[1, 0]
        (self._raw,) = top.plot([], [], color="C0", alpha=0.3, linewidth=0.7, label="ELBO per step", animated=True)
        (self._smooth,) = top.plot([], [], color="C0", linewidth=1.6, label="moving average", animated=True)
        (self._grad,) = bottom.plot([], [], color="C1", linewidth=0.8, animated=True)
        self._animated = [self._raw, self._smooth, self._grad]
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
            self.invalidate()

    def update(self, trace) -> None:
        """Redraw from a :class:`vibench.Trace` (NumPy arrays of one length). The cost grows with
        the points drawn and the steps added since the last update, not with the trace's length."""
        n = len(trace.elbo)
        top, bottom = self.axes[0, 0], self.axes[1, 0]
        index = _thin_index(n)
        steps = index + 1
        raw = np.where(trace.rejected[index], np.nan, trace.elbo[index]).astype(np.float64)
        grad = np.asarray(trace.grad_norm[index], np.float64)
        self._sums.extend(trace.elbo, trace.rejected)
        centres, average = self._sums.moving_average()
        self._raw.set_data(steps, raw)
        self._smooth.set_data(centres, average)
        self._grad.set_data(steps, np.where(grad > 0, grad, np.nan))
        if n:
            self._keep_or_move(bottom, "x", (1.0, _nice_ceiling(max(n, 2))), log=self.log_steps, exact=True)
            # Limits from the recent range: the first steps' ELBO is often orders of magnitude below
            # the rest and would flatten the part of the curve that matters.
            recent = average[centres >= n // 5]
            raw_recent = raw[steps >= n // 5]
            recent, raw_recent = recent[np.isfinite(recent)], raw_recent[np.isfinite(raw_recent)]
            if recent.size:
                low = min(np.percentile(raw_recent, 2) if raw_recent.size else recent.min(), recent.min())
                high = max(np.percentile(raw_recent, 99.5) if raw_recent.size else recent.max(), recent.max())
                self._keep_or_move(top, "y", (low, high))
            finite = grad[np.isfinite(grad) & (grad > 0)]
            if finite.size:
                self._keep_or_move(bottom, "y", (finite.min(), finite.max()), log=True)
        self.data = {"steps": n, "elbo": float(average[-1]) if n else float("nan")}
        self.draw()


class MarginalsView(_View):
    """Histograms of the guide's draws for chosen scalar parameters, over reference draws if any."""

    def __init__(self, max_panels: int = 4):
        super().__init__(7.0, 2.0, rows=1, cols=max_panels, margins={"left": 0.02, "bottom": 0.12, "top": 0.88, "wspace": 0.08})
        self.max_panels = max_panels
        self._guide, self._reference = [], []
        self._shown: tuple = ()
        for ax in self.axes[0]:
            self._reference.append(ax.stairs([0.0], [0.0, 1.0], fill=True, color="0.8", label="reference"))
            self._guide.append(ax.stairs([0.0], [0.0, 1.0], color="C0", linewidth=1.5, label="guide", animated=True))
            ax.set_yticks([])
            ax.tick_params(labelsize="small")
        self._animated = list(self._guide)
        self.axes[0, 0].legend(fontsize="x-small", loc="upper left")
        self.draw()

    def update(self, draws: dict, labels: Sequence[str], reference: Optional[dict] = None) -> None:
        """``draws``/``reference``: ``{label: (S,)}`` (:func:`vibench.reference.scalar_draws`)."""
        labels = tuple(labels)[: self.max_panels]
        if (labels, reference is None) != self._shown:
            self._shown = (labels, reference is None)
            for i, ax in enumerate(self.axes[0]):
                ax.set_visible(i < len(labels))
                if i < len(labels):
                    ax.set_title(labels[i], fontsize="small")
            self.invalidate()
        self.data = {}
        for i, label in enumerate(labels):
            ax = self.axes[0, i]
            values = np.asarray(draws[label], np.float64)
            ref = None if reference is None or label not in reference else np.asarray(reference[label], np.float64)
            pooled = values if ref is None else np.concatenate([values, ref])
            low, high = np.percentile(pooled, [0.5, 99.5])
            if high <= low:  # a point guide
                low, high = low - 0.5, high + 0.5
            self._keep_or_move(ax, "x", (low, high), pad=0.05)
            edges = np.linspace(*ax.get_xlim(), 41)  # bins fixed while the axis is: the histogram moves, not its grid
            guide_density = np.histogram(values, edges, density=True)[0]
            self._guide[i].set_data(guide_density, edges)
            if ref is not None:
                ref_density = np.histogram(ref, edges, density=True)[0]
                if self._background is None or not np.array_equal(self._reference[i].get_data().values, ref_density):
                    self._reference[i].set_data(ref_density, edges)
                    self.invalidate()
            else:
                ref_density = np.zeros(1)
                self._reference[i].set_data(np.zeros(40), edges)
            self._keep_or_move(ax, "y", (0.0, 1.05 * max(guide_density.max(), ref_density.max(), 1e-12)), pad=0.0)
            self.data[label] = (float(values.mean()), float(values.std()))
        self.draw()


class PairView(_View):
    """Contours of the guide's draws for two scalar parameters, over reference points if any."""

    def __init__(self):
        super().__init__(4.2, 3.6, margins={"left": 0.17, "bottom": 0.14, "top": 0.97})
        ax = self.axes[0, 0]
        self._points = ax.scatter([], [], s=3, color="0.55", alpha=0.5, linewidths=0, label="reference")
        (self._point,) = ax.plot([], [], marker="x", color="C0", markersize=10, linestyle="", animated=True)
        self._contours = None
        self._pair = None
        self._animated = [self._point]
        self.draw()

    def update(self, draws: dict, x: str, y: str, reference: Optional[dict] = None) -> None:
        ax = self.axes[0, 0]
        gx, gy = np.asarray(draws[x], np.float64), np.asarray(draws[y], np.float64)
        has_reference = reference is not None and x in reference and y in reference
        if has_reference:
            rx, ry = np.asarray(reference[x], np.float64), np.asarray(reference[y], np.float64)
            all_x, all_y = np.concatenate([gx, rx]), np.concatenate([gy, ry])
        else:
            all_x, all_y = gx, gy
        if self._pair != (x, y, has_reference):
            self._pair = (x, y, has_reference)
            if has_reference:
                keep = slice(None, None, max(1, len(rx) // 1500))
                self._points.set_offsets(np.column_stack([rx[keep], ry[keep]]))
            else:
                self._points.set_offsets(np.empty((0, 2)))
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            self.invalidate()
        self._keep_or_move(ax, "x", tuple(np.percentile(all_x, [0.5, 99.5])), pad=0.08)
        self._keep_or_move(ax, "y", tuple(np.percentile(all_y, [0.5, 99.5])), pad=0.08)
        if self._contours is not None:
            self._contours.remove()
            self._animated = [self._point]
            self._contours = None
        if np.ptp(gx) > 0 and np.ptp(gy) > 0:
            counts, xe, ye = np.histogram2d(gx, gy, bins=32, range=[ax.get_xlim(), ax.get_ylim()])
            counts = _blur(counts)
            levels = _mass_levels(counts, (0.9, 0.6, 0.3))
            if len(levels) >= 2:
                self._contours = ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), counts.T, levels=levels,
                                            colors="C0", linewidths=1.2)
                self._contours.set_animated(True)
                self._animated = [self._point, self._contours]
            self._point.set_data([], [])
        else:  # a point guide
            self._point.set_data(gx[:1], gy[:1])
        self.data = {"x": x, "y": y, "guide_mean": (float(gx.mean()), float(gy.mean()))}
        self.draw()


class CompareView(_View):
    """Moving-average ELBO traces of finished runs, overlaid and labelled by their configs (a legend
    for up to ``MAX_LEGEND`` runs; beyond that, the Compare table names them)."""

    def __init__(self):
        super().__init__(7.0, 3.0, margins={"left": 0.12, "bottom": 0.15, "top": 0.97})
        self.draw()

    def update(self, runs: Sequence) -> None:
        ax = self.axes[0, 0]
        ax.clear()
        self.invalidate()
        lows, highs = [], []
        for i, run in enumerate(runs):
            trace = run.fit.trace
            n = len(trace.elbo)
            steps, average = moving_average(np.asarray(trace.elbo), np.asarray(trace.rejected, bool))
            ax.plot(steps, average, color=f"C{i % 10}", linewidth=1.2, label=f"#{i + 1} {run.label}")
            tail = average[steps >= n // 5]
            tail = tail[np.isfinite(tail)]
            if tail.size:
                lows.append(tail.min())
                highs.append(tail.max())
        if lows:
            pad = 0.05 * (max(highs) - min(lows)) + 1e-3
            ax.set_ylim(min(lows) - pad, max(highs) + pad)
            if len(runs) <= MAX_LEGEND:  # a launch of many restarts would bury the curves: the table names them
                ax.legend(fontsize="x-small", loc="lower right")
        ax.set_xlabel("step")
        ax.set_ylabel("ELBO (moving average)")
        self.data = {"runs": len(runs)}
        self.draw()


def _nice_ceiling(n: float) -> float:
    """The smallest of 1, 1.5, 2, 3, 4, 5, 6, 8 x 10^k that is >= ``n``."""
    power = 10.0 ** np.floor(np.log10(n))
    for factor in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if factor * power >= n:
            return factor * power
    return 10.0 * power


def _encode(canvas: FigureCanvasAgg) -> bytes:
    """The canvas's current pixels as PNG bytes, without drawing the figure again."""
    buffer = io.BytesIO()
    Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
        buffer, format="png", compress_level=1)  # fast zlib: 2x quicker, 10% larger
    return buffer.getvalue()


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


FOREST_ROWS = 40  # the most parameters a forest plot shows: more rows are unreadable at its size


def forest_figure(fit, key, num_draws: int = 1000) -> Figure:
    """A forest plot of the fit's marginals on a Figure of its own (no pyplot): per scalar
    parameter (the first :data:`FOREST_ROWS`) the mean, the central 50% and 89% intervals of
    ``num_draws`` guide draws, the 89% as ArviZ 1.x's summary reports it."""
    from ..reference import scalar_draws

    draws = scalar_draws(fit, num_draws, key)
    labels = list(draws)[:FOREST_ROWS]
    values = np.stack([draws[label] for label in labels], axis=1)  # (num_draws, rows)
    lo89, lo50, hi50, hi89 = np.quantile(values, [0.055, 0.25, 0.75, 0.945], axis=0)
    rows = np.arange(len(labels))[::-1]
    fig = Figure(figsize=(7, max(2.0, 0.28 * len(labels) + 1.0)), layout="constrained")
    ax = fig.add_subplot()
    ax.hlines(rows, lo89, hi89, color="C0", linewidth=1.2)
    ax.hlines(rows, lo50, hi50, color="C0", linewidth=3.5)
    ax.plot(values.mean(0), rows, "o", color="white", markeredgecolor="C0", markersize=5)
    ax.set_yticks(rows, labels)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    shown = f"the first {len(labels)} of {len(draws)} parameters" if len(draws) > len(labels) else "mean"
    ax.set_title(f"{shown}, 50% and 89% intervals of {num_draws} guide draws", fontsize="medium")
    return fig
