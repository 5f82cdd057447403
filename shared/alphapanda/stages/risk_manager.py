"""Risk manager: every signal passes its broker's rules before it can become an order."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from alphapanda.brokers.base import Quote
from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import TradingCalendar, ist_date
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
    Signal,
    SignalRejected,
    SignalValidated,
    source_of,
)
from alphapanda.immutable import immutable
from alphapanda.stages import BrokerScoped
from alphapanda.stages.risk_ledger import LedgerView, ledger_reads
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.strategies import StrategyRisk
from alphapanda.topics import Function, market_scope

_NO_STRATEGY_RISK = StrategyRisk()
_NO_INSTRUMENT_LIMITS = InstrumentLimits()


def trading_day(at: datetime) -> str:
    return ist_date(at).isoformat()


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
    _limits_memo: dict[tuple[str, str], tuple[StrategyRisk, RiskLimits, RiskLimits]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """(strategy, broker) -> (strategy risk, broker limits, the two combined). `apply_to` dumps a
    pydantic model per call; both inputs are immutable models, so the combination is reused while
    `limits_for` and `strategy_risk` keep giving the very same objects (checked by identity, so a
    `limits_for` that starts returning new limits is never answered from the memo)."""

    def _limits(self, strategy: str, broker: str) -> tuple[StrategyRisk, RiskLimits]:
        """The strategy's own risk settings and its effective limits on `broker`."""
        strategy_risk = self.strategy_risk.get(strategy, _NO_STRATEGY_RISK)
        broker_limits = self.limits_for(broker)
        found = self._limits_memo.get((strategy, broker))
        if found is not None and found[0] is strategy_risk and found[1] is broker_limits:
            return strategy_risk, found[2]
        limits = strategy_risk.apply_to(broker_limits)
        self._limits_memo[strategy, broker] = (strategy_risk, broker_limits, limits)
        return strategy_risk, limits

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
        raw_quote = values[quote_key]
        raw_last = values[last_key]
        inputs = RiskInputs(
            ledger=LedgerView.read(values, broker, token, signal.strategy),
            last_price=Quote.from_json(json.loads(raw_quote)).last_price if raw_quote else None,
            state=BrokerState(values[control_key] or BrokerState.ACTIVE),
            trades_today=int(values[trades_key] or 0),
            last_signal=LastSignal.from_json(json.loads(raw_last)) if raw_last else None,
            day_pnl=day_pnl_total(values[day_key]),
        )
        verdict = self.judge(event, inputs)
        writes: dict[str, str] = {}
        if verdict.reducing:
            writes[control_key] = BrokerState.REDUCING.value
        if verdict.ledger is not None:
            writes.update(verdict.ledger.writes(broker, token, signal.strategy))
            writes[trades_key] = str(verdict.trades_today)
            writes[last_key] = json.dumps(verdict.last_signal.to_json() if verdict.last_signal else None)
        return Decision(outputs=verdict.outputs, writes=writes)

    def judge(self, event: Event, inputs: RiskInputs) -> RiskVerdict:
        """The rules' verdict on the signal in `event`, given the state it reads: pure.

        `decide` feeds it from stored values; the backtest from values it keeps decoded.
        """
        signal = _signal(event)
        broker = self.owner(event)
        token = signal.instrument_token
        ledger = inputs.ledger
        strategy_risk, limits = self._limits(signal.strategy, broker)
        # As `RiskContext.order_price`: a limit of 0 is a price to refuse, not "no limit".
        price = signal.limit_price if signal.limit_price is not None else signal.reference_price
        signed = signal.side.sign * signal.quantity
        gross_after, strategy_after = ledger.after(token, signed, price)
        state = inputs.state
        day_pnl = inputs.day_pnl
        ctx = RiskContext(
            signal=signal,
            limits=limits,
            position_quantity=ledger.position,
            last_price=inputs.last_price,
            gross_after=gross_after,
            strategy_exposure_after=strategy_after,
            capital_allocation=strategy_risk.capital_allocation,
            trades_today=inputs.trades_today,
            open_orders=ledger.open_orders,
            broker_state=state,
            day_pnl=day_pnl,
            last_signal=inputs.last_signal,
            instrument=self.instruments.get(token, _NO_INSTRUMENT_LIMITS),
            calendar=self.calendar,
            strategy_position_quantity=ledger.strategy_quantity(token),
        )
        failures = evaluate(ctx, self.rules)
        source = source_of(self.function.value, broker)
        outputs: list[Event] = []
        reducing = False
        if state is BrokerState.ACTIVE and day_pnl <= -limits.daily_loss_limit:
            # The breach turns the whole broker to REDUCING, in the same transaction as the check.
            reducing = True
            alert = Alert(
                kind="daily_loss_limit",
                severity=Severity.CRITICAL,
                message=f"{broker}: today's PnL Rs {day_pnl:.2f} breached the daily loss limit of "
                f"Rs {limits.daily_loss_limit:.2f}; the broker is now REDUCING",
                details={"broker": broker, "day_pnl": f"{day_pnl:.2f}"},
                raised_at=signal.tick_time,
            )
            outputs.append(event.child("alert", alert, source=source))
        if failures:
            rejected = SignalRejected(signal=signal, failures=tuple(failures))
            outputs.append(event.child("rejected", rejected, source=source))
            return RiskVerdict(outputs, reducing, None, inputs.trades_today, inputs.last_signal)
        outputs.append(event.child("validated", SignalValidated(signal=signal), source=source))
        return RiskVerdict(
            outputs,
            reducing,
            ledger.reserved(token, signed, price),
            inputs.trades_today + 1,
            LastSignal(signal.side, signal.quantity, signal.tick_time),
        )


@immutable(slots=True)
class RiskInputs:
    """What the risk manager reads for one signal, decoded."""

    ledger: LedgerView
    last_price: Decimal | None
    """The instrument's latest traded price (from the latest quote), None before any tick."""
    state: BrokerState
    trades_today: int
    last_signal: LastSignal | None
    day_pnl: Decimal


@immutable(slots=True)
class RiskVerdict:
    """What the risk manager decided: its events and the state to write."""

    outputs: list[Event]
    reducing: bool
    """The daily loss limit was breached: the broker turns REDUCING."""
    ledger: LedgerView | None
    """The ledger with the signal reserved; None if it was rejected (nothing to write)."""
    trades_today: int
    last_signal: LastSignal | None


def _signal(event: Event) -> Signal:
    assert isinstance(event.data, Signal)
    return event.data
