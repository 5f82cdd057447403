"""Paper fill prices and per-fill charges: what an execution would have cost on the exchange."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from typing import Any

from alphapanda.domain.charges import ChargeBreakdown, ChargeRates, charges_on_turnover
from alphapanda.events import ChargeLines, Side
from alphapanda.immutable import immutable

_BPS = Decimal(10000)
_ZERO = Decimal(0)
# Wide enough that the traded value of an order (a sum of price x quantity) is exact.
_EXACT = Context(prec=50)
_NOTHING_CHARGED = ChargeBreakdown.zero()
"""What an order has been charged before its first fill (immutable, so shared)."""


def snap_to_tick(price: Decimal, tick_size: Decimal, *, up: bool) -> Decimal:
    """Round `price` onto the tick grid, up or down (the side that is worse for the trader)."""
    steps = (price / tick_size).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return (steps * tick_size).quantize(tick_size)


def on_tick_grid(price: Decimal, tick_size: Decimal) -> bool:
    """Return whether `price` is a whole number of ticks (exchanges reject any other price)."""
    return price % tick_size == 0


def slipped_price(side: Side, price: Decimal, slippage_bps: Decimal, tick_size: Decimal) -> Decimal:
    """Return `price` moved `slippage_bps` against the trader and snapped to the grid against them.

    A buy pays more, a sell receives less; a sell never goes below one tick (a price of zero is
    no price at all).
    """
    if side is Side.BUY:
        return snap_to_tick(price * (1 + slippage_bps / _BPS), tick_size, up=True)
    return max(snap_to_tick(price * (1 - slippage_bps / _BPS), tick_size, up=False), tick_size)


def paper_fill_price(
    side: Side, bid: Decimal, ask: Decimal, slippage_bps: Decimal, tick_size: Decimal
) -> Decimal:
    """Return the fill price of a market order: the touch (ask to buy, bid to sell) plus slippage.

    Slippage always goes against the trader and the result is snapped to the tick grid in the
    trader's disfavour, so paper results are never better than the book allowed.
    """
    return slipped_price(side, ask if side is Side.BUY else bid, slippage_bps, tick_size)


def _minus(a: ChargeBreakdown, b: ChargeBreakdown) -> ChargeBreakdown:
    return ChargeBreakdown(
        brokerage=a.brokerage - b.brokerage,
        stt=a.stt - b.stt,
        exchange_txn=a.exchange_txn - b.exchange_txn,
        sebi=a.sebi - b.sebi,
        gst=a.gst - b.gst,
        stamp_duty=a.stamp_duty - b.stamp_duty,
    )


def charge_lines(breakdown: ChargeBreakdown) -> ChargeLines:
    """The event form of a breakdown."""
    return ChargeLines(
        brokerage=breakdown.brokerage,
        stt=breakdown.stt,
        exchange_txn=breakdown.exchange_txn,
        sebi=breakdown.sebi,
        gst=breakdown.gst,
        stamp_duty=breakdown.stamp_duty,
    )


@immutable(slots=True)
class OrderExecution:
    """What one order has executed so far and what it has been charged for it.

    Charges are per executed ORDER (Zerodha's Rs 20 brokerage cap is per order, and each
    component is rounded per order), so a fill is charged the order's charges after it minus
    what the earlier fills were charged: the fills of an order always sum to the charges on the
    whole order's traded value.
    """

    quantity: int = 0
    value: Decimal = _ZERO
    charged: ChargeBreakdown = _NOTHING_CHARGED

    @property
    def average_price(self) -> Decimal:
        if self.quantity == 0:
            return _ZERO
        with localcontext(_EXACT):
            return self.value / self.quantity

    def after_fill(
        self, side: Side, quantity: int, price: Decimal, rates: ChargeRates
    ) -> tuple[OrderExecution, ChargeBreakdown]:
        """Return the order after one more fill, and the charges of that fill alone."""
        if quantity <= 0:
            # Checked here, not only by the charges of the first fill: a later zero or negative
            # fill would otherwise pass and be charged nothing, or refunded charges.
            raise ValueError(f"a fill's quantity must be positive, got {quantity}")
        with localcontext(_EXACT):
            value = self.value + price * quantity
            total_quantity = self.quantity + quantity
            # Charged on the exact traded value, never on an average price multiplied back:
            # 2500 / 3 is no finite decimal, and 3 x 833.33...3 rounds STT of Rs 2.50 down.
            whole = charges_on_turnover(side, total_quantity, value, rates)
        if self.charged is _NOTHING_CHARGED:
            # Nothing charged yet (a new order's first fill): `whole - 0` is `whole` itself, to
            # the digit (each component is rounded to paise, and x - Decimal(0) keeps x's
            # exponent and sign), so the subtraction is skipped on every order's first fill.
            return OrderExecution(total_quantity, value, whole), whole
        return OrderExecution(total_quantity, value, whole), _minus(whole, self.charged)

    def to_json(self) -> dict[str, Any]:
        return {
            "q": self.quantity,
            "value": str(self.value),
            "charged": self.charged.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OrderExecution:
        charged = raw["charged"]
        return cls(
            quantity=int(raw["q"]),
            value=Decimal(raw["value"]),
            charged=ChargeBreakdown.from_json(charged),
        )
