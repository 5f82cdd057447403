"""Fill events as the portfolio tests build them: one place for the fields every such test repeats."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from alphapanda.events import IST, Event, EventType, OrderFilled, Product, Side, source_of

RELIANCE, INFY = 738561, 408065
FILLED_AT = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
"""A Monday 10:00 IST: inside the NSE session."""


def fill_event(
    side: Side,
    quantity: int,
    price: str,
    *,
    product: Product = Product.MIS,
    charges: str = "0",
    strategy: str = "ema_test",
    token: int = RELIANCE,
    fill_id: str = "fill-1",
    at: datetime = FILLED_AT,
) -> Event:
    """A paper fill of order `order-{fill_id}` on RELIANCE (or INFY), as the trading engine emits it."""
    fill = OrderFilled(
        instrument_token=token,
        tradingsymbol="RELIANCE" if token == RELIANCE else "INFY",
        exchange="NSE",
        order_id="order-" + fill_id,
        fill_id=fill_id,
        strategy=strategy,
        side=side,
        quantity=quantity,
        price=Decimal(price),
        product=product,
        charges=Decimal(charges),
        filled_at=at,
    )
    return Event(
        id=fill_id,
        type=EventType.ORDER_FILLED,
        source=source_of("trading_engine", "paper"),
        data=fill,
        partitionkey=str(token),
        correlationid="idea-1",
        causationid="validated-1",
        broker="paper",
    )
