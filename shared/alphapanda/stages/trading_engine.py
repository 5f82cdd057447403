"""Trading engine: validated signals become orders with the broker's trader."""

from __future__ import annotations

import json
from dataclasses import dataclass

from alphapanda.brokers.base import OrderIds, Quote
from alphapanda.brokers.factory import TraderFactory
from alphapanda.events import (
    Event,
    EventType,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    SignalValidated,
    derive_id,
    source_of,
)
from alphapanda.stages import BrokerScoped
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.topics import Function

_ROLE = {OrderSubmitted: "submitted", OrderFilled: "filled", OrderFailed: "failed"}


@dataclass(frozen=True)
class TradingEngine(BrokerScoped):
    traders: TraderFactory | None = None
    function: Function = Function.TRADING_ENGINE
    accepts: EventType = EventType.SIGNAL_VALIDATED

    def reads(self, event: Event) -> list[str]:
        token = _validated(event).signal.instrument_token
        return [keys.quote(token), keys.risk_position(self.owner(event), token)]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        assert self.traders is not None, "TradingEngine needs a TraderFactory"
        signal = _validated(event).signal
        broker = self.owner(event)
        quote_key, position_key = self.reads(event)
        raw_quote = values[quote_key]
        quote = Quote.from_json(json.loads(raw_quote)) if raw_quote else None
        ids = OrderIds(
            signal_id=event.causationid,
            order_id=derive_id(event.id, "order"),
            fill_id=derive_id(event.id, "fill"),
        )
        results = self.traders.for_broker(broker).execute(signal, ids, quote)
        source = source_of(self.function.value, broker)
        outputs = [event.child(_ROLE[type(r)], r, source=source) for r in results]
        writes: dict[str, str] = {
            keys.order(broker, ids.order_id): json.dumps(
                {"status": _ROLE[type(results[-1])], "signal": event.causationid}
            )
        }
        if any(isinstance(r, OrderFailed) for r in results):
            # Give back what the risk manager reserved for this signal.
            reserved = int(values[position_key] or 0)
            writes[position_key] = str(reserved - signal.side.sign * signal.quantity)
        return Decision(outputs=outputs, writes=writes)


def _validated(event: Event) -> SignalValidated:
    assert isinstance(event.data, SignalValidated)
    return event.data
