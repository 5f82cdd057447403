"""Live market data from KiteTicker, published as `MarketTick` events like the simulator's.

`tick_from_packet` (pure) turns one full-mode packet, as the official client parses it, into a
`MarketTick` with five levels of depth. `KiteTickerFeed` keeps the connections: at most 3000
instruments per connection and three connections per app (Kite's limits), full mode, the
client's own reconnects, and a fresh access token from Redis whenever a connection drops (a
token lapses at 06:00 IST; after the next login the feed carries on by itself). Ticks are
stamped with `feed.TickStamper` and published with `EventPublisher` from a thread of their
own, so a slow broker never stalls the ticker's reactor.

Twisted's reactor runs once per process and cannot be restarted: the feed starts it in a
daemon thread if nobody has, and drives every connection through it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from alphapanda.config import Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.events import IST, DepthLevel, Event, MarketTick, now
from alphapanda.feed import TickStamper

log = logging.getLogger(__name__)

MAX_PER_CONNECTION = 3000
MAX_CONNECTIONS = 3
STAMP_NAMESPACE = "kite"


@dataclass(frozen=True, slots=True)
class FeedInstrument:
    """What a tick needs to name its instrument (the ticker sends only the token)."""

    instrument_token: int
    tradingsymbol: str
    exchange: str
    asset_class: str = "equity"

    @classmethod
    def of(cls, instrument: Instrument) -> FeedInstrument:
        return cls(
            instrument.instrument_token, instrument.tradingsymbol, instrument.exchange, instrument.asset_class
        )


def shards(
    tokens: Iterable[int], per_connection: int = MAX_PER_CONNECTION, max_connections: int = MAX_CONNECTIONS
) -> list[list[int]]:
    """Split `tokens` over as few connections as Kite's per-connection limit allows."""
    unique = list(dict.fromkeys(tokens))
    if not unique:
        raise ValueError("no instruments to subscribe to")
    groups = [unique[i : i + per_connection] for i in range(0, len(unique), per_connection)]
    if len(groups) > max_connections:
        raise ValueError(
            f"{len(unique)} instruments need {len(groups)} ticker connections; Kite allows "
            f"{max_connections} of {per_connection} instruments each"
        )
    return groups


def _price(value: Any) -> Decimal:
    # The client divides integer paise by a float; str() gives back the short decimal it was.
    return Decimal(str(value)) if value is not None else Decimal(0)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # The client builds these with datetime.fromtimestamp: naive, in this machine's local time.
    return value.astimezone(IST)


def _levels(raw: Sequence[Mapping[str, Any]]) -> tuple[DepthLevel, ...]:
    return tuple(
        DepthLevel(price=_price(lv["price"]), quantity=int(lv["quantity"]), orders=int(lv.get("orders", 0)))
        for lv in raw
        if lv.get("price") and int(lv.get("quantity") or 0) > 0
    )


def tick_from_packet(
    packet: Mapping[str, Any], instrument: FeedInstrument, received_at: datetime
) -> MarketTick | None:
    """The `MarketTick` of a parsed ticker packet, or None when it cannot be one (no trade yet,
    or a tradable instrument with an empty side of the book: there is no price to fill at)."""
    last = _price(packet.get("last_price"))
    if last <= 0:
        return None
    stamp = _aware(packet.get("exchange_timestamp")) or _aware(packet.get("last_trade_time")) or received_at
    common: dict[str, Any] = {
        "instrument_token": instrument.instrument_token,
        "tradingsymbol": instrument.tradingsymbol,
        "exchange": instrument.exchange,
        "asset_class": instrument.asset_class,
        "last_price": last,
        "volume": int(packet.get("volume_traded") or 0),
        "exchange_timestamp": stamp,
    }
    if not packet.get("tradable", True):
        # Indices have no order book: their "touch" is the index value itself.
        return MarketTick(**common, bid=last, ask=last)
    depth = packet.get("depth") or {}
    buys, sells = _levels(depth.get("buy") or ()), _levels(depth.get("sell") or ())
    if not buys or not sells:
        return None
    return MarketTick(
        **common,
        bid=buys[0].price,
        ask=sells[0].price,
        bid_quantity=buys[0].quantity,
        ask_quantity=sells[0].quantity,
        depth_buy=buys,
        depth_sell=sells,
    )


_reactor_lock = threading.Lock()


def running_reactor() -> Any:
    """Twisted's reactor, started in a daemon thread unless something already runs it."""
    from twisted.internet import reactor as _installed

    reactor: Any = _installed  # the stubs type the module, not the reactor installed in it
    with _reactor_lock:
        if not reactor.running:
            thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="twisted-reactor",
                daemon=True,
            )
            thread.start()
            deadline = time.monotonic() + 5
            while not reactor.running:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError("Twisted's reactor did not start (it cannot run twice in one process)")
                time.sleep(0.005)
    return reactor


@dataclass
class FeedStats:
    received: int = 0
    published: int = 0
    skipped: int = 0
    connects: int = 0
    closes: int = 0
    publish_failures: int = 0


class KiteTickerFeed:
    """KiteTicker connections in full mode for `instruments`, publishing their ticks."""

    def __init__(
        self,
        api_key: str,
        ws_root: str,
        access_token: Callable[[], str],
        instruments: Mapping[int, FeedInstrument],
        publish: Callable[[list[Event]], Any],
        *,
        order_updates: Callable[[Any, Mapping[str, Any]], None] | None = None,
        per_connection: int = MAX_PER_CONNECTION,
        max_connections: int = MAX_CONNECTIONS,
        reconnect_max_tries: int = 300,
        reconnect_max_delay: int = 5,
        retry_delay_s: float | None = None,
        batch: int = 500,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self._api_key = api_key
        self._ws_root = ws_root
        self._access_token = access_token
        self._instruments = dict(instruments)
        self._shards = shards(self._instruments, per_connection, max_connections)
        self._publish = publish
        self._order_updates = order_updates
        self._reconnect_max_tries = reconnect_max_tries
        self._reconnect_max_delay = reconnect_max_delay
        self._retry_delay_s = retry_delay_s
        self._batch = batch
        self._clock = clock
        self._stamper = TickStamper(STAMP_NAMESPACE)
        self._ticks: queue.SimpleQueue[MarketTick | None] = queue.SimpleQueue()
        self._tickers: list[Any] = []
        self._connected: set[int] = set()
        self._dead: set[int] = set()
        self._state = threading.Condition()
        self._publisher = threading.Thread(target=self._publish_loop, name="kite-feed-publisher", daemon=True)
        self.stats = FeedStats()

    @property
    def connections(self) -> int:
        return len(self._shards)

    def start(self) -> KiteTickerFeed:
        reactor = running_reactor()
        self._publisher.start()
        for index in range(len(self._shards)):
            ticker = self._build(index)
            self._tickers.append(ticker)
            reactor.callFromThread(self._connect, ticker)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        from twisted.internet import reactor

        for ticker in self._tickers:
            reactor.callFromThread(ticker.close)
        self._ticks.put(None)
        self._publisher.join(timeout)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until every connection is open (and subscribed)."""
        with self._state:
            return self._state.wait_for(lambda: len(self._connected) == len(self._shards), timeout)

    def restart_dead(self) -> int:
        """Replace connections whose client gave up reconnecting; return how many."""
        from twisted.internet import reactor

        with self._state:
            dead, self._dead = sorted(self._dead), set()
        restarted = 0
        for index in dead:
            try:
                self._tickers[index] = self._build(index)
            except Exception as exc:  # typically no session until the next login: try next round
                log.warning("ticker connection %d not restarted yet: %s", index, exc)
                with self._state:
                    self._dead.add(index)
                continue
            reactor.callFromThread(self._connect, self._tickers[index])
            restarted += 1
        return restarted

    # -- connections (callbacks run on the reactor thread) ----------------------------------

    def _url(self, token: str) -> str:
        return f"{self._ws_root}?api_key={self._api_key}&access_token={token}"

    def _build(self, index: int) -> Any:
        from kiteconnect import KiteTicker

        ticker = KiteTicker(
            self._api_key,
            self._access_token(),
            root=self._ws_root,
            reconnect=True,
            reconnect_max_tries=self._reconnect_max_tries,
            reconnect_max_delay=self._reconnect_max_delay,
        )
        tokens = self._shards[index]

        def on_connect(ws: Any, _response: Any) -> None:
            ws.subscribe(tokens)
            ws.set_mode(ws.MODE_FULL, tokens)
            self.stats.connects += 1
            with self._state:
                self._connected.add(index)
                self._state.notify_all()

        def on_close(ws: Any, code: Any, _reason: Any) -> None:
            self.stats.closes += 1
            with self._state:
                self._connected.discard(index)
            self._refresh_token(ws)

        def on_noreconnect(_ws: Any) -> None:
            log.error("ticker connection %d gave up reconnecting; it will be replaced", index)
            with self._state:
                self._dead.add(index)

        ticker.on_connect = on_connect
        ticker.on_ticks = self._on_ticks
        ticker.on_close = on_close
        ticker.on_reconnect = lambda ws, _attempt: self._refresh_token(ws)
        ticker.on_noreconnect = on_noreconnect
        if index == 0 and self._order_updates is not None:
            # Every connection receives every order update: one of them is enough.
            ticker.on_order_update = self._order_updates
        return ticker

    def _connect(self, ticker: Any) -> None:
        ticker.connect()
        if self._retry_delay_s is not None:
            ticker.factory.initialDelay = ticker.factory.delay = self._retry_delay_s

    def _refresh_token(self, ticker: Any) -> None:
        """Point the next reconnect at the current token: after a login it differs from the one
        the connection was opened with."""
        try:
            url = self._url(self._access_token())
        except Exception as exc:  # no session yet: keep the old URL and let the client retry
            log.warning("ticker reconnect without a fresh token: %s", exc)
            return
        factory = getattr(ticker, "factory", None)
        if factory is None or factory.url == url:
            return
        factory.setSessionParameters(
            url=url,
            origin=factory.origin,
            protocols=factory.protocols,
            useragent=factory.useragent,
            headers=factory.headers,
            proxy=factory.proxy,
        )
        ticker.socket_url = url
        log.info("ticker will reconnect with the current access token")

    def _on_ticks(self, _ws: Any, packets: list[Mapping[str, Any]]) -> None:
        received_at = self._clock()
        for packet in packets:
            self.stats.received += 1
            instrument = self._instruments.get(int(packet.get("instrument_token", 0)))
            tick = tick_from_packet(packet, instrument, received_at) if instrument else None
            if tick is None:
                self.stats.skipped += 1
                continue
            self._ticks.put(tick)

    # -- publishing --------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            first = self._ticks.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._batch:
                try:
                    more = self._ticks.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._send(batch)
                    return
                batch.append(more)
            self._send(batch)

    def _send(self, ticks: list[MarketTick]) -> None:
        events = [self._stamper.stamp(t) for t in ticks]
        try:
            self._publish(events)
        except Exception as exc:  # ticks are perishable: a later tick supersedes a lost one
            self.stats.publish_failures += 1
            log.error("dropped %d ticks: %s", len(events), exc)
            return
        self.stats.published += len(events)


def run_kite_feed(
    settings: Settings,
    *,
    instruments: Sequence[Instrument] | None = None,
    broker: str | None = None,
    order_updates: bool = True,
    stop: threading.Event | None = None,
    status_every_s: float = 10.0,
    out: Callable[[str], None] = print,
) -> int:
    """`alphapanda feed --source kite`: stream the configured instruments until stopped.

    Needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS, ALPHAPANDA_REDIS__URL and a Kite session
    (`alphapanda login`). With `order_updates` the ticker's order messages are processed too,
    for deployments that cannot receive postbacks (both at once is safe: updates are claimed).
    """
    import redis

    from alphapanda.brokers.zerodha.charges import LiveChargeRates
    from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, TickerOrderUpdates
    from alphapanda.brokers.zerodha.session import SessionStore
    from alphapanda.bus.kafka import EventPublisher, ensure_topics
    from alphapanda.config import ConfigError
    from alphapanda.domain.instruments import load_instruments
    from alphapanda.state.store import RedisStateStore
    from alphapanda.topics import all_topics, zerodha_brokers

    bootstrap, redis_url = settings.kafka.bootstrap_servers, settings.redis.url
    if not bootstrap or not redis_url:
        raise ConfigError(
            "the Kite feed needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL "
            "(the access token is read from Redis)"
        )
    configured = zerodha_brokers(settings.brokers)
    if broker is None:
        broker = configured[0] if configured else "zerodha"
    # The ticker's order messages are those of the session's Kite user: the orders of every
    # zerodha broker trading through this app, each found by its tag.
    updated = tuple(dict.fromkeys((broker, *configured)))
    chosen = list(instruments) if instruments is not None else load_instruments(settings.instruments_file)
    client = redis.Redis.from_url(redis_url)
    sessions = SessionStore(client, broker)
    sessions.load()  # no session: stop now with the login hint rather than retry forever
    ensure_topics(bootstrap, all_topics(list(updated)), settings.kafka.partitions)
    publisher = EventPublisher(bootstrap, settings.kafka.ack_timeout_s)
    updates = (
        TickerOrderUpdates(
            OrderUpdateProcessor(
                RedisStateStore(client, settings.redis.claim_ttl_s),
                updated,
                charges=LiveChargeRates.shipped(chosen),
            ),
            publisher,
        ).start()
        if order_updates
        else None
    )
    feed = KiteTickerFeed(
        settings.kite.api_key,
        settings.kite.ws_root,
        sessions.access_token,
        {i.instrument_token: FeedInstrument.of(i) for i in chosen},
        publisher.publish,
        order_updates=updates,
    ).start()
    out(f"kite feed: {len(chosen)} instruments on {feed.connections} connection(s)")
    stop = stop or threading.Event()
    try:
        while not stop.wait(status_every_s):
            feed.restart_dead()
            s = feed.stats
            out(
                f"ticks received={s.received} published={s.published} "
                f"skipped={s.skipped} reconnects={s.closes}"
            )
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
        if updates is not None:
            updates.stop()
        publisher.close()
    return 0
