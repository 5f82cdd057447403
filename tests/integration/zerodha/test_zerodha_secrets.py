"""The access token and the api_secret never appear in logs, console output or events."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from typing import Any

import pytest
import redis
from zerodha_env import API_KEY, API_SECRET, BROKER, SBIN, read_events, validated

from alphapanda import cli_zerodha, topics
from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, PostbackEndpoint, TickerOrderUpdates
from alphapanda.brokers.zerodha.session import SessionStore
from alphapanda.brokers.zerodha.ticker_feed import FeedInstrument, KiteTickerFeed
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.brokers.zerodha.updates import postback_checksum
from alphapanda.bus.kafka import EventPublisher, ensure_topics
from alphapanda.config import KiteSettings
from alphapanda.events import IST, encode_data, to_attributes
from alphapanda.kite_sandbox import KiteSandbox
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state.store import RedisStateStore


def _postback(order: dict[str, Any], tag: str) -> bytes:
    stamp = order["order_timestamp"]
    stamp = stamp.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S") if isinstance(stamp, datetime) else stamp
    body = {
        "order_id": order["order_id"],
        "order_timestamp": stamp,
        "status": order["status"],
        "tag": tag,
        "quantity": order["quantity"],
        "filled_quantity": order["filled_quantity"],
        "average_price": float(order["average_price"]),
        "instrument_token": SBIN,
        "checksum": postback_checksum(order["order_id"], stamp, API_SECRET),
    }
    return json.dumps(body).encode()


def test_zerodha_flows_when_run_with_debug_logging_then_no_token_or_secret_in_logs_output_or_events(
    kafka: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    sandbox: KiteSandbox,
    kite_settings: KiteSettings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, value in {
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_KITE__API_KEY": API_KEY,
        "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
        "ALPHAPANDA_KITE__ROOT": sandbox.root,
        "ALPHAPANDA_KITE__WS_ROOT": sandbox.ws_root,
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
    }.items():
        monkeypatch.setenv(name, value)
    ensure_topics(kafka.bootstrap_servers, topics.all_topics([BROKER]), 1)
    publisher = EventPublisher(kafka.bootstrap_servers, 10)
    store = RedisStateStore(redis_client, 3600)
    parser = argparse.ArgumentParser(prog="alphapanda")
    cli_zerodha.register(parser.add_subparsers(dest="command", required=True))
    tokens: list[str] = []

    # Log in (twice: the second token is a different secret to keep), trade, lose an answer.
    assert cli_zerodha.run(parser.parse_args(["login", sandbox.issue_request_token()])) == 0
    tokens.append(SessionStore(redis_client, BROKER).access_token())
    trader = ZerodhaTrader(frozenset({BROKER}), kite_settings, lookup_backoff_s=0.01)
    sandbox.set_price("NSE:SBIN", "800")
    sandbox.drop_next_order_response()
    event = validated("secret-1")
    outputs = trader.handle(event, store)
    publisher.publish(outputs)
    (order,) = sandbox.orders()
    sandbox.wait_for_order(order["order_id"])

    # The ticker streams and relays order updates; a postback arrives; a bad one is refused.
    updates = TickerOrderUpdates(OrderUpdateProcessor(store, (BROKER,), charges=None), publisher).start()
    feed = KiteTickerFeed(
        API_KEY,
        sandbox.ws_root,
        SessionStore(redis_client, BROKER).access_token,
        {SBIN: FeedInstrument(SBIN, "SBIN", "NSE")},
        publisher.publish,
        order_updates=updates,
    ).start()
    assert feed.wait_connected(10)
    endpoint = PostbackEndpoint(
        lambda: API_SECRET, lambda: OrderUpdateProcessor(store, (BROKER,), charges=None), lambda: publisher
    )
    final = sandbox.order(order["order_id"])
    assert endpoint(_postback(final, order["tag"])).status == 200
    assert endpoint(b'{"order_id": "1", "order_timestamp": "x", "checksum": "y"}').status == 401

    # The token lapses: the stage halts and alerts; then a fresh login.
    sandbox.expire_token()
    publisher.publish(trader.handle(validated("secret-2"), store))
    assert cli_zerodha.run(parser.parse_args(["login", sandbox.issue_request_token()])) == 0
    tokens.append(SessionStore(redis_client, BROKER).access_token())
    feed.stop()
    updates.stop()
    publisher.close()

    captured = capfd.readouterr()
    texts = [caplog.text, captured.out, captured.err]
    texts += [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    published = read_events(kafka.bootstrap_servers, topics.all_topics([BROKER]))
    texts += [json.dumps(to_attributes(e)) + encode_data(e).decode() for e in published]
    assert len(caplog.records) > 10 and len(published) >= 4
    for secret in (API_SECRET, *tokens):
        assert not [t for t in texts if secret in t]
