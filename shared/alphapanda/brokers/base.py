"""The interface every broker's trader implements."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from alphapanda.events import OrderCancelled, OrderFailed, OrderFilled, OrderSubmitted, Signal
from alphapanda.immutable import immutable


@immutable(slots=True)
class Quote:
    """The latest top of book of an instrument, as stored by the strategy runner."""

    bid: Decimal
    ask: Decimal
    last_price: Decimal
    at: datetime | None = None
    """The exchange time of the tick: the market clock as this instrument last saw it."""

    def to_json(self) -> dict[str, str]:
        raw = {"bid": str(self.bid), "ask": str(self.ask), "ltp": str(self.last_price)}
        if self.at is not None:
            raw["at"] = self.at.isoformat()
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, str]) -> Quote:
        at = datetime.fromisoformat(raw["at"]) if "at" in raw else None
        return cls(Decimal(raw["bid"]), Decimal(raw["ask"]), Decimal(raw["ltp"]), at)


@immutable(slots=True)
class OrderIds:
    """Ids for what one signal may produce, derived from the signal's event id by the caller."""

    signal_id: str
    order_id: str
    fill_id: str


OrderEvent = OrderSubmitted | OrderFilled | OrderFailed | OrderCancelled


class Trader(Protocol):
    """Turn a validated signal into order events, in the order they happened."""

    def execute(self, signal: Signal, ids: OrderIds, quote: Quote | None) -> list[OrderEvent]: ...


def order_fields(signal: Signal, order_id: str) -> dict[str, Any]:
    """The fields every order event (submitted, filled, failed, cancelled) of one signal shares."""
    return {
        "instrument_token": signal.instrument_token,
        "tradingsymbol": signal.tradingsymbol,
        "exchange": signal.exchange,
        "order_id": order_id,
        "strategy": signal.strategy,
        "side": signal.side,
        "quantity": signal.quantity,
    }
