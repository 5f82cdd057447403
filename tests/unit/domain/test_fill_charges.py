"""Charges per fill: each fill pays its share, and an order's fills sum to the order's charges."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.charges import (
    ChargeBreakdown,
    ChargeRates,
    ExecutedOrder,
    Segment,
    charges_for,
    load_charge_schedule,
)
from alphapanda.domain.fills import OrderExecution, charge_lines
from alphapanda.events import Side

D = Decimal
SCHEDULE = load_charge_schedule()
DAY = date(2026, 1, 5)


@pytest.fixture(scope="module")
def intraday() -> ChargeRates:
    return SCHEDULE.rates_on(DAY, Segment.EQUITY_INTRADAY, "NSE")


def test_after_fill_when_order_fills_in_three_parts_then_brokerage_cap_is_charged_once(
    intraday: ChargeRates,
) -> None:
    executed = OrderExecution()
    paid = []
    for quantity, price in [(300, "1480.00"), (300, "1480.05"), (400, "1480.10")]:
        executed, charge = executed.after_fill(Side.BUY, quantity, D(price), intraday)
        paid.append(charge)

    whole = charges_for(ExecutedOrder(Side.BUY, 1000, executed.average_price), intraday)
    # Each part alone would hit the Rs 20 cap (Rs 60 in all); the order pays it once.
    assert [c.brokerage for c in paid] == [D("20.00"), D("0.00"), D("0.00")]
    assert sum(c.total for c in paid) == whole.total
    assert sum(c.stamp_duty for c in paid) == whole.stamp_duty
    assert (executed.quantity, executed.value) == (1000, D("1480055.00"))


def test_after_fill_when_one_fill_is_the_whole_order_then_it_pays_exactly_charges_for(
    intraday: ChargeRates,
) -> None:
    _, charge = OrderExecution().after_fill(Side.SELL, 10, D("1480.35"), intraday)

    assert charge == charges_for(ExecutedOrder(Side.SELL, 10, D("1480.35")), intraday)
    assert charge_lines(charge).stt == charge.stt


def test_order_execution_when_round_tripped_through_json_then_unchanged(intraday: ChargeRates) -> None:
    executed, _ = OrderExecution().after_fill(Side.BUY, 7, D("99.95"), intraday)

    assert OrderExecution.from_json(executed.to_json()) == executed


@given(
    parts=st.lists(
        st.tuples(st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=400_000)),
        min_size=1,
        max_size=6,
    ),
    side=st.sampled_from(Side),
)
def test_after_fill_when_any_split_then_fills_sum_to_the_orders_charges_per_component(
    parts: list[tuple[int, int]], side: Side
) -> None:
    rates = SCHEDULE.rates_on(DAY, Segment.EQUITY_INTRADAY, "NSE")
    executed = OrderExecution()
    paid = []
    for quantity, paise in parts:
        executed, charge = executed.after_fill(side, quantity, D(paise) / 100, rates)
        paid.append(charge)

    # On the exact traded value (one unit at the whole value), not an average multiplied back.
    whole = charges_for(ExecutedOrder(side, 1, executed.value), rates)
    for component in ("brokerage", "stt", "exchange_txn", "sebi", "gst", "stamp_duty"):
        assert sum(getattr(c, component) for c in paid) == getattr(whole, component)
    assert all(c.total >= 0 for c in paid)


@given(
    quantity=st.integers(min_value=1, max_value=5000),
    paise=st.integers(min_value=1, max_value=400_000),
    side=st.sampled_from(Side),
    segment=st.sampled_from([Segment.EQUITY_INTRADAY, Segment.EQUITY_DELIVERY]),
)
def test_after_fill_when_first_fill_then_its_charges_are_the_subtraction_from_nothing_to_the_digit(
    quantity: int, paise: int, side: Side, segment: Segment
) -> None:
    # A first fill skips subtracting the (zero) earlier charges: the result must be what the
    # subtraction from an all-zero breakdown gives, to the digit (exponent and sign included).
    rates = SCHEDULE.rates_on(DAY, segment, "NSE")
    price = D(paise) / 100
    executed, charge = OrderExecution().after_fill(side, quantity, price, rates)
    # A breakdown of zeros that is not the shared "nothing charged yet" one: the subtraction runs.
    _, subtracted = OrderExecution(charged=ChargeBreakdown.zero()).after_fill(side, quantity, price, rates)

    assert [str(v) for v in charge.as_dict().values()] == [str(v) for v in subtracted.as_dict().values()]
    assert charge == executed.charged
