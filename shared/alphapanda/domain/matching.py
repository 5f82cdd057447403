"""The paper matching model: how one order would trade against one quote of its instrument. Pure.

`match(order, market, rules)` answers, for a single quote (a tick, or the signal's own touch):
- whether the order can trade on it at all (latency: not before `arrives_at`; and never twice on
  the same quote, so a depth level is not consumed twice by one order);
- whether a stop order triggers (buy when last >= trigger, sell when last <= trigger; SL then
  works as a LIMIT at its price, SL-M as a MARKET);
- the executions: walking the depth levels when the quote carries them (each level is one
  execution, limited by its displayed quantity), or the whole quantity at the touch when it
  does not;
- what happens to the remainder: it keeps resting (DAY, or a stop not yet triggered, or an
  order still in flight), or is cancelled (IOC).

Prices: an order that takes liquidity (a MARKET order, a LIMIT order on arrival or just
triggered) pays each level's price plus `slippage_bps` against the trader, snapped to the tick
grid against the trader, and never beyond its limit. A LIMIT order that already rests in the
book trades passively at its own limit price when the market comes to it (ask at or below a
buy limit, bid at or above a sell limit): it was in the queue before that quote, so it cannot
be filled at a better price than it asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from alphapanda.domain.fills import slipped_price
from alphapanda.events import DepthLevel, MarketTick, OrderType, Side, Validity
from alphapanda.immutable import immutable


@immutable(slots=True)
class Level:
    """One price level of the book: price and displayed quantity."""

    price: Decimal
    quantity: int


def _levels(depth: Iterable[DepthLevel] | None, *, descending: bool) -> tuple[Level, ...] | None:
    if depth is None:
        return None
    # Kite pads a thin book with zero levels; they are no liquidity.
    kept = [Level(d.price, d.quantity) for d in depth if d.quantity > 0 and d.price > 0]
    return tuple(sorted(kept, key=lambda lv: lv.price, reverse=descending))


@immutable(slots=True)
class Market:
    """What the paper broker knows of an instrument at one moment.

    `bids`/`asks` are the depth, best first; None means the quote has no depth, and then the
    touch is taken to hold any quantity (the behaviour of a top-of-book-only feed).
    """

    bid: Decimal
    ask: Decimal
    last: Decimal
    at: datetime
    """Exchange time of the quote: what latency and expiry are judged by."""
    bids: tuple[Level, ...] | None = None
    asks: tuple[Level, ...] | None = None

    @classmethod
    def from_tick(cls, tick: MarketTick) -> Market:
        return cls(
            bid=tick.bid,
            ask=tick.ask,
            last=tick.last_price,
            at=tick.exchange_timestamp,
            bids=_levels(tick.depth_buy, descending=True),
            asks=_levels(tick.depth_sell, descending=False),
        )

    def touch(self, side: Side) -> Decimal:
        """The price an order on `side` would take: the ask to buy, the bid to sell."""
        return self.ask if side is Side.BUY else self.bid

    def opposite(self, side: Side) -> tuple[Level, ...] | None:
        """The depth an order on `side` trades against."""
        return self.asks if side is Side.BUY else self.bids

    def without_depth(self) -> Market:
        return replace(self, bids=None, asks=None)

    def after_taking(self, side: Side, taken: Sequence[Level]) -> Market:
        """The market after an order on `side` took `taken` from the displayed depth.

        Several resting orders matched on one tick share its liquidity: what the first took,
        the next cannot take again.
        """
        levels = self.opposite(side)
        if levels is None or not taken:
            return self
        left = {lv.price: lv.quantity for lv in levels}
        for lv in taken:
            left[lv.price] = left.get(lv.price, 0) - lv.quantity
        remaining = tuple(Level(lv.price, left[lv.price]) for lv in levels if left[lv.price] > 0)
        return replace(self, asks=remaining) if side is Side.BUY else replace(self, bids=remaining)

    def to_json(self) -> dict[str, Any]:
        def dump(levels: tuple[Level, ...] | None) -> list[list[str]] | None:
            return None if levels is None else [[str(lv.price), str(lv.quantity)] for lv in levels]

        return {
            "bid": str(self.bid),
            "ask": str(self.ask),
            "ltp": str(self.last),
            "at": self.at.isoformat(),
            "bids": dump(self.bids),
            "asks": dump(self.asks),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Market:
        def load(levels: list[list[str]] | None) -> tuple[Level, ...] | None:
            return None if levels is None else tuple(Level(Decimal(p), int(q)) for p, q in levels)

        return cls(
            bid=Decimal(raw["bid"]),
            ask=Decimal(raw["ask"]),
            last=Decimal(raw["ltp"]),
            at=datetime.fromisoformat(raw["at"]),
            bids=load(raw.get("bids")),
            asks=load(raw.get("asks")),
        )


@immutable(slots=True)
class MatchOrder:
    """The part of an order the matching model needs: what is left of it and its conditions."""

    side: Side
    remaining: int
    order_type: OrderType
    validity: Validity
    arrives_at: datetime
    """When the order reaches the exchange: its signal's tick time plus the simulated latency."""
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    triggered: bool = False
    in_book: bool = False
    """A LIMIT order that already rests in the book: it trades passively, at its limit price."""
    seen_until: datetime | None = None
    """Exchange time of the last quote this order was matched against; it trades only on later ones."""

    def __post_init__(self) -> None:
        if self.remaining <= 0:
            raise ValueError(f"an order to match needs a positive remaining quantity, not {self.remaining}")
        if self.order_type in (OrderType.LIMIT, OrderType.SL) and self.limit_price is None:
            raise ValueError(f"a {self.order_type} order needs a limit price")
        if self.order_type in (OrderType.SL, OrderType.SL_M) and self.trigger_price is None:
            raise ValueError(f"a {self.order_type} order needs a trigger price")

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.side.value,
            "remaining": self.remaining,
            "type": self.order_type.value,
            "validity": self.validity.value,
            "arrives_at": self.arrives_at.isoformat(),
            "limit": None if self.limit_price is None else str(self.limit_price),
            "trigger": None if self.trigger_price is None else str(self.trigger_price),
            "triggered": self.triggered,
            "in_book": self.in_book,
            "seen_until": None if self.seen_until is None else self.seen_until.isoformat(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MatchOrder:
        return cls(
            side=Side(raw["side"]),
            remaining=int(raw["remaining"]),
            order_type=OrderType(raw["type"]),
            validity=Validity(raw["validity"]),
            arrives_at=datetime.fromisoformat(raw["arrives_at"]),
            limit_price=None if raw["limit"] is None else Decimal(raw["limit"]),
            trigger_price=None if raw["trigger"] is None else Decimal(raw["trigger"]),
            triggered=bool(raw["triggered"]),
            in_book=bool(raw["in_book"]),
            seen_until=None if raw["seen_until"] is None else datetime.fromisoformat(raw["seen_until"]),
        )


@immutable(slots=True)
class MatchRules:
    """How the paper broker fills: slippage against the trader, the instrument's tick, depth use."""

    slippage_bps: Decimal
    tick_size: Decimal
    walk_depth: bool = True


@immutable(slots=True)
class Execution:
    """One trade: price (after slippage) and quantity."""

    price: Decimal
    quantity: int


class Outcome(StrEnum):
    FILLED = "filled"
    """Nothing is left."""
    REST = "rest"
    """The remainder keeps working: DAY, a stop waiting for its trigger, or still in flight."""
    CANCEL = "cancel"
    """The remainder is cancelled (IOC)."""


@immutable(slots=True)
class MatchResult:
    executions: tuple[Execution, ...]
    order: MatchOrder
    """The order after this quote. Its `remaining` is what rests (REST) or is cancelled (CANCEL)."""
    outcome: Outcome
    taken: tuple[Level, ...] = ()
    """Depth the executions consumed, at the book's own prices (see `Market.after_taking`)."""
    traded: bool = True
    """False when the order could not trade on this quote at all (in flight, or seen before)."""

    @property
    def filled_quantity(self) -> int:
        return sum(e.quantity for e in self.executions)

    @property
    def remaining(self) -> int:
        return 0 if self.outcome is Outcome.FILLED else self.order.remaining


def can_trade(order: MatchOrder, market: Market) -> bool:
    """Return whether `order` may trade on `market`: it has arrived, and has not seen this quote."""
    if market.at < order.arrives_at:
        return False
    return order.seen_until is None or market.at > order.seen_until


def is_triggered(side: Side, trigger_price: Decimal, last: Decimal) -> bool:
    """A buy stop triggers when the market trades at or above its trigger, a sell stop at or below."""
    return last >= trigger_price if side is Side.BUY else last <= trigger_price


def is_marketable(side: Side, limit_price: Decimal, market: Market) -> bool:
    """Return whether a LIMIT order would trade at once against the touch."""
    return market.ask <= limit_price if side is Side.BUY else market.bid >= limit_price


def _within(side: Side, price: Decimal, limit: Decimal | None) -> bool:
    if limit is None:
        return True
    return price <= limit if side is Side.BUY else price >= limit


def _walk(
    levels: Sequence[Level], quantity: int, price_of: Callable[[Decimal], Decimal]
) -> tuple[list[Execution], list[Level]]:
    executions: list[Execution] = []
    taken: list[Level] = []
    left = quantity
    for level in levels:
        if left == 0:
            break
        q = min(level.quantity, left)
        executions.append(Execution(price_of(level.price), q))
        taken.append(Level(level.price, q))
        left -= q
    return executions, taken


def match(order: MatchOrder, market: Market, rules: MatchRules) -> MatchResult:
    """Match `order` against one quote; see the module docstring for the model."""
    if not can_trade(order, market):
        return MatchResult((), order, Outcome.REST, traded=False)
    # Spelled out rather than `dataclasses.replace` (which inspects the fields on every call):
    # every order placed and every resting order on every tick comes through here.
    order = MatchOrder(
        order.side,
        order.remaining,
        order.order_type,
        order.validity,
        order.arrives_at,
        order.limit_price,
        order.trigger_price,
        order.triggered,
        order.in_book,
        market.at,
    )
    if order.order_type in (OrderType.SL, OrderType.SL_M) and not order.triggered:
        assert order.trigger_price is not None
        if not is_triggered(order.side, order.trigger_price, market.last):
            # Trigger pending, whatever the validity: IOC applies once the order is live.
            return MatchResult((), order, Outcome.REST)
        live_type = OrderType.LIMIT if order.order_type is OrderType.SL else OrderType.MARKET
        order = replace(order, order_type=live_type, triggered=True, in_book=False)

    side = order.side
    limit = order.limit_price if order.order_type is OrderType.LIMIT else None
    depth = market.opposite(side) if rules.walk_depth else None
    if depth is None:
        # Top of book only: the touch is taken to hold the whole quantity.
        depth = (Level(market.touch(side), order.remaining),)
    levels = [lv for lv in depth if _within(side, lv.price, limit)]

    def take(price: Decimal) -> Decimal:
        slipped = slipped_price(side, price, rules.slippage_bps, rules.tick_size)
        if limit is None:
            return slipped
        return min(slipped, limit) if side is Side.BUY else max(slipped, limit)

    def passive(_price: Decimal) -> Decimal:
        assert limit is not None
        return limit

    executions, taken = _walk(levels, order.remaining, passive if order.in_book else take)
    filled = sum(e.quantity for e in executions)
    left = order.remaining - filled
    if left == 0:
        return MatchResult(tuple(executions), order, Outcome.FILLED, tuple(taken))
    order = replace(order, remaining=left, in_book=order.order_type is OrderType.LIMIT)
    outcome = Outcome.CANCEL if order.validity is Validity.IOC else Outcome.REST
    return MatchResult(tuple(executions), order, outcome, tuple(taken))
