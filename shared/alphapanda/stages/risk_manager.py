"""Risk manager: every signal passes its broker's rules before it can become an order."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from alphapanda.brokers.base import Quote
from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import TradingCalendar, to_ist
from alphapanda.domain.risk import (
    DEFAULT_RULES,
    BrokerState,
    InstrumentLimits,
    LastSignal,
    RiskContext,
    RiskRule,
    evaluate,
)
from alphapanda.events import (
    Alert,
    Event,
    EventType,
    Severity,
    Side,
    Signal,
    SignalRejected,
    SignalValidated,
    source_of,
)
from alphapanda.stages import BrokerScoped
from alphapanda.stages.risk_ledger import LedgerView, ledger_reads, reserve
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.strategies import StrategyRisk
from alphapanda.topics import Function, market_scope


def trading_day(at: datetime) -> str:
    return to_ist(at).date().isoformat()


def day_pnl_total(raw: str | None) -> Decimal:
    """Realised plus unrealised PnL from the portfolio manager's day record."""
    if not raw:
        return Decimal(0)
    record = json.loads(raw)
    return Decimal(record.get("realised", "0")) + sum(
        (Decimal(v) for v in record.get("unrealised", {}).values()), Decimal(0)
    )


@dataclass(frozen=True)
class RiskManager(BrokerScoped):
    limits_for: Callable[[str], RiskLimits] = field(default=lambda _b: RiskLimits())
    strategy_risk: Mapping[str, StrategyRisk] = field(default_factory=dict)
    instruments: Mapping[int, InstrumentLimits] = field(default_factory=dict)
    calendar: TradingCalendar | None = None
    rules: Sequence[RiskRule] = DEFAULT_RULES
    function: Function = Function.RISK_MANAGER
    accepts: EventType = EventType.SIGNAL_RAW

    def reads(self, event: Event) -> list[str]:
        signal = _signal(event)
        broker = self.owner(event)
        token = signal.instrument_token
        day = trading_day(signal.tick_time)
        return [
            *ledger_reads(broker, token, signal.strategy),
            keys.quote(token, market_scope(broker)),
            keys.control(broker),
            keys.risk_trades(broker, signal.strategy, day),
            keys.risk_last_signal(broker, signal.strategy, token),
            keys.day_pnl(broker, day),
        ]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        signal = _signal(event)
        broker = self.owner(event)
        token = signal.instrument_token
        *_ledger, quote_key, control_key, trades_key, last_key, day_key = self.reads(event)
        ledger = LedgerView.read(values, broker, token, signal.strategy)
        raw_quote = values[quote_key]
        last_price = Quote.from_json(json.loads(raw_quote)).last_price if raw_quote else None
        strategy_risk = self.strategy_risk.get(signal.strategy, StrategyRisk())
        limits = strategy_risk.apply_to(self.limits_for(broker))
        price = signal.limit_price or signal.reference_price
        signed = signal.side.sign * signal.quantity
        gross_after, strategy_after = ledger.after(token, signed, price)
        raw_last = values[last_key]
        last = json.loads(raw_last) if raw_last else None
        last_signal = (
            LastSignal(Side(last["side"]), int(last["quantity"]), datetime.fromisoformat(last["at"]))
            if last
            else None
        )
        state = BrokerState(values[control_key] or BrokerState.ACTIVE)
        day_pnl = day_pnl_total(values[day_key])
        ctx = RiskContext(
            signal=signal,
            limits=limits,
            position_quantity=ledger.position,
            last_price=last_price,
            gross_after=gross_after,
            strategy_exposure_after=strategy_after,
            capital_allocation=strategy_risk.capital_allocation,
            trades_today=int(values[trades_key] or 0),
            open_orders=ledger.open_orders,
            broker_state=state,
            day_pnl=day_pnl,
            last_signal=last_signal,
            instrument=self.instruments.get(token, InstrumentLimits()),
            calendar=self.calendar,
        )
        failures = evaluate(ctx, self.rules)
        source = source_of(self.function.value, broker)
        outputs: list[Event] = []
        writes: dict[str, str] = {}
        if state is BrokerState.ACTIVE and day_pnl <= -limits.daily_loss_limit:
            # The breach turns the whole broker to REDUCING, in the same transaction as the check.
            writes[control_key] = BrokerState.REDUCING.value
            alert = Alert(
                kind="daily_loss_limit",
                severity=Severity.CRITICAL,
                message=f"{broker}: today's PnL Rs {day_pnl:.2f} breached the daily loss limit of "
                f"Rs {limits.daily_loss_limit:.2f}; the broker is now REDUCING",
                details={"broker": broker, "day_pnl": str(day_pnl)},
                raised_at=signal.tick_time,
            )
            outputs.append(event.child("alert", alert, source=source))
        if failures:
            rejected = SignalRejected(signal=signal, failures=tuple(failures))
            outputs.append(event.child("rejected", rejected, source=source))
            return Decision(outputs=outputs, writes=writes)
        writes.update(reserve(values, broker, token, signal.strategy, signed, price))
        writes[trades_key] = str(ctx.trades_today + 1)
        writes[last_key] = json.dumps(
            {"side": signal.side.value, "quantity": signal.quantity, "at": signal.tick_time.isoformat()}
        )
        outputs.append(event.child("validated", SignalValidated(signal=signal), source=source))
        return Decision(outputs=outputs, writes=writes)


def _signal(event: Event) -> Signal:
    assert isinstance(event.data, Signal)
    return event.data
