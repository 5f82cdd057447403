"""Pre-trade risk rules. Each rule is a named check that returns a rejection reason or None.

A rejection is an event listing every failed rule, never an exception. Rules see a
`RiskContext` the risk stage builds from shared state, so they stay pure. Every limit is
configurable per broker (settings) and may be tightened per strategy (strategies file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import CalendarCoverageError, TradingCalendar
from alphapanda.events import RuleFailure, Side, Signal
from alphapanda.immutable import immutable

ZERO = Decimal(0)


class BrokerState(StrEnum):
    """The kill switch. REDUCING lets only position-reducing signals through; HALTED nothing
    but closing (`flatten`) signals."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@immutable(slots=True)
class InstrumentLimits:
    """What risk needs to know of an instrument beyond the signal."""

    lot_size: int = 1
    freeze_quantity: int | None = None
    derivative: bool = False


@immutable(slots=True)
class LastSignal:
    side: Side
    quantity: int
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"side": self.side.value, "quantity": self.quantity, "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LastSignal:
        return cls(Side(raw["side"]), int(raw["quantity"]), datetime.fromisoformat(raw["at"]))


@immutable(slots=True)
class RiskContext:
    signal: Signal
    limits: RiskLimits
    position_quantity: int
    """Net quantity already reserved for the instrument on this broker (filled or in flight)."""
    last_price: Decimal | None
    """The latest traded price of the instrument, if a tick has been seen."""
    gross_after: Decimal = ZERO
    """The broker's reserved gross exposure if this signal were accepted."""
    strategy_exposure_after: Decimal = ZERO
    capital_allocation: Decimal | None = None
    trades_today: int = 0
    open_orders: int = 0
    broker_state: BrokerState = BrokerState.ACTIVE
    day_pnl: Decimal = ZERO
    last_signal: LastSignal | None = None
    instrument: InstrumentLimits = InstrumentLimits()
    calendar: TradingCalendar | None = None

    @property
    def order_price(self) -> Decimal:
        """The price the order is valued at: its limit, else the price its strategy saw.

        Not the latest quote: a decision that depends only on the signal and the ledger is the
        same on every replay, and the price band rule already keeps the two close.
        """
        return self.signal.limit_price or self.signal.reference_price

    @property
    def position_after(self) -> int:
        return self.position_quantity + self.signal.side.sign * self.signal.quantity

    @property
    def reduces(self) -> bool:
        """True when the signal brings the position closer to flat without crossing through it."""
        before, after = self.position_quantity, self.position_after
        return abs(after) < abs(before) and after * before >= 0


class RiskRule(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, ctx: RiskContext) -> str | None: ...


@dataclass(frozen=True, slots=True)
class KillSwitch:
    name: str = "kill_switch"

    def check(self, ctx: RiskContext) -> str | None:
        if ctx.broker_state is BrokerState.HALTED and not (ctx.signal.flatten and ctx.reduces):
            return "the broker is HALTED: only closing signals that reduce a position pass"
        if ctx.broker_state is BrokerState.REDUCING and not ctx.reduces:
            return "the broker is REDUCING: only signals that reduce a position pass"
        return None


@dataclass(frozen=True, slots=True)
class TradingSession:
    name: str = "trading_session"

    def check(self, ctx: RiskContext) -> str | None:
        if not ctx.limits.enforce_session or ctx.calendar is None:
            return None
        at = ctx.signal.tick_time
        try:
            if ctx.calendar.is_open(at):
                return None
        except CalendarCoverageError as exc:
            return f"no NSE holiday calendar covers {at.date()}: {exc}"
        return f"the market is closed at {at.isoformat()} (NSE session 09:15-15:30 IST on trading days)"


@dataclass(frozen=True, slots=True)
class MaxOrderValue:
    name: str = "max_order_value"

    def check(self, ctx: RiskContext) -> str | None:
        value = ctx.order_price * ctx.signal.quantity
        limit = ctx.limits.max_order_value
        if value > limit:
            return f"order value Rs {value:.2f} exceeds the limit of Rs {limit:.2f}"
        return None


@dataclass(frozen=True, slots=True)
class MaxPositionQuantity:
    name: str = "max_position_quantity"

    def check(self, ctx: RiskContext) -> str | None:
        after = ctx.position_after
        limit = ctx.limits.max_position_quantity
        # A signal that brings the position closer to flat (without flipping it) is always
        # allowed, so a breached limit never traps a position.
        if abs(after) > limit and not ctx.reduces:
            return f"position would be {after}, beyond the limit of {limit} per instrument"
        return None


@dataclass(frozen=True, slots=True)
class MaxPositionValue:
    name: str = "max_position_value"

    def check(self, ctx: RiskContext) -> str | None:
        value = abs(ctx.position_after) * ctx.order_price
        limit = ctx.limits.max_position_value
        if value > limit and not ctx.reduces:
            return (
                f"position value would be Rs {value:.2f}, beyond the per-instrument limit of Rs {limit:.2f}"
            )
        return None


@dataclass(frozen=True, slots=True)
class MaxGrossExposure:
    name: str = "max_gross_exposure"

    def check(self, ctx: RiskContext) -> str | None:
        limit = ctx.limits.max_gross_exposure
        if ctx.gross_after > limit and not ctx.reduces:
            return f"gross exposure would be Rs {ctx.gross_after:.2f}, beyond the broker's Rs {limit:.2f}"
        return None


@dataclass(frozen=True, slots=True)
class CapitalAllocation:
    name: str = "capital_allocation"

    def check(self, ctx: RiskContext) -> str | None:
        allocation = ctx.capital_allocation
        if allocation is not None and ctx.strategy_exposure_after > allocation and not ctx.reduces:
            return (
                f"strategy {ctx.signal.strategy} would hold Rs {ctx.strategy_exposure_after:.2f}, "
                f"beyond its allocation of Rs {allocation:.2f}"
            )
        return None


@dataclass(frozen=True, slots=True)
class DailyLossLimit:
    name: str = "daily_loss_limit"

    def check(self, ctx: RiskContext) -> str | None:
        limit = ctx.limits.daily_loss_limit
        if ctx.day_pnl <= -limit and not ctx.reduces:
            return f"today's PnL Rs {ctx.day_pnl:.2f} breaches the daily loss limit of Rs {limit:.2f}"
        return None


@dataclass(frozen=True, slots=True)
class TradeCountCap:
    name: str = "max_trades_per_day"

    def check(self, ctx: RiskContext) -> str | None:
        cap = ctx.limits.max_trades_per_day
        if ctx.trades_today >= cap and not ctx.signal.flatten:
            return f"strategy {ctx.signal.strategy} already sent {ctx.trades_today} orders today (cap {cap})"
        return None


@dataclass(frozen=True, slots=True)
class MaxOpenOrders:
    name: str = "max_open_orders"

    def check(self, ctx: RiskContext) -> str | None:
        limit = ctx.limits.max_open_orders
        # An operator's flatten must never be blocked by the orders it is meant to clean up after.
        if ctx.open_orders >= limit and not ctx.signal.flatten:
            return f"{ctx.open_orders} orders are already open (limit {limit})"
        return None


@dataclass(frozen=True, slots=True)
class PriceBand:
    name: str = "price_band"

    def check(self, ctx: RiskContext) -> str | None:
        if ctx.last_price is None:
            return None
        band = ctx.limits.price_band_pct
        deviation = abs(ctx.signal.reference_price - ctx.last_price) / ctx.last_price * 100
        if deviation > band:
            return (
                f"signal price {ctx.signal.reference_price} is {deviation:.2f}% from the last tick "
                f"{ctx.last_price} (band {band}%)"
            )
        return None


@dataclass(frozen=True, slots=True)
class LotSize:
    name: str = "lot_size"

    def check(self, ctx: RiskContext) -> str | None:
        inst = ctx.instrument
        qty = ctx.signal.quantity
        if inst.derivative and qty % inst.lot_size:
            return f"quantity {qty} is not a multiple of the lot size {inst.lot_size}"
        if inst.freeze_quantity is not None and qty > inst.freeze_quantity:
            return f"quantity {qty} is above the exchange freeze quantity {inst.freeze_quantity}"
        return None


@dataclass(frozen=True, slots=True)
class InstrumentAllowList:
    name: str = "instrument_allow_list"

    def check(self, ctx: RiskContext) -> str | None:
        allowed = ctx.limits.allowed_instruments
        if allowed is not None and ctx.signal.instrument_token not in allowed:
            return f"{ctx.signal.tradingsymbol} ({ctx.signal.instrument_token}) is not on the allow-list"
        return None


@dataclass(frozen=True, slots=True)
class DuplicateSignal:
    name: str = "duplicate_signal"

    def check(self, ctx: RiskContext) -> str | None:
        window = ctx.limits.duplicate_window_s
        last = ctx.last_signal
        if window <= 0 or last is None or ctx.signal.flatten:
            return None
        same = last.side is ctx.signal.side and last.quantity == ctx.signal.quantity
        gap = ctx.signal.tick_time - last.at
        if same and timedelta(0) <= gap < timedelta(seconds=window):
            return (
                f"the same {ctx.signal.side} {ctx.signal.quantity} was sent {gap.total_seconds():.3f}s ago "
                f"(suppression window {window}s)"
            )
        return None


DEFAULT_RULES: tuple[RiskRule, ...] = (
    KillSwitch(),
    TradingSession(),
    MaxOrderValue(),
    MaxPositionQuantity(),
    MaxPositionValue(),
    MaxGrossExposure(),
    CapitalAllocation(),
    DailyLossLimit(),
    TradeCountCap(),
    MaxOpenOrders(),
    PriceBand(),
    LotSize(),
    InstrumentAllowList(),
    DuplicateSignal(),
)


def evaluate(ctx: RiskContext, rules: Sequence[RiskRule] = DEFAULT_RULES) -> list[RuleFailure]:
    """Run every rule and return all failures (empty: the signal may trade)."""
    failures = []
    for rule in rules:
        reason = rule.check(ctx)
        if reason is not None:
            failures.append(RuleFailure(rule=rule.name, reason=reason))
    return failures
