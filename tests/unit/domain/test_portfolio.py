"""Positions and books: averages, realised PnL, flips, cash, JSON, and the PnL identity."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.portfolio import Book, Position, apply_fill
from alphapanda.events import Side

D = Decimal
TOKEN = 738561
OTHER = 341249


def test_apply_fill_when_flat_and_buying_then_opens_long_at_fill_price() -> None:
    assert apply_fill(Position(), Side.BUY, 10, D("100")) == Position(10, D("100"), D("0"))


def test_apply_fill_when_flat_and_selling_then_opens_short_at_fill_price() -> None:
    assert apply_fill(Position(), Side.SELL, 10, D("100")) == Position(-10, D("100"), D("0"))


def test_apply_fill_when_adding_to_long_then_average_is_quantity_weighted() -> None:
    # (10 x 100 + 30 x 104) / 40 = 4,120 / 40 = 103
    assert apply_fill(Position(10, D("100")), Side.BUY, 30, D("104")) == Position(40, D("103"), D("0"))


def test_apply_fill_when_adding_to_short_then_average_is_quantity_weighted() -> None:
    # (20 x 50 + 5 x 40) / 25 = 1,200 / 25 = 48
    assert apply_fill(Position(-20, D("50")), Side.SELL, 5, D("40")) == Position(-25, D("48"), D("0"))


def test_apply_fill_when_partly_closing_long_then_realises_on_closed_part_and_keeps_average() -> None:
    # 15 closed at 110 against 103 -> 15 x 7 = 105
    after = apply_fill(Position(40, D("103"), D("5")), Side.SELL, 15, D("110"))

    assert after == Position(25, D("103"), D("110"))


def test_apply_fill_when_partly_covering_short_at_lower_price_then_realises_a_gain() -> None:
    # short 10 @100, buy back 4 @90 -> 4 x 10 = 40
    assert apply_fill(Position(-10, D("100")), Side.BUY, 4, D("90")) == Position(-6, D("100"), D("40"))


def test_apply_fill_when_closing_to_flat_then_average_resets_and_pnl_is_realised() -> None:
    assert apply_fill(Position(10, D("100")), Side.SELL, 10, D("120")) == Position(0, D("0"), D("200"))


def test_apply_fill_when_fill_crosses_through_flat_then_rest_opens_at_fill_price() -> None:
    # long 10 @100, sell 25 @95: close 10 for -50, open 15 short @95
    assert apply_fill(Position(10, D("100")), Side.SELL, 25, D("95")) == Position(-15, D("95"), D("-50"))


def test_apply_fill_when_short_covered_through_flat_then_opens_long_at_fill_price() -> None:
    # short 6 @50, buy 10 @45: close 6 for +30, open 4 long @45
    assert apply_fill(Position(-6, D("50")), Side.BUY, 10, D("45")) == Position(4, D("45"), D("30"))


def test_unrealised_pnl_when_short_and_price_falls_then_positive() -> None:
    assert Position(-15, D("95")).unrealised_pnl(D("90")) == D("75")
    assert Position(10, D("100")).unrealised_pnl(D("97.5")) == D("-25")


def test_with_fill_when_buying_then_cash_falls_by_value_and_charges() -> None:
    book = Book(cash=D("100000")).with_fill(TOKEN, Side.BUY, 10, D("1480.35"), charges=D("4.20"))

    assert book.cash == D("100000") - D("14803.50") - D("4.20")
    assert book.charges_paid == D("4.20")
    assert book.trade_count == 1
    assert book.position(TOKEN) == Position(10, D("1480.35"))


def test_with_fill_when_selling_then_cash_rises_by_value_less_charges() -> None:
    book = Book(cash=D("0")).with_fill(TOKEN, Side.SELL, 4, D("250.25"), charges=D("1"))

    # 4 x 250.25 = 1,001.00 received, less 1.00 of charges
    assert book.cash == D("1000.00")


def test_with_fill_when_two_instruments_then_positions_are_kept_apart_and_sorted() -> None:
    book = (
        Book(cash=D("0"))
        .with_fill(TOKEN, Side.BUY, 10, D("100"))
        .with_fill(OTHER, Side.SELL, 5, D("50"))
        .with_fill(TOKEN, Side.SELL, 4, D("110"))
    )

    assert [t for t, _ in book.positions] == [OTHER, TOKEN]
    assert book.position(OTHER) == Position(-5, D("50"))
    assert book.position(TOKEN) == Position(6, D("100"), D("40"))
    assert book.realised_pnl == D("40")
    assert book.trade_count == 3


def test_position_when_instrument_never_traded_then_flat() -> None:
    assert Book(cash=D("0")).position(TOKEN) == Position()


def test_book_json_when_round_tripped_through_text_then_equal() -> None:
    book = (
        Book(cash=D("1000000"))
        .with_fill(TOKEN, Side.BUY, 3, D("100.05"), charges=D("0.37"))
        .with_fill(TOKEN, Side.BUY, 1, D("101.10"))
        .with_fill(OTHER, Side.SELL, 7, D("985.15"), charges=D("2.05"))
    )

    restored = Book.from_json(json.loads(json.dumps(book.to_json())))

    assert restored == book
    assert restored.position(TOKEN).average_price == book.position(TOKEN).average_price


def test_book_json_when_encoded_then_money_is_text_not_float() -> None:
    raw = Book(cash=D("0.10")).with_fill(TOKEN, Side.BUY, 1, D("0.20")).to_json()

    assert raw == {
        "cash": "-0.10",
        "charges": "0",
        "trades": 1,
        "positions": {str(TOKEN): {"q": 1, "avg": "0.20", "rpnl": "0", "p": "MIS"}},
    }


def test_with_fill_when_product_given_then_the_position_takes_it() -> None:
    book = Book(cash=D("0")).with_fill(TOKEN, Side.BUY, 10, D("100"), product="CNC")

    assert book.position(TOKEN) == Position(10, D("100"), product="CNC")


def test_with_fill_when_no_product_given_then_the_position_keeps_its_product() -> None:
    book = Book(cash=D("0")).with_fill(TOKEN, Side.BUY, 10, D("100"), product="NRML")

    after = book.with_fill(TOKEN, Side.SELL, 4, D("110")).with_fill(TOKEN, Side.SELL, 16, D("90"))

    # 10 -> 6 (realise 40) -> -10 through flat (realise 6 x -10 = -60): still NRML
    assert after.position(TOKEN) == Position(-10, D("90"), D("-20"), "NRML")


def test_book_json_when_position_has_no_product_field_then_it_reads_as_mis() -> None:
    old = {"q": 1, "avg": "5", "rpnl": "0"}  # written before positions carried a product
    raw = {"cash": "0", "charges": "0", "trades": 1, "positions": {str(TOKEN): old}}

    assert Book.from_json(raw).position(TOKEN).product == "MIS"


_fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(min_value=1, max_value=5000),
        st.integers(min_value=5, max_value=10_000_000).map(lambda paise: D(paise) / 100),
    ),
    max_size=30,
)


@given(fills=_fills, mark=st.integers(min_value=5, max_value=10_000_000).map(lambda paise: D(paise) / 100))
def test_with_fill_when_any_sequence_then_realised_plus_unrealised_equals_cash_plus_marked_position(
    fills: list[tuple[Side, int, Decimal]], mark: Decimal
) -> None:
    book = Book(cash=D("0"))
    for side, quantity, price in fills:
        book = book.with_fill(TOKEN, side, quantity, price)
    pos = book.position(TOKEN)

    assert pos.net_quantity == sum(side.sign * quantity for side, quantity, _ in fills)
    assert book.cash == -sum((side.sign * quantity * price for side, quantity, price in fills), D("0"))
    # The average price is a 28-digit quotient (e.g. 5/3), so the two sides may differ in the
    # ~20th decimal; any accounting error would be at least a paisa.
    pnl = pos.realised_pnl + pos.unrealised_pnl(mark)
    assert abs(pnl - (book.cash + pos.net_quantity * mark)) < D("1e-12")
