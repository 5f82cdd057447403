"""End to end: validated signals on zerodha.signals.validated through the real dispatcher, Tansu and
redis-server, orders in the Kite sandbox, postbacks through functions/order_updates, fills into
the zerodha portfolio; the paper pipeline beside it is unaffected."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from zerodha_env import (
    API_KEY,
    API_SECRET,
    BROKER,
    INFY,
    SBIN,
    of_type,
    read_events,
    validated,
)

from alphapanda import topics
from alphapanda.brokers.zerodha.session import complete_login
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.config import Settings, load_settings
from alphapanda.domain.portfolio import Book
from alphapanda.events import Alert, Event, EventType, OrderFailed, OrderFilled
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.bootstrap import build_core, connect
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state import keys as core_keys
from alphapanda.topics import Function, bindings
from function_server import FunctionServer

STRATEGY = "live_test"


class Deployment:
    def __init__(self, kafka: EmbeddedKafka, redis_server: EmbeddedRedis) -> None:
        self.bootstrap = kafka.bootstrap_servers
        self.redis = redis.Redis.from_url(redis_server.url)
        self.postbacks = FunctionServer(
            "order_updates",
            {
                "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "ALPHAPANDA_KAFKA__PARTITIONS": "1",
                "ALPHAPANDA_REDIS__URL": redis_server.url,
                "ALPHAPANDA_BROKERS": "paper,zerodha",
                "ALPHAPANDA_KITE__API_KEY": API_KEY,
                "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
            },
            signature="http",
        )
        config = SandboxConfig(tick_interval=0.05, order_latency=0.005, heartbeat_interval=0.5)
        self.sandbox = KiteSandbox(
            API_KEY, API_SECRET, config=config, postback_url=self.postbacks.url
        ).start()
        self.settings: Settings = load_settings(
            brokers=("paper", BROKER),
            kafka={"bootstrap_servers": self.bootstrap, "partitions": 1},
            redis={"url": redis_server.url},
            delivery={"retries": 2, "backoff_delay_s": 0.01},
            kite={
                "api_key": API_KEY,
                "api_secret": API_SECRET,
                "root": self.sandbox.root,
                "ws_root": self.sandbox.ws_root,
                "request_timeout_s": 2,
            },
            broker={"paper": {"fills": {"fill_quote": "signal"}}},
        )
        self.core = build_core(self.settings)
        self.store, self.publisher = connect(self.settings)
        self.dispatcher = Dispatcher(
            bindings(list(self.settings.brokers)),
            self.core.stage_for,
            self.store,
            self.publisher,
            self.settings.kafka,
            self.settings.delivery,
        )
        self.dispatcher.start()

    def login(self) -> None:
        complete_login(self.sandbox.issue_request_token(), self.settings.kite, self.redis, BROKER)

    def book(self, broker: str) -> Book | None:
        raw = self.redis.get(core_keys.book(broker, STRATEGY))
        return Book.from_json(json.loads(raw)) if raw else None

    def wait(self, what: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, "the pipeline did not get there in time"
            time.sleep(0.02)

    def events(self, *names: str) -> list[Event]:
        return read_events(self.bootstrap, list(names))

    def close(self) -> None:
        self.dispatcher.stop()
        self.publisher.close()
        self.sandbox.stop()
        self.postbacks.stop()
        self.redis.close()


@pytest.fixture
def deployment(kafka: EmbeddedKafka, redis_server: EmbeddedRedis) -> Iterator[Deployment]:
    running = Deployment(kafka, redis_server)
    try:
        yield running
    finally:
        running.close()


def _paper_signal(name: str) -> Event:
    return validated(
        name,
        token=INFY,
        symbol="INFY",
        broker="paper",
        quantity=4,
        reference_price=Decimal("1500"),
        bid=Decimal("1499.95"),
        ask=Decimal("1500.05"),
    )


def _position(book: Book | None, token: int) -> int:
    return book.position(token).net_quantity if book else 0


def test_pipeline_when_zerodha_signal_validated_then_sandbox_order_fill_and_position_and_paper_unaffected(
    deployment: Deployment,
) -> None:
    assert isinstance(deployment.core.stage_for(Function.TRADING_ENGINE, BROKER), ZerodhaTrader)
    deployment.login()
    deployment.sandbox.set_price("NSE:SBIN", "801.5")
    live, paper = validated("e2e-live", quantity=3), _paper_signal("e2e-paper")

    deployment.publisher.publish([live, paper])
    deployment.wait(lambda: _position(deployment.book(BROKER), SBIN) == 3)
    deployment.wait(lambda: _position(deployment.book("paper"), INFY) == 4)

    (order,) = deployment.sandbox.orders()
    fills = of_type(deployment.events(topics.orders_filled(BROKER)), EventType.ORDER_FILLED)
    assert (order["tradingsymbol"], order["status"], order["filled_quantity"]) == ("SBIN", "COMPLETE", 3)
    assert [(f.data.quantity, f.data.price) for f in fills] == [(3, Decimal("801.5"))]  # type: ignore[union-attr]
    assert fills[0].correlationid == live.correlationid
    zerodha_book, paper_book = deployment.book(BROKER), deployment.book("paper")
    assert zerodha_book is not None and paper_book is not None
    assert [t for t, _ in zerodha_book.positions] == [SBIN]
    assert [t for t, _ in paper_book.positions] == [INFY]
    paper_fills = of_type(deployment.events(topics.orders_filled("paper")), EventType.ORDER_FILLED)
    assert [f.broker for f in paper_fills] == ["paper"]

    # Kite's token lapses: zerodha halts and says so; paper goes on trading.
    deployment.sandbox.expire_token()
    deployment.publisher.publish([validated("e2e-live-2"), _paper_signal("e2e-paper-2")])
    deployment.wait(lambda: _position(deployment.book("paper"), INFY) == 8)
    deployment.wait(lambda: deployment.redis.get(core_keys.control(BROKER)) == b"HALTED")

    alerts = [e.data for e in deployment.events(topics.alerts(BROKER)) if isinstance(e.data, Alert)]
    failed = [
        e.data for e in deployment.events(topics.orders_failed(BROKER)) if isinstance(e.data, OrderFailed)
    ]
    assert [a.kind for a in alerts] == ["kite_session"]
    assert len(failed) == 1 and "alphapanda login" in failed[0].reason
    assert deployment.redis.get(core_keys.control("paper")) is None
    assert len(deployment.sandbox.orders()) == 1
    assert _position(deployment.book(BROKER), SBIN) == 3


def test_pipeline_when_signal_is_redelivered_to_zerodha_then_one_order_and_one_fill(
    deployment: Deployment,
) -> None:
    deployment.login()
    deployment.sandbox.set_price("NSE:SBIN", "799")
    live = validated("e2e-twice", quantity=2)

    deployment.publisher.publish([live])
    deployment.wait(lambda: _position(deployment.book(BROKER), SBIN) == 2)
    deployment.publisher.publish([live])
    time.sleep(0.5)

    book = deployment.book(BROKER)
    fills: list[Any] = of_type(deployment.events(topics.orders_filled(BROKER)), EventType.ORDER_FILLED)
    assert len(deployment.sandbox.orders()) == 1
    assert book is not None and book.trade_count == 1 and _position(book, SBIN) == 2
    assert len({f.id for f in fills}) == 1 and isinstance(fills[0].data, OrderFilled)
