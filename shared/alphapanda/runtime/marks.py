"""Periodic mark-to-market: unrealised PnL of every open position at the latest quote.

The portfolio manager marks a position when it fills; between fills prices move, and the daily
loss limit must see that. The local runner calls `mark_to_market` every few seconds; it updates
today's PnL record atomically (so it never loses a concurrent fill's update) and publishes a
PnL snapshot per open position.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from alphapanda.brokers.base import Quote
from alphapanda.bus.kafka import EventPublisher
from alphapanda.domain.calendar import to_ist
from alphapanda.events import Event, EventType, PnlSnapshot, now, source_of
from alphapanda.runtime.reports import books
from alphapanda.state import keys
from alphapanda.state.store import RedisStateStore
from alphapanda.topics import market_scope


def mark_to_market(store: RedisStateStore, publisher: EventPublisher, broker: str) -> int:
    """Mark the broker's open positions; return how many snapshots were published."""
    snapshots: list[PnlSnapshot] = []
    unrealised: dict[str, str] = {}
    market_times = []
    for strategy, book in books(store, broker).items():
        for token, pos in book.positions:
            if pos.net_quantity == 0:
                continue
            raw = store.get(keys.quote(token, market_scope(broker)))
            if raw is None:
                continue
            quote = Quote.from_json(json.loads(raw))
            at = quote.at or now()
            market_times.append(at)
            named = store.get(keys.symbol(token, market_scope(broker))) or f"NSE:{token}"
            exchange, _, symbol = named.partition(":")
            u = pos.unrealised_pnl(quote.last_price)
            unrealised[f"{strategy}:{token}"] = str(u)
            snapshots.append(
                PnlSnapshot(
                    instrument_token=token,
                    tradingsymbol=symbol,
                    exchange=exchange,
                    strategy=strategy,
                    net_quantity=pos.net_quantity,
                    average_price=pos.average_price,
                    last_price=quote.last_price,
                    realised_pnl=pos.realised_pnl,
                    unrealised_pnl=u,
                    cash=book.cash,
                    charges_paid=book.charges_paid,
                    trade_count=book.trade_count,
                    as_of=at,
                )
            )
    if not snapshots:
        return 0
    # The market day is the one the quotes live in (a replay's or a simulation's clock).
    _update_day(store.client, keys.day_pnl(broker, to_ist(max(market_times)).date().isoformat()), unrealised)
    mark_id = str(uuid.uuid4())
    events = [
        Event(
            id=f"{mark_id}-{n}",
            type=EventType.PNL_SNAPSHOT,
            source=source_of("mark_to_market", broker),
            data=s,
            partitionkey=str(s.instrument_token),
            correlationid=mark_id,
            causationid=mark_id,
            broker=broker,
        )
        for n, s in enumerate(snapshots)
    ]
    publisher.publish(events)
    return len(events)


def _update_day(client: redis.Redis, key: str, unrealised: dict[str, str]) -> None:
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                day: dict[str, Any] = json.loads(raw) if raw else {"realised": "0", "unrealised": {}}
                # Positions closed since the fill that marked them are 0 now, not their old value.
                day["unrealised"] = {k: unrealised.get(k, "0") for k in {*day["unrealised"], *unrealised}}
                pipe.multi()
                pipe.set(key, json.dumps(day, sort_keys=True))
                pipe.execute()
                return
            except redis.WatchError:
                continue
