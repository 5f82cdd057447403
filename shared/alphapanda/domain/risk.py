"""Pre-trade risk rules. Each rule is a named check that returns a rejection reason or None.

A rejection is an event listing every failed rule, never an exception. Rules see a
`RiskContext` built by the risk stage from shared state, so they stay pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from alphapanda.config import RiskLimits
from alphapanda.events import RuleFailure, Signal


@dataclass(frozen=True, slots=True)
class RiskContext:
    signal: Signal
    limits: RiskLimits
    position_quantity: int
    """Net quantity already reserved for the instrument on this broker (filled or in flight)."""
    last_price: Decimal | None
    """The latest traded price of the instrument, if a tick has been seen."""

    @property
    def order_price(self) -> Decimal:
        return self.last_price if self.last_price is not None else self.signal.reference_price

    @property
    def position_after(self) -> int:
        return self.position_quantity + self.signal.side.sign * self.signal.quantity


class RiskRule(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, ctx: RiskContext) -> str | None: ...


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
        # A signal that brings the position closer to flat (without crossing it) is always
        # allowed, so a breached limit never traps a position; a flip beyond the limit is not.
        before = ctx.position_quantity
        reduces = abs(after) < abs(before) and after * before >= 0
        if abs(after) > limit and not reduces:
            return f"position would be {after}, beyond the limit of {limit} per instrument"
        return None


@dataclass(frozen=True, slots=True)
class InstrumentAllowList:
    name: str = "instrument_allow_list"

    def check(self, ctx: RiskContext) -> str | None:
        allowed = ctx.limits.allowed_instruments
        if allowed is not None and ctx.signal.instrument_token not in allowed:
            return f"{ctx.signal.tradingsymbol} ({ctx.signal.instrument_token}) is not on the allow-list"
        return None


DEFAULT_RULES: tuple[RiskRule, ...] = (MaxOrderValue(), MaxPositionQuantity(), InstrumentAllowList())


def evaluate(ctx: RiskContext, rules: Sequence[RiskRule] = DEFAULT_RULES) -> list[RuleFailure]:
    """Run every rule and return all failures (empty: the signal may trade)."""
    failures = []
    for rule in rules:
        reason = rule.check(ctx)
        if reason is not None:
            failures.append(RuleFailure(rule=rule.name, reason=reason))
    return failures
