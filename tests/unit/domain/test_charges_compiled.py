"""`charges_for` computes with each rate entry compiled once (rates divided by 100 up front):
every component equals the textbook formula `round(turnover x rate / 100)`, for every entry of
the shipped schedule, either side, any quantity and price."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.charges import (
    ChargeRates,
    ExecutedOrder,
    FlatBrokerage,
    Rounding,
    charges_for,
    load_charge_schedule,
)
from alphapanda.events import Side

ENTRIES = load_charge_schedule().entries
EXACT = Context(prec=50, rounding=ROUND_HALF_UP)


def _round(rounding: Rounding, amount: Decimal) -> Decimal:
    if rounding is Rounding.PAISA:
        return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return amount.quantize(Decimal(1), rounding=ROUND_HALF_UP).quantize(Decimal("0.01"))


def _textbook(side: Side, quantity: int, price: Decimal, rates: ChargeRates) -> tuple[Decimal, ...]:
    with localcontext(EXACT):
        turnover = price * quantity
        b = rates.brokerage
        if isinstance(b, FlatBrokerage):
            brokerage = _round(b.rounding, b.amount)
        else:
            amount = turnover * b.rate_pct / 100
            brokerage = _round(b.rounding, min(amount, b.cap) if b.cap is not None else amount)
        stt = (
            _round(rates.stt.rounding, turnover * rates.stt.rate_pct / 100)
            if rates.stt.side.applies_to(side)
            else Decimal("0.00")
        )
        txn = _round(rates.exchange_txn.rounding, turnover * rates.exchange_txn.rate_pct / 100)
        sebi = _round(rates.sebi.rounding, turnover * rates.sebi.per_crore / 10_000_000)
        gst = _round(rates.gst.rounding, (brokerage + txn + sebi) * rates.gst.rate_pct / 100)
        stamp = (
            _round(rates.stamp_duty.rounding, turnover * rates.stamp_duty.rate_pct / 100)
            if rates.stamp_duty.side.applies_to(side)
            else Decimal("0.00")
        )
    return brokerage, stt, txn, sebi, gst, stamp


@given(
    st.sampled_from(range(len(ENTRIES))),
    st.sampled_from(list(Side)),
    st.integers(min_value=1, max_value=200_000),
    st.decimals(min_value=Decimal("0.05"), max_value=Decimal("90000"), places=4),
)
def test_charges_when_computed_from_compiled_rates_then_each_component_is_the_textbook_formula(
    index: int, side: Side, quantity: int, price: Decimal
) -> None:
    rates = ENTRIES[index]
    got = charges_for(ExecutedOrder(side, quantity, price), rates)
    want = _textbook(side, quantity, price, rates)
    assert (got.brokerage, got.stt, got.exchange_txn, got.sebi, got.gst, got.stamp_duty) == want
    # The same digits, not only the same values: the components are stored and printed.
    assert [str(v) for v in want] == [
        str(v) for v in (got.brokerage, got.stt, got.exchange_txn, got.sebi, got.gst, got.stamp_duty)
    ]
