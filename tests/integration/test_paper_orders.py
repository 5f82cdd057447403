"""A LIMIT order through the real pipeline (Tansu, redis-server, dispatcher): it rests, then a
later tick fills it in the order matcher, and the portfolio books exactly what was filled."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pipeline_harness import Pipeline, events_of, read_all, settings_for

from alphapanda import topics
from alphapanda.events import (
    IST,
    DepthLevel,
    Event,
    EventType,
    MarketTick,
    OrderFilled,
    OrderSubmitted,
    OrderType,
    Side,
    Signal,
    Validity,
    source_of,
    tick_event,
)
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.reports import books
from alphapanda.state import keys

D = Decimal
TOKEN = 738561  # RELIANCE
T1 = datetime(2026, 1, 5, 10, 0, tzinfo=IST)
# A strategy too slow to signal on a handful of ticks: the LIMIT order below is its only one.
STRATEGIES = """
strategies:
  - name: limit_desk
    kind: ema_crossover
    instruments: [RELIANCE]
    brokers: [paper]
    params: {fast: 2, slow: 500, quantity: 1}
"""


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies.yaml"
    path.write_text(STRATEGIES)
    return path


def _tick(n: int, bid: str, ask: str, asks: list[tuple[str, int]] | None = None) -> Event:
    tick = MarketTick(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=D(ask),
        bid=D(bid),
        ask=D(ask),
        exchange_timestamp=T1 + timedelta(seconds=n),
        depth_sell=None if asks is None else tuple(DepthLevel(price=D(p), quantity=q) for p, q in asks),
    )
    return tick_event(tick, f"it-tick-{n}")


def _limit_signal() -> Event:
    signal = Signal(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="limit_desk",
        side=Side.BUY,
        quantity=100,
        order_type=OrderType.LIMIT,
        validity=Validity.DAY,
        limit_price=D("1475.00"),
        reference_price=D("1480.00"),
        bid=D("1479.95"),
        ask=D("1480.05"),
        tick_time=T1,
    )
    return Event(
        id="it-signal-1",
        type=EventType.SIGNAL_RAW,
        source=source_of("strategy_runner"),
        data=signal,
        partitionkey=str(TOKEN),
        correlationid="it-idea-1",
        causationid="it-tick-0",
        broker="paper",
        time=T1,
    )


def test_run_when_a_limit_order_rests_then_a_later_tick_fills_it_and_positions_equal_the_fills(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path
) -> None:
    settings = settings_for(kafka.bootstrap_servers, redis_server.url, strategies_file)
    with Pipeline(settings) as pipeline:
        pipeline.publish([_tick(0, "1479.95", "1480.05")])
        pipeline.drain()
        pipeline.publish([_limit_signal()])
        pipeline.drain()
        resting = json.loads(pipeline.store.get(keys.resting_orders("paper", TOKEN)) or "[]")
        # Not yet: the ask stays above the limit.
        pipeline.publish([_tick(1, "1475.95", "1476.00")])
        pipeline.drain()
        still_resting = json.loads(pipeline.store.get(keys.resting_orders("paper", TOKEN)) or "[]")
        # The market comes to the order: 60 offered at 1,474.95 and 100 at 1,475.00.
        pipeline.publish([_tick(2, "1474.90", "1474.95", asks=[("1474.95", 60), ("1475.00", 100)])])
        pipeline.drain()
        state_books = books(pipeline.store, "paper")
        after = pipeline.store.get(keys.resting_orders("paper", TOKEN))
        open_orders = pipeline.store.get(keys.risk_open_orders("paper"))
        blocked = pipeline.store.get(keys.margin_resting("paper"))

    log = read_all(kafka.bootstrap_servers, ["paper"])
    submitted = events_of(log[topics.orders_submitted("paper")])
    filled = events_of(log[topics.orders_filled("paper")])
    assert len(events_of(log[topics.signals_validated("paper")])) == 1

    (order,) = [e.data for e in submitted]
    assert isinstance(order, OrderSubmitted)
    assert (order.order_type, order.price, order.quantity) == (OrderType.LIMIT, D("1475.00"), 100)
    assert [o["order_id"] for o in resting] == [order.order_id]
    assert [o["working"]["remaining"] for o in still_resting] == [100]

    # Two executions (one per depth level at or through the limit), both at the limit price,
    # caused by the tick that crossed and carrying the idea's correlation id.
    fills = [e.data for e in filled]
    assert all(isinstance(f, OrderFilled) for f in fills)
    assert [(f.quantity, f.price, f.remaining_quantity) for f in fills] == [  # type: ignore[union-attr]
        (60, D("1475.00"), 40),
        (40, D("1475.00"), 0),
    ]
    assert {e.causationid for e in filled} == {"it-tick-2"}
    assert {e.correlationid for e in filled} == {"it-idea-1"}
    assert {e.source for e in filled} == {source_of("order_matcher", "paper")}

    # Positions equal the sum of fills, and the book paid the fills' charges.
    (book,) = state_books.values()
    assert book.position(TOKEN).net_quantity == sum(f.side.sign * f.quantity for f in fills)  # type: ignore[union-attr]
    assert book.charges_paid == sum((f.charges for f in fills), D(0)) > 0  # type: ignore[union-attr]
    assert book.trade_count == len(fills)
    # The order is finished everywhere: not resting, no margin blocked, no longer open in risk.
    assert json.loads(after or "[]") == []
    assert D(blocked or 0) == 0
    assert int(open_orders or 0) == 0
