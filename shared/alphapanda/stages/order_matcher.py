"""Order matcher: each tick of an instrument advances the paper orders resting on it.

Per paper broker and tick, in one transaction with the claim on the tick:
- every working order of the instrument (`keys.resting_orders`) is expired at/after its
  session's close ("DAY order expired"), cancelled if the broker is HALTED (unless it is a
  closing order) or if it is an MIS order at/after the square-off time, and otherwise matched
  against the tick (`PaperTrader.on_quote`: latency, stop triggers, depth, slippage, IOC);
  orders share the tick's displayed depth in arrival order;
- an order that finishes gives its unfilled quantity and its open-order count back to the risk
  ledger, and the margin it blocked back to the account;
- at/after the square-off time (IST, by event time, so replays work) the strategies' MIS
  positions in the instrument (as the portfolio manager's books hold them) are closed at the
  touch, once per trading day;
- the tick itself, with its depth, is kept (`keys.paper_market`) so a new market order can walk
  the same depth the matcher sees.

Output ids are derived from the tick's id, so a redelivered tick republishes the same events.
Fills of a resting order carry the order's own correlation id: they belong to its trading idea.

Live ticks carry no broker, so a matcher serves every live paper broker in `brokers` on each
tick (claimed under the first); a replayed tick serves only the replay broker it names.
Deployed, each broker's matcher runs with that one broker; `for_broker` gives such a one-broker
matcher.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from alphapanda.brokers.factory import TraderFactory
from alphapanda.brokers.paper import HALTED, PaperTrader, dump_resting, load_resting
from alphapanda.domain.calendar import to_ist
from alphapanda.domain.matching import Market
from alphapanda.domain.portfolio import Book
from alphapanda.events import (
    DepthLevel,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    Product,
    derive_id,
    source_of,
)
from alphapanda.stages.risk_ledger import ledger_reads, release
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.strategies import StrategySpec
from alphapanda.topics import REPLAY_SUFFIX, Function, is_replay_broker, market_scope


@dataclass(frozen=True)
class OrderMatcher:
    brokers: frozenset[str]
    """The paper brokers this matcher serves."""
    traders: TraderFactory | None = None
    strategies: Sequence[StrategySpec] = ()
    """Whose risk ledger entries and books the matcher reads: the strategies of the broker."""
    function: Function = Function.ORDER_MATCHER
    accepts: EventType = EventType.MARKET_TICK

    def for_broker(self, broker: str) -> OrderMatcher:
        """This matcher, serving only `broker`."""
        return replace(self, brokers=frozenset({broker}))

    def owner(self, event: Event) -> str:
        if not self.brokers:
            raise InvalidEvent(f"the order matcher serves no paper broker; tick {event.id} has no taker")
        return min(self.brokers)

    def _served(self, event: Event) -> tuple[str, ...]:
        """The brokers `event` feeds: the live ones for a live tick, the replay broker it names
        for a replayed one (so a replay never matches live orders, nor live ticks replay orders)."""
        scope = event.broker
        if scope is not None and not is_replay_broker(scope):
            raise InvalidEvent(
                f"tick {event.id} names broker {scope!r}: only replayed ticks name a broker, "
                f"and only a replay broker (named *{REPLAY_SUFFIX})"
            )
        return _served_by(self.brokers, scope)

    def reads(self, event: Event) -> list[str]:
        tick = _tick(event)
        out: list[str] = []
        for broker in self._served(event):
            out.extend(k for k in self._reads_for(broker, tick) if k not in out)
        return out

    def first_reads(self, event: Event) -> list[str]:
        """The keys every tick needs, on the dispatcher's batched path (`Work.more_reads`):
        the instrument's resting orders, and what a due square-off reads. Most ticks meet no
        resting order, and then neither read nor watch the kill switch, margin or risk ledger
        (which the risk manager writes on every signal, and whose changes would redo a batch)."""
        tick = _tick(event)
        out: list[str] = []
        for broker in self._served(event):
            trader = self._trader(broker)
            if tick.instrument_token not in trader.instruments:
                continue
            out.append(keys.resting_orders(broker, tick.instrument_token))
            if trader.square_off_due(tick.exchange_timestamp):
                out.extend(k for k in self._reads_for(broker, tick) if k not in out)
        return out

    def more_reads(self, event: Event, values: Mapping[str, str | None]) -> list[str]:
        """With resting orders on the instrument: everything `_reads_for` names."""
        tick = _tick(event)
        out: list[str] = []
        for broker in self._served(event):
            if load_resting(values.get(keys.resting_orders(broker, tick.instrument_token))):
                out.extend(k for k in self._reads_for(broker, tick) if k not in out)
        return out

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        outputs: list[Event] = []
        writes: dict[str, str] = {}
        for broker in self._served(event):
            broker_outputs, broker_writes = self._decide_for(broker, event, values)
            outputs.extend(broker_outputs)
            writes.update(broker_writes)
        return Decision(outputs=outputs, writes=writes)

    # --- one broker ---------------------------------------------------------------------------

    def _trader(self, broker: str) -> PaperTrader:
        assert self.traders is not None, "OrderMatcher needs a TraderFactory"
        return self.traders.paper(broker)

    def _strategies_of(self, broker: str) -> list[str]:
        return sorted({s.name for s in self.strategies if broker in s.brokers})

    def _reads_for(self, broker: str, tick: MarketTick) -> list[str]:
        token = tick.instrument_token
        out = [
            keys.resting_orders(broker, token),
            keys.control(broker),
            keys.margin_resting(broker),
            keys.square_off_done(broker, token, _day(tick)),
        ]
        strategies = self._strategies_of(broker)
        if self._trader(broker).square_off_due(tick.exchange_timestamp):
            out.extend(keys.book(broker, s) for s in strategies)
        for strategy in strategies:
            out.extend(k for k in ledger_reads(broker, token, strategy) if k not in out)
        return out

    def _decide_for(
        self, broker: str, event: Event, values: dict[str, str | None]
    ) -> tuple[list[Event], dict[str, str]]:
        tick = _tick(event)
        token = tick.instrument_token
        trader = self._trader(broker)
        if token not in trader.instruments:
            return [], {}  # no paper order can exist on an instrument the broker does not know
        at = tick.exchange_timestamp
        resting_key = keys.resting_orders(broker, token)
        orders = load_resting(values[resting_key])
        due = trader.square_off_due(at)
        if not orders and not due:
            # The common case: nothing rests here, nothing is due; keep the tick.
            return [], {keys.paper_market(broker, token): market_json(tick)}
        market = Market.from_tick(tick)
        writes: dict[str, str] = {keys.paper_market(broker, token): json.dumps(market.to_json())}
        source = source_of(self.function.value, broker)
        margin_key = keys.margin_resting(broker)
        done_key = keys.square_off_done(broker, token, _day(tick))
        outputs: list[Event] = []
        # Each release reads the ledger as the previous one left it.
        ledger: dict[str, str | None] = dict(values)

        def give_back(strategy: str, signed_quantity: int, *, order_done: bool) -> None:
            if not all(k in ledger for k in ledger_reads(broker, token, strategy)):
                if strategy in self._strategies_of(broker):
                    raise _NotRead(f"the risk ledger of {strategy} on {token} was not read")
                # A strategy no longer configured for the broker: its ledger entries were not
                # read, and writing them from nothing would wipe other orders' reservations.
                return
            changed = release(
                ledger, broker, token, strategy, signed_quantity, market.last, order_done=order_done
            )
            ledger.update(changed)
            writes.update(changed)

        if orders and (keys.control(broker) not in values or margin_key not in values):
            # Read in two steps (first_reads, more_reads) by a store that raced with an order
            # placed in between: fail the attempt, the retry reads everything.
            raise _NotRead(f"tick {event.id}: resting orders on {token}, but not the keys to match them")
        halted = bool(orders) and values[keys.control(broker)] == HALTED
        blocked = Decimal(values[margin_key] or 0) if orders else Decimal(0)
        kept = []
        current = market
        for order in orders:

            def fill_id(n: int, order_id: str = order.order_id) -> str:
                return derive_id(event.id, order_id, "fill", str(n))

            step = trader.on_quote(order, current, fill_id=fill_id, halted=halted, square_off_due=due)
            current = step.market or current
            blocked += step.margin_change
            outputs.extend(
                event.child(
                    f"{order.order_id}/{e.role}",
                    e.payload,
                    source=source,
                    broker=broker,
                    correlationid=order.correlationid,
                    time=at,
                )
                for e in step.emitted
            )
            if step.order is not None:
                kept.append(step.order)
                continue
            writes[keys.order(broker, order.order_id)] = json.dumps(
                {"status": step.status, "signal": order.signal_id}
            )
            give_back(order.strategy, order.side.sign * step.unfilled, order_done=True)
        if orders:
            writes[resting_key] = dump_resting(kept)
            writes[margin_key] = str(max(blocked, Decimal(0)))
        if current is not market:
            # What the resting orders left of the tick's depth: an order placed on this same
            # tick (the trading engine reads this key) cannot take it again.
            writes[keys.paper_market(broker, token)] = json.dumps(current.to_json())

        if due and values[done_key] is None:
            writes[done_key] = at.isoformat()
            for strategy in self._strategies_of(broker):
                raw_book = values.get(keys.book(broker, strategy))
                held = Book.from_json(json.loads(raw_book)).position(token) if raw_book else None
                if held is None or held.net_quantity == 0 or held.product != Product.MIS.value:
                    continue
                position = held.net_quantity
                signal_id = derive_id(event.id, broker, strategy, "squareoff")
                order_id = derive_id(event.id, broker, strategy, "squareoff", "order")
                emitted = trader.square_off(
                    strategy,
                    position,
                    market,
                    instrument_token=token,
                    order_id=order_id,
                    signal_id=signal_id,
                    fill_id=derive_id(event.id, broker, strategy, "squareoff", "fill"),
                )
                outputs.extend(
                    event.child(
                        f"{broker}/squareoff/{strategy}/{e.role}",
                        e.payload,
                        source=source,
                        broker=broker,
                        correlationid=signal_id,
                        time=at,
                    )
                    for e in emitted
                )
                writes[keys.order(broker, order_id)] = json.dumps({"status": "filled", "signal": signal_id})
                # The square-off never passed the risk manager: the position it closes leaves
                # the reservation here, and it was never an open order there.
                give_back(strategy, position, order_done=False)
        return outputs, writes


def market_json(tick: MarketTick) -> str:
    """`json.dumps(Market.from_tick(tick).to_json())`, the same text, written out: it is all a tick
    without resting orders costs the matcher, and the general path took ~40 us (a unit test
    compares the two)."""
    return (
        f'{{"bid": "{tick.bid}", "ask": "{tick.ask}", "ltp": "{tick.last_price}", '
        f'"at": "{tick.exchange_timestamp.isoformat()}", '
        f'"bids": {_levels_json(tick.depth_buy, True)}, "asks": {_levels_json(tick.depth_sell, False)}}}'
    )


def _levels_json(depth: tuple[DepthLevel, ...] | None, descending: bool) -> str:
    if depth is None:
        return "null"
    # As `matching._levels`: zero levels (Kite pads a thin book with them) are no liquidity.
    kept = [(d.price, d.quantity) for d in depth if d.quantity > 0 and d.price > 0]
    kept.sort(key=_price, reverse=descending)
    return "[" + ", ".join(f'["{p}", "{q}"]' for p, q in kept) + "]"


def _price(level: tuple[Decimal, int]) -> Decimal:
    return level[0]


@functools.lru_cache(maxsize=64)
def _served_by(brokers: frozenset[str], scope: str | None) -> tuple[str, ...]:
    return tuple(sorted(b for b in brokers if market_scope(b) == scope))


class _NotRead(RuntimeError):
    """`decide` got fewer keys than this tick needs (a transient race, never bad input)."""


def _day(tick: MarketTick) -> str:
    return to_ist(tick.exchange_timestamp).date().isoformat()


def _tick(event: Event) -> MarketTick:
    assert isinstance(event.data, MarketTick)
    return event.data
