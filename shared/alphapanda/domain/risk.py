"""Pre-trade risk rules. Each rule is a named check that returns a rejection reason or None.

A rejection is an event listing every failed rule, never an exception. Rules see a
`RiskContext` the risk stage builds from shared state, so they stay pure. Every limit is
configurable per broker (settings) and may be tightened per strategy (strategies file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_UP, Decimal
from enum import StrEnum
from typing import Any, Protocol

from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import CalendarCoverageError, TradingCalendar
from alphapanda.events import Product, RuleFailure, Side, Signal
from alphapanda.immutable import immutable

ZERO = Decimal(0)
_PAISA = Decimal("0.01")


def _rupees(amount: Decimal) -> str:
    """An amount for a reason: to the paisa, or exactly when it has a fraction of a paisa, so an
    amount over its limit never reads as equal to it (Rs 130000.005 is not "Rs 130000.00")."""
    return f"{amount:.2f}" if amount == amount.quantize(_PAISA) else f"{amount:f}"


def _percent(deviation: Decimal) -> str:
    """A deviation for a reason, rounded up to 0.01%: one beyond its band never shows as inside it."""
    return f"{deviation.quantize(_PAISA, rounding=ROUND_UP):f}"


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
    strategy_position_quantity: int | None = None
    """The signal's strategy's own share of `position_quantity` (its reserved net quantity); None
    when the strategy is the only one holding the instrument (then it is `position_quantity`)."""

    @property
    def order_price(self) -> Decimal:
        """The price the order is valued at: its limit, else the price its strategy saw.

        Not the latest quote: a decision that depends only on the signal and the ledger is the
        same on every replay, and the price band rule already keeps the two close.
        """
        # `is not None`, not `or`: a limit of 0 is a bad price to refuse, not "no limit".
        limit = self.signal.limit_price
        return limit if limit is not None else self.signal.reference_price

    @property
    def position_after(self) -> int:
        return self.position_quantity + self.signal.side.sign * self.signal.quantity

    @property
    def reduces(self) -> bool:
        """True when the signal brings a position closer to flat without crossing through it: the
        broker's net position, or its strategy's own.

        The broker's net, because that is the exposure the broker holds. The strategy's own,
        because with several strategies on one instrument a strategy closing its own long can
        make the broker's net cross or grow (others hold opposite positions): refusing it would
        trap every position under REDUCING or HALTED.
        """
        before, after = self.position_quantity, self.position_after
        return (abs(after) < abs(before) and after * before >= 0) or self.strategy_reduces

    @property
    def strategy_reduces(self) -> bool:
        """True when the signal brings its strategy's own position closer to flat without crossing it."""
        own = self.strategy_position_quantity
        before = self.position_quantity if own is None else own
        after = before + self.signal.side.sign * self.signal.quantity
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
        price = ctx.order_price
        if price <= 0:
            # A negative price gives a negative value (which passes every limit and reserves
            # negative exposure); no order can be valued at it.
            which = "limit price" if ctx.signal.limit_price is not None else "price"
            return f"{which} {price} is not positive: the order cannot be valued"
        value = price * ctx.signal.quantity
        limit = ctx.limits.max_order_value
        # The operator's (or square-off's) flatten closes a position in one order; a position may
        # legitimately be worth more than one order (max_position_value > max_order_value), and a
        # refused flatten would leave a HALTED broker unable to close it.
        if value > limit and not (ctx.signal.flatten and ctx.reduces):
            return f"order value Rs {_rupees(value)} exceeds the limit of Rs {_rupees(limit)}"
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
                f"position value would be Rs {_rupees(value)}, beyond the per-instrument limit of "
                f"Rs {_rupees(limit)}"
            )
        return None


@dataclass(frozen=True, slots=True)
class MaxGrossExposure:
    name: str = "max_gross_exposure"

    def check(self, ctx: RiskContext) -> str | None:
        limit = ctx.limits.max_gross_exposure
        if ctx.gross_after > limit and not ctx.reduces:
            return (
                f"gross exposure would be Rs {_rupees(ctx.gross_after)}, "
                f"beyond the broker's Rs {_rupees(limit)}"
            )
        return None


@dataclass(frozen=True, slots=True)
class CapitalAllocation:
    name: str = "capital_allocation"

    def check(self, ctx: RiskContext) -> str | None:
        allocation = ctx.capital_allocation
        # Judged on the strategy's own position, as its exposure is: a flat strategy selling against
        # another's long shrinks the broker's net but opens a short of its own.
        if allocation is not None and ctx.strategy_exposure_after > allocation and not ctx.strategy_reduces:
            return (
                f"strategy {ctx.signal.strategy} would hold Rs {_rupees(ctx.strategy_exposure_after)}, "
                f"beyond its allocation of Rs {_rupees(allocation)}"
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
        band = ctx.limits.price_band_pct
        last = ctx.last_price
        signal = ctx.signal
        if last is not None and last <= 0:
            return f"the last tick price {last} is not positive: the price band cannot be judged"
        failures = []
        if last is not None:
            deviation = abs(signal.reference_price - last) / last * 100
            if deviation > band:
                failures.append(
                    f"signal price {signal.reference_price} is {_percent(deviation)}% from the last tick "
                    f"{last} (band {band}%)"
                )
        # The order is valued (and reserved) at its limit, so the limit too must be near the
        # market: a SELL LIMIT at Rs 1 on a Rs 1,000 stock fills at once near 1,000, yet would be
        # valued at Rs 1. Before any tick the signal's own price stands in for the last tick.
        limit = signal.limit_price
        if limit is not None and limit > 0:
            anchor, named = (
                (last, "the last tick") if last is not None else (signal.reference_price, "the signal price")
            )
            deviation = abs(limit - anchor) / anchor * 100
            if deviation > band:
                failures.append(
                    f"limit price {limit} is {_percent(deviation)}% from {named} {anchor} (band {band}%)"
                )
        return "; ".join(failures) or None


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
class DeliveryShortSell:
    """Indian equities cannot be sold short for delivery: a CNC sell may only sell what is held
    (the broker's RMS refuses the rest), so a paper broker must refuse it too."""

    name: str = "delivery_short_sell"

    def check(self, ctx: RiskContext) -> str | None:
        signal = ctx.signal
        if signal.product is not Product.CNC or signal.side is not Side.SELL or ctx.position_after >= 0:
            return None
        return (
            f"a delivery (CNC) sell of {signal.quantity} would leave the position at {ctx.position_after}: "
            "shares cannot be sold short for delivery; sell what is held, or short intraday (MIS)"
        )


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
    DeliveryShortSell(),
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
