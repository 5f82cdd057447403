"""The read API's routes over an in-memory store (functions/api serves them over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from alphapanda.runtime.api import ReadApi
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore


def _store(writes: dict[str, str]) -> MemoryStateStore:
    store = MemoryStateStore()
    store.process_once("seed", [], lambda _v: Decision(outputs=[], writes=writes))
    return store


def test_read_api_when_order_recorded_and_broker_halted_then_both_read_back() -> None:
    store = _store(
        {
            keys.order("paper", "o-1"): json.dumps({"status": "filled", "signal": "s-1"}),
            keys.control("paper"): "HALTED",
        }
    )
    api = ReadApi(store, ["paper"])

    order = api("GET", "/brokers/paper/orders/o-1/", {})
    summary = api("GET", "/brokers/paper", {})

    assert (order.status, order.body) == (
        200,
        {"broker": "paper", "order_id": "o-1", "status": "filled", "signal": "s-1"},
    )
    assert summary.body["state"] == "HALTED" and summary.body["open_positions"] == 0
    assert api("GET", "/healthz", {}).status == 200 and api("HEAD", "/healthz", {}).status == 200


def test_read_api_login_when_broker_is_zerodha_then_the_callback_answers_else_404() -> None:
    seen: list[tuple[Mapping[str, str], str]] = []

    def login(query: Mapping[str, str], broker: str) -> tuple[int, str]:
        seen.append((query, broker))
        return 200, f"logged in for {broker}"

    api = ReadApi(MemoryStateStore(), ["paper", "zerodha"], login)

    answer = api("GET", "/login/zerodha", {"request_token": "t"})

    assert (answer.status, answer.body["message"]) == (200, "logged in for zerodha")
    assert seen == [({"request_token": "t"}, "zerodha")]
    assert api("GET", "/login/paper", {"request_token": "t"}).status == 404
    assert ReadApi(MemoryStateStore(), ["zerodha"])("GET", "/login/zerodha", {}).status == 404


def test_read_api_when_route_unknown_or_method_writes_then_404_or_405_with_the_reason() -> None:
    api = ReadApi(MemoryStateStore(), ["paper"])

    assert api("GET", "/nope", {}).status == 404
    assert api("GET", "/brokers/paper/positions/extra", {}).status == 404
    delete = api("DELETE", "/brokers/paper", {})
    assert delete.status == 405 and "only reads" in delete.body["error"]
    assert json.loads(api("GET", "/brokers", {}).text)["brokers"][0]["broker"] == "paper"


def test_read_api_when_values_carry_trailing_digits_then_money_to_the_paisa_and_prices_to_four_places() -> (
    None
):
    book = {
        "cash": "-4441.00",
        "charges": "1.2345",
        "trades": 3,
        "positions": {"738561": {"q": 3, "avg": "1480.333333", "rpnl": "-2413.1200", "p": "MIS"}},
    }
    quote = {"bid": "1490.00", "ask": "1490.10", "ltp": "1490.05", "at": "2025-11-24T10:00:00+05:30"}
    store = _store(
        {
            keys.book("paper", "s"): json.dumps(book),
            keys.quote(738561): json.dumps(quote),
            keys.symbol(738561): "NSE:RELIANCE",
        }
    )
    store.process_once(
        "index", [], lambda _v: Decision(outputs=[], set_adds={keys.books_index("paper"): "s"})
    )
    api = ReadApi(store, ["paper"])

    (position,) = api("GET", "/brokers/paper/positions", {}).body["positions"]
    summary = api("GET", "/brokers/paper", {}).body

    assert (position["average_price"], position["last_price"]) == ("1480.3333", "1490.05")
    assert position["realised_pnl"] == "-2413.12" and position["unrealised_pnl"] == "29.15"
    assert (summary["charges"], summary["cash"]) == ("1.23", "-4441.00")
