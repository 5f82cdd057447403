"""KiteTickerFeed on the official KiteTicker against the sandbox's ticker, publishing to real Kafka."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis
from zerodha_env import API_KEY, API_SECRET, BROKER, INFY, SBIN, of_type, read_events, validated

from alphapanda import topics
from alphapanda.brokers.zerodha.charges import LiveChargeRates
from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, TickerOrderUpdates
from alphapanda.brokers.zerodha.session import SessionError, SessionStore, complete_login
from alphapanda.brokers.zerodha.ticker_feed import FeedInstrument, KiteTickerFeed, run_kite_feed
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.bus.kafka import EventPublisher, ensure_topics, from_kafka, to_kafka
from alphapanda.config import KiteSettings, load_settings
from alphapanda.domain.charges import charges_on_turnover
from alphapanda.domain.instruments import load_instruments
from alphapanda.events import IST, Event, EventType, MarketTick, OrderFilled, tick_event
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from alphapanda.state.store import RedisStateStore

TCS = 2953217
INSTRUMENTS = {
    SBIN: FeedInstrument(SBIN, "SBIN", "NSE"),
    INFY: FeedInstrument(INFY, "INFY", "NSE"),
    TCS: FeedInstrument(TCS, "TCS", "NSE"),
}
TICKS = topics.market_ticks("equity")


@pytest.fixture
def publisher(kafka: EmbeddedKafka) -> Iterator[EventPublisher]:
    ensure_topics(kafka.bootstrap_servers, topics.all_topics([BROKER]), 1)
    out = EventPublisher(kafka.bootstrap_servers, 10)
    yield out
    out.close()


@pytest.fixture
def start_feed(
    sandbox: KiteSandbox, redis_client: redis.Redis, publisher: EventPublisher
) -> Iterator[Callable[..., KiteTickerFeed]]:
    feeds: list[KiteTickerFeed] = []

    def start(instruments: dict[int, FeedInstrument] | None = None, **options: object) -> KiteTickerFeed:
        feed = KiteTickerFeed(
            API_KEY,
            sandbox.ws_root,
            SessionStore(redis_client, BROKER).access_token,
            instruments or {SBIN: INSTRUMENTS[SBIN], INFY: INSTRUMENTS[INFY]},
            publisher.publish,
            **options,  # type: ignore[arg-type]
        ).start()
        feeds.append(feed)
        assert feed.wait_connected(10)
        return feed

    yield start
    for feed in feeds:
        feed.stop()


def _ticks(events: list[Event]) -> list[MarketTick]:
    return [e.data for e in events if isinstance(e.data, MarketTick)]


def test_feed_when_subscribed_in_full_mode_then_ticks_with_depth_published_as_the_simulators_are(
    kafka: EmbeddedKafka, sandbox: KiteSandbox, access_token: str, start_feed: Callable[..., KiteTickerFeed]
) -> None:
    sandbox.set_price("NSE:SBIN", "801.25")
    start_feed()

    events = read_events(
        kafka.bootstrap_servers,
        [TICKS],
        until=lambda es: {t.instrument_token for t in _ticks(es)} == {SBIN, INFY},
    )

    sbin = next(e for e in events if isinstance(e.data, MarketTick) and e.data.instrument_token == SBIN)
    tick = sbin.data
    assert isinstance(tick, MarketTick)
    # The very shape a simulator tick has after the same trip through Kafka.
    simulated = from_kafka(*to_kafka(tick_event(tick, sbin.id)))
    assert (sbin.type, sbin.source, sbin.partitionkey, sbin.correlationid, sbin.causationid) == (
        simulated.type,
        simulated.source,
        simulated.partitionkey,
        simulated.correlationid,
        simulated.causationid,
    )
    assert (tick.tradingsymbol, tick.exchange, tick.asset_class) == ("SBIN", "NSE", "equity")
    assert tick.last_price == Decimal("801.25")
    assert tick.depth_buy is not None and tick.depth_sell is not None
    assert (len(tick.depth_buy), len(tick.depth_sell)) == (5, 5)
    assert tick.bid == tick.depth_buy[0].price < tick.last_price < tick.ask == tick.depth_sell[0].price
    assert tick.exchange_timestamp.utcoffset() == IST.utcoffset(tick.exchange_timestamp)
    assert sbin.topic == TICKS


def test_feed_when_instruments_exceed_one_connection_then_several_connections_all_stream(
    kafka: EmbeddedKafka, sandbox: KiteSandbox, access_token: str, start_feed: Callable[..., KiteTickerFeed]
) -> None:
    feed = start_feed(INSTRUMENTS, per_connection=1)

    events = read_events(
        kafka.bootstrap_servers,
        [TICKS],
        until=lambda es: {t.instrument_token for t in _ticks(es)} == set(INSTRUMENTS),
    )

    assert feed.connections == 3 == sandbox.hub.connection_count
    assert {t.instrument_token for t in _ticks(events)} == set(INSTRUMENTS)


@pytest.fixture
def restartable(sandbox_config: SandboxConfig) -> Iterator[list[KiteSandbox]]:
    ports = (free_port(), free_port())
    running = [
        KiteSandbox(API_KEY, API_SECRET, config=sandbox_config, port=ports[0], ws_port=ports[1]).start()
    ]
    yield running
    for sandbox in running:
        sandbox.stop()


def test_feed_when_connection_drops_and_a_new_login_happened_then_reconnects_with_the_new_token(
    kafka: EmbeddedKafka,
    redis_client: redis.Redis,
    publisher: EventPublisher,
    restartable: list[KiteSandbox],
) -> None:
    first = restartable[0]
    settings = KiteSettings(api_key=API_KEY, api_secret=API_SECRET, root=first.root, ws_root=first.ws_root)  # type: ignore[arg-type]
    complete_login(first.issue_request_token(), settings, redis_client, BROKER)
    feed = KiteTickerFeed(
        API_KEY,
        first.ws_root,
        SessionStore(redis_client, BROKER).access_token,
        {SBIN: INSTRUMENTS[SBIN]},
        publisher.publish,
        retry_delay_s=0.1,
    ).start()
    try:
        assert feed.wait_connected(10)
        # Kite goes away and comes back; the old token is gone with it, and someone logs in again.
        first.stop()
        second = KiteSandbox(
            API_KEY,
            API_SECRET,
            config=first.config,
            port=int(first.root.rsplit(":", 1)[1]),
            ws_port=int(first.ws_root.rsplit(":", 1)[1]),
        ).start()
        restartable.append(second)
        complete_login(second.issue_request_token(), settings, redis_client, BROKER)
        second.set_price("NSE:SBIN", "812.35")

        events = read_events(
            kafka.bootstrap_servers,
            [TICKS],
            until=lambda es: any(t.last_price == Decimal("812.35") for t in _ticks(es)),
            timeout=15,
        )
    finally:
        feed.stop()

    assert any(t.last_price == Decimal("812.35") for t in _ticks(events))
    assert feed.stats.closes >= 1 and feed.stats.connects >= 2


def test_feed_when_order_update_arrives_on_the_ticker_then_it_becomes_a_filled_event_once_with_charges(
    kafka: EmbeddedKafka,
    sandbox: KiteSandbox,
    access_token: str,
    store: RedisStateStore,
    publisher: EventPublisher,
    kite_settings: KiteSettings,
    start_feed: Callable[..., KiteTickerFeed],
) -> None:
    charges = LiveChargeRates.shipped(load_instruments())
    updates = TickerOrderUpdates(OrderUpdateProcessor(store, (BROKER,), charges=charges), publisher).start()
    try:
        start_feed(order_updates=updates)
        sandbox.set_price("NSE:SBIN", "799.95")
        event = validated("ticker-update", quantity=2)
        ZerodhaTrader(frozenset({BROKER}), kite_settings).handle(event, store)
        order_id = OrderContext.of(event, BROKER).order_id

        events = read_events(
            kafka.bootstrap_servers,
            [topics.orders_filled(BROKER)],
            until=lambda es: any(getattr(e.data, "order_id", None) == order_id for e in es),
        )
    finally:
        updates.stop()

    (fill,) = [e.data for e in of_type(events, EventType.ORDER_FILLED) if e.data.order_id == order_id]  # type: ignore[union-attr]
    assert isinstance(fill, OrderFilled)
    assert (fill.quantity, fill.price, fill.remaining_quantity) == (2, Decimal("799.95"), 0)
    # Charged as the paper broker charges the same order (Kite's contract note is the final word).
    rates = charges.for_order(fill.instrument_token, fill.exchange, fill.product.value, fill.filled_at)
    assert rates is not None
    assert fill.charges == charges_on_turnover(fill.side, 2, Decimal("1599.90"), rates).total > 0


def test_run_kite_feed_when_logged_in_then_configured_instruments_stream_until_stopped(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, sandbox: KiteSandbox, access_token: str
) -> None:
    settings = load_settings(
        brokers=(BROKER,),
        kafka={"bootstrap_servers": kafka.bootstrap_servers, "partitions": 1},
        redis={"url": redis_server.url},
        kite={"api_key": API_KEY, "api_secret": API_SECRET, "root": sandbox.root, "ws_root": sandbox.ws_root},
    )
    chosen = [i for i in load_instruments() if i.instrument_token in (SBIN, INFY)]
    stop, started, lines = threading.Event(), threading.Event(), []

    def out(line: str) -> None:
        lines.append(line)
        started.set()

    runner = threading.Thread(
        target=run_kite_feed,
        args=(settings,),
        kwargs={"instruments": chosen, "stop": stop, "status_every_s": 0.1, "out": out},
    )
    runner.start()
    try:
        assert started.wait(10)  # the feed created its topics and connected
        events = read_events(
            kafka.bootstrap_servers,
            [TICKS],
            until=lambda es: {t.instrument_token for t in _ticks(es)} == {SBIN, INFY},
        )
    finally:
        stop.set()
        runner.join(10)

    assert {t.instrument_token for t in _ticks(events)} == {SBIN, INFY}
    assert not runner.is_alive()
    assert lines[0] == "kite feed: 2 instruments on 1 connection(s)"


def test_run_kite_feed_when_nobody_logged_in_then_refuses_to_start_naming_alphapanda_login(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, sandbox: KiteSandbox
) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},
        redis={"url": redis_server.url},
        kite={"api_key": API_KEY, "ws_root": sandbox.ws_root},
    )

    with pytest.raises(SessionError, match="run `alphapanda login`"):
        run_kite_feed(settings)
