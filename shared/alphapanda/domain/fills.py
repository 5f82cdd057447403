"""Paper fill prices: what a market order would have paid on the exchange."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from alphapanda.events import Side

_BPS = Decimal(10000)


def snap_to_tick(price: Decimal, tick_size: Decimal, *, up: bool) -> Decimal:
    """Round `price` onto the tick grid, up or down (the side that is worse for the trader)."""
    steps = (price / tick_size).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return (steps * tick_size).quantize(tick_size)


def paper_fill_price(
    side: Side, bid: Decimal, ask: Decimal, slippage_bps: Decimal, tick_size: Decimal
) -> Decimal:
    """Return the fill price of a market order: the touch (ask to buy, bid to sell) plus slippage.

    Slippage always goes against the trader and the result is snapped to the tick grid in the
    trader's disfavour, so paper results are never better than the book allowed.
    """
    if side is Side.BUY:
        return snap_to_tick(ask * (1 + slippage_bps / _BPS), tick_size, up=True)
    price = snap_to_tick(bid * (1 - slippage_bps / _BPS), tick_size, up=False)
    return max(price, tick_size)
