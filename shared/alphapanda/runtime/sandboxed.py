"""`alphapanda run --kite-sandbox`: the zerodha broker trades against a local Kite sandbox.

Two steps, because the zerodha trading engine reads its Kite settings when the core is built
(before Kafka and Redis exist) while the login needs Redis:

- `sandbox_settings(settings)` points the Kite settings at a sandbox that is about to start on
  two free loopback ports, with the sandbox's api key and secret;
- `kite_sandbox(settings, instruments, ...)`, entered once Redis and Kafka run, starts that
  sandbox serving `instruments`, logs every zerodha broker in exactly as `alphapanda login`
  does (a request token from the sandbox's control API, `generate_session`, the token in
  Redis), connects KiteTicker to it, and yields the ticks it streams. Those ticks are the
  run's only market feed, so paper and zerodha trade on the same prices and zerodha orders
  fill at the prices the strategies saw. The ticker's order updates become the zerodha order
  events (`postbacks.TickerOrderUpdates`). Leaving the block stops all of it.

The sandbox's clock runs at the market time the simulated feed would use (the latest session
open outside market hours), so a run at night trades instead of being rejected as after hours.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import redis
import requests
from pydantic import SecretStr

from alphapanda.config import Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.events import Event, MarketTick, now
from alphapanda.runtime.embedded import free_port
from alphapanda.topics import zerodha_brokers

SANDBOX_API_KEY = "sandbox_api_key"
SANDBOX_API_SECRET = "sandbox_api_secret"
MIN_TICK_INTERVAL_S = 0.02
MAX_TICK_INTERVAL_S = 1.0


class SandboxUnavailable(RuntimeError):
    """The sandbox, its login or its ticker did not come up."""


def sandbox_settings(settings: Settings) -> Settings:
    """`settings` with Kite pointed at a sandbox to be started by `kite_sandbox` on free ports."""
    kite = settings.kite.model_copy(
        update={
            "api_key": SANDBOX_API_KEY,
            "api_secret": SecretStr(SANDBOX_API_SECRET),
            "root": f"http://127.0.0.1:{free_port()}",
            "ws_root": f"ws://127.0.0.1:{free_port()}",
        }
    )
    return settings.model_copy(update={"kite": kite})


def sandbox_instruments(instruments: Iterable[Instrument]) -> list[Any]:
    """The sandbox's instrument rows for the pipeline's instruments, opening at their reference price."""
    from alphapanda.kite_sandbox import Instrument as SandboxInstrument

    return [
        SandboxInstrument(
            instrument_token=i.instrument_token,
            exchange_token=i.instrument_token >> 8,
            tradingsymbol=i.tradingsymbol,
            name=i.name,
            exchange=i.exchange,
            segment=i.segment,
            instrument_type=i.instrument_type,
            opening_price=i.reference_price,
            tick_size=i.tick_size,
            lot_size=i.lot_size,
        )
        for i in instruments
    ]


def sandbox_request_token(root: str) -> str:
    """A request token from the control API of the Kite sandbox at REST root `root`: what its
    login page would redirect with, so a login needs no browser."""
    try:
        answer = requests.post(f"{root.rstrip('/')}/_sandbox/request_token", timeout=10)
        answer.raise_for_status()
        return str(answer.json()["request_token"])
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise SandboxUnavailable(f"no request token from the Kite sandbox at {root}: {exc}") from None


def market_clock(start: datetime | None = None) -> Callable[[], datetime]:
    """An IST clock that reads `start` now and runs on from there; by default `start` is where
    the simulated feed's market clock starts (`session_start_for_simulation`: now in session,
    else the latest session open), so the sandbox's ticks and orders fall in a trading session."""
    from alphapanda.domain.calendar import load_trading_calendar
    from alphapanda.kite_sandbox._common import ist_now
    from alphapanda.runtime.feed import session_start_for_simulation

    if start is None:
        start = session_start_for_simulation(load_trading_calendar(), now())
    offset = start - now()

    def clock() -> datetime:
        return ist_now() + offset

    return clock


def tick_interval(instruments: int, rate: float) -> float:
    """Seconds between the sandbox's market steps so that it streams about `rate` ticks/s
    (every step ticks every instrument); 0 means as fast as is sensible."""
    if rate <= 0:
        return MIN_TICK_INTERVAL_S
    return min(MAX_TICK_INTERVAL_S, max(MIN_TICK_INTERVAL_S, instruments / rate))


@dataclass(frozen=True)
class SandboxRun:
    sandbox: Any
    """The running `KiteSandbox` (its control methods work from any thread)."""
    ticks: Iterator[MarketTick]
    """The ticks KiteTicker receives, until the block exits."""


def _ports(settings: Settings) -> tuple[int, int]:
    rest, ws = urlparse(settings.kite.root).port, urlparse(settings.kite.ws_root).port
    if not rest or not ws or settings.kite.api_key != SANDBOX_API_KEY:
        raise SandboxUnavailable("the Kite settings were not made by sandbox_settings()")
    return rest, ws


def _queued(ticks: queue.SimpleQueue[MarketTick], stop: threading.Event) -> Iterator[MarketTick]:
    # A timeout, not a blocking get: the iterator must end soon after the block exits.
    while not stop.is_set():
        try:
            yield ticks.get(timeout=0.2)
        except queue.Empty:
            continue


@contextlib.contextmanager
def kite_sandbox(
    settings: Settings,
    instruments: list[Instrument],
    *,
    seed: int = 0,
    rate: float = 200.0,
    market_start: datetime | None = None,
) -> Iterator[SandboxRun]:
    """Start the sandbox `settings.kite` names, log in, stream `instruments`; stop all on exit.

    `settings` must come from `sandbox_settings` and carry real Kafka and Redis endpoints.
    """
    from alphapanda.brokers.zerodha.charges import LiveChargeRates
    from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, TickerOrderUpdates
    from alphapanda.brokers.zerodha.session import SessionStore, complete_login
    from alphapanda.brokers.zerodha.ticker_feed import FeedInstrument, KiteTickerFeed
    from alphapanda.bus.kafka import EventPublisher
    from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
    from alphapanda.kite_sandbox._common import ist_now
    from alphapanda.state.store import RedisStateStore

    brokers = zerodha_brokers(settings.brokers)
    if not brokers:
        raise SandboxUnavailable("--kite-sandbox needs a zerodha broker")
    rest_port, ws_port = _ports(settings)
    clock = market_clock(market_start) if market_start is not None else ist_now
    sandbox = KiteSandbox(
        SANDBOX_API_KEY,
        SANDBOX_API_SECRET,
        instruments=sandbox_instruments(instruments),
        seed=seed,
        clock=clock,
        port=rest_port,
        ws_port=ws_port,
        config=SandboxConfig(tick_interval=tick_interval(len(instruments), rate)),
    )
    client = redis.Redis.from_url(settings.redis.url)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        stack.enter_context(sandbox)
        for broker in brokers:
            # `alphapanda login --sandbox`'s path.
            complete_login(sandbox_request_token(sandbox.root), settings.kite, client, broker)
        # Order updates get a publisher of their own: they may still arrive while the run's
        # publisher is being closed.
        publisher = EventPublisher(settings.kafka.bootstrap_servers, settings.kafka.ack_timeout_s)
        stack.callback(publisher.close)
        store = RedisStateStore(client, settings.redis.claim_ttl_s)
        charges = LiveChargeRates.shipped(instruments)
        order_update = TickerOrderUpdates(OrderUpdateProcessor(store, brokers, charges=charges), publisher)
        stack.callback(order_update.start().stop)

        ticks: queue.SimpleQueue[MarketTick] = queue.SimpleQueue()

        def enqueue(events: list[Event]) -> None:
            # The run's FeedPublisher stamps and publishes the ticks, as it does simulated ones,
            # so the feed is counted and paced the same way; only the tick itself is kept.
            for event in events:
                if isinstance(event.data, MarketTick):
                    ticks.put(event.data)

        feed = KiteTickerFeed(
            SANDBOX_API_KEY,
            sandbox.ws_root,
            SessionStore(client, brokers[0]).access_token,
            {i.instrument_token: FeedInstrument.of(i) for i in instruments},
            enqueue,
            order_updates=order_update,
            batch=50,
        ).start()
        stack.callback(feed.stop)
        stack.callback(stop.set)
        if not feed.wait_connected(10):
            raise SandboxUnavailable(f"KiteTicker did not connect to the sandbox at {sandbox.ws_root}")
        yield SandboxRun(sandbox=sandbox, ticks=_queued(ticks, stop))
