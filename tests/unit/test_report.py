"""The backtest report's statistics, checked against figures worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda.domain.report import (
    EquityTracker,
    FillRecord,
    build_report,
    max_drawdown,
    periods_per_year,
    sharpe_ratio,
)
from alphapanda.events import Side

T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
CURVE = [Decimal(v) for v in ("100", "110", "105", "120", "90", "95")]


def _fill(n: int, side: Side, quantity: int, price: str, charges: str = "0") -> FillRecord:
    return FillRecord(
        fill_id=f"f{n}",
        order_id=f"o{n}",
        strategy="s",
        instrument_token=1,
        tradingsymbol="X",
        side=side,
        quantity=quantity,
        price=Decimal(price),
        charges=Decimal(charges),
        filled_at=T0 + timedelta(seconds=n),
    )


def test_max_drawdown_when_equity_falls_from_its_peak_then_the_largest_fall_and_its_share() -> None:
    # Peak 120, then 90: a fall of 30, a quarter of the peak (the earlier 110 -> 105 is smaller).
    assert max_drawdown(CURVE) == (Decimal(30), 0.25)


def test_max_drawdown_when_equity_only_rises_then_zero() -> None:
    assert max_drawdown([Decimal(1), Decimal(2)]) == (Decimal(0), 0.0)


def test_sharpe_when_given_a_tiny_curve_then_mean_over_sample_stdev_times_root_periods() -> None:
    # Returns on capital 100: .10, -.05, .15, -.30, .05; mean -.01; squared deviations sum to
    # .127, sample variance .127 / 4 = .03175.
    expected = -0.01 / math.sqrt(0.03175) * math.sqrt(4)
    assert sharpe_ratio(CURVE, Decimal(100), 4) == pytest.approx(expected)


def test_sharpe_when_equity_never_moves_then_none() -> None:
    assert sharpe_ratio([Decimal(5)] * 4, Decimal(100), 1) is None


def test_periods_per_year_when_bar_is_a_minute_then_252_sessions_of_375_minutes() -> None:
    assert periods_per_year(60) == 252 * 375


def test_win_rate_when_a_flip_closes_a_losing_trip_then_one_win_in_three_round_trips() -> None:
    tracker = EquityTracker(starting_cash=Decimal(10_000))
    fills = [
        _fill(1, Side.BUY, 10, "100"),  # long 10 @ 100
        _fill(2, Side.SELL, 10, "110", "1"),  # flat: trip +100 - 1 charge = +99 (a win)
        _fill(3, Side.SELL, 10, "110"),  # short 10 @ 110
        _fill(4, Side.BUY, 20, "115"),  # flip: short trip -50; long 10 @ 115
        _fill(5, Side.SELL, 10, "112"),  # flat: long trip -30
    ]
    for f in fills:
        tracker.on_fill(f)
        tracker.on_mark(1, f.price, f.filled_at)
    tracker.finish()
    report = build_report(tracker, fills, ticks=5, events={})
    assert tracker.trips == [Decimal(99), Decimal(-50), Decimal(-30)]
    assert report.round_trips == 3
    assert report.win_rate == pytest.approx(1 / 3)
    assert report.charges == Decimal(1)
    assert report.net_pnl == Decimal(19)  # 99 - 50 - 30
    assert report.gross_pnl == Decimal(20)
