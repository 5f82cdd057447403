"""Per-instrument market state driven by a seeded random walk.

Each instrument owns two RNGs seeded from (seed, token): one for the price path and one for
depth, so the price path depends only on the number of steps taken, not on who looked at depth.
The caller (Exchange) serialises access with its lock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from ._common import Clock
from .instruments import Instrument

DEPTH_LEVELS = 5


@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: Decimal
    quantity: int
    orders: int


@dataclass(slots=True)
class InstrumentState:
    instrument: Instrument
    ltp: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    last_trade_time: datetime
    timestamp: datetime
    walk_rng: random.Random
    depth_rng: random.Random
    volume: int = 0
    last_quantity: int = 0
    turnover: Decimal = Decimal(0)
    total_buy_quantity: int = 0
    total_sell_quantity: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    held: bool = False
    bids: list[DepthLevel] = field(default_factory=list)
    asks: list[DepthLevel] = field(default_factory=list)

    @property
    def average_price(self) -> Decimal:
        if not self.volume:
            return self.ltp
        return (self.turnover / self.volume).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    @property
    def net_change(self) -> Decimal:
        return self.ltp - self.close


def snap_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_HALF_UP) * tick


class Market:
    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        seed: int,
        clock: Clock,
        volatility: Decimal,
        random_walk: bool,
    ) -> None:
        self._clock = clock
        self._volatility = float(volatility)
        self._random_walk = random_walk
        now = clock()
        self._states: dict[int, InstrumentState] = {}
        for item in instruments:
            price = snap_to_tick(item.opening_price, item.price_step)
            state = InstrumentState(
                instrument=item,
                ltp=price,
                open=price,
                high=price,
                low=price,
                close=price,
                last_trade_time=now,
                timestamp=now,
                walk_rng=random.Random(f"{seed}:{item.instrument_token}:walk"),
                depth_rng=random.Random(f"{seed}:{item.instrument_token}:depth"),
                oi=item.open_interest,
                oi_day_high=item.open_interest,
                oi_day_low=item.open_interest,
            )
            self._regenerate_depth(state)
            self._states[item.instrument_token] = state

    def state(self, instrument_token: int) -> InstrumentState:
        return self._states[instrument_token]

    def ltp(self, instrument_token: int) -> Decimal:
        return self._states[instrument_token].ltp

    def tokens(self) -> list[int]:
        return list(self._states)

    def step(self) -> list[int]:
        """Advance every instrument not held by one random-walk step; returns the tokens that ticked."""
        if not self._random_walk:
            return []
        moved: list[int] = []
        for token, state in self._states.items():
            if state.held:
                continue
            tick = state.instrument.price_step
            sigma_ticks = float(state.ltp) * self._volatility / float(tick)
            move = round(state.walk_rng.gauss(0.0, sigma_ticks))
            new_price = max(tick, state.ltp + tick * move)
            lot = max(state.instrument.lot_size, 1)
            traded = state.walk_rng.randint(1, 100) * lot
            oi_change = state.walk_rng.randint(-5, 5) * lot if state.instrument.open_interest else 0
            self._trade(state, new_price, traded)
            if oi_change:
                state.oi = max(0, state.oi + oi_change)
                state.oi_day_high = max(state.oi_day_high, state.oi)
                state.oi_day_low = min(state.oi_day_low, state.oi)
            moved.append(token)
        return moved

    def set_price(self, instrument_token: int, price: Decimal, *, hold: bool) -> None:
        state = self._states[instrument_token]
        state.held = hold
        self._trade(
            state, snap_to_tick(price, state.instrument.price_step), max(state.instrument.lot_size, 1)
        )

    def release(self, instrument_token: int) -> None:
        self._states[instrument_token].held = False

    def _trade(self, state: InstrumentState, price: Decimal, quantity: int) -> None:
        now = self._clock()
        state.ltp = price
        state.high = max(state.high, price)
        state.low = min(state.low, price)
        if not state.instrument.is_index:
            state.volume += quantity
            state.last_quantity = quantity
            state.turnover += price * quantity
            state.last_trade_time = now
        state.timestamp = now
        self._regenerate_depth(state)

    def _regenerate_depth(self, state: InstrumentState) -> None:
        if state.instrument.is_index:
            return
        tick = state.instrument.price_step
        rng = state.depth_rng
        lot = max(state.instrument.lot_size, 1)
        state.bids = [
            DepthLevel(max(tick, state.ltp - tick * level), rng.randint(1, 50) * lot, rng.randint(1, 20))
            for level in range(1, DEPTH_LEVELS + 1)
        ]
        state.asks = [
            DepthLevel(state.ltp + tick * level, rng.randint(1, 50) * lot, rng.randint(1, 20))
            for level in range(1, DEPTH_LEVELS + 1)
        ]
        # Total book quantity is deeper than the five visible levels, as on the exchange.
        state.total_buy_quantity = sum(level.quantity for level in state.bids) * rng.randint(5, 40)
        state.total_sell_quantity = sum(level.quantity for level in state.asks) * rng.randint(5, 40)
