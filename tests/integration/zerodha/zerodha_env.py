"""Helpers for the Zerodha integration tests: signal events, a functions-framework server, Kafka reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from alphapanda.bus.kafka import from_kafka
from alphapanda.bus.log import partition_end
from alphapanda.events import (
    IST,
    Event,
    EventType,
    OrderType,
    Side,
    Signal,
    SignalValidated,
    derive_id,
)

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "zkey"
API_SECRET = "zsecret-never-logged"
BROKER = "zerodha"
SBIN = 779521
INFY = 408065
TICK_TIME = datetime(2026, 1, 5, 10, 0, tzinfo=IST)


def validated(
    name: str,
    *,
    token: int = SBIN,
    symbol: str = "SBIN",
    side: Side = Side.BUY,
    quantity: int = 3,
    order_type: OrderType = OrderType.MARKET,
    limit_price: Decimal | None = None,
    trigger_price: Decimal | None = None,
    broker: str = BROKER,
    reference_price: Decimal = Decimal("800"),
    **extra: Any,
) -> Event:
    """A validated-signal event as the risk manager emits it (its causation is the raw signal)."""
    signal = Signal(
        instrument_token=token,
        tradingsymbol=symbol,
        exchange="NSE",
        strategy="live_test",
        side=side,
        quantity=quantity,
        order_type=order_type,
        limit_price=limit_price,
        trigger_price=trigger_price,
        reference_price=reference_price,
        tick_time=TICK_TIME,
        **extra,
    )
    raw_id = derive_id("raw", name, broker)
    return Event(
        id=derive_id(raw_id, "validated"),
        type=EventType.SIGNAL_VALIDATED,
        source=f"/alphapanda/{broker}/risk_manager",
        data=SignalValidated(signal=signal),
        partitionkey=str(token),
        correlationid=derive_id("idea", name),
        causationid=raw_id,
        broker=broker,
    )


def read_events(
    bootstrap: str,
    topics: Sequence[str],
    until: Callable[[list[Event]], bool] | None = None,
    timeout: float = 10.0,
) -> list[Event]:
    """Events on `topics` from the beginning: read until `until(events)` holds or `timeout`
    passes, or, without `until`, up to the end of each partition as it is now."""
    # Tansu answers a waiting fetch only when the wait ends: keep the wait short.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "zerodha-test-reader", "fetch.wait.max.ms": 10}
    )
    try:
        meta = consumer.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics
            if t in meta.topics
            for p in meta.topics[t].partitions
        ]
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in parts}
        consumer.assign(parts)
        events: list[Event] = []
        read: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is not None and until(events):
                break
            at_end = (read.get(k, 0) >= partition_end(consumer, k, end) for k, end in ends.items())
            if until is None and all(at_end):
                break
            for m in consumer.consume(100, timeout=0.05):
                if m.error() is None:
                    read[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
                    events.append(from_kafka(m.key(), m.value(), list(m.headers() or [])))
        return events
    finally:
        consumer.close()


def of_type(events: Sequence[Event], kind: EventType) -> list[Event]:
    return [e for e in events if e.type is kind]
