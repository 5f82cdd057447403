"""Margin per order by product, position-reducing orders, and the funds check."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alphapanda.domain.margin import check_funds, opening_quantity, required_margin
from alphapanda.events import Product, Side

D = Decimal


def _margin(product: Product, side: Side = Side.BUY, quantity: int = 100, position: int = 0) -> Decimal:
    return required_margin(
        product, side, quantity, D("1480.05"), position, mis_leverage=D("5"), nrml_margin_pct=D("20")
    )


def test_required_margin_when_mis_then_value_over_the_leverage() -> None:
    # 100 x 1,480.05 = 148,005 / 5
    assert _margin(Product.MIS) == D("29601.00")


def test_required_margin_when_cnc_then_the_full_value() -> None:
    assert _margin(Product.CNC) == D("148005.00")


def test_required_margin_when_nrml_then_the_configured_share_of_the_value() -> None:
    assert _margin(Product.NRML) == D("29601.00")


def test_required_margin_when_leverage_leaves_a_fraction_of_a_paisa_then_rounds_up() -> None:
    # 1 x 100.01 / 3 = 33.3366... -> 33.34
    margin = required_margin(Product.MIS, Side.BUY, 1, D("100.01"), mis_leverage=D(3), nrml_margin_pct=D(20))
    assert margin == D("33.34")


@pytest.mark.parametrize("product", list(Product))
def test_required_margin_when_order_only_closes_a_position_then_none_is_needed(product: Product) -> None:
    assert _margin(product, Side.SELL, quantity=100, position=150) == D("0.00")
    assert _margin(product, Side.BUY, quantity=100, position=-100) == D("0.00")


def test_required_margin_when_order_flips_the_position_then_only_the_new_side_needs_margin() -> None:
    # sell 100 against a long of 60: 40 open short; 40 x 1,480.05 / 5
    assert _margin(Product.MIS, Side.SELL, quantity=100, position=60) == D("11840.40")


def test_required_margin_when_order_adds_to_a_position_then_all_of_it_needs_margin() -> None:
    assert _margin(Product.MIS, Side.BUY, quantity=100, position=60) == _margin(Product.MIS)


@pytest.mark.parametrize(
    ("side", "quantity", "position", "opening"),
    [(Side.BUY, 10, 0, 10), (Side.BUY, 10, 5, 10), (Side.BUY, 10, -4, 6), (Side.SELL, 10, 10, 0)],
)
def test_opening_quantity_when_position_given_then_counts_what_opens_or_adds(
    side: Side, quantity: int, position: int, opening: int
) -> None:
    assert opening_quantity(side, quantity, position) == opening


@pytest.mark.parametrize(
    ("quantity", "price", "leverage", "message"),
    [(0, "1", "5", "quantity"), (1, "0", "5", "price"), (1, "1", "0.5", "leverage")],
)
def test_required_margin_when_inputs_are_impossible_then_raises(
    quantity: int, price: str, leverage: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        required_margin(
            Product.MIS, Side.BUY, quantity, D(price), mis_leverage=D(leverage), nrml_margin_pct=D(20)
        )


def test_check_funds_when_margin_fits_then_none() -> None:
    assert check_funds(D("29601.00"), D("29601.00")) is None


def test_check_funds_when_margin_exceeds_available_then_reason_names_both_amounts() -> None:
    reason = check_funds(D("20000"), D("29601.00"))

    assert reason == "insufficient funds: the order needs Rs 29601.00 of margin, Rs 20000.00 is available"


def test_check_funds_when_order_needs_nothing_and_account_is_overdrawn_then_it_passes() -> None:
    assert check_funds(D("-500"), D("0.00")) is None
