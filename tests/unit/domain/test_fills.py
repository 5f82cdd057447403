"""Paper fill prices: the touch plus slippage, snapped to the tick grid against the trader."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.fills import paper_fill_price, snap_to_tick
from alphapanda.events import Side

D = Decimal
TICK = D("0.05")


def test_paper_fill_price_when_buying_then_ask_plus_slippage_rounded_up_to_tick() -> None:
    # 100.00 x 1.0002 = 100.02 -> next tick up is 100.05.
    assert paper_fill_price(Side.BUY, D("99.95"), D("100.00"), D("2"), TICK) == D("100.05")


def test_paper_fill_price_when_selling_then_bid_minus_slippage_rounded_down_to_tick() -> None:
    # 100.00 x 0.9998 = 99.98 -> next tick down is 99.95.
    assert paper_fill_price(Side.SELL, D("100.00"), D("100.05"), D("2"), TICK) == D("99.95")


@pytest.mark.parametrize(("side", "expected"), [(Side.BUY, D("1480.10")), (Side.SELL, D("1480.00"))])
def test_paper_fill_price_when_slippage_zero_then_fills_at_the_touch(side: Side, expected: Decimal) -> None:
    assert paper_fill_price(side, D("1480.00"), D("1480.10"), D("0"), TICK) == expected


def test_paper_fill_price_when_slipped_price_lands_on_grid_then_it_is_not_moved() -> None:
    # 1,000.00 x 1.0005 = 1,000.50, already a multiple of 0.05.
    assert paper_fill_price(Side.BUY, D("999.95"), D("1000.00"), D("5"), TICK) == D("1000.50")


def test_paper_fill_price_when_tick_is_one_paisa_then_rounds_to_the_paisa() -> None:
    # 123.45 x 1.0003 = 123.487035 -> 123.49;  123.40 x 0.9997 = 123.36298 -> 123.36.
    assert paper_fill_price(Side.BUY, D("123.40"), D("123.45"), D("3"), D("0.01")) == D("123.49")
    assert paper_fill_price(Side.SELL, D("123.40"), D("123.45"), D("3"), D("0.01")) == D("123.36")


def test_paper_fill_price_when_sell_slippage_would_reach_zero_then_floors_at_one_tick() -> None:
    # 0.05 x (1 - 0.1) = 0.045 -> rounds down to 0.00, which is no price: one tick instead.
    assert paper_fill_price(Side.SELL, D("0.05"), D("0.10"), D("1000"), TICK) == D("0.05")


@pytest.mark.parametrize(
    ("price", "up", "expected"),
    [
        ("100.01", True, "100.05"),
        ("100.01", False, "100.00"),
        ("100.05", True, "100.05"),
        ("100", False, "100.00"),
    ],
)
def test_snap_to_tick_when_rounding_then_goes_to_the_requested_side(
    price: str, up: bool, expected: str
) -> None:
    result = snap_to_tick(D(price), TICK, up=up)

    assert str(result) == expected


@given(
    bid_ticks=st.integers(min_value=1, max_value=2_000_000),
    spread_ticks=st.integers(min_value=1, max_value=10),
    bps=st.integers(min_value=0, max_value=1000),
)
def test_paper_fill_price_when_any_book_then_never_better_than_the_touch_and_on_grid(
    bid_ticks: int, spread_ticks: int, bps: int
) -> None:
    bid = bid_ticks * TICK
    ask = bid + spread_ticks * TICK

    buy = paper_fill_price(Side.BUY, bid, ask, D(bps), TICK)
    sell = paper_fill_price(Side.SELL, bid, ask, D(bps), TICK)

    assert ask <= buy < ask * (1 + D(bps) / 10000) + TICK
    assert sell <= bid or sell == TICK
    assert buy % TICK == 0
    assert sell % TICK == 0
