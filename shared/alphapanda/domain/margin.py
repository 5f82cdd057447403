"""Margin an order blocks, and whether the account can afford it. Pure.

- MIS (intraday): the order value divided by the broker's intraday leverage;
- CNC (delivery): the full order value;
- NRML (F&O carry-forward): `nrml_margin_pct` of the order value, a flat stand-in for SPAN +
  exposure margin, which the paper broker cannot compute.

Only the part of an order that opens or adds to a position needs margin: the part that closes
an existing position frees margin rather than using it (a sell of 15 against a long of 10 needs
margin for 5).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from alphapanda.events import Product, Side

_HUNDRED = Decimal(100)
_PAISA = Decimal("0.01")


def opening_quantity(side: Side, quantity: int, position: int) -> int:
    """The part of an order of `quantity` on `side` that opens or adds to `position`."""
    if position * side.sign < 0:
        return max(quantity - abs(position), 0)
    return quantity


def required_margin(
    product: Product,
    side: Side,
    quantity: int,
    price: Decimal,
    position: int = 0,
    *,
    mis_leverage: Decimal,
    nrml_margin_pct: Decimal,
) -> Decimal:
    """Return the margin, in rupees rounded up to the paisa, an order blocks at `price`."""
    if quantity <= 0:
        raise ValueError(f"quantity must be positive, got {quantity}")
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    if mis_leverage < 1:
        raise ValueError(f"MIS leverage must be at least 1, got {mis_leverage}")
    value = price * opening_quantity(side, quantity, position)
    if product is Product.MIS:
        margin = value / mis_leverage
    elif product is Product.NRML:
        margin = value * nrml_margin_pct / _HUNDRED
    else:
        margin = value
    # Rounded up: the account is never credited with a fraction of a paisa it does not have.
    return margin.quantize(_PAISA, rounding=ROUND_CEILING)


def check_funds(available: Decimal, required: Decimal) -> str | None:
    """Return why an order needing `required` margin cannot be placed with `available`, or None."""
    # An order that needs nothing (it only closes) passes even an overdrawn account: refusing
    # it would trap the position that overdrew it.
    if required <= 0 or required <= available:
        return None
    return (
        f"insufficient funds: the order needs Rs {required:.2f} of margin, "
        f"Rs {max(available, Decimal(0)):.2f} is available"
    )
