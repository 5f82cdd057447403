"""Signals, raw-signal events and rule contexts as the risk tests build them: one place for the
fields every such test repeats (one instrument, mid-session on a Monday)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from alphapanda.config import RiskLimits
from alphapanda.domain.risk import RiskContext
from alphapanda.events import IST, Event, EventType, OrderType, Product, Side, Signal, source_of

TOKEN = 738561
MID_SESSION = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
"""A Monday 10:00 IST: inside the NSE session."""


def risk_signal(
    side: Side = Side.BUY,
    quantity: int = 10,
    *,
    strategy: str = "ema_fast",
    price: str = "1000",
    limit_price: str | None = None,
    flatten: bool = False,
    at: datetime = MID_SESSION,
    product: Product = Product.MIS,
) -> Signal:
    """A signal on TOKEN (RELIANCE): a LIMIT order when `limit_price` is given, else MARKET."""
    return Signal(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy=strategy,
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit_price is not None else OrderType.MARKET,
        product=product,
        reference_price=Decimal(price),
        limit_price=Decimal(limit_price) if limit_price is not None else None,
        flatten=flatten,
        tick_time=at,
    )


def raw_event(signal: Signal, event_id: str = "raw-1", broker: str = "paper") -> Event:
    """`signal` as the strategy runner publishes it to the broker's raw-signal topic."""
    return Event(
        id=event_id,
        type=EventType.SIGNAL_RAW,
        source=source_of("strategy_runner"),
        data=signal,
        partitionkey=str(TOKEN),
        correlationid="idea-1",
        causationid="tick-1",
        broker=broker,
    )


def risk_context(
    side: Side = Side.BUY,
    quantity: int = 10,
    *,
    position: int = 0,
    price: str = "1000",
    limit_price: str | None = None,
    flatten: bool = False,
    at: datetime = MID_SESSION,
    limits: RiskLimits | None = None,
    product: Product = Product.MIS,
    **context: Any,
) -> RiskContext:
    """A rule's view of `risk_signal(...)` with the broker holding `position` (no last tick unless given)."""
    signal = risk_signal(
        side, quantity, price=price, limit_price=limit_price, flatten=flatten, at=at, product=product
    )
    context.setdefault("last_price", None)
    return RiskContext(signal=signal, limits=limits or RiskLimits(), position_quantity=position, **context)
