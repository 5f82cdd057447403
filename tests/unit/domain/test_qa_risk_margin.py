"""A risk officer's checks of margin: flips, sells from flat, rounding to the paisa, bad inputs and
funds exactly at and one paisa short of what an order needs (all found correct)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alphapanda.domain.margin import check_funds, opening_quantity, required_margin
from alphapanda.events import Product, Side

D = Decimal
RATES = {"mis_leverage": D("5"), "nrml_margin_pct": D("20")}


def test_margin_when_long_100_flips_to_short_100_then_only_the_opening_leg_needs_margin() -> None:
    assert opening_quantity(Side.SELL, 200, 100) == 100
    # 100 x 1,000 / 5
    assert required_margin(Product.MIS, Side.SELL, 200, D("1000"), 100, **RATES) == D("20000.00")


def test_margin_when_selling_from_flat_then_the_whole_order_needs_margin() -> None:
    assert required_margin(Product.MIS, Side.SELL, 10, D("1000"), 0, **RATES) == D("2000.00")
    assert required_margin(Product.CNC, Side.SELL, 10, D("1000"), 0, **RATES) == D("10000.00")


def test_margin_when_a_fraction_of_a_paisa_then_rounded_up_and_kept_decimal() -> None:
    # 1 x 100.03 / 5 = 20.006 -> 20.01; 3 x 333.33 x 20% = 199.998 -> 200.00
    mis = required_margin(Product.MIS, Side.BUY, 1, D("100.03"), **RATES)
    nrml = required_margin(Product.NRML, Side.BUY, 3, D("333.33"), **RATES)

    assert (mis, nrml) == (D("20.01"), D("200.00"))
    assert isinstance(mis, Decimal) and isinstance(nrml, Decimal)


@pytest.mark.parametrize(("quantity", "price"), [(0, "1000"), (-5, "1000"), (5, "0"), (5, "-1")])
def test_margin_when_quantity_or_price_not_positive_then_refused(quantity: int, price: str) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        required_margin(Product.MIS, Side.BUY, quantity, D(price), **RATES)


def test_check_funds_when_exactly_enough_then_passes_and_one_paisa_short_fails_naming_both() -> None:
    assert check_funds(D("2000.00"), D("2000.00")) is None
    assert check_funds(D("1999.99"), D("2000.00")) == (
        "insufficient funds: the order needs Rs 2000.00 of margin, Rs 1999.99 is available"
    )


def test_check_funds_when_closing_on_an_overdrawn_account_then_passes() -> None:
    assert check_funds(D("-500"), D("0")) is None
