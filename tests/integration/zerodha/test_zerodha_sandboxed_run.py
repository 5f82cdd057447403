"""`run --kite-sandbox` in process: the sandbox's KiteTicker is the only feed; strategies, risk, the
zerodha orders in the sandbox, its ticker order updates and both portfolios run on real Tansu and
redis-server, paper beside zerodha. Also the periodic reconciliation and `alphapanda kite-sandbox`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from kiteconnect import KiteConnect
from zerodha_env import BROKER, INFY, SBIN, of_type, read_events

from alphapanda import topics
from alphapanda.brokers.zerodha.reconcile import PeriodicReconciler, live_reconcilers, reconcile
from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import EventPublisher
from alphapanda.config import Settings, load_settings
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.portfolio import Book
from alphapanda.events import IST, Alert, Event, EventType, MarketTick, OrderFilled, now
from alphapanda.kite_sandbox import KiteSandbox
from alphapanda.runtime.bootstrap import Core, build_core, connect
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.feed import FeedPublisher, session_start_for_simulation
from alphapanda.runtime.sandboxed import (
    SANDBOX_API_KEY,
    kite_sandbox,
    sandbox_request_token,
    sandbox_settings,
)
from alphapanda.state import keys as core_keys
from alphapanda.state.store import RedisStateStore
from alphapanda.topics import bindings

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = "both_brokers"
STRATEGIES = f"""
strategies:
  - name: {STRATEGY}
    kind: ema_crossover
    instruments: [SBIN, INFY]
    brokers: [paper, zerodha]
    params: {{fast: 2, slow: 4, quantity: 1}}
"""


@dataclass
class Sandboxed:
    settings: Settings
    core: Core
    sandbox: KiteSandbox
    store: RedisStateStore
    redis: redis.Redis
    publisher: EventPublisher
    feed: FeedPublisher
    dispatcher: Dispatcher

    def book(self, broker: str) -> Book | None:
        raw = self.redis.get(core_keys.book(broker, STRATEGY))
        return Book.from_json(json.loads(raw)) if raw else None

    def wait(self, what: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, "the pipeline did not get there in time"
            time.sleep(0.05)


@pytest.fixture
def sandboxed(kafka: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Sandboxed]:
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(STRATEGIES)
    settings = sandbox_settings(
        load_settings(
            brokers=("paper", BROKER),
            kafka={"bootstrap_servers": kafka.bootstrap_servers, "partitions": 1},
            redis={"url": redis_server.url},
            strategies_file=strategies,
            delivery={"retries": 2, "backoff_delay_s": 0.01},
        )
    )
    core = build_core(settings)
    store, publisher = connect(settings)
    dispatcher = Dispatcher(
        bindings(list(settings.brokers)), core.stage_for, store, publisher, settings.kafka, settings.delivery
    )
    dispatcher.start()
    instruments = [i for i in core.instruments if i.instrument_token in (SBIN, INFY)]
    market_start = session_start_for_simulation(load_trading_calendar(), now())
    try:
        with kite_sandbox(settings, instruments, seed=3, rate=0, market_start=market_start) as run:
            feed = FeedPublisher(run.ticks, publisher, 0)
            feed.start()
            try:
                yield Sandboxed(
                    settings,
                    core,
                    run.sandbox,
                    store,
                    redis.Redis.from_url(redis_server.url),
                    publisher,
                    feed,
                    dispatcher,
                )
            finally:
                feed.stop()
                feed.join(5)
                # Stop trading before the sandbox goes, or the last orders meet a closed port.
                dispatcher.stop()
    finally:
        dispatcher.stop()
        publisher.close()


def _net(book: Book | None, token: int) -> int:
    return book.position(token).net_quantity if book else 0


def test_run_when_sandbox_feeds_both_brokers_then_zerodha_fills_at_sandbox_prices_and_paper_trades_same_ideas(
    sandboxed: Sandboxed,
) -> None:
    sandboxed.wait(lambda: (b := sandboxed.book(BROKER)) is not None and b.trade_count >= 2)
    sandboxed.wait(lambda: (b := sandboxed.book("paper")) is not None and b.trade_count >= 2)
    sandboxed.feed.stop()
    sandboxed.feed.join(5)
    # The feed publishes as fast as it can: let the pipeline work off the ticks already sent, or
    # a momentary match of book, fills and orders below is overtaken by the backlog's trades.
    assert sandboxed.dispatcher.wait_idle(60, quiet_s=1.0), "the pipeline did not drain"
    bootstrap = sandboxed.settings.kafka.bootstrap_servers
    fills: list[Event] = []

    def settled() -> bool:
        # The last orders fill and their updates reach the portfolio after the feed stops.
        fills[:] = of_type(read_events(bootstrap, [topics.orders_filled(BROKER)]), EventType.ORDER_FILLED)
        book = sandboxed.book(BROKER)
        complete = [o for o in sandboxed.sandbox.orders() if o["status"] == "COMPLETE"]
        return book is not None and book.trade_count == len(fills) == len(complete)

    sandboxed.wait(settled, timeout=15)
    orders = {o["order_id"]: o for o in sandboxed.sandbox.orders()}
    paper_ideas = {e.correlationid for e in read_events(bootstrap, [topics.signals_validated("paper")])}
    ticks = read_events(bootstrap, [topics.market_ticks("equity")])
    assert ticks and {e.data.instrument_token for e in ticks if isinstance(e.data, MarketTick)} <= {
        SBIN,
        INFY,
    }
    assert fills and orders
    for fill in fills:
        data = fill.data
        assert isinstance(data, OrderFilled)
        record = json.loads(sandboxed.redis.get(core_keys.order(BROKER, data.order_id)) or "{}")
        order = orders[record["broker_order_id"]]
        assert order["status"] == "COMPLETE" and Decimal(str(order["average_price"])) == data.price
        # The same trading idea went to paper, on the same ticks.
        assert fill.correlationid in paper_ideas
    zerodha_book = sandboxed.book(BROKER)
    for token in (SBIN, INFY):
        signed = sum(
            (1 if f.side.value == "BUY" else -1) * f.quantity
            for f in (e.data for e in fills)
            if isinstance(f, OrderFilled) and f.instrument_token == token
        )
        assert _net(zerodha_book, token) == signed
    positions = KiteConnect(
        SANDBOX_API_KEY,
        access_token=json.loads(sandboxed.redis.get(f"{BROKER}:kite:session") or "{}")["access_token"],
        root=sandboxed.sandbox.root,
    ).positions()
    kite_net = {int(p["instrument_token"]): int(p["quantity"]) for p in positions["net"]}
    assert {t: q for t, q in kite_net.items() if q} == {
        t: _net(zerodha_book, t) for t in (SBIN, INFY) if _net(zerodha_book, t)
    }


def test_reconciler_when_kite_holds_a_position_the_books_lack_then_alert_at_start_and_not_again_before_due(
    sandboxed: Sandboxed,
) -> None:
    sandboxed.feed.stop()
    sandboxed.feed.join(5)
    token = json.loads(sandboxed.redis.get(f"{BROKER}:kite:session") or "{}")["access_token"]
    kite = KiteConnect(SANDBOX_API_KEY, access_token=token, root=sandboxed.sandbox.root)
    # Orders still in the pipeline when the feed stopped must land before "at start" means agreement:
    # books and Kite can agree for a moment while the backlog's next orders are still on their way.
    assert sandboxed.dispatcher.wait_idle(60, quiet_s=1.0), "the pipeline did not drain"
    sandboxed.wait(lambda: not reconcile(sandboxed.store, kite, BROKER).breaks, timeout=15)
    alerts: list[Event] = []
    reports: list[str] = []
    (reconciler,) = live_reconcilers(
        sandboxed.settings.brokers,
        sandboxed.settings.kite,
        sandboxed.settings.redis.url,
        3600,
        alerts.extend,
        report=reports.append,
    )
    assert isinstance(reconciler, PeriodicReconciler) and reconciler.interval_s == 60
    reconciler._settle_s = 0.1  # the books do not move now: no need to wait a whole second
    assert reconciler.maybe_run(0.0) is not None and alerts == []  # books and Kite agree at start

    # An order placed outside Alpha Panda: Kite holds a position the books know nothing of.
    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="SBIN",
        transaction_type="BUY",
        quantity=7,
        product="MIS",
        order_type="MARKET",
        market_protection=2,
    )
    sandboxed.sandbox.wait_for_order(order_id)

    assert reconciler.maybe_run(30.0) is None  # not due yet
    result = reconciler.maybe_run(61.0)

    assert result is not None and [(b.instrument_token, b.actual - b.expected) for b in result.breaks] == [
        (SBIN, 7)
    ]
    (alert,) = alerts
    assert isinstance(alert.data, Alert) and alert.data.kind == "position_mismatch"
    assert alert.topic == topics.alerts(BROKER)
    assert len(reports) == 1 and "NSE:SBIN" in reports[0]


def _sandbox_command(*args: str) -> subprocess.Popen[str]:
    """`alphapanda kite-sandbox` as a user starts it (no ALPHAPANDA_* settings of ours)."""
    return subprocess.Popen(
        [sys.executable, "-m", "alphapanda.cli", "kite-sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")},
    )


def _logged_in(root: str) -> Any:
    """The real kiteconnect client with a session from the sandbox at `root` (its made-up pair)."""
    kite = KiteConnect("sandbox_api_key", root=root)
    kite.generate_session(sandbox_request_token(root), api_secret="sandbox_api_secret")
    return kite


def test_kite_sandbox_command_when_started_then_prints_roots_and_keys_and_serves_the_shipped_list() -> None:
    proc = _sandbox_command("--seed", "5")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        root = lines[0].split()[4]
        assert lines[1].split()[4].startswith("ws://127.0.0.1:")
        assert "api_key=sandbox_api_key api_secret=sandbox_api_secret" in lines[2]
        symbols = {row["tradingsymbol"] for row in _logged_in(root).instruments("NSE")}
        assert {"ICICIBANK", "BHARTIARTL", "SBIN"} <= symbols  # the shipped list, not the sandbox's own
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "Kite sandbox stopped" in output


def test_kite_sandbox_command_when_market_clock_then_its_quotes_are_stamped_inside_an_nse_session() -> None:
    proc = _sandbox_command("--market-clock")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        root = lines[0].split()[4]
        stamped = _logged_in(root).quote(["NSE:SBIN"])["NSE:SBIN"]["timestamp"]
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert any(line.startswith("Kite sandbox market clock starts at ") for line in lines), lines
    # Kite's timestamps are IST wall time without a zone; the session holds whenever this runs.
    at = stamped.replace(tzinfo=IST) if stamped.tzinfo is None else stamped
    assert load_trading_calendar().is_open(at), f"{stamped} is outside an NSE session"
