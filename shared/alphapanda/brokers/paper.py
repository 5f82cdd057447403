"""The paper broker: fills market orders against the latest quote, with slippage."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from alphapanda.brokers.base import OrderEvent, OrderIds, Quote
from alphapanda.domain.fills import paper_fill_price
from alphapanda.domain.instruments import Instrument
from alphapanda.events import OrderFailed, OrderFilled, OrderSubmitted, OrderType, Signal, now


@dataclass(frozen=True)
class PaperTrader:
    slippage_bps: Decimal
    instruments: Mapping[int, Instrument]
    fill_quote: Literal["latest", "signal"] = "latest"
    clock: Callable[[], datetime] = field(default=now)

    def execute(self, signal: Signal, ids: OrderIds, quote: Quote | None) -> list[OrderEvent]:
        at = self.clock()
        submitted = OrderSubmitted(
            **_order_fields(signal, ids),
            signal_id=ids.signal_id,
            order_type=signal.order_type,
            product=signal.product,
            validity=signal.validity,
            submitted_at=at,
        )
        if self.fill_quote == "signal" and signal.bid is not None and signal.ask is not None:
            quote = Quote(signal.bid, signal.ask, signal.reference_price)
        failure = self._why_not(signal, quote)
        if failure is not None:
            return [
                submitted,
                OrderFailed(**_order_fields(signal, ids), signal_id=ids.signal_id, reason=failure),
            ]
        assert quote is not None
        inst = self.instruments[signal.instrument_token]
        price = paper_fill_price(signal.side, quote.bid, quote.ask, self.slippage_bps, inst.tick_size)
        fill = OrderFilled(
            **_order_fields(signal, ids),
            fill_id=ids.fill_id,
            price=price,
            product=signal.product,
            filled_at=at,
        )
        return [submitted, fill]

    def _why_not(self, signal: Signal, quote: Quote | None) -> str | None:
        if signal.order_type is not OrderType.MARKET:
            return f"the paper broker does not support {signal.order_type} orders yet"
        if signal.instrument_token not in self.instruments:
            return f"unknown instrument {signal.instrument_token}"
        if quote is None:
            return f"no market data yet for {signal.tradingsymbol}"
        return None


def _order_fields(signal: Signal, ids: OrderIds) -> dict[str, Any]:
    """The fields every order event of one signal shares."""
    return {
        "instrument_token": signal.instrument_token,
        "tradingsymbol": signal.tradingsymbol,
        "exchange": signal.exchange,
        "order_id": ids.order_id,
        "strategy": signal.strategy,
        "side": signal.side,
        "quantity": signal.quantity,
    }
