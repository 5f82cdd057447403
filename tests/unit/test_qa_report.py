"""QA: the backtest report checked by hand: PnL and charges, round trips and win rate, drawdown,
Sharpe with no spread, exposure, an empty run, and the JSON's validity and exact money."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alphapanda.domain.report import EquityTracker, FillRecord, Report, build_report, plot_html, sharpe_ratio
from alphapanda.events import Side

D = Decimal
T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
BAR = timedelta(seconds=60)


def _fill(
    n: int, side: Side, quantity: int, price: str, charges: str = "0", *, strategy: str = "s", token: int = 1
) -> FillRecord:
    return FillRecord(
        fill_id=f"f{n}",
        order_id=f"o{n}",
        strategy=strategy,
        instrument_token=token,
        tradingsymbol="X",
        side=side,
        quantity=quantity,
        price=D(price),
        charges=D(charges),
        filled_at=T0 + n * BAR,
    )


def _replay(
    fills_by_bar: dict[int, list[FillRecord]], marks: list[str], cash: str = "10000", token: int = 1
) -> tuple[EquityTracker, Report]:
    """Bar i: its fills, then a mark of `token` at marks[i] (as the backtest runs a tick)."""
    tracker = EquityTracker(starting_cash=D(cash))
    done: list[FillRecord] = []
    for i, price in enumerate(marks):
        for f in fills_by_bar.get(i, []):
            tracker.on_fill(f)
            done.append(f)
        tracker.on_mark(token, D(price), T0 + i * BAR)
    tracker.finish()
    return tracker, build_report(tracker, done, ticks=len(marks), events={})


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- PnL, charges ------------------------------------------------------------------------------


def test_qa_net_pnl_is_gross_less_charges_counted_once_with_the_open_rest_marked_at_the_last_mark() -> None:
    fills = {
        0: [_fill(0, Side.BUY, 100, "100", "3.10")],
        1: [_fill(1, Side.SELL, 250, "110", "8.45")],  # flip: +1,000 realised, short 150 @ 110
    }
    _, report = _replay(fills, ["100", "110", "108"])
    # realised 1,000; the short 150 marked at 108: 150 x 2 = +300 -> gross 1,300
    # charges 3.10 + 8.45 = 11.55 -> net 1,288.45
    assert report.gross_pnl == D("1300")
    assert report.charges == D("11.55")
    assert report.net_pnl == D("1288.45")
    assert report.trades == 2


def test_qa_final_equity_includes_fills_at_the_instant_of_the_last_sample() -> None:
    # Two ticks at the same exchange time (common: one-second stamps, many instruments). The
    # first samples the bar; the second brings a fill. The closing equity must include it.
    tracker = EquityTracker(starting_cash=D("10000"))
    tracker.on_mark(1, D("100"), T0)
    fill = FillRecord("f", "o", "s", 1, "X", Side.BUY, 10, D("100"), D("5"), T0)
    tracker.on_fill(fill)
    tracker.on_mark(1, D("100"), T0)
    tracker.finish()
    report = build_report(tracker, [fill], ticks=2, events={})

    # bought 10 @ 100, marked at 100: nothing gained, 5 of charges paid -> net -5, gross 0
    assert report.net_pnl == D("-5")
    assert report.gross_pnl == D("0")
    assert report.curve[-1].equity == D("9995")
    assert report.curve[-1].gross_exposure == D("1000")


def test_qa_each_strategys_part_is_its_own_fills_charges_trips_and_open_rest_and_the_parts_add_up() -> None:
    fills = {
        # "fast" wins a round trip (+200 - 4 of charges) then opens a short it still holds.
        0: [
            _fill(0, Side.BUY, 10, "100", "2", strategy="fast"),
            _fill(1, Side.BUY, 5, "100", "1", strategy="slow"),
        ],
        1: [_fill(2, Side.SELL, 30, "120", "2", strategy="fast")],  # +200 realised, short 20 @ 120
        # "slow" loses its round trip (-50 - 1 - 1 of charges).
        2: [_fill(3, Side.SELL, 5, "90", "1", strategy="slow")],
    }
    _, report = _replay(fills, ["100", "120", "90", "110"])

    fast, slow = report.strategies
    assert (fast.strategy, slow.strategy) == ("fast", "slow")
    # fast: +200 realised, short 20 from 120 marked at 110 = +200, charges 4 -> net 396
    assert (fast.net_pnl, fast.charges, fast.open_value) == (D("396"), D("4"), D("-2200"))
    assert (fast.trades, fast.round_trips, fast.winning_trips, fast.win_rate) == (2, 1, 1, 1.0)
    # slow: -50 realised, charges 2 -> net -52, flat at the end
    assert (slow.net_pnl, slow.charges, slow.open_value) == (D("-52"), D("2"), D("0"))
    assert (slow.trades, slow.round_trips, slow.winning_trips, slow.win_rate) == (2, 1, 0, 0.0)
    assert fast.net_pnl + slow.net_pnl == report.net_pnl
    assert fast.charges + slow.charges == report.charges

    lines = report.summary_lines()
    assert lines[-2].startswith("by strategy     fast  net Rs 396.00 (charges Rs 4.00), 2 fills, 1 round")
    assert lines[-1].startswith("                slow  net Rs -52.00 (charges Rs 2.00), 2 fills")
    assert _strict(report.dumps())["strategies"]["fast"] == {
        "net_pnl": "396",
        "charges": "4",
        "trades": 2,
        "round_trips": 1,
        "winning_trips": 1,
        "win_rate": 1.0,
        "open_value": "-2200",
    }


def test_qa_one_strategy_gets_no_by_strategy_lines_as_they_would_repeat_the_totals() -> None:
    _, report = _replay({0: [_fill(0, Side.BUY, 10, "100")]}, ["100", "101"])

    (only,) = report.strategies
    assert only.net_pnl == report.net_pnl == D("10")
    assert not any(line.startswith("by strategy") for line in report.summary_lines())


# --- round trips and win rate -----------------------------------------------------------------


def test_qa_win_rate_counts_round_trips_net_of_charges_not_fills() -> None:
    fills = {
        0: [_fill(0, Side.BUY, 10, "100")],
        1: [_fill(1, Side.SELL, 5, "102"), _fill(2, Side.SELL, 5, "101")],  # trip +10 +5 = +15: win
        2: [_fill(3, Side.BUY, 10, "100", "2"), _fill(4, Side.SELL, 10, "100.10", "0")],  # +1 - 2: loss
        3: [_fill(5, Side.SELL, 10, "100")],  # short 10 @ 100, still open at the end: no trip
    }
    _, report = _replay(fills, ["100", "101", "100", "100", "100"])
    # 6 fills, 2 closed round trips, one of them a win
    assert (report.trades, report.round_trips, report.winning_trips) == (6, 2, 1)
    assert report.win_rate == 0.5


def test_qa_a_break_even_trip_at_a_non_terminating_average_is_not_a_win() -> None:
    # buy 1 @ 100 + 2 @ 100.50 = 301 paid, sell 1 @ 100 + 2 @ 100.50 = 301 received: PnL 0,
    # neither a win nor (by the docstring's pnl > 0) counted as one
    fills = {
        0: [_fill(0, Side.BUY, 1, "100"), _fill(1, Side.BUY, 2, "100.50")],
        1: [_fill(2, Side.SELL, 1, "100"), _fill(3, Side.SELL, 2, "100.50")],
    }
    tracker, report = _replay(fills, ["100", "100"])

    assert tracker.trips == [D("0")]
    assert (report.round_trips, report.winning_trips, report.win_rate) == (1, 0, 0.0)
    assert report.net_pnl == D("0")


def test_qa_round_trips_are_kept_per_strategy_and_instrument() -> None:
    # alpha long 10 @ 100 on token 1, beta short 10 @ 100 on token 1: they do not net out
    fills = {
        0: [_fill(0, Side.BUY, 10, "100", strategy="alpha"), _fill(1, Side.SELL, 10, "100", strategy="beta")],
        1: [_fill(2, Side.SELL, 10, "103", strategy="alpha"), _fill(3, Side.BUY, 10, "103", strategy="beta")],
    }
    tracker, report = _replay(fills, ["100", "103"])
    # alpha +30, beta -30 (order of closing: alpha first)
    assert tracker.trips == [D("30"), D("-30")]
    assert report.win_rate == 0.5
    # gross exposure at bar 0: |10| x 100 + |-10| x 100 = 2,000 although net flat
    assert report.max_gross_exposure == D("2000")


# --- drawdown -----------------------------------------------------------------------------------


def test_qa_max_drawdown_of_a_curve_that_only_rises_is_zero() -> None:
    _, report = _replay({0: [_fill(0, Side.BUY, 10, "100")]}, ["100", "101", "101", "105"])
    # equity 10,000 -> 10,010 -> 10,010 -> 10,050: never below a running peak
    assert (report.max_drawdown, report.max_drawdown_pct) == (D("0"), 0.0)


def test_qa_max_drawdown_of_a_known_curve() -> None:
    _, report = _replay({0: [_fill(0, Side.BUY, 10, "100")]}, ["100", "110", "95", "120", "102", "104"])
    # equity 10,000, 10,100, 9,950, 10,200, 10,020, 10,040: falls 150 from 10,100 and 180 from
    # 10,200; the largest is 180, 180 / 10,200 of that peak
    assert report.max_drawdown == D("180")
    assert report.max_drawdown_pct == pytest.approx(180 / 10200)


def test_qa_max_drawdown_counts_a_fall_below_the_starting_cash_before_the_first_sample() -> None:
    # The first tick already fills (charges 10) and marks below the fill price: the first sample
    # is 10,000 - 10 - 10 x 0.5 = 9,985. Equity then recovers to 10,005. The starting cash is the
    # first peak, so the drawdown is 15 (15 / 10,000 of it), not 0.
    _, report = _replay({0: [_fill(0, Side.BUY, 10, "100.50", "10")]}, ["100", "102"])

    assert [p.equity for p in report.curve] == [D("9985"), D("10005")]
    assert report.max_drawdown == D("15")
    assert report.max_drawdown_pct == pytest.approx(15 / 10000)


# --- Sharpe -------------------------------------------------------------------------------------


def test_qa_sharpe_with_zero_variance_is_none_null_and_n_a_not_a_division_by_zero() -> None:
    # no trades: equity 10,000 at every bar, returns all 0, spread 0
    _, flat = _replay({}, ["100"] * 5)
    # a steady rise: +10 every bar, returns all 0.001, spread 0 (docstring: None at 0 spread)
    _, steady = _replay({0: [_fill(0, Side.BUY, 10, "100")]}, ["100", "101", "102", "103", "104"])

    for report in (flat, steady):
        assert report.sharpe is None
        assert _strict(report.dumps())["sharpe"] is None
        assert "Sharpe          n/a" in "\n".join(report.summary_lines())


def test_qa_sharpe_of_a_known_curve() -> None:
    # equity 100, 101, 103 on capital 100: returns .01, .02; mean .015; sample stdev
    # sqrt(((-.005)^2 + .005^2) / 1) = .00707107; x sqrt(4) periods
    expected = 0.015 / math.sqrt(0.00005) * 2
    assert sharpe_ratio([D(100), D(101), D(103)], D(100), 4) == pytest.approx(expected)
    # a single return is not a statistic
    assert sharpe_ratio([D(100), D(101)], D(100), 4) is None


# --- exposure -----------------------------------------------------------------------------------


def test_qa_exposure_is_share_of_bars_with_an_open_position_and_the_largest_gross_value() -> None:
    fills = {1: [_fill(1, Side.SELL, 20, "100")], 3: [_fill(3, Side.BUY, 20, "98")]}
    _, report = _replay(fills, ["100", "100", "105", "98", "99"])
    # bars: flat, short 20 @ 100 (gross 2,000), 20 x 105 = 2,100, flat, flat -> 2 of 5 bars
    assert report.time_in_market_pct == pytest.approx(2 / 5)
    assert report.max_gross_exposure == D("2100")
    # realised 20 x (100 - 98) = 40
    assert report.net_pnl == D("40")


# --- empty runs and JSON ------------------------------------------------------------------------


def test_qa_an_empty_run_gives_a_sane_report() -> None:
    tracker = EquityTracker(starting_cash=D("500000"))
    tracker.finish()
    report = build_report(tracker, [], ticks=0, events={})

    assert (report.net_pnl, report.gross_pnl, report.charges, report.max_drawdown) == (D(0), D(0), D(0), D(0))
    assert (report.trades, report.round_trips, report.win_rate, report.sharpe) == (0, 0, None, None)
    assert (report.time_in_market_pct, report.max_gross_exposure) == (0.0, D(0))
    raw = _strict(report.dumps())
    assert raw["win_rate"] is None and raw["equity_curve"] == [] and raw["fills"] == []
    assert "win rate n/a" in "\n".join(report.summary_lines())
    assert "not enough equity samples" in plot_html(report)


def test_qa_ticks_without_trades_give_a_flat_report() -> None:
    _, report = _replay({}, ["100", "101", "99"])
    assert [p.equity for p in report.curve] == [D("10000")] * 3
    assert (report.net_pnl, report.max_drawdown, report.time_in_market_pct) == (D(0), D(0), 0.0)


MONEY = ("starting_cash", "net_pnl", "gross_pnl", "charges", "max_drawdown", "max_gross_exposure")


def test_qa_json_is_strict_json_with_money_as_exact_decimal_text() -> None:
    fills = {
        0: [_fill(0, Side.BUY, 1, "100.05", "0.01"), _fill(1, Side.BUY, 2, "100.10", "0.02")],
        1: [_fill(2, Side.SELL, 3, "100.20", "0.03")],
    }
    _, report = _replay(fills, ["100.05", "100.20", "100.20"])
    raw = _strict(report.dumps())

    for name in MONEY:
        assert isinstance(raw[name], str), name
        assert D(raw[name]) == getattr(report, name), name
    # paid 100.05 + 200.20 = 300.25, got 300.60: gross 0.35; charges 0.06; net 0.29
    assert (D(raw["gross_pnl"]), D(raw["charges"]), D(raw["net_pnl"])) == (D("0.35"), D("0.06"), D("0.29"))
    for point, kept in zip(raw["equity_curve"], report.curve, strict=True):
        assert D(point["equity"]) == kept.equity and isinstance(point["equity"], str)
    for fill, kept_fill in zip(raw["fills"], report.fills, strict=True):
        assert (D(fill["price"]), D(fill["charges"])) == (kept_fill.price, kept_fill.charges)
    for name in ("win_rate", "max_drawdown_pct", "time_in_market_pct"):
        assert raw[name] is None or isinstance(raw[name], float | int), name
    assert report.dumps() == report.dumps()
