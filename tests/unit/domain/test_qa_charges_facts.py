"""QA audit of paper charges against /work/shared/reference/facts.md, section 7 "Equity charges
(Zerodha)". Each test names the fact it checks.

An order filled in parts is charged on its whole turnover (Zerodha's charges are per executed
order), so the sum of what its fills pay must be exactly what the same turnover pays in one
fill: the turnover is the exact sum of price x quantity of the fills, never an average price
multiplied back (2500 / 3 is no finite decimal).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from alphapanda.domain.charges import ChargeRates, ExecutedOrder, Segment, charges_for, load_charge_schedule
from alphapanda.domain.fills import OrderExecution
from alphapanda.events import Side

D = Decimal
SCHEDULE = load_charge_schedule()
DAY = date(2026, 4, 6)
COMPONENTS = ("brokerage", "stt", "exchange_txn", "sebi", "gst", "stamp_duty")


def _rates(segment: Segment) -> ChargeRates:
    return SCHEDULE.rates_on(DAY, segment, "NSE")


def _filled(side: Side, parts: list[tuple[int, Decimal]], rates: ChargeRates) -> dict[str, Decimal]:
    """What the fills of one order pay in all, per component."""
    executed = OrderExecution()
    paid = {name: D(0) for name in COMPONENTS}
    for quantity, price in parts:
        executed, charge = executed.after_fill(side, quantity, price, rates)
        for name in COMPONENTS:
            paid[name] += getattr(charge, name)
    return paid


def test_after_fill_when_parts_turn_over_a_half_rupee_of_delivery_stt_then_it_rounds_up() -> None:
    # facts.md §7 "Equity charges (Zerodha)": "STT: delivery 0.1% on buy and sell; ... rounded to
    # the nearest rupee". A delivery buy of 1 @ Rs 100 then 2 @ Rs 2,700 turns over Rs 5,500:
    # STT = 0.1% x 5,500 = Rs 5.50, which rounds (half up) to Rs 6, as one fill of Rs 5,500 pays.
    rates = _rates(Segment.EQUITY_DELIVERY)

    paid = _filled(Side.BUY, [(1, D("100.00")), (2, D("2700.00"))], rates)

    assert charges_for(ExecutedOrder(Side.BUY, 1, D("5500.00")), rates).stt == D("6.00")
    assert paid["stt"] == D("6.00")


@given(
    parts=st.lists(
        st.tuples(st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=400_000)),
        min_size=2,
        max_size=4,
    ),
    side=st.sampled_from(Side),
    segment=st.sampled_from(list(Segment)),
)
# Found by a brute-force search: each turns over Rs 1,000 n + 500, a delivery STT of exactly
# n.50 rupees, in parts whose average price is no finite decimal.
@example(parts=[(3479, 108232), (3048, 331539)], side=Side.BUY, segment=Segment.EQUITY_DELIVERY)
@example(parts=[(158, 65386), (39, 236310), (3018, 245329)], side=Side.SELL, segment=Segment.EQUITY_DELIVERY)
def test_after_fill_when_any_split_then_fills_pay_what_the_exact_turnover_pays(
    parts: list[tuple[int, int]], side: Side, segment: Segment
) -> None:
    # facts.md §7: every component is a rate on the order's turnover (brokerage min(0.03% x order
    # turnover, Rs 20) per executed order; STT, exchange charge, SEBI fee, stamp duty on turnover;
    # GST on brokerage + SEBI fee + transaction charges). Turnover is sum(price x quantity).
    # Multiples of 5 paise keep prices on the usual tick grid.
    rates = _rates(segment)
    priced = [(quantity, D(ticks * 5) / 100) for quantity, ticks in parts]
    turnover = sum((quantity * price for quantity, price in priced), D(0))

    paid = _filled(side, priced, rates)

    whole = charges_for(ExecutedOrder(side, 1, turnover), rates)
    assert paid == {name: getattr(whole, name) for name in COMPONENTS}


def test_after_fill_when_a_later_fill_has_no_positive_quantity_then_value_error() -> None:
    # facts.md §7: charges are rates on an executed order's turnover, so a fill must trade
    # something; a zero or negative "fill" would pay nothing or be refunded charges.
    rates = _rates(Segment.EQUITY_INTRADAY)
    executed, _ = OrderExecution().after_fill(Side.SELL, 100, D("1000.00"), rates)

    for quantity in (0, -50):
        with pytest.raises(ValueError, match="quantity"):
            executed.after_fill(Side.SELL, quantity, D("1000.00"), rates)
