"""The ``ddrp plan`` figure: predicted relative MSE against K for every method.

Built from the report of ``ddrp_dask.choose.choose_k``. Curves that coincide (e.g. gaussian,
asymmetric and diagonal when X and W have the same statistics) stay visible: every method has
its own colour, line style and marker, markers sit at different K's on each curve, and the
legend names the coinciding methods. Values are never offset. matplotlib (Agg) is imported
only inside the drawing functions: the library does not need it otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .maths.methods import get

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["coincident_curves", "draw_mse_curve", "legend_labels", "plot_mse_curve",
           "x_limits"]

#: Curves whose relative difference stays below this wherever both are finite coincide.
RTOL = 1e-9
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)),
                            (0, (1, 2)), (0, (8, 2, 2, 2)))
_N_MARKS = 6  # markers per curve


def _curves(report: dict[str, Any]) -> dict[str, np.ndarray]:
    return {m: np.asarray(v, dtype=np.float64) for m, v in report["curve"]["mse"].items()}


def _same(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    both = np.isfinite(a) & np.isfinite(b)
    if np.count_nonzero(both) < 2:  # one shared point (or none) says nothing about a curve
        return False
    u, v = a[both], b[both]
    scale = np.maximum(np.abs(u), np.abs(v))
    return bool(np.all(np.abs(u - v) <= rtol * scale))


def coincident_curves(report: dict[str, Any], rtol: float = RTOL) -> dict[str, str]:
    """Methods whose curve coincides with an earlier method's.

    Parameters
    ----------
    report : dict
        As returned by ``ddrp_dask.choose.choose_k``.
    rtol : float, default=1e-9
        Two curves coincide when ``|a - b| <= rtol * max(|a|, |b|)`` at every K where both
        are finite (at least two such K's).

    Returns
    -------
    dict of str to str
        ``{method: first method (in report order) with the same curve}``, for every method
        that repeats an earlier one; methods with a curve of their own are absent.
    """
    curves = _curves(report)
    first: dict[str, str] = {}
    reps: list[str] = []
    for m, values in curves.items():
        match = next((r for r in reps if _same(curves[r], values, rtol)), None)
        if match is None:
            reps.append(m)
        else:
            first[m] = match
    return first


def legend_labels(report: dict[str, Any], rtol: float = RTOL) -> list[str]:
    """The legend text of every method's curve, in the report's method order.

    Parameters
    ----------
    report : dict
        As returned by ``ddrp_dask.choose.choose_k``.
    rtol : float, default=1e-9
        Tolerance of ``coincident_curves``.

    Returns
    -------
    list of str
        ``"<method>: K = <smallest K at the target>"``, e.g. ``"auto: K = 24"``; a curve that
        repeats an earlier one says so, e.g. ``"diagonal (same as asymmetric): K = 1093 (> d)"``;
        ``(> d)`` flags a K above d, ``(exact)`` one whose predicted MSE is 0, ``(biased)``
        the truncated method.
    """
    same = coincident_curves(report, rtol)
    curves = _curves(report)
    d = int(report["d"])
    labels = []
    for m in report["curve"]["mse"]:
        name = f"{m} (same as {same[m]})" if m in same else m
        if not get(m).unbiased:
            name += " (biased)"
        k = int(report["min_k"][m])
        exact = k <= len(curves[m]) and curves[m][k - 1] == 0
        labels.append(f"{name}: K = {k}" + (" (> d)" if k > d else "")
                      + (" (exact)" if exact else ""))
    return labels


def x_limits(report: dict[str, Any]) -> tuple[float, float]:
    """The K range shown: from 1 to 2·(d + 2), or to the last K of the curves if smaller.

    Smallest K's beyond the axis (the oblivious methods often need K ≫ d, where storing the
    raw vectors is cheaper) are still named in the legend, with ``(> d)``.

    Parameters
    ----------
    report : dict
        As returned by ``ddrp_dask.choose.choose_k``.

    Returns
    -------
    (float, float)
        Limits of the log x axis, with a little room at both ends.
    """
    last = int(report["curve"]["k"][-1])
    high = min(last, 2 * (int(report["d"]) + 2))
    return 0.9, high * 1.1


def _mark_every(ks: np.ndarray, high: float, slot: int, n_slots: int) -> list[int]:
    """Indices into ``ks`` (a plotted curve's K's) of a few K's up to ``high``, evenly spaced in
    log K and shifted by ``slot / n_slots`` of a step, so that coinciding curves carry their
    markers at different K's."""
    shown = np.flatnonzero(ks <= high)
    if shown.size == 0:
        return []
    lo, hi = np.log(ks[shown[0]]), np.log(ks[shown[-1]])
    step = (hi - lo) / _N_MARKS
    targets = np.exp(lo + step * (np.arange(_N_MARKS) + (slot + 0.5) / n_slots))
    return sorted({int(shown[np.argmin(np.abs(ks[shown] - t))]) for t in targets})


def _draw_curves(ax: Axes, report: dict[str, Any], high: float, bottom: float) -> float:
    """One line per method, with its smallest K marked (on ``bottom``, the lower edge, when
    its MSE is 0); returns the largest value shown."""
    ks = np.asarray(report["curve"]["k"], dtype=np.float64)
    energy = float(report["energy"])
    curves = _curves(report)
    same = coincident_curves(report)
    n = len(curves)
    depth: dict[str, int] = {}  # how many coinciding curves lie under this one
    top = 0.0
    for i, (m, label) in enumerate(zip(curves, legend_labels(report), strict=True)):
        rel = curves[m] / energy
        keep = np.isfinite(rel) & (rel > 0)  # exact K's (MSE 0) cannot sit on a log axis
        rep = same.get(m, m)
        depth[rep] = depth.get(rep, -1) + 1
        (line,) = ax.plot(ks[keep], rel[keep], label=label, color=f"C{i % 10}",
                          linestyle=_STYLES[i % len(_STYLES)], marker=_MARKERS[i % len(_MARKERS)],
                          markevery=_mark_every(ks[keep], high, i, n), markersize=6,
                          markerfacecolor="none", linewidth=max(0.9, 2.4 - 0.6 * depth[rep]),
                          zorder=2 + depth[rep])
        shown = rel[keep][ks[keep] <= high]
        top = max(top, float(shown.max()) if shown.size else 0.0)
        k = int(report["min_k"][m])
        if k <= high and k <= len(rel) and rel[k - 1] >= 0:  # MSE 0: on the bottom edge
            ax.plot([k], [max(rel[k - 1], bottom)], marker=_MARKERS[i % len(_MARKERS)],
                    markersize=9, color=line.get_color(), markeredgecolor="k",
                    linestyle="none", zorder=10, clip_on=False)
    return top


def _mark_d(ax: Axes, d: int, high: float) -> None:
    """A vertical line at K = d, labelled, and K > d shaded: raw vectors are smaller there."""
    if d < high:
        ax.axvspan(d, high, color="0.5", alpha=0.12, zorder=0,
                   label="K > d: raw vectors are smaller")
    ax.axvline(d, color="0.3", linewidth=1.2, zorder=1)
    right = high < 1.5 * d  # little room right of the line: the label goes to its left
    ax.text(d, 0.98, f"d = {d} " if right else f" d = {d}", transform=ax.get_xaxis_transform(),
            ha="right" if right else "left", va="top", fontsize=9, color="0.2")


def _k_ticks(ax: Axes, high: float) -> None:
    """Plain-number ticks at 1, 2, 5, 10, 20, 50, ... up to ``high``."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ticks = [m * 10**e for e in range(int(np.log10(high)) + 1) for m in (1, 2, 5)]
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if t <= high]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def draw_mse_curve(ax: Axes, report: dict[str, Any], title: str = "") -> None:
    """Draw ``choose_k``'s predicted relative MSE against K of every method on ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw (log-log axes are set here).
    report : dict
        As returned by ``ddrp_dask.choose.choose_k``.
    title : str, default=""
        The axes' title; by default one naming d and the target.
    """
    from matplotlib.lines import Line2D

    d, target = int(report["d"]), float(report["target_rel_mse"])
    low, high = x_limits(report)
    ax.set_xscale("log")
    ax.set_yscale("log")
    bottom = target / 1000  # exact K's (MSE 0) fall off a log axis: their marks sit here
    top = _draw_curves(ax, report, high, bottom)
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
    _mark_d(ax, d, high)
    ax.set_xlim(low, high)
    ax.set_ylim(bottom, max(top, target) * 2)
    _k_ticks(ax, high)
    ax.set_xlabel("K (stored columns per sketch)")
    ax.set_ylabel("predicted relative MSE of x.w")
    ax.set_title(title or f"ddrp plan: d={d}, smallest K per method at target {target:g}")
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", markersize=9, color="0.6", markeredgecolor="k",
                          linestyle="none"))
    labels.append("smallest K meeting the target")
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)


def plot_mse_curve(report: dict[str, Any], path: str, title: str = "") -> None:
    """Write ``choose_k``'s relative MSE against K of every method as a PNG.

    Parameters
    ----------
    report : dict
        As returned by ``ddrp_dask.choose.choose_k``.
    path : str
        The PNG file to write.
    title : str, default=""
        The figure's title; by default one naming d and the target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    try:
        draw_mse_curve(ax, report, title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
