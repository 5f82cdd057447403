"""Strategies: pure functions from (indicator state, tick) to (new state, order intents).

A strategy keeps nothing between ticks itself: its state is a small JSON-able dict the caller
stores (Redis in the pipeline, a dict in a backtest), so any instance can process the next tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from alphapanda.events import Side
from alphapanda.immutable import immutable


@immutable(slots=True)
class OrderIntent:
    side: Side
    quantity: int
    reason: str


class TickView(NamedTuple):
    """The part of a tick a strategy may look at.

    A named tuple, not a frozen dataclass: one is built per tick and strategy call, and a tuple
    is the cheapest immutable record Python builds (a backtest makes a million of them).
    """

    instrument_token: int
    mid: Decimal
    last_price: Decimal
    bid: Decimal
    ask: Decimal
    volume: int
    """The day's traded volume so far, as the feed gives it (0 where it gives none)."""
    at: datetime
    """The exchange time of the tick (timezone-aware; `.astimezone(IST)` for market time)."""


StrategyState = dict[str, Any]


class Strategy(Protocol):
    @property
    def sells_short(self) -> bool:
        """Whether the strategy may hold a negative position (a delivery strategy may not)."""
        ...

    def on_tick(
        self, state: StrategyState | None, tick: TickView
    ) -> tuple[StrategyState, list[OrderIntent]]: ...


class StrategyConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class EmaCrossover:
    """Hold +quantity while EMA(fast) > EMA(slow), -quantity while below; trade the difference.

    With `long_only` it holds nothing while below instead of -quantity: what a delivery (CNC)
    strategy must do, since Indian equities cannot be sold short for delivery.

    EMAs are seeded with the first price (alpha = 2/(n+1)) and the strategy is warm after `slow`
    ticks, as in the reference benchmark workload. The EMAs are floats on purpose: they are
    indicators compared with each other, never money, and float keeps the hot path fast.
    """

    fast: int
    slow: int
    quantity: int
    long_only: bool = False
    _below: int = field(init=False, repr=False, compare=False)
    """The target while EMA(fast) < EMA(slow): -quantity, or 0 when long only."""
    _fast_alpha: float = field(init=False, repr=False, compare=False)
    _slow_alpha: float = field(init=False, repr=False, compare=False)
    """The smoothing factors 2/(n+1), worked out once rather than on every tick (the same floats)."""

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise StrategyConfigError(
                f"ema_crossover needs 1 <= fast < slow (got fast={self.fast}, slow={self.slow})"
            )
        if self.quantity <= 0:
            raise StrategyConfigError(f"ema_crossover needs quantity > 0 (got {self.quantity})")
        if not isinstance(self.long_only, bool):
            raise StrategyConfigError(f"ema_crossover needs long_only true or false (got {self.long_only!r})")
        object.__setattr__(self, "_below", 0 if self.long_only else -self.quantity)
        object.__setattr__(self, "_fast_alpha", 2.0 / (self.fast + 1))
        object.__setattr__(self, "_slow_alpha", 2.0 / (self.slow + 1))

    def on_tick(self, state: StrategyState | None, tick: TickView) -> tuple[StrategyState, list[OrderIntent]]:
        price = float(tick.mid)
        if state is None:
            return {"fast": price, "slow": price, "n": 1, "target": 0}, []
        old_fast = state["fast"]
        old_slow = state["slow"]
        fast = old_fast + self._fast_alpha * (price - old_fast)
        slow = old_slow + self._slow_alpha * (price - old_slow)
        n = state["n"] + 1
        target = state["target"]
        intents: list[OrderIntent] = []
        if n >= self.slow and fast != slow:
            new_target = self.quantity if fast > slow else self._below
            if new_target != target:
                delta = new_target - target
                side = Side.BUY if delta > 0 else Side.SELL
                cross = "above" if fast > slow else "below"
                intents.append(
                    OrderIntent(side, abs(delta), f"EMA({self.fast}) crossed {cross} EMA({self.slow})")
                )
                target = new_target
        return {"fast": fast, "slow": slow, "n": n, "target": target}, intents

    @property
    def sells_short(self) -> bool:
        return not self.long_only


STRATEGY_KINDS: Mapping[str, type[EmaCrossover]] = {"ema_crossover": EmaCrossover}


def build_strategy(kind: str, params: Mapping[str, Any]) -> Strategy:
    """Build a strategy of `kind` from its params; raise `StrategyConfigError` naming what is wrong."""
    cls = STRATEGY_KINDS.get(kind)
    if cls is None:
        raise StrategyConfigError(
            f"unknown strategy kind {kind!r}; known: {', '.join(STRATEGY_KINDS)}, or `module:Class` "
            "for a strategy class of your own"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise StrategyConfigError(f"{kind} params are wrong: {exc}") from None
