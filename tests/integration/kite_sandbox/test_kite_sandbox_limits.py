"""The sandbox's request limits against facts.md section 7, through the official kiteconnect client.

facts.md line 166: "Rate limits: quote 1 r/s, historical 3 r/s, order placement 10 r/s, other
endpoints 10 r/s, 200 orders/min; excess -> HTTP 429 until the window resets ... Daily order cap
unverified (third-party says 5000/day)."
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex
from sandbox_orders import place

from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig


def _client(sandbox: KiteSandbox) -> Any:
    client = KiteConnect(sandbox.api_key, root=sandbox.root, disable_ssl=True)
    client.generate_session(sandbox.issue_request_token(), api_secret=sandbox.api_secret)
    return client


@pytest.fixture
def default_limits() -> Iterator[KiteSandbox]:
    # Only the market clock is slowed: every limit is the sandbox's default.
    with KiteSandbox("limitkey", "limitsecret", config=SandboxConfig(tick_interval=None)) as running:
        yield running


def test_config_when_defaults_then_kites_documented_limits() -> None:
    # facts.md line 166: quote 1 r/s, order placement 10 r/s, other endpoints 10 r/s, 200 orders/min.
    config = SandboxConfig()

    assert (config.quote_rate_per_second, config.other_rate_per_second) == (1, 10)
    assert (config.order_rate_per_second, config.order_rate_per_minute) == (10, 200)
    assert config.order_rate_per_day is None  # unverified: off unless a test sets it


def test_quote_when_a_second_request_within_one_second_then_http_429_until_the_window_resets(
    default_limits: KiteSandbox,
) -> None:
    # facts.md line 166: "quote 1 r/s ... excess -> HTTP 429 until the window resets".
    kite = _client(default_limits)
    assert "NSE:INFY" in kite.quote("NSE:INFY")

    with pytest.raises(kex.NetworkException) as raised:
        kite.ltp("NSE:INFY")

    assert raised.value.code == 429
    time.sleep(1.05)
    assert "NSE:INFY" in kite.ohlc("NSE:INFY")


def test_other_endpoints_when_more_than_ten_in_one_second_then_http_429(default_limits: KiteSandbox) -> None:
    # facts.md line 166: "other endpoints 10 r/s".
    kite = _client(default_limits)
    time.sleep(1.05)  # the login is an API call too: start from an empty window
    started = time.monotonic()
    for _ in range(10):
        kite.orders()

    with pytest.raises(kex.NetworkException) as raised:
        kite.positions()

    assert time.monotonic() - started < 1.0, "the machine was too slow for ten calls in one second"
    assert raised.value.code == 429
    time.sleep(1.05)
    assert kite.orders() == []


def test_place_order_when_daily_cap_configured_then_http_429_once_spent() -> None:
    # facts.md line 166: the daily order cap is unverified, so it is a setting (off by default).
    config = SandboxConfig(tick_interval=None, order_latency=0.005, order_rate_per_day=2)
    with KiteSandbox("daykey", "daysecret", config=config) as sandbox:
        kite = _client(sandbox)
        limit = {"order_type": "LIMIT", "price": 1000}
        place(kite, **limit)
        place(kite, **limit)
        time.sleep(1.05)  # past the per-second window: only the daily cap can refuse now

        with pytest.raises(kex.NetworkException) as raised:
            place(kite, **limit)

        assert raised.value.code == 429
        assert len(sandbox.orders()) == 2
