"""Pure reconciliation rules, the CLI's routing, and how the core picks the Zerodha stage."""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda import cli_zerodha
from alphapanda.brokers.factory import TraderUnavailable
from alphapanda.brokers.zerodha.reconcile import (
    PositionBreak,
    book_positions,
    diff_positions,
    kite_positions,
    reconciliation_alert,
)
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.config import load_settings
from alphapanda.domain.portfolio import Book
from alphapanda.events import IST, Alert, Side
from alphapanda.runtime.bootstrap import build_core
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.topics import Function

AT = datetime(2026, 1, 5, 15, 0, tzinfo=IST)


def test_book_positions_when_strategies_share_an_instrument_then_net_quantities_add_up() -> None:
    a = Book(cash=Decimal(0)).with_fill(1, Side.BUY, 5, Decimal(10)).with_fill(2, Side.SELL, 3, Decimal(10))
    b = Book(cash=Decimal(0)).with_fill(1, Side.SELL, 2, Decimal(10))

    assert book_positions({"a": a, "b": b}) == {1: 3, 2: -3}


def test_kite_positions_when_one_instrument_in_two_products_then_summed() -> None:
    positions = {
        "net": [
            {
                "instrument_token": 1,
                "tradingsymbol": "INFY",
                "exchange": "NSE",
                "product": "MIS",
                "quantity": 4,
            },
            {
                "instrument_token": 1,
                "tradingsymbol": "INFY",
                "exchange": "NSE",
                "product": "CNC",
                "quantity": -1,
            },
        ],
        "day": [],
    }

    assert kite_positions(positions) == {1: (3, "INFY", "NSE")}


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
