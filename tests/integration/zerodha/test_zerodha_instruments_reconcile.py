"""`alphapanda instruments sync` and `alphapanda reconcile --broker zerodha` against the sandbox."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from typing import Any

import pytest
import redis
from kiteconnect import KiteConnect
from zerodha_env import API_KEY, API_SECRET, BROKER, INFY, SBIN, read_events

from alphapanda import cli_zerodha, topics
from alphapanda.brokers.zerodha.instruments import InstrumentMaster
from alphapanda.brokers.zerodha.reconcile import reconcile
from alphapanda.domain.portfolio import Book
from alphapanda.events import Alert, Side
from alphapanda.kite_sandbox import Holding, KiteSandbox, SandboxConfig, default_instruments
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state import keys as core_keys
from alphapanda.state.store import RedisStateStore


def _cli(*argv: str) -> int | None:
    parser = argparse.ArgumentParser(prog="alphapanda")
    cli_zerodha.register(parser.add_subparsers(dest="command", required=True))
    return cli_zerodha.run(parser.parse_args(list(argv)))


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, sandbox: KiteSandbox, redis_server: EmbeddedRedis, access_token: str
) -> None:
    for name, value in {
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_KITE__API_KEY": API_KEY,
        "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
        "ALPHAPANDA_KITE__ROOT": sandbox.root,
    }.items():
        monkeypatch.setenv(name, value)


def test_instruments_sync_when_run_then_master_maps_tokens_to_symbol_segment_lot_and_tick(
    env: None, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("instruments", "sync") == 0

    master = InstrumentMaster(redis_client)
    sbin = master.get(SBIN)
    future = next(r for r in map(master.get, [13238786]) if r is not None)
    assert "synced 8 instruments (all exchanges)" in capsys.readouterr().out
    assert master.count() == 8
    assert sbin is not None
    assert (sbin.tradingsymbol, sbin.exchange, sbin.segment, sbin.lot_size, sbin.tick_size) == (
        "SBIN",
        "NSE",
        "NSE",
        1,
        Decimal("0.05"),
    )
    assert master.by_symbol("NSE", "INFY") == master.get(INFY)
    assert (future.segment, future.lot_size, future.asset_class, future.expiry is not None) == (
        "NFO-FUT",
        75,
        "fno",
        True,
    )
    assert master.synced_at() is not None


def test_instruments_sync_when_one_exchange_then_master_is_replaced_not_merged(
    env: None, redis_client: redis.Redis
) -> None:
    assert _cli("instruments", "sync") == 0

    assert _cli("instruments", "sync", "--exchange", "nfo") == 0

    master = InstrumentMaster(redis_client)
    assert master.count() == 1
    assert master.get(SBIN) is None and master.by_symbol("NSE", "SBIN") is None


def test_instruments_sync_when_not_logged_in_then_one_line_naming_alphapanda_login(
    env: None, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.delete(f"{BROKER}:kite:session")

    assert _cli("instruments", "sync") == 1
    assert (
        capsys.readouterr().err == "alphapanda: no Kite session for broker zerodha: run `alphapanda login`\n"
    )


def _book(
    client: redis.Redis, strategy: str, fills: list[tuple[int, Side, int]], product: str | None = None
) -> None:
    book = Book(cash=Decimal(0))
    for token, side, quantity in fills:
        book = book.with_fill(token, side, quantity, Decimal(100), product=product)
    client.set(core_keys.book(BROKER, strategy), json.dumps(book.to_json()))
    client.sadd(core_keys.books_index(BROKER), strategy)


def test_reconcile_when_books_equal_kites_positions_then_exit_0_and_no_alert(
    env: None, sandbox: KiteSandbox, kite: Any, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    order = kite.place_order(
        variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
        quantity=3, product="MIS", order_type="MARKET", market_protection=2,
    )  # fmt: skip
    sandbox.wait_for_order(order)
    _book(redis_client, "a", [(INFY, Side.BUY, 5)])
    _book(redis_client, "b", [(INFY, Side.SELL, 2)])

    assert _cli("reconcile", "--broker", BROKER) == 0
    assert "the books match Kite's positions" in capsys.readouterr().out


def test_reconcile_when_positions_differ_then_breaks_printed_alert_on_zerodha_alerts_and_exit_1(
    env: None,
    kafka: EmbeddedKafka,
    sandbox: KiteSandbox,
    kite: Any,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    from alphapanda.bus.kafka import ensure_topics

    ensure_topics(kafka.bootstrap_servers, topics.all_topics([BROKER]), 1)
    assert _cli("instruments", "sync") == 0
    order = kite.place_order(
        variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
        quantity=3, product="MIS", order_type="MARKET", market_protection=2,
    )  # fmt: skip
    sandbox.wait_for_order(order)
    _book(redis_client, "a", [(INFY, Side.BUY, 2), (SBIN, Side.SELL, 4)])

    code = _cli("reconcile", "--broker", BROKER)

    out = capsys.readouterr().out
    (alert_event,) = read_events(kafka.bootstrap_servers, [topics.alerts(BROKER)])
    alert = alert_event.data
    assert code == 1
    assert "NSE:INFY" in out and "NSE:SBIN" in out
    assert isinstance(alert, Alert) and alert.kind == "position_mismatch"
    assert alert.details == {"NSE:INFY": "books 2, kite 3", "NSE:SBIN": "books -4, kite 0"}


def test_run_when_reconcile_is_for_a_paper_broker_then_not_ours(env: None) -> None:
    assert _cli("reconcile", "--broker", "paper") is None


def test_reconcile_when_a_delivery_position_sits_in_kites_holdings_then_only_a_shortfall_is_a_break(
    sandbox_config: SandboxConfig, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    # A CNC position our books carried overnight is in Kite's holdings the next day, not in its
    # positions: the real client's holdings() answer counts, and so does today's CNC sell of it.
    instruments = default_instruments()
    infy = next(i for i in instruments if i.tradingsymbol == "INFY")
    holding = Holding(instrument=infy, quantity=10, average_price=Decimal("1500"), isin="INE009A01021")
    store = RedisStateStore(redis_client, 3600)
    with KiteSandbox(
        API_KEY, API_SECRET, instruments=instruments, holdings=[holding], config=sandbox_config
    ) as kite_sandbox:
        kite: Any = KiteConnect(API_KEY, root=kite_sandbox.root, disable_ssl=True)
        kite.set_access_token(kite_sandbox.create_session())
        _book(redis_client, "swing", [(INFY, Side.BUY, 10)], product="CNC")

        assert reconcile(store, kite, BROKER).breaks == []

        sold = kite.place_order(
            variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="SELL",
            quantity=4, product="CNC", order_type="MARKET", market_protection=2,
        )  # fmt: skip
        kite_sandbox.wait_for_order(sold)
        # Kite: holding 10 (4 used) and a CNC day position of -4, so 6 held; the books still say 10.
        (shortfall,) = reconcile(store, kite, BROKER).breaks
        assert (shortfall.label, shortfall.expected, shortfall.actual) == ("NSE:INFY CNC", 10, 6)
        _book(redis_client, "swing", [(INFY, Side.BUY, 10), (INFY, Side.SELL, 4)], product="CNC")
        assert reconcile(store, kite, BROKER).breaks == []
