"""A delivery (CNC) strategy next to an intraday (MIS) one, in a backtest across the 15:20
square-off and the 15:30 close: the CNC position is kept, pays delivery charges, never goes
short, and the fast path gives what the general path gives."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda.config import Settings, load_settings
from alphapanda.events import IST, Event, OrderFilled, Product, Side
from alphapanda.feed import TickStamper
from alphapanda.runtime.backtest import Backtest, BacktestResult, BacktestStateStore
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.feed import fixed_simulation

STRATEGIES = """
strategies:
  - name: intraday
    kind: ema_crossover
    instruments: [RELIANCE, INFY]
    brokers: [paper]
    params: {fast: 3, slow: 8, quantity: 20}
  - name: delivery
    kind: ema_crossover
    instruments: [RELIANCE, INFY]
    brokers: [paper]
    product: CNC
    params: {fast: 3, slow: 8, quantity: 20, long_only: true}
"""
START = datetime(2026, 1, 5, 15, 5, tzinfo=IST)
"""Fifteen minutes before the square-off, twenty-five before the close (a Monday)."""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("cnc") / "strategies.yaml"
    path.write_text(STRATEGIES)
    return load_settings(brokers=("paper",), strategies_file=path, broker={"paper": {"starting_cash": 10**8}})


def _ticks(settings: Settings, *starts: datetime) -> list[Event]:
    """Half an hour of ticks of RELIANCE and INFY (one a second each) from each of `starts`."""
    instruments = [i for i in build_core(settings).instruments if i.tradingsymbol in ("RELIANCE", "INFY")]
    stamper = TickStamper()
    return [stamper.stamp(t) for at in starts for t in fixed_simulation(instruments, 11, at, 2 * 30 * 60)]


@pytest.fixture(scope="module")
def runs(settings: Settings) -> tuple[BacktestResult, BacktestResult]:
    ticks = _ticks(settings, START)
    return tuple(  # type: ignore[return-value]
        Backtest(build_core(settings), BacktestStateStore(), fast=fast).run(ticks) for fast in (False, True)
    )


def _fills(result: BacktestResult, strategy: str) -> list[OrderFilled]:
    return [e.data for e in result.fills if isinstance(e.data, OrderFilled) and e.data.strategy == strategy]


def test_backtest_when_a_strategy_trades_cnc_then_its_position_outlives_the_square_off(
    runs: tuple[BacktestResult, BacktestResult],
) -> None:
    general, _ = runs
    intraday, delivery = _fills(general, "intraday"), _fills(general, "delivery")
    assert intraday and delivery
    assert {f.product for f in delivery} == {Product.CNC}
    assert not any(f.flatten for f in delivery), "the square-off closed a delivery position"
    held: Counter[int] = Counter()
    for fill in delivery:
        held[fill.instrument_token] += fill.side.sign * fill.quantity
        assert held[fill.instrument_token] >= 0, "a delivery strategy went short"
    assert any(held.values()), "no delivery position was held at the end: the workload proves nothing"
    # The intraday strategy was flattened at 15:20; its positions end flat.
    net: Counter[int] = Counter()
    for fill in intraday:
        net[fill.instrument_token] += fill.side.sign * fill.quantity
    assert any(f.flatten for f in intraday) and not any(net.values())


def test_backtest_when_a_strategy_trades_cnc_then_it_pays_delivery_charges(
    runs: tuple[BacktestResult, BacktestResult],
) -> None:
    general, _ = runs
    # Delivery pays STT on the buy as well (0.1%); intraday only on the sell (0.025%).
    delivery_buys = [f for f in _fills(general, "delivery") if f.side is Side.BUY]
    intraday_buys = [f for f in _fills(general, "intraday") if f.side is Side.BUY and not f.flatten]
    assert delivery_buys and intraday_buys
    assert all(f.charge_lines is not None and f.charge_lines.stt > 0 for f in delivery_buys)
    assert all(f.charge_lines is not None and f.charge_lines.stt == 0 for f in intraday_buys)


def test_backtest_when_a_strategy_trades_cnc_then_the_fast_path_equals_the_general_path(
    runs: tuple[BacktestResult, BacktestResult],
) -> None:
    general, fast = runs
    assert fast.report.dumps() == general.report.dumps()
    assert [(e.id, e.data) for e in fast.fills] == [(e.id, e.data) for e in general.fills]


TUESDAY_OPEN = datetime(2026, 1, 6, 9, 15, tzinfo=IST)


@pytest.fixture(scope="module")
def two_days(settings: Settings) -> tuple[BacktestResult, BacktestResult]:
    ticks = _ticks(settings, START, TUESDAY_OPEN)
    return tuple(  # type: ignore[return-value]
        Backtest(build_core(settings), BacktestStateStore(), fast=fast).run(ticks) for fast in (False, True)
    )


def test_backtest_when_a_delivery_holding_is_sold_next_day_then_the_report_takes_one_dp_charge_a_scrip(
    two_days: tuple[BacktestResult, BacktestResult],
) -> None:
    general, fast = two_days
    records = general.report.fills
    charged = [f for f in records if f.dp_charges]
    assert charged, "no delivery holding was sold on Tuesday: the workload proves nothing"
    # Rs 13.5 + 18% GST, on a Tuesday delivery sell, once per scrip and day.
    assert {f.dp_charges for f in charged} == {Decimal("15.93")}
    assert all(f.strategy == "delivery" and f.side is Side.SELL for f in charged)
    assert all(f.filled_at.date() == TUESDAY_OPEN.date() for f in charged)
    assert len({f.instrument_token for f in charged}) == len(charged)
    # The report's charges are the fills' own plus the DP charges.
    assert general.report.charges == sum((f.charges + f.dp_charges for f in records), Decimal(0))
    assert fast.report.dumps() == general.report.dumps()
    dp = sum((f.dp_charges for f in charged), Decimal(0))
    assert f"of which DP Rs {dp:,.2f})" in general.report.summary_lines()[1]
