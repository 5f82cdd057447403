"""Paper broker review: cases a paper trader hits that the other paper tests do not pin down."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal as D

import pytest

from alphapanda.brokers.base import OrderIds
from alphapanda.brokers.paper import AccountView, PaperStep, PaperTrader
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.matching import Market
from alphapanda.events import IST, OrderCancelled, OrderFilled, OrderType, Product, Side, Signal

TOKEN = 738561
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
AFTER_SQUARE_OFF = datetime(2026, 1, 5, 15, 25, tzinfo=IST)
"""A Monday, after the 15:20 MIS square-off and before the 15:30 close."""
IDS = OrderIds(signal_id="sig-1", order_id="order-1", fill_id="fill-1")


def _signal(side: Side, quantity: int, product: Product, at: datetime) -> Signal:
    return Signal(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="s",
        side=side,
        quantity=quantity,
        order_type=OrderType.MARKET,
        product=product,
        reference_price=D("1480.00"),
        tick_time=at,
    )


def _step(signal: Signal, position: int = 0) -> PaperStep:
    trader = PaperTrader({TOKEN: RELIANCE})
    market = Market(D("1479.95"), D("1480.00"), D("1480.00"), signal.tick_time)
    return trader.place(
        signal, IDS, market, AccountView(available=D("10000000"), position=position), correlationid="c"
    )


@pytest.mark.parametrize(
    ("side", "position"), [(Side.BUY, 0), (Side.SELL, 0), (Side.SELL, 10), (Side.BUY, -10)]
)
def test_place_when_a_mis_order_comes_after_the_square_off_then_it_is_cancelled_unfilled(
    side: Side, position: int
) -> None:
    # 15:25: a MIS market order of 10 would fill at once (buy at 1480.00 + 2 bps = 1480.30), after
    # the day's square-off has run (once, on the first tick after 15:20), and the intraday
    # position would be carried overnight. A working MIS order is cancelled at the square-off
    # time (`on_quote`), and so is this one: expected submitted, then cancelled with all 10
    # unfilled, no fill and no margin blocked.
    step = _step(_signal(side, 10, Product.MIS, AFTER_SQUARE_OFF), position=position)
    events = [e.payload for e in step.emitted]

    assert not any(isinstance(e, OrderFilled) for e in events)
    (cancelled,) = [e for e in events if isinstance(e, OrderCancelled)]
    assert (cancelled.quantity, cancelled.filled_quantity) == (10, 0)
    assert cancelled.reason == "MIS order cancelled at the square-off time"
    assert (step.status, step.unfilled, step.margin_change, step.order) == ("cancelled", 10, D(0), None)


def test_place_when_a_mis_flatten_order_comes_after_the_square_off_then_it_fills() -> None:
    # The kill switch's closing order still trades: long 10, sell 10 at 1479.95 - 2 bps = 1479.65
    # (snapped down to the 0.05 grid).
    signal = _signal(Side.SELL, 10, Product.MIS, AFTER_SQUARE_OFF).model_copy(update={"flatten": True})
    events = [e.payload for e in _step(signal, position=10).emitted]

    (fill,) = [e for e in events if isinstance(e, OrderFilled)]
    assert (fill.quantity, fill.price, fill.remaining_quantity) == (10, D("1479.65"), 0)


def test_place_when_a_cnc_order_comes_after_the_square_off_then_it_fills() -> None:
    # Delivery is not squared off: a CNC buy of 10 at 15:25 fills at 1480.30.
    events = [e.payload for e in _step(_signal(Side.BUY, 10, Product.CNC, AFTER_SQUARE_OFF)).emitted]

    (fill,) = [e for e in events if isinstance(e, OrderFilled)]
    assert (fill.quantity, fill.price) == (10, D("1480.30"))


MUHURAT = date(2025, 10, 21)
"""NSE's Muhurat session, 13:45-14:45 IST (the calendar's special session of that day)."""


@pytest.mark.parametrize(
    ("hour", "minute", "due"),
    [(13, 50, False), (14, 34, False), (14, 35, True), (14, 44, True)],
)
def test_square_off_due_when_a_special_session_closes_early_then_it_keeps_the_lead_before_its_close(
    hour: int, minute: int, due: bool
) -> None:
    # Normal day: close 15:30, square-off 15:20, a lead of 10 minutes. The Muhurat session closes
    # at 14:45, so its MIS positions are squared off at 14:35 (the calendar's square_off_time),
    # not at 15:20: no tick comes after the 14:45 close, and the positions would be carried
    # overnight.
    trader = PaperTrader({TOKEN: RELIANCE})
    at = datetime.combine(MUHURAT, time(hour, minute), IST)

    assert trader.calendar.square_off_time(MUHURAT) == datetime.combine(MUHURAT, time(14, 35), IST)
    assert trader.square_off_due(at) is due
    assert (at >= trader.square_off_instant(MUHURAT, at)) is due


def test_square_off_due_when_a_normal_day_then_at_the_configured_time() -> None:
    # 2026-01-05 is a Monday: 15:20 IST, as configured, whatever the calendar.
    trader = PaperTrader({TOKEN: RELIANCE})
    day = date(2026, 1, 5)

    assert not trader.square_off_due(datetime.combine(day, time(15, 19, 59, 999999), IST))
    assert trader.square_off_due(datetime.combine(day, time(15, 20), IST))
    assert trader.square_off_instant(day) == datetime.combine(day, time(15, 20), IST)


def test_place_when_a_mis_order_comes_after_the_close_with_no_session_rule_then_it_still_fills() -> None:
    # 21:00 on a Monday: only a run with the risk manager's session rule off (the pipeline bench,
    # on the wall clock) gets here; a MIS buy of 10 fills at 1480.00 + 2 bps = 1480.30 as before.
    at = datetime(2026, 1, 5, 21, 0, tzinfo=IST)
    events = [e.payload for e in _step(_signal(Side.BUY, 10, Product.MIS, at)).emitted]

    (fill,) = [e for e in events if isinstance(e, OrderFilled)]
    assert (fill.quantity, fill.price) == (10, D("1480.30"))


def test_place_when_the_latest_quote_is_after_the_close_then_the_day_order_expires_unfilled() -> None:
    # A CNC buy of 10 signalled at 15:29:59 meets (fill_quote=latest) a quote stamped 15:30:00.5,
    # after the 15:30 close: it would fill at 1480.30 outside market hours. A working order
    # meeting that quote expires (`on_quote`): expected submitted, then cancelled, 10 unfilled.
    signal = _signal(Side.BUY, 10, Product.CNC, datetime(2026, 1, 5, 15, 29, 59, tzinfo=IST))
    trader = PaperTrader({TOKEN: RELIANCE})
    after_close = datetime(2026, 1, 5, 15, 30, 0, 500000, tzinfo=IST)
    market = Market(D("1479.95"), D("1480.00"), D("1480.00"), after_close)
    step = trader.place(signal, IDS, market, AccountView(available=D("10000000")), correlationid="c")
    events = [e.payload for e in step.emitted]

    assert not any(isinstance(e, OrderFilled) for e in events)
    (cancelled,) = [e for e in events if isinstance(e, OrderCancelled)]
    assert (cancelled.quantity, cancelled.filled_quantity, cancelled.reason) == (10, 0, "DAY order expired")
    assert (step.status, step.unfilled, step.margin_change, step.order) == ("cancelled", 10, D(0), None)
