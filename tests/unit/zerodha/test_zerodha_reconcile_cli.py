"""Pure reconciliation rules, the CLI's routing, and how the core picks the Zerodha stage."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from alphapanda import cli_zerodha
from alphapanda.brokers.factory import TraderUnavailable
from alphapanda.brokers.zerodha.reconcile import (
    PositionBreak,
    book_positions,
    diff_positions,
    kite_delivery,
    kite_positions,
    reconcile,
    reconciliation_alert,
)
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.config import load_settings
from alphapanda.domain.portfolio import Book
from alphapanda.events import IST, Alert, Side
from alphapanda.runtime.bootstrap import build_core
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.topics import Function

AT = datetime(2026, 1, 5, 15, 0, tzinfo=IST)


def test_book_positions_when_strategies_share_an_instrument_then_net_quantities_add_up() -> None:
    a = Book(cash=Decimal(0)).with_fill(1, Side.BUY, 5, Decimal(10)).with_fill(2, Side.SELL, 3, Decimal(10))
    b = Book(cash=Decimal(0)).with_fill(1, Side.SELL, 2, Decimal(10))

    assert book_positions({"a": a, "b": b}) == {1: 3, 2: -3}


def _row(product: str, quantity: int, token: int = 1, **more: int) -> dict[str, Any]:
    return {
        "instrument_token": token,
        "tradingsymbol": "INFY",
        "exchange": "NSE",
        "product": product,
        "quantity": quantity,
        **more,
    }


def test_kite_positions_when_one_instrument_in_two_products_then_summed_and_delivery_apart() -> None:
    positions = {"net": [_row("MIS", 4), _row("NRML", 2), _row("CNC", -1)], "day": []}

    assert kite_positions(positions) == {1: (6, "INFY", "NSE")}
    assert kite_positions(positions, delivery=True) == {1: (-1, "INFY", "NSE")}


def test_book_positions_when_a_strategy_holds_delivery_then_it_is_counted_apart() -> None:
    intraday = Book(cash=Decimal(0)).with_fill(1, Side.BUY, 5, Decimal(10))
    delivery = Book(cash=Decimal(0)).with_fill(1, Side.BUY, 7, Decimal(10), product="CNC")

    assert book_positions({"a": intraday, "b": delivery}) == {1: 5}
    assert book_positions({"a": intraday, "b": delivery}, delivery=True) == {1: 7}


def test_kite_delivery_when_holdings_sold_today_and_bought_yesterday_then_what_is_held() -> None:
    # Holding 10 sold today: a CNC day position of -10 beside the unchanged holding (0 held).
    # Bought yesterday, not settled: t1_quantity 5. Bought today: a CNC position of +3.
    positions = {"net": [_row("CNC", -10), _row("CNC", 3, token=2)], "day": []}
    holdings = [_row("CNC", 10, used_quantity=10), _row("CNC", 0, token=2, t1_quantity=5)]

    held = kite_delivery(positions, holdings)

    assert {t: q for t, (q, _, _) in held.items()} == {1: 0, 2: 8}


def test_diff_positions_when_delivery_then_only_holding_fewer_than_the_books_is_a_break() -> None:
    breaks = diff_positions(
        {1: 10, 2: 10, 3: 0},
        {1: (4, "INFY", "NSE"), 2: (25, "TCS", "NSE"), 3: (9, "SBIN", "NSE")},
        delivery=True,
    )

    # TCS and SBIN: the account holds more (shares bought outside Alpha Panda): not a break.
    assert breaks == [PositionBreak(1, "INFY", "NSE", 10, 4, delivery=True)]
    assert breaks[0].label == "NSE:INFY CNC"


class _Kite:
    def __init__(self, positions: list[dict[str, Any]], holdings: list[dict[str, Any]]) -> None:
        self._positions, self._holdings = positions, holdings
        self.holdings_asked = 0

    def positions(self) -> dict[str, Any]:
        return {"net": self._positions, "day": self._positions}

    def holdings(self) -> list[dict[str, Any]]:
        self.holdings_asked += 1
        return self._holdings


def _store_with(books: dict[str, Book]) -> MemoryStateStore:
    store = MemoryStateStore()
    for strategy, book in books.items():
        store.process_once(
            f"setup:{strategy}",
            [],
            lambda _v, s=strategy, b=book: Decision(
                outputs=[],
                writes={keys.book("zerodha", s): json.dumps(b.to_json())},
                set_adds={keys.books_index("zerodha"): s},
            ),
        )
    return store


def test_reconcile_when_a_delivery_position_moved_to_holdings_overnight_then_no_break() -> None:
    # Bought 10 CNC yesterday: today Kite shows no position, the 10 in holdings.
    store = _store_with(
        {"swing": Book(cash=Decimal(0)).with_fill(1, Side.BUY, 10, Decimal(1500), product="CNC")}
    )

    assert reconcile(store, _Kite([], [_row("CNC", 10)]), "zerodha", clock=lambda: AT).breaks == []
    short = reconcile(store, _Kite([], [_row("CNC", 4)]), "zerodha", clock=lambda: AT)
    assert short.breaks == [PositionBreak(1, "INFY", "NSE", 10, 4, delivery=True)]
    assert short.alert is not None and isinstance(short.alert.data, Alert)
    assert short.alert.data.details == {"NSE:INFY CNC": "books 10, kite 4"}


def test_reconcile_when_the_books_hold_no_delivery_then_holdings_are_not_asked_for_nor_compared() -> None:
    store = _store_with({"intraday": Book(cash=Decimal(0)).with_fill(1, Side.BUY, 5, Decimal(1500))})
    kite = _Kite([_row("MIS", 5)], [_row("CNC", 100, token=7)])

    assert reconcile(store, kite, "zerodha", clock=lambda: AT).breaks == []
    assert kite.holdings_asked == 0


def test_diff_positions_when_quantities_differ_either_side_then_one_break_each_named() -> None:
    breaks = diff_positions(
        {1: 3, 2: -3, 4: 1},
        {1: (3, "INFY", "NSE"), 3: (7, "TCS", "NSE"), 4: (2, "SBIN", "NSE")},
        names=lambda t: ("X", "BSE"),
    )

    assert breaks == [
        PositionBreak(2, "X", "BSE", -3, 0),
        PositionBreak(3, "TCS", "NSE", 0, 7),
        PositionBreak(4, "SBIN", "NSE", 1, 2),
    ]


def test_reconciliation_alert_when_breaks_then_critical_alert_on_the_brokers_alert_topic() -> None:
    event = reconciliation_alert("zerodha", [PositionBreak(4, "SBIN", "NSE", 1, 2)], AT)

    assert event.topic == "zerodha.alerts"
    assert isinstance(event.data, Alert)
    assert event.data.details == {"NSE:SBIN": "books 1, kite 2"}
    assert event.id == reconciliation_alert("zerodha", [], AT).id


def _parse(*argv: str, own_reconcile: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alphapanda")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run")
    if own_reconcile:
        sub.add_parser("reconcile").add_argument("--broker", required=True)
    cli_zerodha.register(sub)
    return parser.parse_args(list(argv))


def test_run_when_command_is_someone_elses_then_none() -> None:
    assert cli_zerodha.run(_parse("run")) is None
    assert cli_zerodha.run(_parse("reconcile", "--broker", "paper")) is None
    assert cli_zerodha.run(_parse("reconcile", "--broker", "paper", own_reconcile=True)) is None


def test_register_when_parser_has_a_reconcile_then_it_is_kept_and_zerodha_ones_still_routed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALPHAPANDA_REDIS__URL", raising=False)
    args = _parse("reconcile", "--broker", "zerodha", own_reconcile=True)

    assert not hasattr(args, "zerodha_command")
    assert cli_zerodha.run(args) == 2
    assert "ALPHAPANDA_REDIS__URL" in capsys.readouterr().err


def test_build_core_when_zerodha_configured_then_its_trading_engine_is_the_zerodha_trader() -> None:
    settings = load_settings(brokers=("paper", "zerodha"), kite={"api_key": "k", "api_secret": "s"})

    core = build_core(settings)

    assert isinstance(core.stage_for(Function.TRADING_ENGINE, "zerodha"), ZerodhaTrader)
    assert isinstance(core.stage_for(Function.TRADING_ENGINE, "paper"), TradingEngine)


@pytest.mark.parametrize(
    ("kite", "message"),
    [
        ({}, "ALPHAPANDA_KITE__API_KEY"),
        ({"api_key": "k", "market_protection": "0"}, "ALPHAPANDA_KITE__MARKET_PROTECTION"),
    ],
)
def test_build_core_when_zerodha_lacks_a_usable_kite_setting_then_refused_at_start(
    kite: dict[str, str], message: str
) -> None:
    with pytest.raises(TraderUnavailable, match=message):
        build_core(load_settings(brokers=("zerodha",), kite=kite))
