"""Backtest report: PnL, charges, round trips, drawdown, Sharpe and exposure, from fills and marks.

Pure: the backtest engine feeds fills and prices in event order; nothing here reads a clock,
a file or the state store, so the same inputs always give the same report (byte for byte once
serialised by `to_json`). Money is Decimal; only the Sharpe ratio, a statistic, is a float.

Sharpe basis: the equity curve is sampled once per bar of event time (the engine's `bar`,
60 s by default). Per-bar returns are equity changes over the starting cash; the ratio is
mean / sample standard deviation of those returns, times sqrt(bars per year), with a year of
252 NSE sessions of 375 minutes (so a 60 s bar gives 94,500 periods a year). Risk-free rate 0.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from alphapanda.domain.portfolio import Position, apply_fill
from alphapanda.events import Side
from alphapanda.immutable import immutable

ZERO = Decimal(0)
SESSION_SECONDS_PER_YEAR = 252 * 375 * 60


def periods_per_year(bar_seconds: float) -> float:
    """How many bars of `bar_seconds` of trading time make one year (the Sharpe annualisation)."""
    return SESSION_SECONDS_PER_YEAR / bar_seconds


@immutable(slots=True)
class FillRecord:
    """The part of a fill the report needs (and lists)."""

    fill_id: str
    order_id: str
    strategy: str
    instrument_token: int
    tradingsymbol: str
    side: Side
    quantity: int
    price: Decimal
    charges: Decimal
    filled_at: datetime
    dp_charges: Decimal = ZERO
    """The depository charge the portfolio took with this fill (a delivery sale from holdings)."""

    @property
    def cost(self) -> Decimal:
        """All the fill cost the account beyond its traded value: its charges and any DP charge."""
        return self.charges + self.dp_charges if self.dp_charges else self.charges

    def to_json(self) -> dict[str, Any]:
        return {
            "fill_id": self.fill_id,
            "order_id": self.order_id,
            "strategy": self.strategy,
            "instrument_token": self.instrument_token,
            "tradingsymbol": self.tradingsymbol,
            "side": self.side.value,
            "quantity": self.quantity,
            "price": str(self.price),
            "charges": str(self.charges),
            "filled_at": self.filled_at.isoformat(),
            # Only when taken: a report without delivery sales lists its fills as before.
            **({"dp_charges": str(self.dp_charges)} if self.dp_charges else {}),
        }


@immutable(slots=True)
class EquityPoint:
    at: datetime
    equity: Decimal
    gross_exposure: Decimal
    """Sum of |quantity| x mark over open positions at this point, in rupees."""


@dataclass(slots=True)
class _Holding:
    position: Position = field(default_factory=Position)
    trip_pnl: Decimal = ZERO
    """Realised PnL less charges of the round trip now open (flat -> ... -> flat)."""


@dataclass(slots=True)
class _StrategyBook:
    """One strategy's share of the account: what its fills paid and received, and its trips."""

    cash: Decimal = ZERO
    charges: Decimal = ZERO
    fills: int = 0
    trips: int = 0
    wins: int = 0


@immutable(slots=True)
class StrategyResult:
    """One strategy's part of a backtest: the strategies' net PnLs add up to the run's."""

    strategy: str
    net_pnl: Decimal
    charges: Decimal
    trades: int
    round_trips: int
    winning_trips: int
    open_value: Decimal
    """Its open positions at the last marks (signed: short positions count negative)."""

    @property
    def win_rate(self) -> float | None:
        return self.winning_trips / self.round_trips if self.round_trips else None

    def to_json(self) -> dict[str, Any]:
        return {
            "net_pnl": str(self.net_pnl),
            "charges": str(self.charges),
            "trades": self.trades,
            "round_trips": self.round_trips,
            "winning_trips": self.winning_trips,
            "win_rate": _round(self.win_rate),
            "open_value": str(self.open_value),
        }


@dataclass
class EquityTracker:
    """Marks positions to market and samples equity once per bar of event time.

    Positions are per (strategy, instrument), average-cost, like the portfolio manager's books.
    A round trip runs from flat to flat; a fill that flips a position closes one trip at its
    price and opens the next with the rest. Charges count against the trip open when they are
    paid (the closing one, for a flip).
    """

    starting_cash: Decimal
    bar_seconds: float = 60.0
    cash: Decimal = ZERO
    charges: Decimal = ZERO
    trips: list[Decimal] = field(default_factory=list)
    curve: list[EquityPoint] = field(default_factory=list)
    _holdings: dict[tuple[str, int], _Holding] = field(default_factory=dict)
    marks: dict[int, Decimal] = field(default_factory=dict)
    """The latest price of each instrument. The backtest's fast path sets it directly for marks
    within the current bar (see `bar_span`), which is all `on_mark` would do for them."""
    _bucket: int | None = None
    _last_at: datetime | None = None
    _books: dict[str, _StrategyBook] = field(default_factory=dict)

    def on_fill(self, fill: FillRecord) -> None:
        key = (fill.strategy, fill.instrument_token)
        h = self._holdings.setdefault(key, _Holding())
        book = self._books.get(fill.strategy)
        if book is None:
            book = self._books[fill.strategy] = _StrategyBook()
        signed = fill.side.sign * fill.quantity
        paid = signed * fill.price
        self.cash -= paid
        book.cash -= paid
        cost = fill.cost
        self.charges += cost
        book.charges += cost
        book.fills += 1
        h.trip_pnl -= cost
        before = h.position
        # The portfolio manager's own accounting (exact cost on closes), so a trip's PnL is
        # exactly what it received less what it paid and charges.
        after = apply_fill(before, fill.side, fill.quantity, fill.price)
        h.position = after
        h.trip_pnl += after.realised_pnl - before.realised_pnl
        q, new_q = before.net_quantity, after.net_quantity
        if q and (new_q == 0 or (new_q > 0) != (q > 0)):
            self.trips.append(h.trip_pnl)
            book.trips += 1
            if h.trip_pnl > 0:
                book.wins += 1
            h.trip_pnl = ZERO
        self.marks[fill.instrument_token] = fill.price

    def on_mark(self, token: int, price: Decimal, at: datetime) -> None:
        """A new price of `token` at `at`; the first mark of each bar samples the equity."""
        self.marks[token] = price
        self._last_at = at
        bucket = math.floor(at.timestamp() / self.bar_seconds)
        if bucket != self._bucket:
            self._bucket = bucket
            self.curve.append(self._point(at))

    def bar_span(self, at: datetime) -> tuple[datetime, datetime]:
        """Instants (in `at`'s zone) strictly inside the bar `at` falls in: a mark from `lo` up to
        (not including) `hi` samples nothing. A millisecond short of the bar's edges on either
        side, so float rounding in `on_mark`'s bar arithmetic can never disagree; marks in that
        margin go through `on_mark`."""
        bucket = math.floor(at.timestamp() / self.bar_seconds)
        margin = 0.001
        lo = bucket * self.bar_seconds + margin
        hi = (bucket + 1) * self.bar_seconds - margin
        if hi <= lo:
            return at, at
        zone = at.tzinfo
        return datetime.fromtimestamp(lo, zone), datetime.fromtimestamp(hi, zone)

    def seen(self, at: datetime) -> None:
        """Note the time of the latest mark set directly in `marks` (what `on_mark` records)."""
        self._last_at = at

    def finish(self) -> None:
        """Sample the closing equity at the last mark: a sample already at that instant is
        replaced, since fills and marks may have followed it at the same exchange time."""
        if self._last_at is None:
            return
        point = self._point(self._last_at)
        if self.curve and self.curve[-1].at == self._last_at:
            self.curve[-1] = point
        else:
            self.curve.append(point)

    def strategy_results(self) -> tuple[StrategyResult, ...]:
        """Each strategy's part, by name, at the latest marks (those of the closing sample)."""
        value: dict[str, Decimal] = {}
        for (strategy, token), h in self._holdings.items():
            q = h.position.net_quantity
            if q:
                mark = self.marks.get(token, h.position.average_price)
                value[strategy] = value.get(strategy, ZERO) + q * mark
        return tuple(
            StrategyResult(
                strategy=name,
                net_pnl=book.cash - book.charges + value.get(name, ZERO),
                charges=book.charges,
                trades=book.fills,
                round_trips=book.trips,
                winning_trips=book.wins,
                open_value=value.get(name, ZERO),
            )
            for name, book in sorted(self._books.items())
        )

    def _point(self, at: datetime) -> EquityPoint:
        value, gross = ZERO, ZERO
        for (_strategy, token), h in self._holdings.items():
            q = h.position.net_quantity
            if q:
                mark = self.marks.get(token, h.position.average_price)
                value += q * mark
                gross += abs(q) * mark
        return EquityPoint(at, self.starting_cash + self.cash - self.charges + value, gross)


@dataclass(frozen=True)
class Report:
    starting_cash: Decimal
    net_pnl: Decimal
    charges: Decimal
    gross_pnl: Decimal
    trades: int
    round_trips: int
    winning_trips: int
    win_rate: float | None
    max_drawdown: Decimal
    max_drawdown_pct: float
    sharpe: float | None
    sharpe_basis: str
    time_in_market_pct: float
    max_gross_exposure: Decimal
    ticks: int
    events: dict[str, int]
    curve: tuple[EquityPoint, ...] = field(repr=False)
    fills: tuple[FillRecord, ...] = field(repr=False)
    strategies: tuple[StrategyResult, ...] = ()
    """Each strategy's part, by name (those that traded)."""
    strategy_failures: dict[str, int] = field(default_factory=dict)
    """Per strategy of the user's own that failed on ticks, how many (it sent nothing on them)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "starting_cash": str(self.starting_cash),
            "net_pnl": str(self.net_pnl),
            "gross_pnl": str(self.gross_pnl),
            "charges": str(self.charges),
            "trades": self.trades,
            "round_trips": self.round_trips,
            "winning_trips": self.winning_trips,
            "win_rate": _round(self.win_rate),
            "max_drawdown": str(self.max_drawdown),
            "max_drawdown_pct": _round(self.max_drawdown_pct),
            "sharpe": _round(self.sharpe),
            "sharpe_basis": self.sharpe_basis,
            "time_in_market_pct": _round(self.time_in_market_pct),
            "max_gross_exposure": str(self.max_gross_exposure),
            "ticks": self.ticks,
            "events": dict(sorted(self.events.items())),
            "strategies": {s.strategy: s.to_json() for s in self.strategies},
            "strategy_failures": dict(sorted(self.strategy_failures.items())),
            "equity_curve": [
                {"at": p.at.isoformat(), "equity": str(p.equity), "gross_exposure": str(p.gross_exposure)}
                for p in self.curve
            ],
            "fills": [f.to_json() for f in self.fills],
        }

    def dumps(self) -> str:
        """The report as JSON text: the same run always gives the same bytes."""
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    def summary_lines(self) -> list[str]:
        win = "n/a" if self.win_rate is None else f"{self.win_rate:.1%}"
        sharpe = "n/a" if self.sharpe is None else f"{self.sharpe:.2f}"
        dp = sum((f.dp_charges for f in self.fills), ZERO)
        of_which = f", of which DP Rs {dp:,.2f}" if dp else ""
        return [
            f"ticks           {self.ticks:,}",
            f"net PnL         Rs {self.net_pnl:,.2f}  (gross Rs {self.gross_pnl:,.2f}, "
            f"charges Rs {self.charges:,.2f}{of_which})",
            f"trades          {self.trades:,} fills, {self.round_trips:,} round trips, win rate {win}",
            f"max drawdown    Rs {self.max_drawdown:,.2f} ({self.max_drawdown_pct:.2%} of peak)",
            f"Sharpe          {sharpe}  ({self.sharpe_basis})",
            f"exposure        in market {self.time_in_market_pct:.1%} of bars, "
            f"max gross Rs {self.max_gross_exposure:,.2f}",
            *self._strategy_lines(),
        ]

    def _strategy_lines(self) -> list[str]:
        """A line per strategy that traded, when more than one did: which made what."""
        if len(self.strategies) < 2:
            return []
        width = max(len(s.strategy) for s in self.strategies)
        lines = []
        for index, s in enumerate(self.strategies):
            win = "n/a" if s.win_rate is None else f"{s.win_rate:.1%}"
            label = "by strategy     " if index == 0 else " " * 16
            lines.append(
                f"{label}{s.strategy:<{width}}  net Rs {s.net_pnl:,.2f} (charges Rs {s.charges:,.2f}), "
                f"{s.trades:,} fills, {s.round_trips:,} round trips, win rate {win}"
            )
        return lines


def _round(value: float | None) -> float | None:
    # Rounded so the JSON never shows float noise that a different libm could change.
    return None if value is None else round(value, 10)


def max_drawdown(equity: Sequence[Decimal]) -> tuple[Decimal, float]:
    """Largest fall from a running peak, in rupees and as a fraction of that peak."""
    peak: Decimal | None = None
    worst, worst_pct = ZERO, 0.0
    for value in equity:
        peak = value if peak is None or value > peak else peak
        fall = peak - value
        if fall > worst:
            worst = fall
            worst_pct = float(fall / peak) if peak > 0 else 0.0
    return worst, worst_pct


def sharpe_ratio(equity: Sequence[Decimal], capital: Decimal, periods: float) -> float | None:
    """Annualised Sharpe of per-period equity changes over `capital`; None below 2 returns or 0 spread."""
    if capital <= 0:
        return None
    returns = [float((b - a) / capital) for a, b in itertools.pairwise(equity)]
    if len(returns) < 2:
        return None
    spread = statistics.stdev(returns)
    if spread == 0:
        return None
    return statistics.fmean(returns) / spread * math.sqrt(periods)


def build_report(
    tracker: EquityTracker,
    fills: Sequence[FillRecord],
    *,
    ticks: int,
    events: dict[str, int],
    strategy_failures: Mapping[str, int] | None = None,
) -> Report:
    curve = tracker.curve
    equity = [p.equity for p in curve]
    final = equity[-1] if equity else tracker.starting_cash
    # From the starting cash: a run whose first sample is already down (a fill and its charges
    # on the first tick) has fallen from it.
    drawdown, drawdown_pct = max_drawdown([tracker.starting_cash, *equity])
    wins = sum(1 for pnl in tracker.trips if pnl > 0)
    in_market = sum(1 for p in curve if p.gross_exposure > 0)
    bar = tracker.bar_seconds
    return Report(
        starting_cash=tracker.starting_cash,
        net_pnl=final - tracker.starting_cash,
        charges=tracker.charges,
        gross_pnl=final - tracker.starting_cash + tracker.charges,
        trades=len(fills),
        round_trips=len(tracker.trips),
        winning_trips=wins,
        win_rate=wins / len(tracker.trips) if tracker.trips else None,
        max_drawdown=drawdown,
        max_drawdown_pct=drawdown_pct,
        sharpe=sharpe_ratio(equity, tracker.starting_cash, periods_per_year(bar)),
        sharpe_basis=f"per-{bar:g}s-bar returns on starting cash, "
        f"x sqrt({periods_per_year(bar):,.0f} bars/yr)",
        time_in_market_pct=in_market / len(curve) if curve else 0.0,
        max_gross_exposure=max((p.gross_exposure for p in curve), default=ZERO),
        ticks=ticks,
        events=events,
        curve=tuple(curve),
        fills=tuple(fills),
        strategies=tracker.strategy_results(),
        strategy_failures=dict(strategy_failures or {}),
    )


def drawdown_series(equity: list[float], starting_cash: float | None = None) -> list[float]:
    """Each sample's fall below the running peak so far, in rupees (0 or negative), the peak
    starting at `starting_cash` if given (as `max_drawdown` measures it), for the plots."""
    out: list[float] = []
    if not equity:
        return out
    peak = equity[0] if starting_cash is None else max(equity[0], starting_cash)
    for value in equity:
        peak = max(peak, value)
        out.append(value - peak)
    return out


def plot_svg(report: Report, width: int = 900, height: int = 420) -> str:
    """Equity curve over drawdown as a self-contained SVG: no plotting library needed."""
    curve = report.curve
    top_h, gap = int(height * 0.62), 30
    bottom_h = height - top_h - gap
    pad = 60
    if len(curve) < 2:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            '<text x="20" y="40">not enough equity samples to plot</text></svg>'
        )
    eq = [float(p.equity) for p in curve]
    dd = drawdown_series(eq, float(report.starting_cash))
    lo, hi = min(eq), max(eq)
    hi = hi if hi > lo else lo + 1
    dlo = min(dd) if min(dd) < 0 else -1.0
    n = len(eq) - 1
    plot_w = width - pad - 20

    def x(i: int) -> float:
        return pad + plot_w * i / n

    def line(values: list[float], y0: float, h: float, vmin: float, vmax: float) -> str:
        return " ".join(
            f"{x(i):.1f},{y0 + h - (v - vmin) / (vmax - vmin) * h:.1f}" for i, v in enumerate(values)
        )

    first, last = curve[0].at.isoformat(), curve[-1].at.isoformat()
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{pad}" y="14">equity (Rs): {lo:,.2f} .. {hi:,.2f}</text>',
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" '
            f'points="{line(eq, 20, top_h - 20, lo, hi)}"/>',
            f'<text x="{pad}" y="{top_h + gap - 6}">drawdown (Rs): {dlo:,.2f} .. 0</text>',
            f'<polyline fill="none" stroke="#d62728" stroke-width="1.2" '
            f'points="{line(dd, top_h + gap, bottom_h - 15, dlo, 0.0)}"/>',
            f'<text x="{pad}" y="{height - 2}">{first}</text>',
            f'<text x="{width - 20}" y="{height - 2}" text-anchor="end">{last}</text>',
            "</svg>",
        ]
    )


def plot_html(report: Report) -> str:
    """The SVG plot and the summary in one standalone HTML page."""
    rows = "\n".join(f"<li><pre>{line}</pre></li>" for line in report.summary_lines())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Alpha Panda backtest</title></head>"
        f"<body><h1>Backtest</h1><ul>{rows}</ul>{plot_svg(report)}</body></html>\n"
    )
