"""Risk manager: every signal passes its broker's rules before it can become an order."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from alphapanda.brokers.base import Quote
from alphapanda.config import RiskLimits
from alphapanda.domain.risk import DEFAULT_RULES, RiskContext, RiskRule, evaluate
from alphapanda.events import Event, EventType, Signal, SignalRejected, SignalValidated, source_of
from alphapanda.stages import BrokerScoped
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.topics import Function


@dataclass(frozen=True)
class RiskManager(BrokerScoped):
    limits_for: Callable[[str], RiskLimits] = field(default=lambda _b: RiskLimits())
    rules: Sequence[RiskRule] = DEFAULT_RULES
    function: Function = Function.RISK_MANAGER
    accepts: EventType = EventType.SIGNAL_RAW

    def reads(self, event: Event) -> list[str]:
        signal = _signal(event)
        broker = self.owner(event)
        return [keys.risk_position(broker, signal.instrument_token), keys.quote(signal.instrument_token)]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        signal = _signal(event)
        broker = self.owner(event)
        position_key, quote_key = self.reads(event)
        raw_quote = values[quote_key]
        ctx = RiskContext(
            signal=signal,
            limits=self.limits_for(broker),
            position_quantity=int(values[position_key] or 0),
            last_price=Quote.from_json(json.loads(raw_quote)).last_price if raw_quote else None,
        )
        failures = evaluate(ctx, self.rules)
        source = source_of(self.function.value, broker)
        if failures:
            rejected = SignalRejected(signal=signal, failures=tuple(failures))
            return Decision(outputs=[event.child("rejected", rejected, source=source)])
        # The reservation: later signals see this quantity as taken even before it fills.
        return Decision(
            outputs=[event.child("validated", SignalValidated(signal=signal), source=source)],
            writes={position_key: str(ctx.position_after)},
        )


def _signal(event: Event) -> Signal:
    assert isinstance(event.data, Signal)
    return event.data
