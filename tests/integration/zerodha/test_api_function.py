"""functions/api (real functions-framework) over a real redis-server: the read path, and the
Kite login callback against the local Kite sandbox with the real kiteconnect client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
import requests
from zerodha_env import API_KEY, API_SECRET, BROKER

from alphapanda import stages
from alphapanda.brokers.zerodha.session import SessionStore
from alphapanda.config import load_settings
from alphapanda.events import MarketTick, Side, tick_event
from alphapanda.kite_sandbox import KiteSandbox
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.embedded import EmbeddedRedis, free_port
from alphapanda.state.store import RedisStateStore
from alphapanda.topics import Function
from fill_events import RELIANCE, fill_event
from function_server import FunctionServer


def _env(redis_url: str, sandbox: KiteSandbox) -> dict[str, str]:
    return {
        "ALPHAPANDA_REDIS__URL": redis_url,
        "ALPHAPANDA_BROKERS": f"paper,{BROKER}",
        "ALPHAPANDA_KITE__API_KEY": API_KEY,
        "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
        "ALPHAPANDA_KITE__ROOT": sandbox.root,
    }


@pytest.fixture
def api(redis_server: EmbeddedRedis, sandbox: KiteSandbox) -> Iterator[FunctionServer]:
    server = FunctionServer("api", _env(redis_server.url, sandbox), signature="http")
    yield server
    server.stop()


def _trade(redis_url: str) -> None:
    """A paper buy of 10 RELIANCE at 1480 and a later tick at 1490, through the real stages."""
    core = build_core(load_settings(brokers=("paper",), redis={"url": redis_url}))
    store = RedisStateStore(redis.Redis.from_url(redis_url), 3600)
    stages.process(core.stages[Function.PORTFOLIO_MANAGER], fill_event(Side.BUY, 10, "1480.00"), store)
    tick = MarketTick(
        instrument_token=RELIANCE,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=Decimal("1490.00"),
        bid=Decimal("1489.95"),
        ask=Decimal("1490.05"),
        exchange_timestamp=fill_event(Side.BUY, 1, "1").data.filled_at,  # type: ignore[union-attr]
    )
    stages.process(core.stages[Function.STRATEGY_RUNNER], tick_event(tick, "tick-1"), store)


def test_api_when_a_paper_position_is_open_then_summary_and_positions_priced_at_the_last_quote(
    api: FunctionServer, redis_server: EmbeddedRedis
) -> None:
    _trade(redis_server.url)

    positions = requests.get(api.url + "brokers/paper/positions", timeout=10)
    summary = requests.get(api.url + "brokers/paper", timeout=10)
    every = requests.get(api.url + "brokers", timeout=10)

    assert positions.status_code == 200, positions.text
    (position,) = positions.json()["positions"]
    assert position == {
        "strategy": "ema_test",
        "instrument_token": RELIANCE,
        "instrument": "NSE:RELIANCE",
        "product": "MIS",
        "quantity": 10,
        "average_price": "1480.00",
        "realised_pnl": "0.00",
        "last_price": "1490.00",
        "unrealised_pnl": "100.00",
    }
    assert summary.json()["open_positions"] == 1 and summary.json()["state"] == "ACTIVE"
    assert Decimal(summary.json()["unrealised_pnl"]) == Decimal(100)
    assert [b["broker"] for b in every.json()["brokers"]] == ["paper", BROKER]


def test_api_when_asked_for_what_does_not_exist_or_to_write_then_404_or_405_saying_what_exists(
    api: FunctionServer,
) -> None:
    unknown = requests.get(api.url + "brokers/paper-9", timeout=10)
    order = requests.get(api.url + "brokers/paper/orders/nope", timeout=10)
    post = requests.post(api.url + "brokers/paper", timeout=10)
    paper_login = requests.get(api.url + "login/paper", params={"request_token": "x"}, timeout=10)

    assert unknown.status_code == 404 and "paper, zerodha" in unknown.json()["error"]
    assert order.status_code == 404 and "no order 'nope' on paper" in order.json()["error"]
    assert post.status_code == 405
    assert paper_login.status_code == 404


def test_api_login_when_kite_redirects_the_browser_then_the_session_is_stored_and_the_token_never_shown(
    api: FunctionServer, redis_client: redis.Redis, sandbox: KiteSandbox
) -> None:
    # What Kite appends to the app's redirect URL after a browser login.
    query = {
        "action": "login",
        "type": "login",
        "status": "success",
        "request_token": sandbox.issue_request_token(),
    }

    answer = requests.get(api.url + f"login/{BROKER}", params=query, timeout=10)
    again = requests.get(api.url + f"login/{BROKER}", params=query, timeout=10)

    assert answer.status_code == 200, answer.text
    session = SessionStore(redis_client, BROKER).load()
    assert answer.json()["message"].startswith(f"logged in as AB1234 for {BROKER} until ")
    assert session.access_token not in answer.text
    assert again.status_code == 403  # a request token works once


def test_api_when_redis_cannot_be_reached_then_503_and_the_server_keeps_serving(sandbox: KiteSandbox) -> None:
    server = FunctionServer("api", _env(f"redis://127.0.0.1:{free_port()}/0", sandbox), signature="http")
    try:
        first = requests.get(server.url + "brokers", timeout=20)
        second = requests.get(server.url + "healthz", timeout=20)
    finally:
        server.stop()

    assert first.status_code == 503 and "cannot reach its state" in first.json()["error"]
    assert second.status_code == 503  # still answering: the connect is tried again per request
