from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from kiteconnect import KiteTicker
from twisted.internet import reactor

from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.kite_sandbox.instruments import CSV_COLUMNS

INFY_TOKEN = 408065
NIFTY_50_TOKEN = 256265


def test_instruments_when_fetched_then_csv_parses_in_client_with_documented_columns(kite: Any) -> None:
    rows = kite.instruments()

    assert set(rows[0]) == set(CSV_COLUMNS)
    by_symbol = {row["tradingsymbol"]: row for row in rows}
    assert by_symbol["INFY"]["instrument_token"] == INFY_TOKEN
    assert by_symbol["INFY"]["exchange_token"] == str(INFY_TOKEN >> 8)
    assert (by_symbol["INFY"]["tick_size"], by_symbol["INFY"]["lot_size"]) == (0.05, 1)
    assert by_symbol["RELIANCE"]["instrument_token"] == 738561
    assert by_symbol["NIFTY 50"]["segment"] == "INDICES"
    (future,) = kite.instruments("NFO")
    assert (future["instrument_type"], future["segment"], future["lot_size"]) == ("FUT", "NFO-FUT", 75)
    assert isinstance(future["expiry"], dt.date) and future["expiry"].weekday() == 1
    assert {row["exchange"] for row in kite.instruments("NSE")} == {"NSE"}


def test_quote_when_requested_then_ohlc_depth_and_ltp_match_sandbox_price(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price("NSE:INFY", "1512.35")

    quote = kite.quote("NSE:INFY", "NSE:NOSUCH")

    assert list(quote) == ["NSE:INFY"]
    infy = quote["NSE:INFY"]
    assert infy["last_price"] == 1512.35
    assert isinstance(infy["timestamp"], dt.datetime)
    assert len(infy["depth"]["buy"]) == len(infy["depth"]["sell"]) == 5
    assert infy["depth"]["buy"][0]["price"] < 1512.35 < infy["depth"]["sell"][0]["price"]
    time.sleep(1.05)  # Kite allows one quote request a second (facts.md section 7)
    assert kite.ltp("NSE:INFY")["NSE:INFY"] == {"instrument_token": INFY_TOKEN, "last_price": 1512.35}
    time.sleep(1.05)
    assert kite.ohlc("NSE:INFY")["NSE:INFY"]["ohlc"]["high"] >= 1512.35


def _walk(seed: int, steps: int) -> list[Decimal]:
    sandbox = KiteSandbox(seed=seed, config=SandboxConfig(tick_interval=None))
    path = []
    for _ in range(steps):
        sandbox.step_market()
        path.append(sandbox.price("NSE:TCS"))
    return path


def test_random_walk_when_same_seed_then_same_prices_and_different_seed_differs() -> None:
    first = _walk(seed=11, steps=40)

    assert first == _walk(seed=11, steps=40)
    assert first != _walk(seed=12, steps=40)
    assert len(set(first)) > 5


def _connect(ticker: Any) -> None:
    # Twisted's reactor runs once per process; later tickers must be started from its thread.
    if reactor.running:
        reactor.callFromThread(ticker.connect, threaded=True)
    else:
        ticker.connect(threaded=True)


def _close(ticker: Any) -> None:
    reactor.callFromThread(ticker.close)


@pytest.fixture
def access_token(sandbox: KiteSandbox, kite: Any) -> str:
    token: str = kite.access_token
    return token


class TickerProbe:
    def __init__(self, ticker: Any) -> None:
        self.ticker = ticker
        self.ticks: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.closes: list[tuple[Any, Any]] = []
        self.frame_sizes: list[int] = []
        self.heartbeat = threading.Event()
        self.full_tick = threading.Event()
        self.completed = threading.Event()
        self.closed = threading.Event()
        ticker.on_ticks = self._on_ticks
        ticker.on_order_update = self._on_order_update
        ticker.on_close = self._on_close
        ticker.on_message = self._on_message

    def _on_message(self, ws: Any, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self.frame_sizes.append(len(payload))
            if len(payload) == 1:
                self.heartbeat.set()

    def _on_ticks(self, ws: Any, ticks: list[dict[str, Any]]) -> None:
        self.ticks.extend(ticks)
        if any(t["mode"] == "full" and t["instrument_token"] == INFY_TOKEN for t in ticks):
            self.full_tick.set()

    def _on_order_update(self, ws: Any, data: dict[str, Any]) -> None:
        self.updates.append(data)
        if data["status"] == "COMPLETE":
            self.completed.set()

    def _on_close(self, ws: Any, code: Any, reason: Any) -> None:
        self.closes.append((code, reason))
        self.closed.set()


@pytest.fixture
def probe(sandbox: KiteSandbox, access_token: str) -> Iterator[TickerProbe]:
    ticker = KiteTicker(sandbox.api_key, access_token, root=sandbox.ws_root)
    probe = TickerProbe(ticker)

    def on_connect(ws: Any, response: Any) -> None:
        ws.subscribe([INFY_TOKEN, NIFTY_50_TOKEN])
        ws.set_mode(ws.MODE_FULL, [INFY_TOKEN, NIFTY_50_TOKEN])

    ticker.on_connect = on_connect
    _connect(ticker)
    yield probe
    _close(ticker)
    probe.closed.wait(5)


def test_ticker_when_subscribed_in_full_mode_then_client_parses_ticks_with_depth_and_order_updates(
    sandbox: KiteSandbox, kite: Any, probe: TickerProbe
) -> None:
    sandbox.set_price("NSE:INFY", "1500")
    assert probe.full_tick.wait(5)
    sandbox.set_price("NSE:INFY", "1501.25")

    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=2,
        product="MIS",
        order_type="MARKET",
        market_protection=-1,
    )

    assert probe.completed.wait(5)
    full = [t for t in probe.ticks if t["mode"] == "full" and t["instrument_token"] == INFY_TOKEN]
    latest = full[-1]
    assert latest["last_price"] == 1501.25
    assert latest["tradable"] is True
    assert [len(latest["depth"][side]) for side in ("buy", "sell")] == [5, 5]
    assert latest["depth"]["buy"][0]["price"] == 1501.20
    assert latest["depth"]["sell"][0]["price"] == 1501.30
    assert all(level["quantity"] > 0 and level["orders"] > 0 for level in latest["depth"]["buy"])
    assert isinstance(latest["exchange_timestamp"], dt.datetime)
    index_ticks = [t for t in probe.ticks if t["instrument_token"] == NIFTY_50_TOKEN]
    assert index_ticks and index_ticks[-1]["tradable"] is False and "depth" not in index_ticks[-1]
    completed = [u for u in probe.updates if u["order_id"] == order_id and u["status"] == "COMPLETE"]
    assert completed[0]["filled_quantity"] == 2
    assert completed[0]["checksum"] == ""


def test_ticker_when_access_token_is_bad_then_upgrade_refused_with_403(sandbox: KiteSandbox) -> None:
    ticker = KiteTicker(sandbox.api_key, "not-a-token", root=sandbox.ws_root)
    probe = TickerProbe(ticker)

    _connect(ticker)

    try:
        assert probe.closed.wait(5)
    finally:
        reactor.callFromThread(ticker.stop_retry)
    code, reason = probe.closes[0]
    assert code == 1006  # autobahn's "closed uncleanly": the upgrade itself was refused
    assert "403" in str(reason)
    assert probe.ticks == []


def test_ticker_when_ltp_mode_then_unsubscribed_then_ltp_ticks_stop_and_heartbeats_follow(
    sandbox: KiteSandbox, access_token: str
) -> None:
    ticker = KiteTicker(sandbox.api_key, access_token, root=sandbox.ws_root)
    probe = TickerProbe(ticker)
    got_ltp = threading.Event()

    def on_connect(ws: Any, response: Any) -> None:
        ws.subscribe([NIFTY_50_TOKEN])
        ws.set_mode(ws.MODE_LTP, [NIFTY_50_TOKEN])

    def on_ticks(ws: Any, ticks: list[dict[str, Any]]) -> None:
        probe.ticks.extend(ticks)
        if any(t["mode"] == "ltp" for t in ticks):
            got_ltp.set()
            ws.unsubscribe([NIFTY_50_TOKEN])

    ticker.on_connect = on_connect
    ticker.on_ticks = on_ticks
    _connect(ticker)
    try:
        assert got_ltp.wait(5)
        assert probe.heartbeat.wait(5)
        ltp_tick = next(t for t in probe.ticks if t["mode"] == "ltp")
        assert set(ltp_tick) == {"tradable", "mode", "instrument_token", "last_price"}
        # 2-byte count + 2-byte length + 8-byte LTP packet.
        assert 12 in probe.frame_sizes
        seen = len(probe.ticks)
        probe.heartbeat.clear()
        assert probe.heartbeat.wait(5)
        assert len(probe.ticks) == seen
    finally:
        _close(ticker)
        probe.closed.wait(5)
