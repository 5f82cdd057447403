"""Kite postbacks -> functions/order_updates (real functions-framework) -> zerodha.orders.* on Kafka."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from kiteconnect import KiteConnect
from zerodha_env import (
    API_KEY,
    API_SECRET,
    BROKER,
    SBIN,
    of_type,
    read_events,
    validated,
)

from alphapanda import topics
from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.brokers.zerodha.session import complete_login
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.bus.kafka import ensure_topics
from alphapanda.config import KiteSettings
from alphapanda.events import (
    Event,
    EventType,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    OrderUpdated,
)
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state import keys as core_keys
from alphapanda.state.store import RedisStateStore
from function_server import FunctionServer

SECOND = "zerodha-2"
"""A second zerodha broker on the same Kite app: its orders' postbacks reach the same URL."""

ORDER_TOPICS = [
    topic
    for broker in (BROKER, SECOND)
    for topic in (
        topics.orders_filled(broker),
        topics.orders_updated(broker),
        topics.orders_cancelled(broker),
        topics.orders_failed(broker),
    )
]


class Live:
    """One deployment for the module: Tansu, redis-server, the function, a sandbox posting to it."""

    def __init__(self, kafka: EmbeddedKafka, redis_server: EmbeddedRedis) -> None:
        self.bootstrap = kafka.bootstrap_servers
        ensure_topics(self.bootstrap, topics.all_topics([BROKER, SECOND]), 1)
        self.redis = redis.Redis.from_url(redis_server.url)
        self.server = FunctionServer(
            "order_updates",
            {
                "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "ALPHAPANDA_KAFKA__PARTITIONS": "1",
                "ALPHAPANDA_REDIS__URL": redis_server.url,
                "ALPHAPANDA_BROKERS": f"paper,{BROKER},{SECOND}",
                "ALPHAPANDA_KITE__API_KEY": API_KEY,
                "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
            },
            signature="http",
        )
        config = SandboxConfig(tick_interval=0.05, order_latency=0.005, heartbeat_interval=0.5)
        self.sandbox = KiteSandbox(API_KEY, API_SECRET, config=config, postback_url=self.server.url).start()
        self.settings = KiteSettings(
            api_key=API_KEY,
            api_secret=API_SECRET,  # type: ignore[arg-type]
            root=self.sandbox.root,
            ws_root=self.sandbox.ws_root,
            request_timeout_s=2.0,
        )
        login = complete_login(self.sandbox.issue_request_token(), self.settings, self.redis, BROKER)
        complete_login(self.sandbox.issue_request_token(), self.settings, self.redis, SECOND)
        self.kite: Any = KiteConnect(API_KEY, access_token=login.session.access_token, root=self.sandbox.root)
        self.store = RedisStateStore(self.redis, 3600)
        self.trader = ZerodhaTrader(frozenset({BROKER, SECOND}), self.settings, claim_ttl_s=3600)

    def place(self, event: Event) -> OrderSubmitted:
        (submitted,) = self.trader.handle(event, self.store)
        assert isinstance(submitted.data, OrderSubmitted)
        return submitted.data

    def events_of(self, event: Event, done: type, count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Order events of `event`'s order, read until `count` events of type `done` arrived."""
        order_id = OrderContext.of(event, event.broker or BROKER).order_id

        def mine(events: list[Event]) -> list[Event]:
            return [e for e in events if getattr(e.data, "order_id", None) == order_id]

        found = read_events(
            self.bootstrap,
            ORDER_TOPICS,
            until=lambda es: sum(isinstance(e.data, done) for e in mine(es)) >= count,
            timeout=timeout,
        )
        return mine(found)

    def close(self) -> None:
        self.sandbox.stop()
        self.server.stop()
        self.redis.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        deployment = Live(kafka, redis_server)
        try:
            yield deployment
        finally:
            deployment.close()


def test_postback_when_order_fills_in_two_parts_then_one_filled_event_per_part_and_repeats_change_nothing(
    live: Live,
) -> None:
    live.sandbox.set_price("NSE:SBIN", "800")
    live.sandbox.partial_fill_next(2, "fill")
    event = validated("pb-partial", quantity=5)

    submitted = live.place(event)
    events = live.events_of(event, OrderFilled, count=2)

    fills = [e.data for e in of_type(events, EventType.ORDER_FILLED)]
    assert all(isinstance(f, OrderFilled) for f in fills)
    assert [(f.quantity, f.remaining_quantity, f.order_quantity) for f in fills] == [(2, 3, 5), (3, 0, 5)]  # type: ignore[union-attr]
    assert [f.price for f in fills] == [Decimal("800"), Decimal("800")]  # type: ignore[union-attr]
    assert {e.correlationid for e in events} == {event.correlationid}
    updated = [e.data for e in of_type(events, EventType.ORDER_UPDATED)]
    assert [u.status for u in updated if isinstance(u, OrderUpdated)] == ["OPEN"]

    # Kite sends the final postback again: the same events (same ids) are republished, nothing new.
    final = next(
        d.payload
        for d in live.sandbox.postbacks
        if d.payload["order_id"] == submitted.broker_order_id and d.payload["status"] == "COMPLETE"
    )
    repeat = requests.post(live.server.url, json=final, timeout=5)
    again = live.events_of(event, OrderFilled, count=3, timeout=3)

    assert repeat.status_code == 200
    assert {e.id for e in of_type(again, EventType.ORDER_FILLED)} == {
        e.id for e in of_type(events, EventType.ORDER_FILLED)
    }
    progress = json.loads(live.redis.get(f"{BROKER}:kite:progress:{submitted.broker_order_id}") or b"{}")
    assert (progress["filled"], Decimal(progress["value"])) == (5, Decimal("4000"))


def test_postback_when_two_zerodha_brokers_trade_through_the_kite_app_then_each_gets_its_own_fills(
    live: Live,
) -> None:
    # One Kite app, one postback URL, one order_updates: each order's events go to its broker.
    live.sandbox.set_price("NSE:SBIN", "800")
    mine, theirs = validated("pb-first", quantity=2), validated("pb-second", quantity=3, broker=SECOND)
    live.redis.set(core_keys.risk_open_orders(SECOND), "1")

    live.place(mine)
    live.place(theirs)
    first = live.events_of(mine, OrderFilled)
    second = live.events_of(theirs, OrderFilled)

    assert [(e.topic, e.data.quantity) for e in of_type(first, EventType.ORDER_FILLED)] == [  # type: ignore[union-attr]
        (topics.orders_filled(BROKER), 2)
    ]
    assert [(e.topic, e.data.quantity) for e in of_type(second, EventType.ORDER_FILLED)] == [  # type: ignore[union-attr]
        (topics.orders_filled(SECOND), 3)
    ]
    assert {e.broker for e in second} == {SECOND}
    # The second broker's own order status and risk ledger, not the first's.
    order_key = core_keys.order(SECOND, OrderContext.of(theirs, SECOND).order_id)
    order = json.loads(live.redis.get(order_key) or b"{}")
    assert order["status"] == "COMPLETE" and order["filled"] == 3
    assert live.redis.get(core_keys.risk_open_orders(SECOND)) == b"0"


def _snapshot(live: Live) -> tuple[list[bytes], list[int]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": live.bootstrap, "group.id": "offsets"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(t, 0), timeout=5)[1] for t in ORDER_TOPICS]
    finally:
        consumer.close()
    return sorted(live.redis.keys("*")), ends


def _forged(order_id: str) -> dict[str, Any]:
    """A postback body for an order Kite never had: every field but the checksum."""
    return {
        "order_id": order_id,
        "order_timestamp": "2026-01-05 10:00:00",
        "status": "COMPLETE",
        "tag": "apforged",
        "quantity": 5,
        "filled_quantity": 5,
        "average_price": 800,
        "instrument_token": SBIN,
    }


def test_postback_when_checksum_is_not_kites_then_401_and_no_state_or_event_changes(live: Live) -> None:
    forged = _forged("2601050000000000999")
    wrong_secret = hashlib.sha256(b"2601050000000000999" + b"2026-01-05 10:00:00" + b"guess").hexdigest()
    before = _snapshot(live)

    answers = [
        requests.post(live.server.url, json={**forged, "checksum": wrong_secret}, timeout=5),
        requests.post(live.server.url, json=forged, timeout=5),
        requests.post(live.server.url, json={**forged, "checksum": ""}, timeout=5),
        requests.post(live.server.url, data=b"not json", timeout=5),
    ]

    assert [a.status_code for a in answers] == [401, 401, 401, 401]
    assert _snapshot(live) == before


def test_postback_when_checksum_is_not_ascii_hex_then_401_not_a_server_error(live: Live) -> None:
    # facts.md line 164: "checksum = SHA-256(order_id + order_timestamp + api_secret) (hex)". The
    # URL is public: a body whose checksum is not that hex digest is refused, whatever it holds.
    forged = _forged("2601050000000000998")
    before = _snapshot(live)

    answers = [
        requests.post(live.server.url, json={**forged, "checksum": "é" * 64}, timeout=5),
        requests.post(live.server.url, json={**forged, "checksum": "\u0663" * 64}, timeout=5),
    ]

    assert [a.status_code for a in answers] == [401, 401]
    assert _snapshot(live) == before


def test_postback_when_kite_rejects_the_order_then_orders_failed_with_message_and_reservation_given_back(
    live: Live,
) -> None:
    live.redis.set(core_keys.risk_position(BROKER, SBIN), "4")
    live.redis.set(core_keys.risk_open_orders(BROKER), "1")
    live.sandbox.reject_next_order("Insufficient funds. Required margin is 95000.")
    event = validated("pb-rejected", quantity=4)

    live.place(event)
    events = live.events_of(event, OrderFailed)

    (failed,) = [e.data for e in of_type(events, EventType.ORDER_FAILED)]
    assert isinstance(failed, OrderFailed)
    assert "Insufficient funds. Required margin is 95000." in failed.reason
    assert live.redis.get(core_keys.risk_position(BROKER, SBIN)) == b"0"
    assert live.redis.get(core_keys.risk_open_orders(BROKER)) == b"0"


def test_postback_when_remainder_cancelled_then_fill_then_cancel_of_the_rest(live: Live) -> None:
    live.sandbox.set_price("NSE:SBIN", "805")
    live.sandbox.partial_fill_next(2, "cancel")
    event = validated("pb-cancel", quantity=5)

    live.place(event)
    events = live.events_of(event, OrderCancelled)

    (fill,) = [e.data for e in of_type(events, EventType.ORDER_FILLED)]
    (cancel,) = [e.data for e in of_type(events, EventType.ORDER_CANCELLED)]
    assert isinstance(fill, OrderFilled) and isinstance(cancel, OrderCancelled)
    assert (fill.quantity, fill.price) == (2, Decimal("805"))
    assert (cancel.quantity, cancel.filled_quantity) == (3, 2)


def test_postback_when_order_was_not_placed_by_alpha_panda_then_acknowledged_and_ignored(live: Live) -> None:
    order_id = live.kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="SBIN",
        transaction_type="BUY",
        quantity=1,
        product="MIS",
        order_type="MARKET",
        market_protection=2,
    )
    live.sandbox.wait_for_order(order_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        mine = [d for d in live.sandbox.postbacks if d.payload["order_id"] == order_id]
        if any(d.payload["status"] == "COMPLETE" for d in mine):
            break
        time.sleep(0.02)

    assert mine and all(d.status == 200 for d in mine)
    assert live.redis.get(f"{BROKER}:kite:progress:{order_id}") is None
