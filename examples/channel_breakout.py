"""A strategy of your own: a channel breakout, loaded by `kind: channel_breakout:ChannelBreakout`.

Alpha Panda builds the class with the strategy's `params` and calls `on_tick(state, tick)` on
every tick of its instruments. `state` is what the previous call returned for this instrument
(None on the first tick); it must be plain JSON (dicts, lists, strings, numbers, booleans),
since the pipeline keeps it in Redis between ticks and any instance may take the next one.
Return the new state and a list of `OrderIntent`s (side, quantity, reason): each becomes one
MARKET signal that the risk manager judges before any broker sees it.

Run it from the project's root, with this directory importable:

    PYTHONPATH=examples alphapanda backtest --ticks shared/alphapanda/data/sample_day_nse.csv \
        --strategies examples/strategies.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from alphapanda.domain.strategy import OrderIntent, StrategyConfigError, StrategyState, TickView
from alphapanda.events import Side


@dataclass(frozen=True)
class ChannelBreakout:
    """Go long `quantity` when the last price breaks above the highest of the previous
    `lookback` prices, short (or flat when `long_only`) when it breaks below the lowest."""

    lookback: int
    quantity: int
    long_only: bool = False

    def __post_init__(self) -> None:
        # A StrategyConfigError (or ValueError) here is reported as one line naming the strategy.
        if self.lookback < 2:
            raise StrategyConfigError(f"channel_breakout needs lookback >= 2 (got {self.lookback})")
        if self.quantity <= 0:
            raise StrategyConfigError(f"channel_breakout needs quantity > 0 (got {self.quantity})")

    @property
    def sells_short(self) -> bool:
        # A CNC (delivery) strategy must not: the strategies file is refused unless long_only.
        return not self.long_only

    def on_tick(self, state: StrategyState | None, tick: TickView) -> tuple[StrategyState, list[OrderIntent]]:
        price = float(tick.last_price)  # an indicator, never money: float is fine here
        if state is None:
            return {"prices": [price], "target": 0}, []
        prices: list[float] = state["prices"]
        target: int = state["target"]
        intents: list[OrderIntent] = []
        if len(prices) >= self.lookback:
            wanted = target
            if price > max(prices):
                wanted = self.quantity
            elif price < min(prices):
                wanted = 0 if self.long_only else -self.quantity
            if wanted != target:
                delta = wanted - target
                side = Side.BUY if delta > 0 else Side.SELL
                level = "above the high" if delta > 0 else "below the low"
                intents.append(OrderIntent(side, abs(delta), f"broke {level} of {self.lookback} ticks"))
                target = wanted
        return {"prices": [*prices, price][-self.lookback :], "target": target}, intents
