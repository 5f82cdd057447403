"""Raster plots of a backtest report (I/O adapter): the equity curve over its drawdown, as PNG.

The SVG and HTML plots (domain/report.py) need no library; a PNG needs a rasteriser, so this
module uses matplotlib. It is imported only when a PNG is asked for, and it imports matplotlib
only inside `write_png`: `alphapanda` starts without loading it (0.4-0.5 s to import here).
Figures are drawn through matplotlib's object API on an Agg canvas, never through pyplot:
no GUI backend is ever chosen, and no global figure state is shared between calls.

A report with fewer than two equity samples (no bars: nothing ran) still gives a valid PNG of
the same size, saying there is nothing to plot, as the SVG does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alphapanda.domain.report import Report, drawdown_series

WIDTH_PX: Final = 1000
HEIGHT_PX: Final = 600
DPI: Final = 100


class PlotError(RuntimeError):
    """The PNG could not be written: matplotlib is missing, or the file cannot be written."""


def write_png(report: Report, path: Path, *, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> None:
    """Write `report`'s equity curve (top) and drawdown (bottom) to `path` as a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import StrMethodFormatter
    except ImportError:
        raise PlotError("PNG plots need matplotlib (pip install 'matplotlib>=3.8')") from None

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself to the figure: savefig renders with Agg
    curve = report.curve
    if len(curve) < 2:
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(
            0.5,
            0.5,
            f"not enough equity samples to plot ({len(curve)})",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    else:
        at = [p.at for p in curve]
        equity = [float(p.equity) for p in curve]
        # From the starting cash, as the report's max drawdown and the HTML plot measure it.
        drawdown = drawdown_series(equity, float(report.starting_cash))
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (2, 1)})
        top.plot(at, equity, color="#1f77b4", linewidth=1.2)
        top.axhline(float(report.starting_cash), color="grey", linewidth=0.8, linestyle="--")
        top.set_ylabel("equity (Rs)")
        top.set_title(
            f"net PnL Rs {report.net_pnl:,.2f} (charges Rs {report.charges:,.2f}), "
            f"max drawdown Rs {report.max_drawdown:,.2f} ({report.max_drawdown_pct:.2%})",
            fontsize=10,
        )
        top.grid(True, linewidth=0.3)
        bottom.fill_between(at, drawdown, 0.0, color="#d62728", alpha=0.35, linewidth=0)
        bottom.plot(at, drawdown, color="#d62728", linewidth=1.0)
        bottom.set_ylabel("drawdown (Rs)")
        bottom.grid(True, linewidth=0.3)
        for axes in (top, bottom):
            # Whole rupees with separators, never an offset like "1e6" over the axis.
            axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        # Label times in the report's own zone (IST for NSE sessions), not matplotlib's UTC.
        bottom.xaxis_date(at[0].tzinfo)
        bottom.set_xlabel(f"time ({at[0].tzname() or at[0].tzinfo})")
    try:
        figure.savefig(path, format="png", dpi=DPI)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from None
