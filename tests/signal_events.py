"""Raw-signal events as the tests build them: one place for the fields every such test repeats."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from alphapanda.events import IST, Event, EventType, Side, Signal

SESSION = datetime(2026, 1, 5, 10, 0, tzinfo=IST)
"""A Monday 10:00 IST: inside the NSE session."""


def raw_signal_event(
    n: int,
    *,
    token: int,
    tradingsymbol: str | None = None,
    strategy: str = "alpha",
    side: Side = Side.BUY,
    quantity: int = 1,
    price: Decimal = Decimal("100.00"),
    tick_time: datetime | None = None,
    broker: str = "paper",
) -> Event:
    """The `n`th raw signal of a test: ids `sig-n`, `idea-n`, `tick-n`, ticked `n` ms after SESSION."""
    signal = Signal(
        instrument_token=token,
        tradingsymbol=tradingsymbol or str(token),
        exchange="NSE",
        strategy=strategy,
        side=side,
        quantity=quantity,
        reference_price=price,
        tick_time=tick_time or SESSION + timedelta(milliseconds=n),
    )
    return Event(
        id=f"sig-{n}",
        type=EventType.SIGNAL_RAW,
        source="/test",
        data=signal,
        partitionkey=str(token),
        correlationid=f"idea-{n}",
        causationid=f"tick-{n}",
        broker=broker,
    )
