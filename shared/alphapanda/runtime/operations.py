"""Operator actions on a running deployment: the kill switch, flattening, reconciliation."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import redis

from alphapanda.brokers.base import Quote
from alphapanda.bus.kafka import EventPublisher
from alphapanda.bus.log import read_log
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.risk import BrokerState
from alphapanda.events import (
    Alert,
    Event,
    EventType,
    OrderFilled,
    Product,
    Severity,
    Side,
    Signal,
    derive_id,
    now,
    source_of,
)
from alphapanda.runtime.reports import books
from alphapanda.state import keys
from alphapanda.state.store import RedisStateStore, StateStore
from alphapanda.topics import market_scope, orders_filled


def broker_state(client: redis.Redis, broker: str) -> BrokerState:
    raw = client.get(keys.control(broker))
    return BrokerState(raw.decode() if isinstance(raw, bytes) else str(raw)) if raw else BrokerState.ACTIVE


def _alert_event(broker: str, alert: Alert) -> Event:
    event_id = str(uuid.uuid4())
    return Event(
        id=event_id,
        type=EventType.ALERT,
        source=source_of("operator", broker),
        data=alert,
        partitionkey=broker,
        correlationid=event_id,
        causationid=event_id,
        broker=broker,
    )


def set_broker_state(
    store: RedisStateStore, publisher: EventPublisher, broker: str, state: BrokerState, why: str
) -> BrokerState:
    """Switch the broker's kill switch and announce it on `{broker}.alerts`; return the old state."""
    old = broker_state(store.client, broker)
    store.client.set(keys.control(broker), state.value)
    alert = Alert(
        kind="kill_switch",
        severity=Severity.INFO if state is BrokerState.ACTIVE else Severity.CRITICAL,
        message=f"{broker}: {old.value} -> {state.value} ({why})",
        details={"broker": broker, "from": old.value, "to": state.value},
        raised_at=now(),
    )
    publisher.publish([_alert_event(broker, alert)])
    return old


def order_slices(quantity: int, freeze_quantity: int | None, lot_size: int = 1) -> list[int]:
    """`quantity` as orders the exchange accepts: none above `freeze_quantity` (whole lots of
    `lot_size` each), the last one taking the rest. One order when there is no freeze quantity."""
    if freeze_quantity is None or quantity <= freeze_quantity:
        return [quantity]
    largest = freeze_quantity - freeze_quantity % lot_size if lot_size > 1 else freeze_quantity
    if largest <= 0:
        return [quantity]  # no whole lot fits under the freeze: risk's lot-size rule will say so
    full, rest = divmod(quantity, largest)
    return [largest] * full + ([rest] if rest else [])


def flatten_signals(
    store: StateStore,
    broker: str,
    request_id: str | None = None,
    instruments: Mapping[int, Instrument] | None = None,
) -> list[Event]:
    """Closing signals for every open position of `broker`, to send through the normal pipeline.

    Each is stamped with its instrument's last tick time (the market clock, which risk's session
    rule judges) and priced at the last quote. A position above its instrument's freeze quantity
    (in `instruments`) is closed in slices the exchange accepts, as a trader would send them:
    risk refuses an order above the freeze, which would leave a halted broker unable to close.
    """
    request_id = request_id or str(uuid.uuid4())
    out: list[Event] = []
    for strategy, book in books(store, broker).items():
        for token, pos in book.positions:
            if pos.net_quantity == 0:
                continue
            instrument = instruments.get(token) if instruments is not None else None
            raw = store.get(keys.quote(token, market_scope(broker)))
            quote = Quote.from_json(json.loads(raw)) if raw else None
            mark = quote.last_price if quote else pos.average_price
            at: datetime = quote.at if quote and quote.at else now()
            named = store.get(keys.symbol(token, market_scope(broker))) or f"NSE:{token}"
            exchange, _, symbol = named.partition(":")
            slices = order_slices(
                abs(pos.net_quantity),
                instrument.freeze_quantity if instrument is not None else None,
                instrument.lot_size if instrument is not None else 1,
            )
            for part, quantity in enumerate(slices):
                signal = Signal(
                    instrument_token=token,
                    tradingsymbol=symbol,
                    exchange=exchange,
                    strategy=strategy,
                    side=Side.SELL if pos.net_quantity > 0 else Side.BUY,
                    quantity=quantity,
                    # Closed in the product that built it: an MIS sell of delivery holdings would
                    # be an intraday short beside them at the broker, not a close.
                    product=Product(pos.product),
                    reference_price=mark,
                    bid=quote.bid if quote else None,
                    ask=quote.ask if quote else None,
                    reason="flatten requested by the operator"
                    + (f" (slice {part + 1} of {len(slices)})" if len(slices) > 1 else ""),
                    flatten=True,
                    tick_time=at,
                )
                # The first slice keeps the id a single closing signal has always had.
                parts = (str(token),) if part == 0 else (str(token), f"slice-{part + 1}")
                event_id = derive_id("flatten", request_id, broker, strategy, *parts)
                out.append(
                    Event(
                        id=event_id,
                        type=EventType.SIGNAL_RAW,
                        source=source_of("operator", broker),
                        data=signal,
                        partitionkey=str(token),
                        correlationid=derive_id(event_id, "idea"),
                        causationid=request_id,
                        broker=broker,
                    )
                )
    return out


@dataclass(frozen=True)
class PositionBreak:
    strategy: str
    instrument_token: int
    from_fills: int
    in_portfolio: int


@dataclass(frozen=True)
class Reconciliation:
    broker: str
    fills: int
    duplicates: int
    positions: int
    breaks: tuple[PositionBreak, ...]

    @property
    def ok(self) -> bool:
        return not self.breaks


def reconcile(store: RedisStateStore, bootstrap_servers: str, broker: str) -> Reconciliation:
    """Check that the portfolio's positions equal the sum of the fills on `{broker}.orders.filled`."""
    from_fills: dict[tuple[str, int], int] = defaultdict(int)
    seen: set[str] = set()
    duplicates = 0
    for record in read_log(bootstrap_servers, [orders_filled(broker)]):
        event = record.event
        if event is None or not isinstance(event.data, OrderFilled):
            continue
        if event.id in seen:
            duplicates += 1
            continue
        seen.add(event.id)
        fill = event.data
        from_fills[(fill.strategy, fill.instrument_token)] += fill.side.sign * fill.quantity
    in_portfolio = {
        (strategy, token): pos.net_quantity
        for strategy, book in books(store, broker).items()
        for token, pos in book.positions
    }
    both = sorted(set(from_fills) | set(in_portfolio))
    breaks = tuple(
        PositionBreak(s, t, from_fills.get((s, t), 0), in_portfolio.get((s, t), 0))
        for s, t in both
        if from_fills.get((s, t), 0) != in_portfolio.get((s, t), 0)
    )
    return Reconciliation(broker, len(seen), duplicates, sum(1 for q in in_portfolio.values() if q), breaks)
