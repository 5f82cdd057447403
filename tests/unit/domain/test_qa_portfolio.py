"""QA: the books checked by hand, as a trader would: averages, realised PnL, flips, cash, charges,
marks, strategies kept apart, redelivery, and exact Decimal arithmetic over many fills."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from alphapanda import stages
from alphapanda.config import BrokerSettings
from alphapanda.domain.portfolio import Book, Position, apply_fill
from alphapanda.events import IST, Side
from alphapanda.runtime.reports import broker_summary
from alphapanda.stages.portfolio_manager import Account, DayPnl, PortfolioManager
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from fill_events import fill_event

D = Decimal
TOKEN = 738561
OTHER = 408065
AT = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
START = D("1000000")


def _run(fills: list[tuple[Side, int, str]], position: Position | None = None) -> Position:
    pos = position or Position()
    for side, quantity, price in fills:
        pos = apply_fill(pos, side, quantity, D(price))
    return pos


_event = functools.partial(fill_event, strategy="alpha")


def _manager() -> PortfolioManager:
    settings = BrokerSettings(starting_cash=START)
    return PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: settings)


def _book(store: MemoryStateStore, strategy: str = "alpha") -> Book:
    return Book.from_json(json.loads(store.get(keys.book("paper", strategy)) or ""))


# --- average price and realised PnL -----------------------------------------------------------


def test_qa_flip_long_100_at_100_sell_250_at_110_realises_on_100_and_opens_short_150_at_110() -> None:
    # closed 100 x (110 - 100) = 1,000 realised; the other 150 open short at 110
    assert _run([(Side.BUY, 100, "100"), (Side.SELL, 250, "110")]) == Position(-150, D("110"), D("1000"))


def test_qa_flip_short_through_zero_then_back_realises_each_leg() -> None:
    # short 150 @ 110, buy 200 @ 105: 150 x (110 - 105) = +750 realised, long 50 @ 105;
    # sell 50 @ 100: 50 x (100 - 105) = -250 -> realised 1,000 + 750 - 250 = 1,500, flat
    pos = _run([(Side.BUY, 200, "105"), (Side.SELL, 50, "100")], Position(-150, D("110"), D("1000")))

    assert pos == Position(0, D("0"), D("1500"))


def test_qa_adds_then_partial_closes_keep_the_weighted_average_and_realise_on_the_part_closed() -> None:
    # buy 10 @ 100, buy 20 @ 103: (1,000 + 2,060) / 30 = 102
    pos = _run([(Side.BUY, 10, "100"), (Side.BUY, 20, "103")])
    assert pos == Position(30, D("102"), D("0"))
    # sell 15 @ 104: 15 x 2 = 30; sell 5 @ 101: 5 x -1 = -5 -> 25; average stays 102
    pos = _run([(Side.SELL, 15, "104"), (Side.SELL, 5, "101")], pos)
    assert pos == Position(10, D("102"), D("25"))
    # add 10 @ 106 again: (10 x 102 + 10 x 106) / 20 = 104
    assert _run([(Side.BUY, 10, "106")], pos) == Position(20, D("104"), D("25"))


def test_qa_short_first_then_adds_and_covers() -> None:
    # sell 50 @ 200, sell 50 @ 190: average (10,000 + 9,500) / 100 = 195
    pos = _run([(Side.SELL, 50, "200"), (Side.SELL, 50, "190")])
    assert pos == Position(-100, D("195"), D("0"))
    # cover 40 @ 185: 40 x (195 - 185) = +400; cover 60 @ 200: 60 x (195 - 200) = -300 -> +100
    assert _run([(Side.BUY, 40, "185"), (Side.BUY, 60, "200")], pos) == Position(0, D("0"), D("100"))


def test_qa_unrealised_is_marked_at_the_price_given_long_and_short() -> None:
    long, short = Position(30, D("102")), Position(-100, D("195"))
    # long: 30 x (101.50 - 102) = -15; short: -100 x (190.25 - 195) = +475
    assert long.unrealised_pnl(D("101.50")) == D("-15")
    assert short.unrealised_pnl(D("190.25")) == D("475")
    assert Position().unrealised_pnl(D("123")) == D("0")


def test_qa_a_round_trip_at_a_non_terminating_average_realises_exactly_the_cash_made() -> None:
    # buy 1 @ 100, buy 2 @ 101: paid 302, average 302 / 3 = 100.666...; sell 3 @ 101: got 303.
    # Realised must be 303 - 302 = 1 exactly, not (101 - 100.6666666666666666666666667) x 3.
    pos = _run([(Side.BUY, 1, "100"), (Side.BUY, 2, "101"), (Side.SELL, 3, "101")])

    assert pos.net_quantity == 0
    assert pos.realised_pnl == D("1")


def test_qa_a_break_even_round_trip_closed_in_parts_realises_exactly_zero() -> None:
    # buy 1 @ 100 + 2 @ 100.50 (paid 301), sell 1 @ 100 + 2 @ 100.50 (got 301): 0, not 1E-25
    pos = _run(
        [(Side.BUY, 1, "100"), (Side.BUY, 2, "100.50"), (Side.SELL, 1, "100"), (Side.SELL, 2, "100.50")]
    )

    assert pos == Position(0, D("0"), D("0"))
    assert str(pos.realised_pnl) == "0"  # and stored as "0", not "1E-25" or "0E-12"


def test_qa_10000_small_fills_realise_to_the_paisa_with_no_drift() -> None:
    # 4,999 buys of 1 share at 100.00, 100.01, 100.02 in turn (4,999 shares: the average is a
    # non-terminating quotient almost all the way), then 4,999 sells of 1 at 101.00 .. 101.03 in
    # turn, then 1 bought and sold at 100: 10,000 fills, each paying 0.01. Flat at the end, so
    # realised = received - paid, worked out here in paise.
    buys = [D(10000 + i % 3) / 100 for i in range(4999)]
    sells = [D(10100 + i % 4) / 100 for i in range(4999)]
    book = Book(cash=START)
    for price in buys:
        book = book.with_fill(TOKEN, Side.BUY, 1, price, charges=D("0.01"))
    # paid: 1667 x 100.00 + 1666 x 100.01 + 1666 x 100.02 = 166,700 + 166,616.66 + 166,633.32
    assert sum(buys, D(0)) == D("499949.98")
    # unrealised at 100.01 on the open 4,999: 4,999 x 100.01 - 499,949.98 = 499,949.99 - ... = 0.01
    assert book.position(TOKEN).unrealised_pnl(D("100.01")) == D("0.01")
    for price in sells:
        book = book.with_fill(TOKEN, Side.SELL, 1, price, charges=D("0.01"))
    book = book.with_fill(TOKEN, Side.BUY, 1, D("100"), charges=D("0.01"))
    book = book.with_fill(TOKEN, Side.SELL, 1, D("100"), charges=D("0.01"))
    pos = book.position(TOKEN)
    # received: 1250 x (101.00 + 101.01 + 101.02) + 1249 x 101.03 = 378,787.50 + 126,186.47
    assert sum(sells, D(0)) == D("504973.97")
    assert pos.net_quantity == 0
    # realised 504,973.97 - 499,949.98 = 5,023.99, exactly (+ 0 on the last round trip)
    assert pos.realised_pnl == D("5023.99")
    assert str(pos.realised_pnl) == "5023.99"
    # charges 10,000 x 0.01 = 100; cash = 1,000,000 - 499,949.98 - 100 + 504,973.97 + 100 - 100
    #   = 1,004,923.99
    assert book.charges_paid == D("100.00")
    assert book.cash == D("1004923.99")
    # net PnL = gross realised - all charges = 5,023.99 - 100 = 4,923.99 = cash - starting cash
    assert book.realised_pnl - book.charges_paid == book.cash - START == D("4923.99")
    assert book.trade_count == 10_000


def test_qa_an_exact_cost_survives_the_json_round_trip_so_stored_books_close_exactly() -> None:
    # The portfolio manager reads the book back from text between fills: the round trip of the
    # test above (303 - 302 = 1) must still be exact when every fill goes through JSON.
    book = Book(cash=D("0"))
    for side, quantity, price in [(Side.BUY, 1, "100"), (Side.BUY, 2, "101"), (Side.SELL, 1, "101")]:
        book = Book.from_json(
            json.loads(json.dumps(book.with_fill(TOKEN, side, quantity, D(price)).to_json()))
        )
    book = book.with_fill(TOKEN, Side.SELL, 2, D("101"))

    assert book.position(TOKEN).realised_pnl == D("1")
    assert book.cash == D("1")


def test_qa_cash_is_starting_cash_less_buys_plus_sells_less_charges() -> None:
    book = (
        Book(cash=START)
        .with_fill(TOKEN, Side.BUY, 100, D("100"), charges=D("3.10"))
        .with_fill(TOKEN, Side.SELL, 250, D("110"), charges=D("8.45"))
        .with_fill(TOKEN, Side.BUY, 150, D("108.05"), charges=D("5.00"))
    )
    # buys 10,000 + 16,207.50 = 26,207.50; sells 27,500; charges 16.55
    # cash = 1,000,000 - 26,207.50 + 27,500 - 16.55 = 1,001,275.95
    assert book.cash == D("1001275.95")
    assert book.charges_paid == D("16.55")
    # realised: 100 x 10 = 1,000 on the flip, then 150 x (110 - 108.05) = 292.50 on the cover
    assert book.realised_pnl == D("1292.50")
    # flat, so net PnL = realised - charges = 1,275.95 = cash - starting cash
    assert book.realised_pnl - book.charges_paid == book.cash - START


# --- the portfolio manager --------------------------------------------------------------------


def test_qa_manager_deducts_charges_once_in_book_account_and_day() -> None:
    store = MemoryStateStore()
    manager = _manager()
    stages.process(manager, _event(Side.BUY, 100, "100", charges="3.10"), store)
    stages.process(manager, _event(Side.SELL, 250, "110", charges="8.45", fill_id="f2"), store)
    stages.process(manager, _event(Side.BUY, 150, "108.05", charges="5", fill_id="f3"), store)

    book = _book(store)
    account = Account.from_json(store.get(keys.account("paper")), START)
    day = DayPnl.from_json(store.get(keys.day_pnl("paper", "2025-11-24")))
    # book cash is the strategy's cash flow (it starts at 0): -10,000 + 27,500 - 16,207.50 - 16.55
    assert book.cash == D("1275.95")
    assert book.charges_paid == D("16.55")
    assert account.realised == D("1292.50")
    assert account.charges == D("16.55")
    assert account.margin == {}
    # available = 1,000,000 + 1,292.50 - 16.55 - 0 held
    assert account.available == D("1001275.95")
    # today: realised less charges, once: 1,292.50 - 16.55 = 1,275.95; the flat slot marks 0
    assert day.realised == D("1275.95")
    assert day.total == D("1275.95")


def test_qa_manager_snapshot_marks_at_the_fill_price() -> None:
    store = MemoryStateStore()
    manager = _manager()
    stages.process(manager, _event(Side.BUY, 100, "100"), store)
    (out,) = stages.process(manager, _event(Side.BUY, 100, "104", fill_id="f2"), store)

    # average (10,000 + 10,400) / 200 = 102; marked at the fill's 104: 200 x 2 = 400
    assert out.data.average_price == D("102")
    assert out.data.last_price == D("104")
    assert out.data.unrealised_pnl == D("400")


def test_qa_manager_keeps_each_strategys_positions_apart_on_the_same_instrument() -> None:
    store = MemoryStateStore()
    manager = _manager()
    stages.process(manager, _event(Side.BUY, 100, "100", strategy="alpha"), store)
    stages.process(manager, _event(Side.SELL, 40, "101", strategy="beta", fill_id="f2"), store)
    stages.process(manager, _event(Side.SELL, 100, "102", strategy="alpha", fill_id="f3"), store)

    alpha, beta = _book(store, "alpha"), _book(store, "beta")
    # alpha: long 100 @ 100 closed at 102 -> +200, flat; beta untouched by it: short 40 @ 101
    assert alpha.position(TOKEN) == Position(0, D("0"), D("200"))
    assert beta.position(TOKEN) == Position(-40, D("101"), D("0"))
    assert (alpha.trade_count, beta.trade_count) == (2, 1)
    # the account holds margin for beta's short only: 40 x 101 / 5 (default MIS leverage)
    account = Account.from_json(store.get(keys.account("paper")), START)
    assert account.margin == {f"beta:{TOKEN}": str(D(40 * 101) / 5)}


def test_qa_manager_second_delivery_of_the_same_fill_is_not_counted_twice() -> None:
    store = MemoryStateStore()
    manager = _manager()
    first = stages.process(manager, _event(Side.BUY, 100, "100", charges="3"), store)
    again = stages.process(manager, _event(Side.BUY, 100, "100", charges="3"), store)

    book = _book(store)
    assert again == first
    assert book.position(TOKEN) == Position(100, D("100"))
    assert (book.cash, book.charges_paid, book.trade_count) == (D("-10003"), D("3"), 1)
    account = Account.from_json(store.get(keys.account("paper")), START)
    assert account.charges == D("3")


def test_qa_broker_summary_marks_open_positions_at_the_last_price_not_the_mid() -> None:
    store = MemoryStateStore()
    manager = _manager()
    stages.process(manager, _event(Side.BUY, 10, "100", charges="1"), store)
    stages.process(manager, _event(Side.SELL, 5, "50", token=OTHER, strategy="beta", fill_id="f2"), store)
    quotes = {
        keys.quote(TOKEN): json.dumps({"bid": "103", "ask": "107", "ltp": "104"}),
        keys.quote(OTHER): json.dumps({"bid": "47", "ask": "49", "ltp": "49"}),
    }
    store.process_once("qa:seed", [], lambda _: Decision(outputs=[], writes=quotes))

    summary = broker_summary(store, "paper")
    # 10 x (104 - 100) = 40 and -5 x (49 - 50) = +5, at the last price (the mids give 50 and 10)
    assert summary.unrealised_pnl == D("45")
    assert summary.open_positions == 2
    assert summary.realised_pnl == D("0")
    assert summary.charges == D("1")
    # cash flows: -1,000 - 1 + 250
    assert summary.cash == D("-751")


def test_qa_money_is_decimal_never_float() -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in float; the book gives 0.3 exactly, and stores text
    book = Book(cash=D("0")).with_fill(TOKEN, Side.SELL, 1, D("0.1")).with_fill(TOKEN, Side.SELL, 1, D("0.2"))
    pos = book.position(TOKEN)
    assert book.cash == D("0.3")
    assert pos.average_price == D("0.15")
    assert all(
        type(v) is Decimal for v in (book.cash, book.charges_paid, pos.average_price, pos.realised_pnl)
    )
    raw = book.to_json()
    assert (raw["cash"], raw["charges"], raw["positions"][str(TOKEN)]["avg"]) == ("0.3", "0", "0.15")


_paise = st.integers(min_value=5, max_value=10_000_000).map(lambda paise: D(paise) / 100)
_fills = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(min_value=1, max_value=5000), _paise),
    max_size=40,
)


@given(fills=_fills, mark=_paise)
def test_qa_any_fills_realised_plus_unrealised_is_exactly_the_cash_plus_the_marked_position(
    fills: list[tuple[Side, int, Decimal]], mark: Decimal
) -> None:
    # The identity, with no tolerance: what the fills realised and what the rest is worth at
    # `mark` over its cost add up to the cash they moved plus the position's value at `mark`.
    # Each fill also goes through the stored JSON, as the portfolio manager's do.
    book = Book(cash=D("0"))
    for side, quantity, price in fills:
        book = Book.from_json(json.loads(json.dumps(book.with_fill(TOKEN, side, quantity, price).to_json())))
    pos = book.position(TOKEN)

    assert pos.realised_pnl + pos.unrealised_pnl(mark) == book.cash + pos.net_quantity * mark
    if pos.net_quantity == 0:
        assert pos.realised_pnl == book.cash
